#!/usr/bin/env bash
# Run one command inside the Debian sid root (.cache/sid-root, scripts/setup-sid-root.sh).
#
#   scripts/in-sid-root.sh COMMAND [ARGS...]
#   e.g. scripts/in-sid-root.sh valkey-server --port 7000 --save ''
#
# * The command runs as the invoking user, with the environment and working directory of the
#   caller, and with the SAME process id: every step execs the next, so a caller's SIGTERM
#   reaches the program itself and its pid is the one Sidekiq writes into its identity.
# * The network is the host's (no network namespace): servers in the root listen on the
#   host's loopback, and programs in it reach the host's.
# * In a private mount namespace that ends with the command, /proc (Sidekiq reads its RSS
#   there), the temp directory (${TMPDIR:-/tmp}) and this repository are mounted at their own
#   paths inside the root, so a path means the same file inside and outside: a test's temp
#   dir, a log file, tests/sidekiq_app/app.rb. Nothing stays mounted after the command exits.
# As root: `unshare --mount`, then `chroot --userspec`. Otherwise an unprivileged user
# namespace (`unshare --map-root-user`), where the files it writes still belong to the caller.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SID_ROOT="$REPO/.cache/sid-root"
if (($# == 0)); then
    echo "usage: $0 COMMAND [ARGS...]" >&2
    exit 2
fi
if [[ ! -f "$SID_ROOT/.sid-root-stamp" ]]; then
    echo "in-sid-root: $SID_ROOT is not built; run scripts/setup-test-services.sh" >&2
    exit 1
fi
TMP=$(realpath "${TMPDIR:-/tmp}")

# Runs in the new mount namespace: $1 root, $2 repo, $3 temp dir, $4 cwd, $5 chroot options.
INNER='set -e
root=$1 repo=$2 tmp=$3 cwd=$4 userspec=$5
shift 5
mount --rbind /proc "$root/proc"
for dir in "$tmp" "$repo"; do
    mkdir -p "$root$dir"
    mount --bind "$dir" "$root$dir"
done
[ -d "$root$cwd" ] || cwd=/
exec chroot $userspec "$root" /usr/bin/env --chdir="$cwd" "$@"'

if [[ $(id -u) -eq 0 ]]; then
    exec unshare --mount --propagation private -- /bin/sh -c "$INNER" in-sid-root \
        "$SID_ROOT" "$REPO" "$TMP" "$PWD" "--userspec=$(id -u):$(id -g)" "$@"
fi
exec unshare --map-root-user --mount --propagation private -- /bin/sh -c "$INNER" in-sid-root \
    "$SID_ROOT" "$REPO" "$TMP" "$PWD" "" "$@"
