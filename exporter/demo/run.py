"""`sidekiq-exporter-demo` (`python -m exporter.demo`): a private redis-server on a free loopback
port, the simulated cluster in it, and the exporter against it, so every family can be seen
without a Sidekiq of your own. Writes only to the Redis it started.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence

import redis

from exporter.demo.layout import V7, SidekiqWriter
from exporter.demo.simulation import Simulation


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_redis_server(directory: str) -> tuple[subprocess.Popen[bytes], int]:
    """A private redis-server on a free loopback port, without persistence."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit(
            "sidekiq-exporter-demo: error: redis-server is not installed "
            "(Debian: apt-get install redis-server)"
        )
    port = _free_port()
    server = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            directory,
        ],
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if redis.Redis(port=port, socket_timeout=1).ping():
                return server, port
        except redis.ConnectionError:
            time.sleep(0.05)
    server.kill()
    raise SystemExit("sidekiq-exporter-demo: error: redis-server did not start within 10 s")


def _simulate(writer: SidekiqWriter, stop: threading.Event) -> None:
    simulation = Simulation(writer)
    previous = time.time()
    while not stop.wait(0.5):
        now = time.time()
        simulation.step(now, now - previous)
        previous = now


def main(argv: Sequence[str] | None = None) -> int:
    """Start the private Redis and the simulation, then run the exporter against them."""
    from exporter.cli import main as exporter_main

    args = list(sys.argv[1:] if argv is None else argv)
    with tempfile.TemporaryDirectory(prefix="sidekiq-exporter-demo-") as directory:
        server, port = start_redis_server(directory)
        stop = threading.Event()
        writer = SidekiqWriter(redis.Redis(port=port), V7)
        thread = threading.Thread(target=_simulate, args=(writer, stop), daemon=True)
        thread.start()
        try:
            print(
                f"sidekiq-exporter-demo: simulated Sidekiq 7 cluster in redis://127.0.0.1:{port}/0",
                file=sys.stderr,
                flush=True,
            )
            os.environ.setdefault("SIDEKIQ_EXPORTER_TARGET_NAME", "demo")
            return exporter_main(["--redis.url", f"redis://127.0.0.1:{port}/0", *args])
        finally:
            stop.set()
            thread.join(timeout=5)
            server.terminate()
            server.wait(timeout=10)
