#!/usr/bin/env bash
# Install node, npm and the npm packages the tests use, in one place:
#
#   * node and npm: those on PATH (node 20 on the project's machines), else Debian's nodejs
#     and npm;
#   * the exact npm packages of tests/node/package-lock.json, with `npm ci`, into
#     .cache/node-tools/ (git-ignored): Grafana's published dashboard types and
#     ts-json-schema-generator (tests/test_dashboards.py), the KEDA and prometheus-operator
#     CRD models that tests/node/validate-crds.mjs checks deploy/ against.
#
# The @kubernetes-models packages declare node >= 22 but run on node 20 (the deploy tests run
# them there); their releases that declare an older node know neither KEDA's
# `fallback.behavior` nor `keep_firing_for`, which deploy/ uses.
#
# Idempotent; well under a second while tests/node/package*.json are unchanged. Needs root (or
# sudo) only when node or npm is missing.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SRC="$ROOT/tests/node"
DEST="$ROOT/.cache/node-tools"
# shellcheck source=lib/common.sh
source "$ROOT/scripts/lib/common.sh"

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    apt_install_missing nodejs npm
fi

want=$(cat "$SRC/package.json" "$SRC/package-lock.json" | sha256sum | cut -d' ' -f1)
if [[ "$(cat "$DEST/.complete" 2>/dev/null || true)" != "$want" ]]; then
    log "installing the npm packages of tests/node into ${DEST#"$ROOT"/}"
    rm -rf "$DEST"
    mkdir -p "$DEST"
    cp "$SRC/package.json" "$SRC/package-lock.json" "$DEST/"
    (cd "$DEST" && npm ci --no-audit --no-fund --loglevel=error >&2)
    echo "$want" >"$DEST/.complete"
fi

echo "node tools ready: node $(node --version), npm $(npm --version); the packages of" \
     "tests/node/package-lock.json in ${DEST#"$ROOT"/}"
