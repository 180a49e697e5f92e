#!/usr/bin/env bash
# Sets up the Python environment in .venv: the exporter, and with --dev the test tools.
#
# Idempotent and quick when nothing changed (a stamp records what was installed). On a fresh
# Debian 12 it installs python3-venv first (needs root or sudo).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
extras=""
[[ "${1:-}" == "--dev" ]] && extras="[dev]"

# shellcheck source=lib/common.sh
source "$ROOT/scripts/lib/common.sh"

PYTHON="${PYTHON:-python3}"
if ! command -v "$PYTHON" >/dev/null; then
    apt_install_missing python3 python3-venv
fi
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    die "Python >= 3.11 is required ($PYTHON: $("$PYTHON" --version 2>&1 || echo missing))"
fi
if [[ ! -x .venv/bin/python ]]; then
    if ! "$PYTHON" -m venv --help >/dev/null 2>&1 || ! "$PYTHON" -c 'import ensurepip' 2>/dev/null; then
        apt_install_missing python3-venv
    fi
    log "creating .venv"
    "$PYTHON" -m venv .venv
fi

stamp=".venv/.setup-stamp"
want="$(sha256sum pyproject.toml | cut -d' ' -f1)$extras"
# A dev install also satisfies a plain one.
case "$(cat "$stamp" 2>/dev/null || true)" in
    "$want" | "$want[dev]") ;;
    *)
        log "installing sidekiq-exporter${extras} into .venv"
        .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip >/dev/null
        .venv/bin/python -m pip install -q --disable-pip-version-check -e ".${extras}"
        echo "$want" > "$stamp"
        ;;
esac
