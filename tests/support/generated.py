"""Files rendered from the code and committed, so a change to them shows in review.

`.venv/bin/python -m tests.support.generated` rewrites every one of them; the tests compare
each committed file with a fresh render (`stale`) and fail with a diff when they differ.
"""

from __future__ import annotations

import difflib
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from exporter import reference
from tests.support import golden

ROOT = Path(__file__).resolve().parents[2]
REGENERATE = ".venv/bin/python -m tests.support.generated"

# Path (from the repository root) -> its renderer.
GENERATED: dict[str, Callable[[], bytes]] = {
    "tests/golden/metrics.txt": golden.render_text,
    "tests/golden/metrics.openmetrics.txt": golden.render_openmetrics,
    "docs/metrics.md": lambda: reference.metrics_reference().encode(),
    "docs/configuration.md": lambda: reference.configuration_reference().encode(),
}

_MAX_DIFF_LINES = 60


def stale(path: str) -> str | None:
    """None if the committed `path` is what its renderer gives now, else a message with a diff."""
    rendered = GENERATED[path]()
    file = ROOT / path
    committed = file.read_bytes() if file.exists() else b""
    if committed == rendered:
        return None
    diff = list(
        difflib.unified_diff(
            committed.decode("utf-8", "replace").splitlines(),
            rendered.decode("utf-8", "replace").splitlines(),
            f"{path} (committed)",
            f"{path} (rendered now)",
            lineterm="",
        )
    )
    shown = "\n".join(diff[:_MAX_DIFF_LINES])
    more = (
        f"\n... {len(diff) - _MAX_DIFF_LINES} more diff lines"
        if len(diff) > _MAX_DIFF_LINES
        else ""
    )
    return (
        f"{path} is not what the code renders now. If the change is intended, run "
        f"`{REGENERATE}` and commit the result.\n{shown}{more}"
    )


def main(argv: Sequence[str]) -> int:
    """Rewrite every generated file (or only `argv`'s paths); print the ones that changed."""
    for path in argv or GENERATED:
        if path not in GENERATED:
            print(f"not a generated file: {path} (known: {', '.join(GENERATED)})", file=sys.stderr)
            return 2
        file = ROOT / path
        rendered = GENERATED[path]()
        if file.exists() and file.read_bytes() == rendered:
            continue
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_bytes(rendered)
        print(f"rewrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
