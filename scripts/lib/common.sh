# Sourced by every setup script: one way to log, to fail and to install Debian packages.
#
#   log MESSAGE...                print "<script name>: MESSAGE" on stderr
#   die MESSAGE...                log "ERROR: MESSAGE" and exit 1
#   as_root CMD...                run CMD as root: directly when root, else through sudo
#   apt_install_missing PKG...    install those of the Debian packages PKG that are not installed
#                                 (apt-get update first); waits for the dpkg lock of a
#                                 concurrent apt run instead of failing. Sets APT_INSTALLED to
#                                 the number of packages it installed.

log() { local name=${0##*/}; printf '%s: %s\n' "${name%.sh}" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

as_root() {
    if [[ $(id -u) -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null; then
        sudo "$@"
    else
        die "need root (or sudo) to run: $*"
    fi
}

apt_install_missing() {
    local p st
    local -a missing=()
    APT_INSTALLED=0
    for p in "$@"; do
        st=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
        [[ "$st" == installed ]] || missing+=("$p")
    done
    ((${#missing[@]})) || return 0
    log "installing: ${missing[*]}"
    local -a apt=(env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=900 -qq)
    as_root "${apt[@]}" update >&2 || die "apt-get update failed"
    as_root "${apt[@]}" -y install --no-install-recommends "${missing[@]}" >&2 \
        || die "cannot install ${missing[*]}"
    APT_INSTALLED=${#missing[@]}
}
