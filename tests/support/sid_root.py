"""The Debian sid root the tests run Sidekiq 8.1, Redis 8 and Valkey 9 from (chroot).

scripts/setup-sid-root.sh builds it into .cache/sid-root; scripts/in-sid-root.sh runs one
command in it as the invoking user, keeping the pid, the network (loopback is shared), the
environment and the paths of the temp directory and this repository.
"""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
SID_ROOT = REPO_ROOT / ".cache" / "sid-root"
STAMP = SID_ROOT / ".sid-root-stamp"
IN_SID_ROOT = REPO_ROOT / "scripts" / "in-sid-root.sh"
SETUP_HINT = "run `sudo scripts/setup-test-services.sh` (it builds .cache/sid-root)"


def built() -> bool:
    """True once scripts/setup-sid-root.sh has finished a root here."""
    return STAMP.is_file()


def command(*argv: str) -> list[str]:
    """The command line that runs ``argv`` inside the root."""
    return [str(IN_SID_ROOT), *argv]


def host_path(path: str | Path) -> Path:
    """Where the root's absolute ``path`` lies on this machine."""
    return SID_ROOT / Path(path).relative_to("/")


def stamp() -> dict[str, str]:
    """The stamp's ``name version`` lines (``sidekiq``, ``redis-server``, ``deb <package>``…)."""
    if not built():
        return {}
    facts: dict[str, str] = {}
    for line in STAMP.read_text().splitlines()[1:]:
        words = line.split()
        if words and words[0] == "deb" and len(words) == 3:
            facts[f"deb {words[1]}"] = words[2]
        elif len(words) >= 2:
            # "sidekiq 8.1.7 ruby 3.3.8 …": pairs of name and version on one line
            facts.update(zip(words[0::2], words[1::2], strict=False))
    return facts
