"""The performance benchmark: `python -m bench [--quick]`, results in docs/performance.md.

On a private redis-server (loopback, no persistence) it builds Sidekiq 7.3-shaped fixtures and,
side by side, times (1) our poll (reader + derive), (2) Sidekiq's own Ruby API doing the
equivalent reads, timed inside Ruby (Debian's 6.4.1 and the unpacked 7.3.2), (3) the floor: our
poll's commands on a plain socket, parsed by hiredis. Then the same behind a 0.5 ms-each-way
delay, the daemon's steady state (CPU at a 10 s and a 1 s poll, RSS, scrape latency at ~20,000
series), where its memory goes, and `/metrics` render times. The full run takes ~22 minutes,
`--quick` ~5; neither is part of CI.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import redis

from bench import api, baseline, floor, memory, ours, proxy, report, steady
from bench.fixtures import Fixture, FixtureSpec, describe
from tests.support.redis_server import RedisServer
from tests.support.sidekiq import REPO_ROOT

# The commit the performance work started from: the "before" column.
# The last commit before the second performance round (histograms by GET, reused replies,
# the exposition writer): the "before" column.
BASELINE_REF = "d900aa9"
DELAY_SECONDS = 0.0005  # each way

FULL_LOOPBACK = (
    FixtureSpec(10, 10, 10),
    FixtureSpec(100, 10, 10),
    FixtureSpec(1_000, 10, 10),
    FixtureSpec(10_000, 10, 10),
    FixtureSpec(1_000, 10, 10, deep_queues=3, deep_jobs=100_000),
    FixtureSpec(100, 100, 10),
    FixtureSpec(100, 10, 200),
    FixtureSpec(100, 10, 2_000),
    FixtureSpec(1_000, 100, 200),
    FixtureSpec(10_000, 100, 2_000),
    FixtureSpec(10_000, 1_000, 2_000),
)
QUICK_LOOPBACK = (
    FixtureSpec(10, 10, 10),
    FixtureSpec(1_000, 10, 10),
    FixtureSpec(1_000, 10, 10, deep_queues=1, deep_jobs=20_000),
    FixtureSpec(100, 10, 2_000),
    FixtureSpec(1_000, 100, 200),
)
FULL_DELAY = (
    FixtureSpec(10, 10, 10),
    FixtureSpec(100, 10, 10),
    FixtureSpec(1_000, 10, 10),
    FixtureSpec(1_000, 100, 200),
    FixtureSpec(10_000, 10, 10),
)
QUICK_DELAY = (FixtureSpec(10, 10, 10), FixtureSpec(1_000, 10, 10))
STEADY = FixtureSpec(1_000, 100, 200)
RENDER_20K = FixtureSpec(1_000, 100, 350)  # ~20,000 series with the daemon's defaults
SCRAPE_EVERY = 15.0  # seconds, Prometheus's usual scrape interval


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def summary(wall: list[float], cpu: list[float], rounds: list[float]) -> dict[str, Any]:
    """Median wall and CPU over all samples, and the spread of the per-round medians."""
    return {
        "wall": statistics.median(wall),
        "cpu": statistics.median(cpu),
        "n": len(wall),
        "round_medians": rounds,
        "p10": sorted(wall)[len(wall) // 10],
        "p90": sorted(wall)[(len(wall) * 9) // 10],
    }


def measure_fixture(
    url: str,
    fixture: Fixture,
    *,
    rounds: int,
    versions: list[str],
    delayed: bool,
    quick: bool,
    baseline_dir: Path | None,
) -> dict[str, Any]:
    """Ours, the floor and the API on one fixture, interleaved over `rounds` rounds."""
    spec = fixture.spec
    fixture.refresh()
    batches = ours.capture_commands(url)
    samples: dict[str, dict[str, list[float]]] = {}
    extra: dict[str, dict[str, Any]] = {}

    def add(method: str, wall: list[float], cpu: list[float]) -> None:
        entry = samples.setdefault(method, {"wall": [], "cpu": [], "rounds": []})
        entry["wall"] += wall
        entry["cpu"] += cpu
        entry["rounds"].append(statistics.median(wall))

    huge = spec.queues >= 10_000
    # 1,000 processes: the API takes seconds per scrape there; one round, one timed scrape.
    api_once = spec.processes >= 1_000
    slow_version = "7.3.2" if "7.3.2" in versions else versions[-1] if versions else ""
    for index in range(rounds):
        fixture.refresh()
        poll = ours.time_polls(url, min_iterations=5 if delayed else 10, budget=0.6)
        add("ours", poll.wall, poll.cpu)
        extra["ours"] = {
            "round_trips": poll.round_trips,
            "commands": poll.commands,
            "queues": poll.queues,
            "processes": poll.processes,
            "running_jobs": poll.running_jobs,
            "class_minutes": poll.class_minutes,
        }
        if not delayed:
            fresh = ours.time_polls(url, min_iterations=5, budget=0.3, fresh_reader=True)
            add("ours fresh", fresh.wall, fresh.cpu)
        low = floor.time_floor(url, batches, min_iterations=5 if delayed else 10, budget=0.5)
        add("floor", low.wall, low.cpu)
        extra["floor"] = {
            "round_trips": low.round_trips,
            "commands": low.commands,
            "reply_bytes": low.reply_bytes,
        }
        if (delayed or api_once) and index > 0:
            continue  # under delay the API is slow and round-trip bound: one round is enough
        for version in versions:
            if delayed and huge and version != slow_version:
                continue  # 20,000 sequential round trips of ~1.2 ms: one version, once
            fixture.refresh()
            if delayed or api_once:
                times = api.time_api(
                    version, url, min_iterations=1 if huge else 2, budget=0, warmup=not huge
                )
            else:
                times = api.time_api(
                    version, url, min_iterations=2 if quick else 3, budget=1.0 if quick else 1.5
                )
            add(f"api {version}", times.wall, times.cpu)
            extra[f"api {version}"] = {"round_trips": times.round_trips, "commands": times.commands}
    if baseline_dir is not None:
        fixture.refresh()
        data = baseline.time_baseline(
            baseline_dir, url, budget=0.6, min_iterations=2 if api_once else 5
        )
        wall = [float(w) for w in data["wall"]]  # type: ignore[union-attr]
        cpu = [float(c) for c in data["cpu"]]  # type: ignore[union-attr]
        add("before", wall, cpu)
        extra["before"] = {"round_trips": data["round_trips"], "commands": data["commands"]}
    return {
        "fixture": asdict(spec) | {"label": spec.label},
        "methods": {
            name: summary(s["wall"], s["cpu"], s["rounds"]) | extra.get(name, {})
            for name, s in samples.items()
        },
    }


def machine() -> dict[str, Any]:
    import importlib.metadata
    import os

    import hiredis
    import redis as redis_py

    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    mem_kib = int(Path("/proc/meminfo").read_text().split()[1])

    def version(command: list[str]) -> str:
        try:
            return subprocess.run(
                command, capture_output=True, text=True, check=False
            ).stdout.strip()
        except OSError:
            return "not installed"

    return {
        "cpu": cpu,
        "cores": len(os.sched_getaffinity(0)),
        "memory_gib": round(mem_kib / 2**20, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "redis_py": redis_py.__version__,
        "hiredis": hiredis.__version__,
        "prometheus_client": importlib.metadata.version("prometheus-client"),
        "redis_server": version(["redis-server", "--version"]).split(" v=")[-1].split()[0],
        "ruby": version(["ruby", "--version"]).split(" (")[0],
        "sidekiq_versions": api.available(),
    }


def cpu_busy() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def loadavg() -> list[float]:
    return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, 30 s steady state")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "docs" / "performance.md")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument("--steady-seconds", type=float, help="override the steady-state length")
    parser.add_argument(
        "--baseline", default=BASELINE_REF, help="git ref of the 'before' column ('' to skip)"
    )
    parser.add_argument(
        "--skip",
        action="append",
        default=[],
        choices=["loopback", "delay", "steady", "memory", "api", "baseline"],
    )
    args = parser.parse_args(argv)
    quick: bool = args.quick
    started = time.time()
    busy0 = cpu_busy()
    results: dict[str, Any] = {
        "mode": "quick" if quick else "full",
        "machine": machine(),
        "started": started,
        "load_start": loadavg(),
        "command": "python -m bench" + (" --quick" if quick else ""),
    }
    versions = [] if "api" in args.skip else api.available()
    if not versions and "api" not in args.skip:
        log(
            "bench: Sidekiq's Ruby API is not installed (scripts/setup-test-services.sh); "
            "skipping the API columns"
        )
    log_dir = Path(tempfile.mkdtemp(prefix="sidekiq-exporter-bench-"))
    baseline_dir = None
    if args.baseline and "baseline" not in args.skip:
        baseline_dir = baseline.extract(args.baseline)
        if baseline_dir is None:
            log(f"bench: git ref {args.baseline!r} not found; no 'before' column")
    results["baseline_ref"] = args.baseline if baseline_dir else None
    rounds = 1 if quick else 3
    try:
        with RedisServer() as server:
            client = redis.Redis(port=server.port)
            if "loopback" not in args.skip:
                rows = []
                for spec in QUICK_LOOPBACK if quick else FULL_LOOPBACK:
                    fixture = Fixture(client, spec)
                    build = fixture.build()
                    log(f"loopback {spec.label}: built in {build:.1f} s, measuring")
                    row = measure_fixture(
                        server.url,
                        fixture,
                        rounds=rounds,
                        versions=versions,
                        delayed=False,
                        quick=quick,
                        baseline_dir=baseline_dir,
                    )
                    row["redis"] = describe(client)
                    rows.append(row)
                    log("  " + report.one_line(row))
                results["loopback"] = rows
            if "delay" not in args.skip:
                with proxy.delayed(server.port, DELAY_SECONDS) as port:
                    url = f"redis://127.0.0.1:{port}/0"
                    results["delay"] = {
                        "delay_each_way": DELAY_SECONDS,
                        "ping_rtt_via_proxy": proxy.ping_rtt(port),
                        "ping_rtt_direct": proxy.ping_rtt(server.port),
                        "rows": [],
                    }
                    log(
                        f"delay: PING {results['delay']['ping_rtt_via_proxy'] * 1e3:.2f} ms "
                        "through the proxy"
                    )
                    for spec in QUICK_DELAY if quick else FULL_DELAY:
                        fixture = Fixture(client, spec)
                        fixture.build()
                        log(f"delay {spec.label}: measuring")
                        row = measure_fixture(
                            url,
                            fixture,
                            rounds=rounds,
                            versions=versions,
                            delayed=True,
                            quick=quick,
                            baseline_dir=None,
                        )
                        results["delay"]["rows"].append(row)
                        log("  " + report.one_line(row))
            if "steady" not in args.skip or "memory" not in args.skip:
                steady.precompile()  # the daemon runs with its bytecode cached, as installed
                fixture = Fixture(client, STEADY)
                fixture.build()
                big = Fixture(redis.Redis(port=server.port, db=1), RENDER_20K)
                big.build()
                big_url = server.url_for_db(1)
            if "steady" not in args.skip:
                seconds = args.steady_seconds or (30.0 if quick else 300.0)
                log(f"steady state {STEADY.label}: {seconds:.0f} s at a 10 s interval")
                result = steady.run_steady(
                    server.url, fixture, seconds=seconds, log_dir=log_dir, progress=log
                )
                results["steady"] = asdict(result) | {"import_rss_kib": steady.import_rss_kib()}
                log(
                    f"  steady: CPU {result.cpu_percent:.2f} %, RSS max "
                    f"{result.rss_kib_max / 1024:.1f} MiB, scrape commands {result.scrape_commands}"
                )
                fast = 20.0 if quick else 60.0
                log(f"steady state {STEADY.label}: {fast:.0f} s at a 1 s interval")
                result = steady.run_steady(
                    server.url,
                    fixture,
                    seconds=fast,
                    log_dir=log_dir,
                    interval="1s",
                    warmup=10.0,
                    check_commands=False,
                    progress=log,
                )
                results["steady_1s"] = asdict(result)
                log(f"  1 s poll: CPU {result.cpu_percent:.2f} %")
                latency = args.steady_seconds or (45.0 if quick else 300.0)
                log(
                    f"scrape latency {RENDER_20K.label}: {latency:.0f} s at a 10 s interval, "
                    f"one scrape every {SCRAPE_EVERY:g} s"
                )
                result = steady.run_steady(
                    big_url,
                    big,
                    seconds=latency,
                    log_dir=log_dir,
                    scrape_every=SCRAPE_EVERY,
                    check_commands=False,
                    progress=log,
                )
                results["steady_20k"] = asdict(result)
                log(
                    f"  scrapes: median {steady.median_ms(result.scrape_latencies):.1f} ms, "
                    f"p99 {1e3 * steady.percentile(result.scrape_latencies, 0.99):.1f} ms "
                    f"({len(result.scrape_latencies)} scrapes)"
                )
                fixture.refresh()
                results["render_inprocess"] = [
                    {"label": STEADY.label} | asdict(ours.time_render(server.url))
                ]
                big.refresh()
                log(f"render {RENDER_20K.label}: daemon, 1 and 10 concurrent scrapers")
                render = steady.run_render(big_url, log_dir=log_dir, per_scraper=3 if quick else 5)
                results["render"] = asdict(render) | {"label": RENDER_20K.label}
                results["render_inprocess"].append(
                    {"label": RENDER_20K.label} | asdict(ours.time_render(big_url))
                )
            if "memory" not in args.skip:
                log("memory: imports by library, modules, tracemalloc of a running daemon")
                fixture.refresh()
                results["memory"] = {
                    "label": STEADY.label,
                    "steps": memory.import_steps(),
                    "modules": memory.top_modules(),
                    "heap": memory.heap(server.url, seconds=8.0 if quick else 20.0),
                }
    finally:
        if baseline_dir is not None:
            shutil.rmtree(baseline_dir, ignore_errors=True)
    busy1 = cpu_busy()
    results["finished"] = time.time()
    results["load_end"] = loadavg()
    results["machine_busy_percent"] = 100.0 * (busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1])
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report.markdown(results))
    log(f"bench: wrote {args.out} in {time.time() - started:.0f} s (logs in {log_dir})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
