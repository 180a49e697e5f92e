"""A loopback TCP proxy in front of redis-server that records every command a client sends.

Used to prove the exporter read-only from the outside: point it at the proxy, and afterwards
`proxy.commands` lists every command name it ever sent (`CLIENT|SETINFO` style for container
commands), whatever the Redis ACL would have allowed. Arguments are never stored, so
credentials in `AUTH` stay out of test output.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections import Counter
from types import TracebackType
from typing import Self

# Commands whose first argument is a subcommand (reported as `NAME|SUB`, as ACL rules spell it).
_CONTAINER_COMMANDS = frozenset(
    {"ACL", "CLIENT", "CLUSTER", "COMMAND", "CONFIG", "FUNCTION", "MEMORY", "MODULE", "OBJECT"}
    | {"SCRIPT", "SLOWLOG", "XINFO", "XGROUP", "PUBSUB", "LATENCY"}
)


class RespCommandParser:
    """Incremental parser of a client's RESP request stream (arrays of bulk strings).

    Inline commands (plain text lines, as typed in telnet) are parsed too.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[list[bytes]]:
        """Add received bytes; return every complete command they finish."""
        self._buffer += data
        commands: list[list[bytes]] = []
        while True:
            parsed = self._parse_one()
            if parsed is None:
                return commands
            command, consumed = parsed
            del self._buffer[:consumed]
            if command:
                commands.append(command)

    def _parse_one(self) -> tuple[list[bytes], int] | None:
        buf = self._buffer
        end = buf.find(b"\r\n")
        if end < 0:
            return None
        if not buf.startswith(b"*"):
            return bytes(buf[:end]).split(), end + 2  # inline command
        count = int(buf[1:end])
        position = end + 2
        args: list[bytes] = []
        for _ in range(max(count, 0)):
            end = buf.find(b"\r\n", position)
            if end < 0:
                return None
            if buf[position : position + 1] != b"$":
                raise ValueError(f"unexpected RESP request byte {bytes(buf[position:end])!r}")
            length = int(buf[position + 1 : end])
            start = end + 2
            if len(buf) < start + length + 2:
                return None
            args.append(bytes(buf[start : start + length]))
            position = start + length + 2
        return args, position


def command_name(args: list[bytes]) -> str:
    """`GET`, or `CLIENT|SETINFO` for a container command (the spelling ACL rules use)."""
    name = args[0].decode("ascii", "replace").upper()
    if name in _CONTAINER_COMMANDS and len(args) > 1:
        return f"{name}|{args[1].decode('ascii', 'replace').upper()}"
    return name


class RecordingProxy:
    """Forwards 127.0.0.1:<port> to 127.0.0.1:<upstream_port>, recording command names."""

    def __init__(self, upstream_port: int, *, upstream_host: str = "127.0.0.1") -> None:
        self.upstream = (upstream_host, upstream_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._commands: Counter[str] = Counter()
        self._errors: list[str] = []
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._closed = threading.Event()
        self.connections = 0

    @property
    def commands(self) -> Counter[str]:
        """Command name -> how many times a client sent it (a copy)."""
        with self._lock:
            return Counter(self._commands)

    @property
    def errors(self) -> list[str]:
        """Parse errors (a request the parser did not understand); empty when all is well."""
        with self._lock:
            return list(self._errors)

    def start(self) -> Self:
        self._spawn(self._accept_loop, "resp-proxy-accept")
        return self

    def _spawn(self, target: object, name: str, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)  # type: ignore[arg-type]
        with self._lock:
            self._threads.append(thread)
        thread.start()

    def _accept_loop(self) -> None:
        self._listener.settimeout(0.1)  # wake up now and then to notice close()
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            try:
                server = socket.create_connection(self.upstream, timeout=5)
                server.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets += [client, server]
                self.connections += 1
            self._spawn(self._pump, "resp-proxy-c2s", client, server, True)
            self._spawn(self._pump, "resp-proxy-s2c", server, client, False)

    def _pump(self, source: socket.socket, sink: socket.socket, record: bool) -> None:
        parser = RespCommandParser()
        try:
            while data := source.recv(65536):
                if record:
                    self._record(parser, data)
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def _record(self, parser: RespCommandParser, data: bytes) -> None:
        try:
            names = [command_name(args) for args in parser.feed(data)]
        except ValueError as error:
            with self._lock:
                self._errors.append(str(error))
            return
        with self._lock:
            self._commands.update(names)

    def close(self, timeout: float = 5.0) -> None:
        """Stop accepting, close every connection, join the threads (bounded)."""
        self._closed.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            sockets, threads = list(self._sockets), list(self._threads)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()
        for thread in threads:
            thread.join(timeout)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
