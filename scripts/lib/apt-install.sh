# Sourced by the setup scripts.
#
#   apt_install_missing PKG...    install the Debian packages among PKG that are not installed
#                                 (needs root when there are some); waits for the dpkg lock
#                                 of a concurrent apt run instead of failing

apt_install_missing() {
    local p st
    local -a missing=()
    for p in "$@"; do
        st=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
        [[ "$st" == installed ]] || missing+=("$p")
    done
    ((${#missing[@]})) || return 0
    if [[ $(id -u) -ne 0 ]]; then
        echo "missing packages (${missing[*]}); run as root" >&2
        return 1
    fi
    echo "installing: ${missing[*]}" >&2
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=900 -qq update >&2
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=900 -y -qq install \
        --no-install-recommends "${missing[@]}" >&2
}
