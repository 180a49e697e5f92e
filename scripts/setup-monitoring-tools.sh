#!/usr/bin/env bash
# Install Prometheus 3 and its promtool for the alert, dashboard and end-to-end tests:
#
#   * from Debian sid, fetched with a PRIVATE apt configuration on the machine's own mirror
#     (scripts/lib/private-apt.sh; the system's sources are never touched) and unpacked with
#     `dpkg -x` into .cache/prometheus-3/.
#
# Prometheus 2 (Debian 12's `prometheus`) and Alertmanager (`prometheus-alertmanager`) come from
# setup-test-services.sh, which calls this script; node and the npm packages the dashboard
# tests use from setup-node-tools.sh.
#
# Idempotent; well under a second when everything is in place.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="$ROOT/.cache"
P3_DIR="$CACHE/prometheus-3"
APT_SID="$CACHE/apt-sid"
# shellcheck source=lib/common.sh
source "$ROOT/scripts/lib/common.sh"
# shellcheck source=lib/private-apt.sh
source "$ROOT/scripts/lib/private-apt.sh"

p3_ok() {
    [[ -f "$P3_DIR/.complete" && -x "$P3_DIR/usr/bin/prometheus" && -x "$P3_DIR/usr/bin/promtool" ]]
}

fetch_prometheus3() {
    private_apt_opts "$APT_SID" sid || die "cannot set up a private apt configuration"
    local -a O=("${PRIVATE_APT[@]}")
    mkdir -p "$APT_SID/debs"
    log "fetching the sid index into $APT_SID (private apt configuration)"
    apt-get "${O[@]}" -qq update >&2
    rm -f "$APT_SID"/debs/*.deb
    (cd "$APT_SID/debs" && apt-get "${O[@]}" -qq download prometheus promtool >&2)
    local tmp="$P3_DIR.tmp.$$" deb ver
    rm -rf "$tmp"
    mkdir -p "$tmp"
    for deb in "$APT_SID"/debs/*.deb; do
        ver=$(dpkg-deb -f "$deb" Version)
        [[ "$ver" == 3.* ]] || die "sid $(dpkg-deb -f "$deb" Package) is $ver, expected 3.x"
        dpkg -x "$deb" "$tmp"
    done
    "$tmp/usr/bin/prometheus" --version >/dev/null 2>&1 || die "the sid prometheus binary does not run here"
    "$tmp/usr/bin/promtool" --version | awk 'NR==1{print $3}' >"$tmp/.complete"
    rm -rf "$P3_DIR"
    mv "$tmp" "$P3_DIR"
    # The sid index is ~20 MB and only needed again for a re-fetch.
    rm -rf "$APT_SID"
}

p3_ok || fetch_prometheus3

echo "monitoring tools ready: prometheus $(cat "$P3_DIR/.complete") in ${P3_DIR#"$ROOT"/};" \
     "alertmanager $(prometheus-alertmanager --version 2>&1 | awk 'NR==1{print $3}')"
