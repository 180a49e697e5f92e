"""The npm packages the tests use: tests/node/package.json, installed into .cache/node-tools.

scripts/setup-node-tools.sh runs `npm ci` there; a missing install fails the test that needs it
with that command, never a skip.
"""

from __future__ import annotations

import shutil
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
VALIDATE_CRDS = REPO_ROOT / "tests" / "node" / "validate-crds.mjs"
NODE_MODULES = REPO_ROOT / ".cache" / "node-tools" / "node_modules"
SETUP_HINT = "run `scripts/setup-node-tools.sh` (node, and `npm ci` of tests/node)"


def node() -> str:
    """The `node` executable, once the packages are installed; AssertionError if not."""
    path = shutil.which("node")
    if path is None or not NODE_MODULES.is_dir():
        raise AssertionError(f"node or {NODE_MODULES.relative_to(REPO_ROOT)} missing: {SETUP_HINT}")
    return path
