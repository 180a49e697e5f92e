"""Starts and stops `bench.delay_proxy` (a separate process) in front of a loopback Redis."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis

from tests.support.sidekiq import REPO_ROOT


@contextmanager
def delayed(upstream_port: int, delay: float) -> Iterator[int]:
    """A delay proxy to 127.0.0.1:`upstream_port` while the block runs; yields its port."""
    port_file = Path(tempfile.mkdtemp(prefix="bench-proxy-")) / "port"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench.delay_proxy",
            "--upstream",
            f"127.0.0.1:{upstream_port}",
            "--delay",
            repr(delay),
            "--port-file",
            str(port_file),
        ],
        cwd=REPO_ROOT,
        stdin=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while not port_file.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("delay proxy did not start")
            time.sleep(0.02)
        yield int(port_file.read_text())
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        port_file.unlink(missing_ok=True)
        os.rmdir(port_file.parent)


def ping_rtt(port: int, count: int = 200) -> float:
    """Median seconds of a PING round trip to 127.0.0.1:`port` (redis-py, synchronous)."""
    client = redis.Redis(port=port)
    try:
        client.ping()
        times = []
        for _ in range(count):
            started = time.perf_counter()
            client.ping()
            times.append(time.perf_counter() - started)
    finally:
        client.close()
    return statistics.median(times)
