"""Our poll at an older commit, for the before/after table of the performance work.

`extract(ref)` copies `exporter/` as it was at git `ref` into a temporary directory (`git
archive`, which only reads the repository); `time_baseline` then times the poll in a
subprocess that imports that copy instead of the working tree's `exporter`.

    python -m bench.baseline URL [budget] [min_iterations]   # prints one JSON line
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path

from tests.support.sidekiq import REPO_ROOT


def extract(ref: str) -> Path | None:
    """`exporter/` at `ref` in a new temporary directory; None if git cannot produce it."""
    result = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "archive", "--format=tar", ref, "exporter"],
        capture_output=True,
        check=False,
    )
    if result.returncode != 0:
        return None
    directory = Path(tempfile.mkdtemp(prefix="sidekiq-exporter-baseline-"))
    with tarfile.open(fileobj=BytesIO(result.stdout)) as archive:
        archive.extractall(directory, filter="data")
    return directory


def time_baseline(
    directory: Path, url: str, *, budget: float, min_iterations: int
) -> dict[str, object]:
    """Poll times of the `exporter` copy in `directory` (a subprocess: its imports are its own)."""
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))  # for `bench` and `tests`
    # `python -m` puts the working directory first on sys.path, ahead of PYTHONPATH and the
    # editable install: that is what makes `exporter` the old copy.
    result = subprocess.run(
        [sys.executable, "-m", "bench.baseline", url, str(budget), str(min_iterations)],
        cwd=directory,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"baseline poll failed:\n{result.stderr}")
    data: dict[str, object] = json.loads(result.stdout.strip().splitlines()[-1])
    return data


def main() -> None:
    import exporter
    from bench.ours import time_polls

    url, budget, min_iterations = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
    times = time_polls(url, min_iterations=min_iterations, budget=budget)
    print(
        json.dumps(
            {
                "exporter": str(Path(exporter.__file__).parent),
                "wall": times.wall,
                "cpu": times.cpu,
                "round_trips": times.round_trips,
                "commands": times.commands,
            }
        )
    )


if __name__ == "__main__":
    main()
