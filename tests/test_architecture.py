"""docs/architecture.md's table of rooms names every module of the package, and only those."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_module_has_a_room_and_every_room_a_module() -> None:
    page = (ROOT / "docs/architecture.md").read_text()
    table = page.split("## Rooms", 1)[1].split("\n## ", 1)[0]
    named = {
        name
        for row in table.splitlines()
        if row.startswith("| `")
        for name in re.findall(r"`([\w/.]+)`", row.split(" | ")[0])
    }
    package = ROOT / "exporter"
    modules = {
        str(path.relative_to(package))
        for path in package.rglob("*.py")
        if path.name != "__init__.py" and path.parent.name != "demo"
    } | {"demo/"}
    assert named == modules
