#!/usr/bin/env bash
# Build the Debian sid root the tests run Sidekiq 8.1, Redis 8 and Valkey 9 from.
#
#   scripts/setup-sid-root.sh        build .cache/sid-root once; later runs only check it
#
# Debian 12 has neither Ruby >= 3.2 (Sidekiq 8 needs it) nor Redis 8 or Valkey; sid packages
# all three. `mmdebstrap --variant=essential` builds a minimal root holding exactly SID_PACKAGES
# and what they depend on, from the mirror of the machine's own apt sources
# (scripts/lib/private-apt.sh); the system's apt configuration is never changed. Programs in
# it run through scripts/in-sid-root.sh (chroot; loopback is shared with the host).
#
# The root is rebuilt only when it is missing or SID_PACKAGES changed; its stamp
# (.cache/sid-root/.sid-root-stamp) records the package list and the versions installed.
# Building needs root (mmdebstrap's root mode, chroot); mmdebstrap is installed if missing.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SID_ROOT="$REPO/.cache/sid-root"
STAMP="$SID_ROOT/.sid-root-stamp"
# ruby-sidekiq pulls in Ruby 3.3, redis-client and connection_pool. valkey-server and
# valkey-tools depend on `systemd | systemd-standalone-*`: naming the standalone tools keeps
# systemd itself out of the root.
SID_PACKAGES=(ruby-sidekiq redis-server valkey-server
              systemd-standalone-tmpfiles systemd-standalone-sysusers)
START_NS=$(date +%s%N)
# shellcheck source=lib/common.sh
source "$REPO/scripts/lib/common.sh"
# shellcheck source=lib/private-apt.sh
source "$REPO/scripts/lib/private-apt.sh"

want_line="packages: ${SID_PACKAGES[*]}"

root_ok() {
    [[ -f "$STAMP" && -x "$SID_ROOT/usr/bin/ruby" ]] || return 1
    [[ "$(head -n1 "$STAMP")" == "$want_line" ]]
}

build_root() {
    [[ $(id -u) -eq 0 ]] || die "the sid root is missing or outdated; run as root to build it"
    apt_install_missing mmdebstrap
    [[ -s /usr/share/keyrings/debian-archive-keyring.gpg ]] || die "debian-archive-keyring missing"
    local mirror tmp
    mirror=$(debian_mirror) || die "no Debian mirror in the system's apt sources"
    tmp="$SID_ROOT.tmp.$$"
    # A half-built root from an interrupted run: never follow a leftover mount out of it.
    rm -rf --one-file-system "$SID_ROOT".tmp.* "$SID_ROOT"
    log "building $SID_ROOT from $mirror sid: ${SID_PACKAGES[*]}"
    # sid on a snapshot mirror may be past its Release file's Valid-Until: accepted here only.
    # Documentation, manual pages and translations are left out (a third of the size).
    local include
    include=$(IFS=,; echo "${SID_PACKAGES[*]}")
    if ! mmdebstrap --quiet --variant=essential --mode=root \
        --include="$include" \
        --keyring=/usr/share/keyrings/debian-archive-keyring.gpg \
        --aptopt='Acquire::Check-Valid-Until "false"' \
        --aptopt='Acquire::Languages "none"' \
        --dpkgopt='path-exclude=/usr/share/doc/*' \
        --dpkgopt='path-exclude=/usr/share/man/*' \
        --dpkgopt='path-exclude=/usr/share/locale/*' \
        sid "$tmp" "$mirror" >&2; then
        rm -rf --one-file-system "$tmp"
        die "mmdebstrap failed"
    fi
    local versions redis valkey
    versions=$(chroot "$tmp" ruby -e 'require "sidekiq"; require "sidekiq/api"
        print "sidekiq #{Sidekiq::VERSION} ruby #{RUBY_VERSION} redis-client #{RedisClient::VERSION}" \
              " connection_pool #{ConnectionPool::VERSION}"') || die "Sidekiq does not load in the sid root"
    redis=$(chroot "$tmp" redis-server --version | sed -E 's/.* v=([^ ]+).*/\1/')
    valkey=$(chroot "$tmp" valkey-server --version | sed -E 's/.* v=([^ ]+).*/\1/')
    # The tests name these versions (tests/support/sidekiq.py "8.1", redis_server.py "redis-8",
    # "valkey-9"): when sid moves on, say so instead of testing something else.
    if [[ "$versions" != "sidekiq 8.1."* || "$redis" != 8.* || "$valkey" != 9.* ]]; then
        rm -rf --one-file-system "$tmp"
        die "sid now has $versions, redis-server $redis, valkey-server $valkey;" \
            "expected Sidekiq 8.1.x, Redis 8, Valkey 9: update the tests' version names"
    fi
    {
        echo "$want_line"
        echo "$versions"
        echo "redis-server $redis"
        echo "valkey-server $valkey"
        echo "size $(du -sm --one-file-system "$tmp" | cut -f1) MB"
        chroot "$tmp" dpkg-query -W -f='deb ${Package} ${Version}\n' ruby-sidekiq ruby-redis-client \
            ruby-connection-pool ruby3.3 redis-server valkey-server || true
    } >"$tmp/.sid-root-stamp.new"
    mv "$tmp/.sid-root-stamp.new" "$tmp/.sid-root-stamp"
    mv "$tmp" "$SID_ROOT"
}

root_ok || build_root
# scripts/in-sid-root.sh mounts the repository at its own path inside the root; a caller
# without root cannot create the mount point there, so make it now.
[[ -d "$SID_ROOT$REPO" ]] || mkdir -p "$SID_ROOT$REPO"
elapsed=$(( ($(date +%s%N) - START_NS) / 1000000 ))
echo "sid root ready: $(sed -n 2,5p "$STAMP" | paste -sd';' | sed 's/;/; /g') in ${SID_ROOT#"$REPO"/};" \
     "${elapsed} ms"
