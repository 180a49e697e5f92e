"""A loopback TCP proxy in front of redis-server that injects faults on demand.

    with FaultProxy(redis.port) as proxy:           # point the exporter at proxy.port
        proxy.delay = 2.0                            # hold every reply chunk 2 s
        proxy.cut_after(100)                         # reset the connection 100 reply bytes on
        proxy.mode = "loading"                       # answer every command -LOADING ...
        proxy.mode = "blackhole"                     # swallow commands, never answer
        proxy.mode = "huge"                          # answer a 2 GiB bulk string, sent on and on
        proxy.mode = "forward"                       # back to normal

Knobs may be changed at any time from any thread; they apply to the next chunk of data on
every connection, open or new. The proxy runs its own asyncio loop in a daemon thread, so it
serves synchronous tests (a daemon subprocess) and in-process asyncio tests alike; closing a
connection never races a thread blocked in `recv`, and a reset is a real TCP RST (SO_LINGER 0).
Commands are counted by name (never their arguments) with the parser of `resp_proxy.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections import Counter
from types import TracebackType
from typing import Final, Literal, Self

from .resp_proxy import RespCommandParser, command_name

Mode = Literal["forward", "loading", "blackhole", "huge"]

LOADING_REPLY: Final = b"-LOADING Redis is loading the dataset in memory\r\n"
HUGE_REPLY_HEADER: Final = b"$2147483648\r\n"  # a 2 GiB bulk string: what a hostile server may say
_CHUNK: Final = 65536


class FaultProxy:
    """Forwards 127.0.0.1:<port> to 127.0.0.1:<upstream_port>, with switchable faults."""

    def __init__(self, upstream_port: int, *, upstream_host: str = "127.0.0.1") -> None:
        self.upstream = (upstream_host, upstream_port)
        self.mode: Mode = "forward"
        self.delay = 0.0  # seconds to hold each server->client chunk
        self.port = 0
        self._cut_budget: int | None = None  # reply bytes left before a reset
        self._lock = threading.Lock()
        self._commands: Counter[str] = Counter()
        self._reply_bytes = 0
        self._accepted = 0
        self._resets = 0
        self._open: set[asyncio.StreamWriter] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    # --- knobs and counters (any thread) ----------------------------------------------------
    def cut_after(self, reply_bytes: int) -> None:
        """Reset (RST) whichever connection carries the next `reply_bytes` server bytes, after
        forwarding exactly those. One shot: later connections are not cut."""
        with self._lock:
            self._cut_budget = reply_bytes

    @property
    def cut_pending(self) -> bool:
        with self._lock:
            return self._cut_budget is not None

    @property
    def commands(self) -> Counter[str]:
        """Command name -> times a client sent it (a copy), in every mode."""
        with self._lock:
            return Counter(self._commands)

    @property
    def reply_bytes(self) -> int:
        """Bytes forwarded from the server to clients so far."""
        with self._lock:
            return self._reply_bytes

    @property
    def accepted(self) -> int:
        """Client connections accepted so far."""
        with self._lock:
            return self._accepted

    @property
    def resets(self) -> int:
        """Connections reset by `cut_after` so far."""
        with self._lock:
            return self._resets

    @property
    def open_connections(self) -> int:
        """Client connections open now (the leak check: it falls back when clients close)."""
        with self._lock:
            return len(self._open)

    # --- lifecycle ---------------------------------------------------------------------------
    def start(self, timeout: float = 5.0) -> Self:
        self._thread = threading.Thread(target=self._run, name="fault-proxy", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError("fault proxy did not start")
        if self._error is not None:
            raise RuntimeError("fault proxy failed to start") from self._error
        return self

    def close(self, timeout: float = 5.0) -> None:
        """Stop listening, abort every connection, end the thread (bounded)."""
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # loop already gone
                loop.call_soon_threadsafe(stopping.set)
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise TimeoutError("fault proxy thread did not end")

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- the proxy loop (its own thread) -----------------------------------------------------
    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as error:  # reported to start()
            self._error = error
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        tasks: set[asyncio.Task[None]] = set()

        async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            tasks.add(task)
            try:
                await self._connection(reader, writer)
            finally:
                tasks.discard(task)

        server = await asyncio.start_server(on_client, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            await self._stopping.wait()
        finally:
            server.close()
            for task in list(tasks):
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await server.wait_closed()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with self._lock:
            self._accepted += 1
            self._open.add(writer)
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        try:
            if self.mode == "forward":
                try:
                    upstream = await asyncio.open_connection(*self.upstream)
                except OSError:
                    return  # upstream down: the client sees the connection close
            pumps = [asyncio.create_task(self._client_to_server(reader, writer, upstream))]
            if upstream is not None:
                pumps.append(asyncio.create_task(self._server_to_client(upstream[0], writer)))
            try:
                await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for pump in pumps:
                    pump.cancel()
                await asyncio.gather(*pumps, return_exceptions=True)
        finally:
            with self._lock:
                self._open.discard(writer)
            for stream in (writer, upstream[1] if upstream else None):
                if stream is not None and not stream.is_closing():
                    stream.transport.abort()

    async def _client_to_server(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None,
    ) -> None:
        parser = RespCommandParser()
        while data := await reader.read(_CHUNK):
            try:
                names = [command_name(args) for args in parser.feed(data)]
            except ValueError:
                names = []
            with self._lock:
                self._commands.update(names)
            mode = self.mode
            if mode == "loading":
                writer.write(LOADING_REPLY * len(names))
                await writer.drain()
            elif mode == "huge":
                await self._endless_reply(writer)
                return
            elif mode == "blackhole":
                continue
            elif upstream is None:
                return  # opened while faulty, now "forward": close so the client reconnects
            else:
                upstream[1].write(data)
                await upstream[1].drain()

    async def _endless_reply(self, writer: asyncio.StreamWriter) -> None:
        """The header of a 2 GiB bulk string, then zeros as fast as the client reads them, until
        it closes the connection (or 2 GiB are sent)."""
        writer.write(HUGE_REPLY_HEADER)
        chunk = bytes(_CHUNK)
        with contextlib.suppress(OSError):
            for _ in range(2**31 // _CHUNK):
                writer.write(chunk)
                await writer.drain()
                with self._lock:
                    self._reply_bytes += _CHUNK

    async def _server_to_client(
        self, upstream: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        while data := await upstream.read(_CHUNK):
            if self.delay > 0:
                await asyncio.sleep(self.delay)
            if self.mode != "forward":
                continue  # a late reply while faulty: dropped, like the fault it stands for
            with self._lock:
                budget = self._cut_budget
                cut = budget is not None and len(data) >= budget
                if cut:
                    assert budget is not None
                    data = data[:budget]
                    self._cut_budget = None
                    self._resets += 1
                elif budget is not None:
                    self._cut_budget = budget - len(data)
                self._reply_bytes += len(data)
            writer.write(data)
            if cut:
                await writer.drain()
                _reset(writer)
                return
            await writer.drain()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST instead of a FIN, as a crashed peer or a middlebox would."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
