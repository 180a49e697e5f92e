"""Where the daemon's resident memory goes: imports by library, the modules that add the most
while they load, and the Python heap in steady state (tracemalloc).

Each measurement runs in a fresh subprocess (with the daemon's environment, bytecode cached),
so the benchmark's own imports count for nothing:

    python -m bench.memory steps            # RSS after each library in import order (JSON)
    python -m bench.memory modules N        # the N modules whose own import adds most RSS
    python -m bench.memory heap URL SECONDS # tracemalloc of the daemon polling URL (in-process)
"""

from __future__ import annotations

import sys
from typing import Any

# Only `sys` and `typing` here: the subprocess side measures from a bare interpreter, so
# everything else is imported where it is used.

# In the order the daemon's import pulls them in; each step adds what the previous ones did
# not already load. `exporter.cli` last: the daemon's own modules and anything left.
IMPORT_STEPS = (
    "asyncio",
    "structlog",
    "yarl",
    "aiohttp.web",
    "redis.asyncio",
    "prometheus_client",
    "exporter.cli",
)


def _rss_kib() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 // 1024


def _run(*args: str) -> Any:
    # Imported here: the subprocess side must start from a bare interpreter.
    import json
    import subprocess

    from bench.steady import daemon_env
    from tests.support.sidekiq import REPO_ROOT

    result = subprocess.run(
        [sys.executable, "-m", "bench.memory", *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
        env=daemon_env(),
        cwd=REPO_ROOT,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def import_steps() -> list[tuple[str, int]]:
    """[(step, RSS KiB after it)], the first being the interpreter alone."""
    return [(name, int(kib)) for name, kib in _run("steps")]


def top_modules(count: int = 12) -> list[dict[str, Any]]:
    """The modules whose own import (not their imports') grew RSS most: name, KiB."""
    result: list[dict[str, Any]] = _run("modules", str(count))
    return result


def heap(url: str, seconds: float = 12.0) -> dict[str, Any]:
    """tracemalloc of a daemon (`cli.serve`, 2 s polls, a gzip scrape every 2 s) on `url`:
    current and peak traced bytes after the imports, and the top allocation sites alive."""
    result: dict[str, Any] = _run("heap", url, str(seconds))
    return result


# --------------------------------------------------------------------------- subprocess side


def _steps() -> None:
    out = [("python", _rss_kib())]
    import importlib

    for name in IMPORT_STEPS:
        importlib.import_module(name)
        out.append((name, _rss_kib()))
    import json

    print(json.dumps(out))


def _modules(count: int) -> None:
    """RSS growth per module during its own execution, less its children's (a meta-path hook
    wraps each loader's exec_module)."""
    import importlib
    import importlib.abc
    import importlib.machinery
    import json

    stack: list[list[Any]] = []
    own: dict[str, int] = {}

    class Timed(importlib.abc.Loader):
        def __init__(self, name: str, loader: Any) -> None:
            self.name, self.loader = name, loader

        def create_module(self, spec: importlib.machinery.ModuleSpec) -> Any:
            return self.loader.create_module(spec)

        def exec_module(self, module: Any) -> None:
            stack.append([self.name, _rss_kib(), 0])
            try:
                self.loader.exec_module(module)
            finally:
                name, start, children = stack.pop()
                total = _rss_kib() - start
                own[name] = total - children
                if stack:
                    stack[-1][2] += total

    class Finder(importlib.abc.MetaPathFinder):
        def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
            for finder in sys.meta_path:
                if finder is self or not hasattr(finder, "find_spec"):
                    continue
                spec = finder.find_spec(name, path, target)
                if spec is not None:
                    if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                        spec.loader = Timed(name, spec.loader)
                    return spec
            return None

    sys.meta_path.insert(0, Finder())
    importlib.import_module("exporter.cli")
    top = sorted(own.items(), key=lambda item: -item[1])[:count]
    print(json.dumps([{"module": name, "kib": kib} for name, kib in top]))


def _heap(url: str, seconds: float) -> None:
    import asyncio
    import http.client
    import json
    import os
    import tracemalloc

    from exporter import cli
    from exporter.settings import load_settings
    from tests.support.redis_server import free_port

    port = free_port()
    args = ["--redis.url", url, "--web.listen-address", f"127.0.0.1:{port}"]
    args += ["--poll.interval", "2s", "--log.level", "error"]
    settings = load_settings(args, {}, stdout_is_tty=False)
    root = os.getcwd() + os.sep

    def scrape() -> int:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            connection.request("GET", "/metrics", headers={"Accept-Encoding": "gzip"})
            return len(connection.getresponse().read())
        finally:
            connection.close()

    async def run() -> tracemalloc.Snapshot:
        stop = asyncio.Event()
        task = asyncio.create_task(cli.serve(settings, stop=stop))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while loop.time() < deadline:
            await asyncio.sleep(2.0)
            await asyncio.to_thread(scrape)
        snapshot = tracemalloc.take_snapshot()
        stop.set()
        await task
        return snapshot

    tracemalloc.start(1)
    started = tracemalloc.take_snapshot()
    tracemalloc.reset_peak()
    rss_before = _rss_kib()
    snapshot = asyncio.run(run())
    current, peak = tracemalloc.get_traced_memory()
    base = sum(stat.size for stat in started.statistics("filename"))
    stats = snapshot.compare_to(started, "lineno")
    top = []
    for stat in stats[:12]:
        frame = stat.traceback[0]
        where = frame.filename.removeprefix(root)
        if "site-packages/" in where:
            where = where.split("site-packages/", 1)[1]
        elif "/lib/python3" in where:
            where = "stdlib " + where.rsplit("/lib/python3", 1)[1].split("/", 1)[1]
        top.append(
            {"where": f"{where}:{frame.lineno}", "kib": stat.size_diff / 1024, "count": stat.count}
        )
    print(
        json.dumps(
            {
                "seconds": seconds,
                "alive_kib": sum(stat.size_diff for stat in stats) / 1024,
                "peak_kib": (peak - base) / 1024,
                "current_kib": (current - base) / 1024,
                "rss_kib_before": rss_before,
                "rss_kib_after": _rss_kib(),
                "top": top,
            }
        )
    )


def main() -> None:
    what = sys.argv[1]
    if what == "steps":
        _steps()
    elif what == "modules":
        _modules(int(sys.argv[2]))
    elif what == "heap":
        _heap(sys.argv[2], float(sys.argv[3]))
    else:
        raise SystemExit(f"unknown measurement {what!r}")


if __name__ == "__main__":
    main()
