"""A real, throw-away Redis (or Valkey) server for tests, plus a minimal RESP2 client (stdlib only).

Three servers are available (`SERVERS`): Debian 12's redis-server 7.0, and redis-server 8 and
valkey-server 9 from the Debian sid root (tests/support/sid_root.py).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from . import sid_root
from .processes import (
    StartCleanupContext,
    kill_process,
    kill_process_group,
    log_file_tail,
    stop_process,
)

SETUP_HINT = "run `sudo scripts/setup-test-services.sh` (it installs redis-server, ruby, Sidekiq)"

RespValue = Any  # str | int | None | list[RespValue] | RespError


class RespError(Exception):
    """An error reply (``-ERR ...``) from Redis."""


class RedisNotInstalledError(RuntimeError):
    """``redis-server`` is not on PATH."""


def redis_server_binary() -> str:
    """Path of ``redis-server``, or raise with a hint how to install it."""
    path = shutil.which("redis-server")
    if path is None:
        raise RedisNotInstalledError(f"redis-server is not installed; {SETUP_HINT}")
    return path


@dataclass(frozen=True)
class ServerKind:
    """One Redis-compatible server program the tests can start."""

    name: str  # "redis-7.0", "redis-8", "valkey-9"
    program: str  # redis-server or valkey-server (same command line options)
    in_sid_root: bool  # runs from the Debian sid root (else from this Debian 12)

    def command(self) -> list[str]:
        """The argv prefix that starts this server; raises with an install hint if missing."""
        if not self.in_sid_root:
            return [redis_server_binary()]
        if not sid_root.built():
            raise RedisNotInstalledError(f"{self.name} is not installed; {sid_root.SETUP_HINT}")
        return sid_root.command(self.program)

    def installed_version(self) -> str | None:
        """The version installed (from ``--version``; the sid root's stamp), None if missing."""
        if self.in_sid_root:
            return sid_root.stamp().get(self.program)
        path = shutil.which(self.program)
        if path is None:
            return None
        out = subprocess.run([path, "--version"], capture_output=True, text=True, check=False)
        return out.stdout.split(" v=", 1)[1].split()[0] if " v=" in out.stdout else None


REDIS_7_0 = ServerKind("redis-7.0", "redis-server", in_sid_root=False)  # Debian 12
REDIS_8 = ServerKind("redis-8", "redis-server", in_sid_root=True)  # Debian sid
VALKEY_9 = ServerKind("valkey-9", "valkey-server", in_sid_root=True)  # Debian sid
SERVERS: dict[str, ServerKind] = {k.name: k for k in (REDIS_7_0, REDIS_8, VALKEY_9)}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class RespConnection:
    """A blocking RESP2 connection: enough to PING, AUTH and read Sidekiq keys in tests."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 6379,
        *,
        unix_socket: str | None = None,
        password: str | None = None,
        username: str | None = None,
        db: int = 0,
        timeout: float = 5.0,
    ) -> None:
        if unix_socket is not None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                self._sock.settimeout(timeout)
                self._sock.connect(unix_socket)
            except OSError:  # e.g. not listening yet: don't leak the socket
                self._sock.close()
                raise
        else:
            self._sock = socket.create_connection((host, port), timeout=timeout)
        self._file = self._sock.makefile("rb")
        try:
            if password is not None:
                auth = (username, password) if username is not None else (password,)
                self.execute("AUTH", *auth)
            if db:
                self.execute("SELECT", db)
        except BaseException:
            self.close()
            raise

    def execute(self, *args: str | bytes | int | float) -> RespValue:
        """Send one command and return its decoded reply; raise RespError on ``-ERR``."""
        self._sock.sendall(encode_command(args))
        reply = self._read()
        if isinstance(reply, RespError):
            raise reply
        return reply

    def _read(self) -> RespValue:
        line = self._file.readline()
        if not line:
            raise ConnectionError("connection closed by redis-server")
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            return RespError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self._file.read(n + 2)[:-2]
            try:
                return data.decode()
            except UnicodeDecodeError:
                return data
        if kind == b"*":
            n = int(rest)
            if n < 0:
                return None
            return [self._read() for _ in range(n)]
        raise ConnectionError(f"unexpected RESP reply {line!r}")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._file.close()
        with contextlib.suppress(OSError):
            self._sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def encode_command(args: Sequence[str | bytes | int | float]) -> bytes:
    """Encode a command as a RESP array of bulk strings."""
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        b = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


def hgetall_dict(reply: RespValue) -> dict[str, Any]:
    """Turn a flat HGETALL reply into a dict."""
    items = list(reply or [])
    return dict(zip(items[0::2], items[1::2], strict=True))


class RedisServer(StartCleanupContext):
    """A real ``redis-server`` on 127.0.0.1 with no persistence, in its own temp dir.

    ``kind`` picks the server program (`SERVERS`; Debian 12's redis-server by default); the
    ones in the sid root see the same temp dir at the same path.
    ``RedisServer(*extra_args)`` appends ``extra_args`` to the command line, e.g.
    ``"--requirepass", "pw"`` (then also pass ``password="pw"`` so :attr:`url` and the
    helpers authenticate), ACL or TLS options. ``unix_socket=path`` adds ``--unixsocket`` and
    makes readiness checks and :meth:`connect` use the socket.
    Use it as a context manager, or call :meth:`start` and :meth:`stop`.
    """

    def __init__(
        self,
        *extra_args: str,
        port: int | None = None,
        password: str | None = None,
        unix_socket: str | None = None,
        startup_timeout: float = 10.0,
        kind: ServerKind = REDIS_7_0,
    ) -> None:
        self.kind = kind
        self.server_command = kind.command()
        self.extra_args = list(extra_args)
        self.password = password
        self.unix_socket = unix_socket
        self.startup_timeout = startup_timeout
        self._fixed_port = port
        self.port: int = port or 0
        self.dir = Path(tempfile.mkdtemp(prefix="redis-test-"))
        self.log_path = self.dir / "redis.log"
        self.proc: subprocess.Popen[bytes] | None = None

    # --- addresses -------------------------------------------------------------------------
    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def url(self) -> str:
        """``redis://[:password@]127.0.0.1:<port>/0``."""
        auth = f":{self.password}@" if self.password is not None else ""
        return f"redis://{auth}{self.host}:{self.port}/0"

    @property
    def unix_url(self) -> str:
        """``unix://[:password@]<path>?db=0`` (only with ``unix_socket=``)."""
        if self.unix_socket is None:
            raise ValueError("server was started without unix_socket=")
        auth = f":{self.password}@" if self.password is not None else ""
        return f"unix://{auth}{self.unix_socket}?db=0"

    def url_for_db(self, db: int) -> str:
        return self.url.rsplit("/", 1)[0] + f"/{db}"

    # --- lifecycle -------------------------------------------------------------------------
    def start(self) -> Self:
        """Start the server and wait until it answers PING."""
        if self.proc is not None and self.proc.poll() is None:
            return self
        attempts = 1 if self._fixed_port else 3
        for attempt in range(attempts):
            if not self._fixed_port and (attempt or not self.port):
                self.port = free_port()
            self._spawn()
            try:
                self._wait_ready()
                return self
            except _PortInUseError:
                self.kill()
                if attempt == attempts - 1:
                    raise RuntimeError(
                        f"port {self.port} in use; log:\n{self.log_tail()}"
                    ) from None
        raise AssertionError("unreachable")

    def _spawn(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.log_path.unlink()
        cmd = [
            *self.server_command,
            "--port", str(self.port),
            "--bind", self.host,
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.dir),
            "--logfile", str(self.log_path),
            "--daemonize", "no",
            *(["--unixsocket", self.unix_socket, "--unixsocketperm", "700"]
              if self.unix_socket else []),
            *self.extra_args,
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def _wait_ready(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                log = self.log_tail()
                if "Address already in use" in log:
                    raise _PortInUseError
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}; log:\n{log}")
            if self.ping():
                return
            time.sleep(0.02)
        self.kill()
        raise TimeoutError(
            f"redis-server not ready in {self.startup_timeout}s; log:\n{self.log_tail()}"
        )

    def ping(self) -> bool:
        """True if the server answers PING (an auth error also proves it is up)."""
        try:
            with RespConnection(
                self.host, self.port, unix_socket=self.unix_socket, timeout=1.0
            ) as c:
                try:
                    return bool(c.execute("PING") == "PONG")
                except RespError as e:
                    return "NOAUTH" in str(e) or "NOPERM" in str(e)
        except OSError:
            return False

    def stop(self, timeout: float = 10.0) -> None:
        """Graceful stop (SIGTERM; the server does not save)."""
        stop_process(self.proc, timeout)
        kill_process_group(self.pid)
        self.proc = None

    def kill(self) -> None:
        """SIGKILL: simulate a crash (no shutdown, data lost)."""
        kill_process(self.proc)
        kill_process_group(self.pid)
        self.proc = None

    def restart(self) -> Self:
        """Stop and start again on the same port. Data is lost (no persistence)."""
        self.stop()
        fixed = self._fixed_port
        self._fixed_port = self.port
        try:
            return self.start()
        finally:
            self._fixed_port = fixed

    def cleanup(self) -> None:
        """Stop the server and remove its directory."""
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def log_tail(self, lines: int = 30) -> str:
        return log_file_tail(self.log_path, lines)

    # --- commands --------------------------------------------------------------------------
    def connect(self, db: int = 0, timeout: float = 5.0) -> RespConnection:
        """A new raw RESP connection (authenticated if ``password`` was given)."""
        return RespConnection(
            self.host,
            self.port,
            unix_socket=self.unix_socket,
            password=self.password,
            db=db,
            timeout=timeout,
        )

    def execute(self, *args: str | bytes | int | float, db: int = 0) -> RespValue:
        """Run one command on a fresh connection and return the reply."""
        with self.connect(db) as c:
            return c.execute(*args)

    def version(self) -> str:
        """The server's version from ``INFO server`` (``valkey_version`` for Valkey)."""
        info = str(self.execute("INFO", "server"))
        fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
        return fields.get("valkey_version") or fields["redis_version"]

    def __repr__(self) -> str:
        return (
            f"RedisServer({self.kind.name}, port={self.port}, pid={self.pid}, "
            f"dir={os.fspath(self.dir)!r})"
        )


class _PortInUseError(Exception):
    pass
