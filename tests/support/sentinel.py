"""A real Redis Sentinel (Debian's `redis-sentinel`) on 127.0.0.1, for failover tests.

    with RedisServer() as master, RedisServer("--replicaof", "127.0.0.1", str(master.port)):
        with SentinelServer(master.port, password="pw") as sentinel:
            sentinel.wait_for_replicas(1)
            sentinel.failover()
            sentinel.wait_for_master(replica.port)

Each Sentinel monitors one master (`mymaster`, quorum 1) with short timeouts, so a failover
takes about a second. Every wait is bounded; the process is always reaped on exit.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Self

from .processes import StartCleanupContext, kill_process, log_file_tail, stop_process
from .redis_server import SETUP_HINT, RespConnection, RespError, RespValue, free_port

MASTER_NAME = "mymaster"


def sentinel_command() -> list[str]:
    """`redis-sentinel` (Debian package redis-sentinel), else `redis-server --sentinel`."""
    binary = shutil.which("redis-sentinel")
    if binary is not None:
        return [binary]
    server = shutil.which("redis-server")
    if server is None:
        raise RuntimeError(f"redis-sentinel is not installed; {SETUP_HINT}")
    return [server]  # with "--sentinel" after the config file


def _flat_dict(reply: RespValue) -> dict[str, str]:
    items = list(reply or [])
    return dict(zip(items[0::2], items[1::2], strict=True))


class SentinelServer(StartCleanupContext):
    """One `redis-sentinel` monitoring the master on `master_port` as `master_name`."""

    def __init__(
        self,
        master_port: int,
        *,
        master_name: str = MASTER_NAME,
        password: str | None = None,
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 3000,
        startup_timeout: float = 10.0,
    ) -> None:
        self.master_port = master_port
        self.master_name = master_name
        self.password = password
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.startup_timeout = startup_timeout
        self.port = 0
        self.dir = Path(tempfile.mkdtemp(prefix="sentinel-test-"))
        self.config_path = self.dir / "sentinel.conf"
        self.log_path = self.dir / "sentinel.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    # --- lifecycle -------------------------------------------------------------------------
    def start(self) -> Self:
        for attempt in range(3):
            self.port = free_port()
            self._spawn()
            try:
                self._wait_ready()
                return self
            except RuntimeError:
                self._reap()
                if attempt == 2 or "Address already in use" not in self.log_tail():
                    raise
        raise AssertionError("unreachable")

    def _config(self) -> str:
        name = self.master_name
        lines = [
            f"port {self.port}",
            "bind 127.0.0.1",
            f"dir {self.dir}",
            f"logfile {self.log_path}",
            "daemonize no",
            f"sentinel monitor {name} 127.0.0.1 {self.master_port} 1",
            f"sentinel down-after-milliseconds {name} {self.down_after_ms}",
            f"sentinel failover-timeout {name} {self.failover_timeout_ms}",
            f"sentinel parallel-syncs {name} 1",
        ]
        if self.password is not None:
            lines.append(f"requirepass {self.password}")
        return "\n".join(lines) + "\n"

    def _spawn(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.log_path.unlink()
        self.config_path.write_text(self._config())  # Sentinel rewrites it: a fresh one each time
        command = [*sentinel_command(), str(self.config_path)]
        if not command[0].endswith("redis-sentinel"):
            command.append("--sentinel")
        self.proc = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
        )

    def _wait_ready(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-sentinel exited with {self.proc.returncode}")
            with contextlib.suppress(OSError, RespError):
                if self.execute("PING") == "PONG":
                    return
            time.sleep(0.02)
        raise RuntimeError(f"redis-sentinel not ready in {self.startup_timeout}s")

    def _reap(self) -> None:
        kill_process(self.proc)
        self.proc = None

    def stop(self, timeout: float = 10.0) -> None:
        stop_process(self.proc, timeout)
        self.proc = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def log_tail(self, lines: int = 30) -> str:
        return log_file_tail(self.log_path, lines)

    # --- commands --------------------------------------------------------------------------
    def execute(self, *args: str | int) -> RespValue:
        with RespConnection("127.0.0.1", self.port, password=self.password, timeout=2.0) as c:
            return c.execute(*args)

    def master_address(self) -> tuple[str, int]:
        host, port = self.execute("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.master_name)
        return str(host), int(port)

    def replicas(self) -> list[dict[str, str]]:
        return [_flat_dict(r) for r in self.execute("SENTINEL", "REPLICAS", self.master_name)]

    def wait_for_replicas(self, count: int, timeout: float = 15.0) -> None:
        """Until Sentinel lists `count` healthy replicas whose link to the master is up."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            good = [
                r
                for r in self.replicas()
                if r.get("master-link-status") == "ok"
                and not {"s_down", "o_down", "disconnected"} & set(r.get("flags", "").split(","))
            ]
            if len(good) >= count:
                return
            time.sleep(0.05)
        raise TimeoutError(
            f"Sentinel saw no {count} healthy replicas in {timeout}s: {self.replicas()}"
        )

    def failover(self) -> None:
        """`SENTINEL FAILOVER <master>`: promote a replica without asking other Sentinels."""
        assert self.execute("SENTINEL", "FAILOVER", self.master_name) == "OK"

    def wait_for_master(self, port: int, timeout: float = 15.0) -> None:
        """Until Sentinel names 127.0.0.1:`port` as the master."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.master_address() == ("127.0.0.1", port):
                return
            time.sleep(0.02)
        raise TimeoutError(
            f"master is still {self.master_address()} after {timeout}s; log:\n{self.log_tail()}"
        )
