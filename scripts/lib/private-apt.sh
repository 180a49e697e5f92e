# Sourced by the setup scripts: fetch packages of another Debian release without touching the
# system's apt configuration.
#
#   debian_mirror                 print the Debian archive URI this machine's apt sources use
#   private_apt_opts DIR SUITE    fill the array PRIVATE_APT with apt-get options for a private
#                                 configuration in DIR (its own sources, lists, cache, state)
#                                 reading SUITE from that mirror
#
# The mirror always comes from /etc/apt/sources.list.d/*.sources or /etc/apt/sources.list, never
# from a host written here: CI machines may point at a local mirror or a snapshot. Snapshot
# mirrors serve Release files past their Valid-Until date, so validity is not checked for the
# private configuration (the system's own configuration is never changed).

debian_mirror() {
    local uri=""
    local f
    for f in /etc/apt/sources.list.d/*.sources; do
        [[ -f "$f" ]] || continue
        # deb822: the first `URIs:` of a stanza that is not the security archive.
        uri=$(awk 'BEGIN{IGNORECASE=1}
            /^URIs:/ { for (i = 2; i <= NF; i++) if ($i !~ /security/) { print $i; exit } }' "$f")
        [[ -n "$uri" ]] && break
    done
    if [[ -z "$uri" && -f /etc/apt/sources.list ]]; then
        # one-line format: deb [options] URI suite components
        uri=$(awk '$1 == "deb" {
            i = 2; if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
            if ($i !~ /security/) { print $i; exit } }' /etc/apt/sources.list)
    fi
    [[ -n "$uri" ]] || { echo "no Debian mirror found in the system's apt sources" >&2; return 1; }
    echo "${uri%/}"
}

private_apt_opts() { # DIR SUITE
    local dir=$1 suite=$2 mirror arch
    mirror=$(debian_mirror) || return 1
    arch=$(dpkg --print-architecture)
    mkdir -p "$dir"/{lists/partial,cache/archives/partial,state,sources.list.d,preferences.d}
    echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror $suite main" \
        >"$dir/sources.list"
    PRIVATE_APT=(
        -o "Dir::State=$dir/state"
        -o "Dir::State::Lists=$dir/lists"
        -o "Dir::State::status=/var/lib/dpkg/status"
        -o "Dir::Cache=$dir/cache"
        -o "Dir::Etc::sourcelist=$dir/sources.list"
        -o "Dir::Etc::sourceparts=$dir/sources.list.d"
        -o "Dir::Etc::preferences=$dir/preferences"
        -o "Dir::Etc::preferencesparts=$dir/preferences.d"
        -o "Acquire::Check-Valid-Until=false"
        -o "APT::Sandbox::User=root"
        -o "Acquire::Languages=none"
        -o "APT::Architectures::=$arch"
        -o "Debug::NoLocking=1"
    )
}
