#!/usr/bin/env bash
# Install the real components the integration and conformance tests run against.
#
#   * Debian 12 packages: redis-server, redis-sentinel, ruby, ruby-sidekiq (6.4.1),
#     ruby-sidekiq-cron (1.8.0), prometheus (2.42, with promtool), prometheus-alertmanager,
#     openssl, iproute2, plus ruby-concurrent and ruby-rack (needed by Sidekiq 7.3).
#   * Sidekiq 7.3.2 with redis-client 0.22.2 and connection_pool 2.4.1, downloaded from
#     Debian 13 (trixie) with a PRIVATE apt configuration on the machine's own mirror
#     (scripts/lib/private-apt.sh; the system's sources are never touched) and unpacked
#     with `dpkg -x` into .cache/sidekiq-7.3.2/ in the repository.
#   * A Debian sid root in .cache/sid-root/ with Sidekiq 8.1 (Ruby 3.3), Redis 8 and Valkey 9
#     (scripts/setup-sid-root.sh; programs in it run through scripts/in-sid-root.sh).
#   * Prometheus 3 from Debian sid: scripts/setup-monitoring-tools.sh.
#
# Idempotent; takes well under a second when everything is already in place.
# Needs root (or sudo) for apt-get install, root to build the sid root (both skipped when
# nothing is missing).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="$ROOT/.cache"
S7_DIR="$CACHE/sidekiq-7.3.2"
APT_PRIV="$CACHE/apt-trixie"
GEMS_REL="usr/share/rubygems-integration/all/gems"
START_NS=$(date +%s%N)
# shellcheck source=lib/common.sh
source "$ROOT/scripts/lib/common.sh"
# shellcheck source=lib/private-apt.sh
source "$ROOT/scripts/lib/private-apt.sh"

# ---------------------------------------------------------------------------
# 1. Debian 12 packages
# ---------------------------------------------------------------------------
PKGS=(redis-server redis-sentinel ruby ruby-sidekiq ruby-sidekiq-cron ruby-concurrent ruby-rack
      prometheus prometheus-alertmanager openssl iproute2)

apt_install_missing "${PKGS[@]}"

# Package scripts may have started system services that would collide with the tests'
# ports (6379, 26379, 9090, 9100). Stop only those: they run as the service users, while
# the tests' own servers run as the invoking user.
stop_service() { # <init-name> <user> <exe-name>
    local svc=$1 user=$2 exe=$3
    id -u "$user" >/dev/null 2>&1 || return 0
    pgrep -u "$user" -x "$exe" >/dev/null 2>&1 || return 0
    log "stopping system service $svc"
    if command -v systemctl >/dev/null 2>&1 && [[ -d /run/systemd/system ]]; then
        as_root systemctl stop "$svc" >/dev/null 2>&1 || true
        as_root systemctl disable "$svc" >/dev/null 2>&1 || true
    fi
    as_root service "$svc" stop >/dev/null 2>&1 || true
    local pids i
    for i in 1 2 3 4 5 6 7 8 9 10; do
        pids=$(pgrep -u "$user" -x "$exe" || true)
        [[ -z "$pids" ]] && return 0
        # shellcheck disable=SC2086
        if ((i == 5)); then as_root kill -KILL $pids 2>/dev/null || true; else as_root kill -TERM $pids 2>/dev/null || true; fi
        sleep 0.3
    done
    die "could not stop $svc (pids: $(pgrep -u "$user" -x "$exe" | tr '\n' ' '))"
}
stop_service redis-server redis redis-server
stop_service redis-sentinel redis redis-sentinel
stop_service prometheus prometheus prometheus
stop_service prometheus-node-exporter prometheus prometheus-node-exporter
stop_service prometheus-alertmanager prometheus prometheus-alertmanager

deb_version() { dpkg-query -W -f='${Version}' "$1"; }
v6=$(deb_version ruby-sidekiq)
[[ "$v6" == 6.4.1* ]] || die "Debian ruby-sidekiq is $v6, expected 6.4.1"
vcron=$(deb_version ruby-sidekiq-cron)
[[ "$vcron" == 1.8.0* ]] || die "Debian ruby-sidekiq-cron is $vcron, expected 1.8.0"

# ---------------------------------------------------------------------------
# 2. Sidekiq 7.3.2 from trixie, private apt configuration, unpacked into .cache/
# ---------------------------------------------------------------------------
# package name -> expected upstream version and gem directory
declare -A S7_PKGS=(
    [ruby-sidekiq]="7.3.2 sidekiq-7.3.2"
    [ruby-redis-client]="0.22.2 redis-client-0.22.2"
    [ruby-connection-pool]="2.4.1 connection_pool-2.4.1"
)
STAMP="$S7_DIR/.complete"

fetch_sidekiq7() {
    [[ -s /usr/share/keyrings/debian-archive-keyring.gpg ]] || die "debian-archive-keyring missing"
    private_apt_opts "$APT_PRIV" trixie || die "cannot set up a private apt configuration"
    local -a O=("${PRIVATE_APT[@]}")
    mkdir -p "$APT_PRIV/debs"
    log "fetching trixie index into $APT_PRIV (private apt configuration)"
    apt-get "${O[@]}" -qq update >&2
    rm -f "$APT_PRIV"/debs/*.deb
    (cd "$APT_PRIV/debs" && apt-get "${O[@]}" -qq download "${!S7_PKGS[@]}" >&2)

    local tmp="$S7_DIR.tmp.$$"
    rm -rf "$tmp"
    mkdir -p "$tmp"
    local pkg deb ver want
    for pkg in "${!S7_PKGS[@]}"; do
        deb=$(ls "$APT_PRIV"/debs/"${pkg}"_*.deb)
        ver=$(dpkg-deb -f "$deb" Version)
        want=${S7_PKGS[$pkg]%% *}
        [[ "$ver" == "$want"* ]] || die "trixie $pkg is $ver, expected $want"
        dpkg -x "$deb" "$tmp"
        echo "$pkg $ver" >>"$tmp/.debs"
    done
    rm -rf "$S7_DIR"
    mv "$tmp" "$S7_DIR"
    # The trixie index is ~20 MB and only needed again for a re-fetch.
    rm -rf "$APT_PRIV/lists" "$APT_PRIV/cache" "$APT_PRIV/state"
}

s7_ok() {
    [[ -f "$STAMP" ]] || return 1
    local pkg gemdir
    for pkg in "${!S7_PKGS[@]}"; do
        gemdir=${S7_PKGS[$pkg]#* }
        [[ -d "$S7_DIR/$GEMS_REL/$gemdir/lib" ]] || return 1
    done
}

if ! s7_ok; then
    fetch_sidekiq7
fi

# ---------------------------------------------------------------------------
# 3. Sidekiq 8.1, Redis 8 and Valkey 9: the Debian sid root
# ---------------------------------------------------------------------------
sid_line=$("$ROOT/scripts/setup-sid-root.sh")

# ---------------------------------------------------------------------------
# 4. .gitignore
# ---------------------------------------------------------------------------
GI="$ROOT/.gitignore"
touch "$GI"
for pat in .cache/ .venv/ __pycache__/ '*.egg-info' .pytest_cache .mypy_cache .ruff_cache; do
    grep -qxF -- "$pat" "$GI" || echo "$pat" >>"$GI"
done

# ---------------------------------------------------------------------------
# 5. Verify that each Sidekiq loads with the intended library versions
# ---------------------------------------------------------------------------
G6=/usr/share/rubygems-integration/all/gems/sidekiq-6.4.1
G7="$S7_DIR/$GEMS_REL"
got6=$(ruby -I"$G6/lib" -e 'require "sidekiq"; require "redis"; require "connection_pool"
  print [Sidekiq::VERSION, Redis::VERSION, ConnectionPool::VERSION].join(" ")')
[[ "$got6" == "6.4.1 "* ]] || die "Sidekiq 6.4.1 does not load: $got6"
if [[ ! -f "$STAMP" ]] || [[ "$STAMP" -ot "$0" ]]; then
    got7=$(ruby -I"$G7/sidekiq-7.3.2/lib" -I"$G7/redis-client-0.22.2/lib" -I"$G7/connection_pool-2.4.1/lib" \
        -e 'require "sidekiq"; require "sidekiq/metrics/shared"; require "sidekiq/api"
            print [Sidekiq::VERSION, RedisClient::VERSION, ConnectionPool::VERSION].join(" ")')
    [[ "$got7" == "7.3.2 0.22.2 2.4.1" ]] || die "Sidekiq 7.3.2 does not load as expected: $got7"
    echo "$got7" >"$STAMP"
fi
got7=$(cat "$STAMP")

# ---------------------------------------------------------------------------
"$ROOT/scripts/setup-monitoring-tools.sh"

# ---------------------------------------------------------------------------
elapsed=$(( ($(date +%s%N) - START_NS) / 1000000 ))
read -r s6 rb6 cp6 <<<"$got6"
read -r s7 rc7 cp7 <<<"$got7"
echo "test services ready: redis-server $(redis-server --version | sed -E 's/.* v=([^ ]+).*/\1/');" \
     "sidekiq $s6 (redis-rb $rb6, connection_pool $cp6, sidekiq-cron ${vcron%%-*});" \
     "sidekiq $s7 (redis-client $rc7, connection_pool $cp7) in ${S7_DIR#"$ROOT"/};" \
     "promtool $(promtool --version 2>&1 | awk 'NR==1{print $3}'); installed_now=$APT_INSTALLED; ${elapsed} ms"
echo "$sid_line"
