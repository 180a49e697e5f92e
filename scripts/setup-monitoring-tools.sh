#!/usr/bin/env bash
# Install what the alert, dashboard and end-to-end tests need beyond setup-test-services.sh:
#
#   * Prometheus 3 and its promtool from Debian sid, fetched with a PRIVATE apt configuration
#     on the machine's own mirror (scripts/lib/private-apt.sh; the system's sources are never
#     touched) and unpacked with `dpkg -x` into .cache/prometheus-3/. Prometheus 2 (Debian 12's
#     `prometheus`) and Alertmanager (`prometheus-alertmanager`) come from setup-test-services.sh.
#   * node and npm (Debian's nodejs/npm, only if `node` is missing), then the exact npm packages
#     of tests/node/package-lock.json (Grafana's published dashboard types and the TypeScript to
#     JSON Schema converter) into .cache/node-tools/.
#
# Idempotent; well under a second when everything is in place. Called by setup-test-services.sh.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="$ROOT/.cache"
P3_DIR="$CACHE/prometheus-3"
APT_SID="$CACHE/apt-sid"
NODE_SRC="$ROOT/tests/node"
NODE_DIR="$CACHE/node-tools"
# shellcheck source=lib/private-apt.sh
source "$ROOT/scripts/lib/private-apt.sh"

log() { printf 'setup-monitoring-tools: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ---------------------------------------------------------------------------
# 1. Prometheus 3 from sid
# ---------------------------------------------------------------------------
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

# ---------------------------------------------------------------------------
# 2. node, npm and the pinned npm packages
# ---------------------------------------------------------------------------
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    [[ $(id -u) -eq 0 ]] || die "node/npm missing; run as root to install Debian's nodejs and npm"
    log "installing nodejs and npm"
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=900 -qq update >&2
    apt-get -o DPkg::Lock::Timeout=900 -y -qq install --no-install-recommends nodejs npm >&2
fi

want=$(cat "$NODE_SRC/package.json" "$NODE_SRC/package-lock.json" | sha256sum | cut -d' ' -f1)
if [[ "$(cat "$NODE_DIR/.complete" 2>/dev/null || true)" != "$want" ]]; then
    log "installing the npm packages of tests/node into $NODE_DIR"
    rm -rf "$NODE_DIR"
    mkdir -p "$NODE_DIR"
    cp "$NODE_SRC/package.json" "$NODE_SRC/package-lock.json" "$NODE_DIR/"
    (cd "$NODE_DIR" && npm ci --no-audit --no-fund --loglevel=error >&2)
    echo "$want" >"$NODE_DIR/.complete"
fi

echo "monitoring tools ready: prometheus $(cat "$P3_DIR/.complete") in ${P3_DIR#"$ROOT"/};" \
     "alertmanager $(prometheus-alertmanager --version 2>&1 | awk 'NR==1{print $3}');" \
     "node $(node --version); npm packages in ${NODE_DIR#"$ROOT"/}"
