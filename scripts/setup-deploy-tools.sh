#!/usr/bin/env bash
# Install what the tests of the Dockerfile and deploy/ use:
#
#   * Debian 12 packages: podman and buildah (build the image), mmdebstrap (its base root
#     filesystem, from this machine's own apt sources), uidmap, systemd (systemd-analyze for
#     the unit in deploy/systemd).
#
# hadolint and kubernetes-validate come from PyPI with the dev extras (scripts/setup.sh --dev);
# node and the CRD schema packages from setup-node-tools.sh.
# Idempotent; well under a second when everything is in place. Needs root (or sudo) for
# apt-get install.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=lib/common.sh
source "$ROOT/scripts/lib/common.sh"

apt_install_missing podman buildah mmdebstrap uidmap systemd

echo "deploy tools ready: $(podman --version), buildah $(buildah --version | awk '{print $3}')," \
     "mmdebstrap $(mmdebstrap --version | awk '{print $2}')," \
     "$(systemd-analyze --version | head -1)"
