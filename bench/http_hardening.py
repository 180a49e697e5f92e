"""The HTTP side under attack, before and after the hardening: `python -m bench.http_hardening`.

1. Credential checks: a valid user whose credentials are not remembered yet (the first scrape
   after a restart, or a new user) scrapes while 100, then 200 clients send wrong passwords as
   fast as they get answers (each sends its next request when the previous one is answered).
   The flood comes from 127.0.0.1, the valid user from 127.0.0.2. Each sample is another
   user of the web config (the same bcrypt hash, cost 10), so none is remembered.
2. Scrape latency: sequential `GET /metrics` (no web config; Redis down, so the body is the
   ~3 KB of self-metrics and what is timed is the HTTP path itself), on one keep-alive
   connection and on a new connection each; then keep-alive behind basic auth (a remembered
   user). The daemons of both trees run side by side and are scraped in alternating rounds,
   so a change in the machine's load hits both alike.

Both run against the daemon (`python -m exporter`) of the working tree and of `--ref` (the
commit before the hardening, extracted with `git archive`, see bench/baseline.py). Prints a
Markdown table and one JSON line. Takes about 8 minutes; not part of CI.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import http.client
import json
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import bcrypt

from bench.baseline import extract
from tests.support.redis_server import free_port
from tests.support.sidekiq import REPO_ROOT

BASELINE_REF = "98e13a4"  # the last commit before the HTTP hardening
PASSWORD = "bench-password"
VALID_USERS = 8  # one sample each: every sample is a credential not checked before
FLOODS = (100, 200)
FLOOD_WARM_UP_SECONDS = 2.0
SCRAPE_ROUNDS = 8
SCRAPES_PER_ROUND = 300


@contextlib.contextmanager
def daemon(tree: Path, web_config: Path | None) -> Iterator[int]:
    """`python -m exporter` of the `exporter/` in `tree`, Redis down; yields its port."""
    port = free_port()
    args = ["--web.config.file", str(web_config)] if web_config else []
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "exporter",
                "--redis.url",
                f"redis://127.0.0.1:{free_port()}/0",
                "--web.listen-address",
                f"127.0.0.1:{port}",
                "--log.level",
                "error",
                *args,
            ],
            cwd=tree,  # `python -m` puts the cwd first on sys.path: that tree's exporter
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 30
            while True:
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    raise RuntimeError(f"exporter did not start:\n{log.read().decode()[-2000:]}")
                with contextlib.suppress(OSError):
                    socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                    break
                time.sleep(0.05)
            yield port
        finally:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


async def credential_latency(port: int, clients: int) -> dict[str, Any]:
    """The valid users' latencies (s) while `clients` send wrong passwords; what they got."""
    url = f"http://127.0.0.1:{port}/metrics"
    stop = asyncio.Event()
    statuses: Counter[int] = Counter()

    async def flood(session: aiohttp.ClientSession, client: int) -> None:
        attempt = 0
        while not stop.is_set():
            attempt += 1
            try:
                async with session.get(url, headers=basic("admin", f"x{client}-{attempt}")) as r:
                    await r.read()
                    statuses[r.status] += 1
            except aiohttp.ClientError:
                statuses[0] += 1  # refused or closed: try again
                await asyncio.sleep(0.01)

    timeout = aiohttp.ClientTimeout(total=120)
    latencies = []
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=timeout) as bad,
        aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(local_addr=("127.0.0.2", 0), force_close=True),
            timeout=timeout,
        ) as good,
    ):
        tasks = [asyncio.create_task(flood(bad, client)) for client in range(clients)]
        await asyncio.sleep(FLOOD_WARM_UP_SECONDS)
        for user in range(VALID_USERS):
            started = time.perf_counter()
            async with good.get(url, headers=basic(f"user{user}", PASSWORD)) as response:
                await response.read()
                if response.status != 200:
                    raise RuntimeError(f"the valid user got {response.status}")
            latencies.append(time.perf_counter() - started)
        stop.set()
        await asyncio.gather(*tasks)
    return {
        "clients": clients,
        "median_ms": statistics.median(latencies) * 1000,
        "max_ms": max(latencies) * 1000,
        "samples": len(latencies),
        "flood_answers": dict(sorted(statuses.items())),
    }


def scrape_times(port: int, headers: dict[str, str], *, keep_alive: bool) -> list[float]:
    """Seconds each of SCRAPES_PER_ROUND sequential `GET /metrics` took."""
    times = []
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        for _ in range(SCRAPES_PER_ROUND):
            if not keep_alive:
                connection.close()
            started = time.perf_counter()
            connection.request("GET", "/metrics", headers=headers)
            response = connection.getresponse()
            response.read()
            times.append(time.perf_counter() - started)
            if response.status != 200:
                raise RuntimeError(f"/metrics answered {response.status}")
    finally:
        connection.close()
    return times


def scrape_latency(trees: dict[str, Path], web_config: Path) -> dict[str, dict[str, Any]]:
    """Per tree and way of scraping: the median and p90 (ms) of all scrapes, and the lowest
    and highest median of a round."""
    ways = {
        "scrape_keep_alive": (None, {}, True),
        "scrape_new_connection": (None, {}, False),
        "scrape_basic_auth": (web_config, basic("admin", PASSWORD), True),
    }
    with contextlib.ExitStack() as stack:
        ports = {
            (name, way): stack.enter_context(daemon(tree, config))
            for name, tree in trees.items()
            for way, (config, _, _) in ways.items()
        }
        samples: dict[tuple[str, str], list[float]] = {key: [] for key in ports}
        rounds: dict[tuple[str, str], list[float]] = {key: [] for key in ports}
        for _ in range(SCRAPE_ROUNDS):
            for (name, way), port in ports.items():
                _, headers, keep_alive = ways[way]
                times = scrape_times(port, headers, keep_alive=keep_alive)
                samples[(name, way)] += times
                rounds[(name, way)].append(statistics.median(times) * 1000)
    results: dict[str, dict[str, Any]] = {name: {} for name in trees}
    for (name, way), times in samples.items():
        times.sort()
        results[name][way] = {
            "median_ms": statistics.median(times) * 1000,
            "p90_ms": times[len(times) * 9 // 10] * 1000,
            "round_medians_ms": [min(rounds[(name, way)]), max(rounds[(name, way)])],
        }
    return results


def credentials(tree: Path, web_config: Path) -> list[dict[str, Any]]:
    """The valid users' latencies under each flood, on a daemon of `tree`."""
    result = []
    for clients in FLOODS:
        with daemon(tree, web_config) as port:
            result.append(asyncio.run(credential_latency(port, clients)))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref", default=BASELINE_REF, help="the commit to compare with")
    ref = parser.parse_args().ref
    before_tree = extract(ref)
    if before_tree is None:
        raise SystemExit(f"git cannot produce exporter/ at {ref}")
    directory = Path(tempfile.mkdtemp(prefix="bench-http-"))
    try:
        hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(10)).decode()
        users = "".join(f"  user{i}: '{hashed}'\n" for i in range(VALID_USERS))
        web_config = directory / "web.yml"
        web_config.write_text(f"basic_auth_users:\n  admin: '{hashed}'\n{users}")
        trees = {"before": before_tree, "after": REPO_ROOT}
        results: dict[str, dict[str, Any]] = {}
        for name, tree in trees.items():
            print(f"credential checks, {name}", file=sys.stderr, flush=True)
            results[name] = {"credentials": credentials(tree, web_config)}
        print("scrape latency, both side by side", file=sys.stderr, flush=True)
        for name, ways in scrape_latency(trees, web_config).items():
            results[name].update(ways)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
        shutil.rmtree(before_tree, ignore_errors=True)
    print(report(ref, results["before"], results["after"]))
    print(json.dumps({"ref": ref, **results}))


def report(ref: str, before: dict[str, Any], after: dict[str, Any]) -> str:
    lines = [
        f"| measure | before ({ref}) | after |",
        "|---|---|---|",
    ]
    for old, new in zip(before["credentials"], after["credentials"], strict=True):
        lines.append(
            f"| valid uncached user, {old['clients']} wrong-password clients: median / max ms "
            f"| {old['median_ms']:.0f} / {old['max_ms']:.0f} "
            f"| {new['median_ms']:.0f} / {new['max_ms']:.0f} |"
        )
        lines.append(
            f"| flood answers, {old['clients']} clients (status: count) "
            f"| {old['flood_answers']} | {new['flood_answers']} |"
        )
    for key, name in (
        ("scrape_keep_alive", "`/metrics`, keep-alive"),
        ("scrape_new_connection", "`/metrics`, a connection each"),
        ("scrape_basic_auth", "`/metrics`, basic auth (remembered), keep-alive"),
    ):
        cells = [
            f"{side[key]['median_ms']:.2f} / {side[key]['p90_ms']:.2f} (rounds "
            f"{side[key]['round_medians_ms'][0]:.2f}–{side[key]['round_medians_ms'][1]:.2f})"
            for side in (before, after)
        ]
        lines.append(f"| {name}: median / p90 ms | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
