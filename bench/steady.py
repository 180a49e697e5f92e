"""Steady state: the real daemon (`python -m exporter`) polling a fixture, measured from outside.

- CPU % of one core and RSS of the daemon process, from `/proc/<pid>/stat` and `/status`,
  while a simulated Sidekiq keeps beating (process hashes every 10 s, metric minutes) and one
  Prometheus-like scraper fetches `/metrics` every 15 s;
- `/metrics` latency of that scraper (median and p99), and of 10 concurrent scrapers;
- Redis commands caused by scrapes: `INFO commandstats` before and after a burst of scrapes
  that falls between two polls (retried if a poll lands inside it), minus the `INFO` calls.
"""

from __future__ import annotations

import http.client
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import redis

from bench.fixtures import Fixture
from tests.support.redis_server import free_port

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
_POLLS = re.compile(
    rb'^sidekiq_exporter_polls_total\{result="success",target="[^"]*"\} (\S+)$', re.M
)
_GAUGE = r'^{name}\{{target="[^"]*"\}} (\S+)$'


# What Prometheus 3 sends by default (scrape_protocols): OpenMetrics first, gzip.
PROMETHEUS_HEADERS = {
    "Accept": "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,"
    "application/openmetrics-text;version=0.0.1;q=0.5,"
    "text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,"
    "text/plain;version=0.0.4;q=0.3,*/*;q=0.2",
    "Accept-Encoding": "gzip",
}


def _cpu_seconds(pid: int) -> float:
    """utime + stime of `pid` (its threads included), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def _status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def daemon_env() -> dict[str, str]:
    """The daemon's environment: bytecode cached (in a directory of the benchmark's own), as
    an installed package has it (pip and the container image compile it at install time).
    Without it every start compiles the package from source, which leaves ~1.7 MiB more
    resident and is not how the exporter runs."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(_PYCACHE)
    return env


_PYCACHE = Path(tempfile.gettempdir()) / "sidekiq-exporter-bench-pycache"


def precompile() -> None:
    """Write the bytecode `daemon_env` uses (imports the daemon's modules once)."""
    subprocess.run(
        [sys.executable, "-c", "import exporter.cli"], env=daemon_env(), check=True, timeout=120
    )


class Daemon:
    """`python -m exporter` on a free loopback port, against `url`."""

    def __init__(self, url: str, log_path: Path, *, interval: str = "10s") -> None:
        self.port = free_port()
        self.log = log_path.open("wb")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "exporter",
                "--redis.url",
                url,
                "--web.listen-address",
                f"127.0.0.1:{self.port}",
                "--poll.interval",
                interval,
                "--target.name",
                "bench",
                "--log.level",
                "warning",
                "--log.format",
                "json",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=daemon_env(),
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"exporter exited with {self.proc.returncode}, see {log_path}")
            try:
                status, _ = self.get("/-/ready")
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"exporter not ready within 30 s, see {log_path}")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def get(self, path: str = "/metrics", gzip: bool = False) -> tuple[int, bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            headers = PROMETHEUS_HEADERS if gzip else {}
            connection.request("GET", path, headers=headers)
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    def timed_get(self, gzip: bool = False) -> float:
        started = time.perf_counter()
        status, body = self.get(gzip=gzip)
        elapsed = time.perf_counter() - started
        if status != 200 or not body:
            raise RuntimeError(f"/metrics answered {status}")
        return elapsed

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()


def polls_done(body: bytes) -> float:
    match = _POLLS.search(body)
    return float(match.group(1)) if match else 0.0


def gauge(body: bytes, name: str) -> float | None:
    match = re.search(_GAUGE.format(name=re.escape(name)).encode(), body, re.M)
    return float(match.group(1)) if match else None


def series_count(body: bytes) -> int:
    return sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))


@dataclass
class Burst:
    """Latencies of `scrapers` concurrent clients each fetching `per_scraper` times."""

    scrapers: int
    latencies: list[float]
    wall: float  # of the whole burst

    @property
    def per_scrape(self) -> float:
        """Server time per scrape: the burst's wall time over the scrapes it served."""
        return self.wall / len(self.latencies)


def burst(daemon: Daemon, scrapers: int, per_scraper: int, *, gzip: bool = False) -> Burst:
    started = time.perf_counter()
    with ThreadPoolExecutor(scrapers) as pool:
        results = list(pool.map(lambda _: daemon.timed_get(gzip), range(scrapers * per_scraper)))
    return Burst(scrapers, results, time.perf_counter() - started)


def _command_calls(client: redis.Redis) -> dict[str, int]:
    stats = client.info("commandstats")
    return {k: int(v["calls"]) for k, v in stats.items() if k != "cmdstat_info"}


def scrape_caused_commands(
    daemon: Daemon, client: redis.Redis, scrapers: int = 10, per_scraper: int = 5
) -> tuple[int, Burst]:
    """(Redis commands during a burst of scrapes between two polls, the burst). Nothing else
    may write to this Redis meanwhile; the caller pauses the simulated Sidekiq."""
    for _ in range(5):
        _, body = daemon.get()
        polls = polls_done(body)
        deadline = time.monotonic() + 30
        while polls_done(daemon.get()[1]) == polls and time.monotonic() < deadline:
            time.sleep(0.1)  # wait for the next poll, so the burst has a whole interval
        before = _command_calls(client)
        polls = polls_done(daemon.get()[1])
        result = burst(daemon, scrapers, per_scraper)
        after = _command_calls(client)
        if polls_done(daemon.get()[1]) == polls:  # no poll inside the window
            # The two scrapes that bracket the burst are included: they too send nothing.
            delta = sum(after.get(k, 0) - before.get(k, 0) for k in after)
            return delta, result
    raise RuntimeError("every burst overlapped a poll; interval too short for the burst")


@dataclass
class SteadyResult:
    label: str
    seconds: float
    interval: str
    scrape_every: float
    cpu_percent: float
    rss_kib_max: int
    rss_kib_median: int
    rss_kib_end: int
    hwm_kib: int
    polls: float
    round_trips: float | None
    poll_duration: float | None
    series: int
    body_bytes: int
    scrape_latencies: list[float]
    burst: Burst | None  # 10 concurrent scrapers between two polls (with `check_commands`)
    scrape_commands: int | None
    rss_samples: list[tuple[float, int]] = field(default_factory=list)


def run_steady(
    url: str,
    fixture: Fixture,
    *,
    seconds: float,
    log_dir: Path,
    interval: str = "10s",
    warmup: float = 15.0,
    scrape_every: float = 15.0,
    check_commands: bool = True,
    progress: Callable[[str], None] = print,
) -> SteadyResult:
    """The daemon at `interval` on `fixture` for `seconds`, with a simulated Sidekiq and one
    scraper every `scrape_every` s; then (`check_commands`) the Redis commands of a burst of
    scrapes between two polls."""
    stop = threading.Event()
    pause = threading.Event()

    def sidekiq() -> None:  # what the processes' heartbeats write every 10 s
        while not stop.wait(10.0):
            if not pause.is_set():
                fixture.refresh(beat_after=0)

    simulator = threading.Thread(target=sidekiq, daemon=True)
    fixture.refresh(beat_after=0)
    daemon = Daemon(
        url, log_dir / f"exporter-steady-{fixture.spec.slug}-{interval}.log", interval=interval
    )
    client = redis.Redis.from_url(url)
    latencies: list[float] = []
    rss: list[tuple[float, int]] = []
    try:
        simulator.start()
        time.sleep(warmup)
        cpu0, wall0 = _cpu_seconds(daemon.pid), time.monotonic()
        next_scrape = wall0
        while (elapsed := time.monotonic() - wall0) < seconds:
            if time.monotonic() >= next_scrape:
                latencies.append(daemon.timed_get(gzip=True))  # as Prometheus asks
                next_scrape += scrape_every
            rss.append((elapsed, _status_kib(daemon.pid, "VmRSS")))
            if len(rss) % 12 == 0:
                progress(f"  steady state: {elapsed:.0f}/{seconds:.0f} s, RSS {rss[-1][1]} KiB")
            time.sleep(min(5.0, max(0.0, seconds - elapsed)))
        cpu1, wall1 = _cpu_seconds(daemon.pid), time.monotonic()
        rss.append((wall1 - wall0, _status_kib(daemon.pid, "VmRSS")))
        hwm = _status_kib(daemon.pid, "VmHWM")
        _, body = daemon.get()
        commands: int | None = None
        concurrent: Burst | None = None
        if check_commands:
            pause.set()
            time.sleep(0.5)  # let a heartbeat in flight finish
            commands, concurrent = scrape_caused_commands(daemon, client)
            pause.clear()
        return SteadyResult(
            label=fixture.spec.label,
            seconds=wall1 - wall0,
            interval=interval,
            scrape_every=scrape_every,
            cpu_percent=100.0 * (cpu1 - cpu0) / (wall1 - wall0),
            rss_kib_max=max(kib for _, kib in rss),
            rss_kib_median=int(statistics.median(kib for _, kib in rss)),
            rss_kib_end=rss[-1][1],
            hwm_kib=hwm,
            polls=polls_done(body),
            round_trips=gauge(body, "sidekiq_exporter_redis_round_trips"),
            poll_duration=gauge(body, "sidekiq_exporter_poll_duration_seconds"),
            series=series_count(body),
            body_bytes=len(body),
            scrape_latencies=latencies,
            burst=concurrent,
            scrape_commands=commands,
            rss_samples=rss,
        )
    finally:
        stop.set()
        simulator.join(timeout=15)
        daemon.stop()
        client.close()


@dataclass
class RenderResult:
    series: int
    body_bytes: int
    single: list[float]  # one scraper, sequential
    single_gzip: list[float]
    concurrent: Burst
    concurrent_gzip: Burst


def run_render(url: str, *, log_dir: Path, repeats: int = 10, per_scraper: int = 5) -> RenderResult:
    """`/metrics` latency on a daemon polling `url`: sequential, then 10 concurrent scrapers."""
    daemon = Daemon(url, log_dir / "exporter-render.log")
    try:
        _, body = daemon.get()
        single = [daemon.timed_get() for _ in range(repeats)]
        single_gzip = [daemon.timed_get(gzip=True) for _ in range(repeats)]
        concurrent = burst(daemon, 10, per_scraper)
        concurrent_gzip = burst(daemon, 10, per_scraper, gzip=True)
        return RenderResult(
            series=series_count(body),
            body_bytes=len(body),
            single=single,
            single_gzip=single_gzip,
            concurrent=concurrent,
            concurrent_gzip=concurrent_gzip,
        )
    finally:
        daemon.stop()


def median_ms(values: list[float]) -> float:
    return 1e3 * statistics.median(values)


def import_rss_kib() -> int:
    """RSS of a Python that has only imported the daemon's modules: the libraries' share."""
    code = (
        "import exporter.cli\n"
        "print([l.split()[1] for l in open('/proc/self/status') if l.startswith('VmRSS')][0])"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=daemon_env()
    )
    return int(result.stdout.strip())


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile: with 20 values, p99 is the largest."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]
