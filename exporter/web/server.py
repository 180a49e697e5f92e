"""The HTTP server under the app: the listening sockets and the connections on them.

At most `max_connections` connections at once, TLS handshakes included; when a new one comes
at the limit, the oldest connection still waiting for a request is closed to make room (or,
if every connection is busy with a request, the new one is refused). A connection gets
`read_header_timeout` for its TLS handshake and for each request's line and headers, and
`idle_timeout` between requests. A malformed request is answered 400, counted by reason and
logged at DEBUG only, at most once per `THROTTLE_SECONDS`.

aiohttp (3.11–3.14) has no connection limit and no header timeout, and asyncio's accept loop
logs a traceback for every failed `accept()` when descriptors run out. So this module owns
the accept loop (a `web.BaseSite`) and runs each connection in a subclass of aiohttp's
`RequestHandler`. Knows nothing of Sidekiq.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from aiohttp import web
from aiohttp.http_exceptions import (
    BadHttpMethod,
    BadStatusLine,
    HttpProcessingError,
    InvalidURLError,
    LineTooLong,
)
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse

from exporter.config_file import ConfigError
from exporter.logs import (
    HTTP_ACCEPT_FAILED,
    HTTP_BAD_REQUEST,
    HTTP_CONNECTION_FAILED,
    HTTP_CONNECTION_LIMIT_REACHED,
    HTTP_HEADER_TIMEOUT,
    Throttle,
    get_logger,
)
from exporter.values import format_listen_address

log = get_logger(__name__)

# Why a request was answered 400, by the class of aiohttp's parser error, most specific first
# (BadHttpMethod is a BadStatusLine). Anything else is "malformed": with the C parser that is
# every header, framing and smuggling error (llhttp reports them all as BadHttpMessage).
BAD_REQUEST_REASONS: Final[tuple[tuple[type[HttpProcessingError], str], ...]] = (
    (BadHttpMethod, "method"),
    (LineTooLong, "too_long"),
    (InvalidURLError, "url"),
    (BadStatusLine, "request_line"),
)
MALFORMED: Final = "malformed"
# The limits of the HTTP server that close connections or refuse requests.
LIMIT_MAX_CONNECTIONS: Final = "max_connections"
LIMIT_READ_HEADER_TIMEOUT: Final = "read_header_timeout"
LIMIT_CREDENTIAL_QUEUE: Final = "credential_queue"
LIMITS: Final = (LIMIT_MAX_CONNECTIONS, LIMIT_READ_HEADER_TIMEOUT, LIMIT_CREDENTIAL_QUEUE)

# Descriptors the process needs besides HTTP connections and Redis: stdio, the event loop's
# selector and self-pipe, the listening sockets, /proc reads of the process collector, the
# certificate files read at a reload, a Redis reconnect overlapping its old socket.
RESERVED_DESCRIPTORS: Final = 64
ACCEPT_RETRY_SECONDS: Final = 1.0  # after accept() fails for want of descriptors or memory
LISTEN_BACKLOG: Final = 128
_OUT_OF_RESOURCES: Final = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
_BAD_REQUEST_BODY: Final = "Bad Request\n"
# What a connection refused at the limit gets (plain HTTP; over TLS it is closed unanswered).
_REFUSAL: Final = (
    b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\nContent-Length: 21\r\n\r\n"
    b"Too many connections\n"
)


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """The `--web.*` limits on connections."""

    max_connections: int
    read_header_timeout: float  # seconds; also the TLS handshake's and the TLS close's
    idle_timeout: float  # seconds a connection may wait for its next request


class HttpCounters:
    """Requests and connections the HTTP server refused, by reason, every reason from 0.

    The keys never change after construction, so the collector may read them from a worker
    thread while the event loop counts.
    """

    def __init__(self) -> None:
        self.bad_requests: dict[str, int] = dict.fromkeys(
            sorted({reason for _, reason in BAD_REQUEST_REASONS} | {MALFORMED}), 0
        )
        self.limit_hits: dict[str, int] = dict.fromkeys(LIMITS, 0)


def bad_request_reason(exc: Exception) -> str:
    """The reason label of a request aiohttp's parser refused."""
    for kind, reason in BAD_REQUEST_REASONS:
        if isinstance(exc, kind):
            return reason
    return MALFORMED


def check_descriptor_limit(max_connections: int, redis_connections: int, limit: int) -> None:
    """ConfigError unless the HTTP and Redis connections and a reserve fit in `limit` descriptors
    (the process's soft RLIMIT_NOFILE)."""
    needed = max_connections + redis_connections + RESERVED_DESCRIPTORS
    if needed > limit:
        raise ConfigError(
            f"--web.max-connections {max_connections}: with {redis_connections} Redis "
            f"connection(s) and {RESERVED_DESCRIPTORS} other descriptors the process needs "
            f"{needed} file descriptors, but may open only {limit} (ulimit -n); lower "
            f"--web.max-connections to {max(limit - needed + max_connections, 0)} or less, "
            "or raise the limit"
        )


class _Slot:
    """One accepted connection, counted from `accept()` until its socket is closed."""

    __slots__ = ("closing", "handler", "task")

    def __init__(self) -> None:
        self.handler: _Connection | None = None  # from the end of the TLS handshake on
        self.task: asyncio.Task[None] | None = None  # until the connection is set up
        self.closing = False  # closed to make room; its socket closes on a next loop turn

    @property
    def idle(self) -> bool:
        """In its TLS handshake, or waiting for (the rest of) a request: nothing to lose."""
        return self.handler is None or self.handler.waiting_for_request


class LimitedSite(web.BaseSite):
    """Listens on `host:port` ("" or None: every interface) and serves the runner's app on
    every connection, within `limits` (the module docstring says how).

    `ssl_context` is asked for the context of each new connection (None: plain HTTP), so a
    reloaded certificate or client CA applies from the next connection on.
    """

    __slots__ = (
        "_accept_log",
        "_bad_request_log",
        "_closing",
        "_context",
        "_counters",
        "_header_timeout_log",
        "_host",
        "_limit_log",
        "_limits",
        "_paused",
        "_port",
        "_slots",
        "_sockets",
        "_stopped",
        "_tls",
    )

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str | None,
        port: int,
        *,
        limits: ConnectionLimits,
        counters: HttpCounters,
        ssl_context: Callable[[], ssl.SSLContext | None] = lambda: None,
        backlog: int = LISTEN_BACKLOG,
    ) -> None:
        super().__init__(runner, backlog=backlog)
        self._host = host or None
        self._port = port
        self._limits = limits
        self._counters = counters
        self._context = ssl_context
        self._tls = ssl_context() is not None
        self._slots: dict[_Slot, None] = {}  # in the order they were accepted
        self._closing = 0  # slots closed to make room whose sockets are not closed yet
        self._sockets: list[socket.socket] = []
        self._paused: dict[socket.socket, asyncio.TimerHandle] = {}  # accept() failed
        self._stopped = False
        # One line per THROTTLE_SECONDS at most for each event an outsider can cause at will.
        self._bad_request_log = Throttle()
        self._header_timeout_log = Throttle()
        self._limit_log = Throttle()
        self._accept_log = Throttle()

    @property
    def name(self) -> str:
        scheme = "https" if self._tls else "http"
        return f"{scheme}://{format_listen_address(self._host or '', self._port)}"

    @property
    def addresses(self) -> list[str]:
        """The addresses listened on, as `host:port` (the port chosen when 0 was asked)."""
        return [format_listen_address(*sock.getsockname()[:2]) for sock in self._sockets]

    @property
    def connections(self) -> int:
        """Connections open now (or being closed to make room)."""
        return len(self._slots)

    async def start(self) -> None:
        """Bind and listen (OSError if the address is taken), then accept."""
        await super().start()
        loop = asyncio.get_running_loop()
        self._sockets = await _listening_sockets(self._host, self._port, self._backlog)
        for sock in self._sockets:
            loop.add_reader(sock.fileno(), self._accept, sock)

    async def stop(self) -> None:
        """Stop accepting; connections still in their TLS handshake are dropped. (The runner
        closes the others after this, within its shutdown timeout.)"""
        self._stopped = True
        loop = asyncio.get_running_loop()
        for retry in self._paused.values():
            retry.cancel()
        for sock in self._sockets:
            if sock not in self._paused:
                loop.remove_reader(sock.fileno())
            sock.close()
        setups = [slot.task for slot in self._slots if slot.task is not None]
        for task in setups:
            task.cancel()
        await asyncio.gather(*setups, return_exceptions=True)
        await super().stop()

    # --- accepting --------------------------------------------------------------------------

    def _accept(self, sock: socket.socket) -> None:
        # Called when the listening socket is readable; takes what the backlog holds.
        for _ in range(self._backlog):
            if self._closing and len(self._slots) >= self._limits.max_connections:
                # A connection closed to make room frees its descriptor on a next turn of the
                # event loop: accept more then.
                return
            try:
                conn, _ = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError as exc:
                self._pause(sock, exc)
                return
            conn.setblocking(False)
            if len(self._slots) < self._limits.max_connections:
                self._admit(conn)
            elif self._make_room():
                self._limit_hit(evicted=True)
                self._admit(conn)
                return  # one at a time while at the limit
            else:
                self._refuse(conn)

    def _admit(self, conn: socket.socket) -> None:
        slot = _Slot()
        self._slots[slot] = None
        slot.task = asyncio.get_running_loop().create_task(self._set_up(slot, conn))
        slot.task.add_done_callback(functools.partial(self._set_up_done, slot, conn))

    def _make_room(self) -> bool:
        """Close the oldest idle connection; False if none is idle (every one is busy)."""
        for slot in self._slots:
            if slot.idle and not slot.closing:
                slot.closing = True
                self._closing += 1
                if slot.handler is not None:
                    slot.handler.abort()
                elif slot.task is not None:
                    slot.task.cancel()
                return True
        return False

    def _refuse(self, conn: socket.socket) -> None:
        self._limit_hit(evicted=False)
        try:
            if not self._tls:
                conn.send(_REFUSAL)
        except OSError:
            pass
        finally:
            conn.close()

    def _limit_hit(self, *, evicted: bool) -> None:
        self._counters.limit_hits[LIMIT_MAX_CONNECTIONS] += 1
        held = self._limit_log.due()
        if held is not None:
            log.warning(
                HTTP_CONNECTION_LIMIT_REACHED,
                max_connections=self._limits.max_connections,
                closed=("idle connection" if evicted else "new connection"),
                more_since_last_line=held,
            )

    def _pause(self, sock: socket.socket, exc: OSError) -> None:
        """accept() failed, and says so once per THROTTLE_SECONDS at most. Out of descriptors
        (or memory): close the oldest idle connection and accept again on the next turn of the
        event loop, as at the connection limit; with none idle, or on another error, stop
        accepting on this socket for ACCEPT_RETRY_SECONDS."""
        held = self._accept_log.due()
        if held is not None:
            log.error(
                HTTP_ACCEPT_FAILED,
                error=errno.errorcode.get(exc.errno or 0, type(exc).__name__),
                open_connections=len(self._slots),
                more_since_last_line=held,
            )
        if exc.errno in _OUT_OF_RESOURCES:
            if self._closing:
                return
            if self._make_room():
                self._counters.limit_hits[LIMIT_MAX_CONNECTIONS] += 1
                return
        loop = asyncio.get_running_loop()
        loop.remove_reader(sock.fileno())
        self._paused[sock] = loop.call_later(ACCEPT_RETRY_SECONDS, self._resume, sock)

    def _resume(self, sock: socket.socket) -> None:
        del self._paused[sock]
        if not self._stopped:
            asyncio.get_running_loop().add_reader(sock.fileno(), self._accept, sock)

    # --- connections ------------------------------------------------------------------------

    async def _set_up(self, slot: _Slot, conn: socket.socket) -> None:
        """The TLS handshake (bounded by the header timeout), then the connection's handler."""
        tls: dict[str, Any] = {}
        context = self._context() if self._tls else None
        if context is not None:
            timeout = self._limits.read_header_timeout
            tls = {
                "ssl": context,
                "ssl_handshake_timeout": timeout,
                "ssl_shutdown_timeout": timeout,
            }
        loop = asyncio.get_running_loop()
        await loop.connect_accepted_socket(lambda: self._handler(slot), conn, **tls)

    def _set_up_done(self, slot: _Slot, conn: socket.socket, task: asyncio.Task[None]) -> None:
        # A done callback, not a `finally:`, so a task cancelled before it ran (its connection
        # closed to make room at once) also gives back its slot and socket.
        slot.task = None
        error = None if task.cancelled() else task.exception()
        if isinstance(error, ConnectionAbortedError):  # asyncio's TLS handshake timeout
            self._counters.limit_hits[LIMIT_READ_HEADER_TIMEOUT] += 1
        elif error is not None and not isinstance(error, OSError):  # not a failed handshake
            log.error(HTTP_CONNECTION_FAILED, error=type(error).__name__)
        if slot.handler is None:  # cancelled, or the handshake failed
            conn.close()
            self.release(slot)

    def _handler(self, slot: _Slot) -> _Connection:
        server = self._runner.server
        assert server is not None  # the runner is set up before any site starts
        return _Connection(server, slot=slot, site=self, loop=asyncio.get_running_loop())

    def release(self, slot: _Slot) -> None:
        """The slot's socket is closed (or about to be): it no longer counts."""
        if slot in self._slots:
            del self._slots[slot]
            self._closing -= slot.closing

    def bad_request(self, exc: Exception) -> None:
        """A connection answered a malformed request with 400: count it, and maybe say so."""
        reason = bad_request_reason(exc)
        self._counters.bad_requests[reason] += 1
        held = self._bad_request_log.due()
        if held is not None:
            # The reason only: the request's bytes are the sender's, never logged.
            log.debug(HTTP_BAD_REQUEST, reason=reason, more_since_last_line=held)

    def header_timeout(self) -> None:
        """A connection was closed for sending its headers too slowly (or nothing)."""
        self._counters.limit_hits[LIMIT_READ_HEADER_TIMEOUT] += 1
        held = self._header_timeout_log.due()
        if held is not None:
            log.debug(
                HTTP_HEADER_TIMEOUT,
                timeout_seconds=self._limits.read_header_timeout,
                more_since_last_line=held,
            )

    @property
    def limits(self) -> ConnectionLimits:
        return self._limits


async def _listening_sockets(host: str | None, port: int, backlog: int) -> list[socket.socket]:
    """Bound, listening, non-blocking sockets for every address of `host` (None: all
    interfaces), as asyncio's `create_server` makes them (IPv6 sockets IPv6 only)."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    try:
        seen = set()
        for family, _, _, _, address in infos:
            if (family, address) in seen:
                continue
            seen.add((family, address))
            sock = socket.create_server(address, family=family, backlog=backlog)
            sockets.append(sock)
            sock.setblocking(False)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


class _Connection(web.RequestHandler):
    """One connection's aiohttp handler, with a deadline for each request's line and headers,
    its slot in the site's count, and quiet 400s."""

    __slots__ = ("_header_timer", "_site", "_slot")

    def __init__(
        self,
        manager: web.Server,
        *,
        slot: _Slot,
        site: LimitedSite,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        super().__init__(
            manager,
            loop=loop,
            keepalive_timeout=site.limits.idle_timeout,
            access_log=None,  # type: ignore[arg-type]  # aiohttp reads None as "no access log"
        )
        self._slot = slot
        self._site = site
        self._header_timer: asyncio.TimerHandle | None = None

    @property
    def waiting_for_request(self) -> bool:
        """True while no complete request is waiting to be handled or being handled.

        The handler's task waits on `_waiter` exactly then: aiohttp's own keep-alive check
        (`RequestHandler._process_keepalive`, 3.11–3.14) reads it the same way.
        """
        waiter = self._waiter
        return waiter is not None and not waiter.done()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._slot.handler = self
        super().connection_made(transport)
        self._start_header_timer()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._stop_header_timer()
        self._site.release(self._slot)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        # The first bytes of a request start its deadline, unless they hold all of it (the
        # usual case: no timer at all); the request complete stops it.
        was_waiting = self.waiting_for_request
        try:
            super().data_received(data)
        except ValueError as exc:
            # aiohttp 3.11's C parser lets yarl's error on an unparsable URL (`http://[x/`)
            # escape, and asyncio would log it at ERROR with a traceback: refused like the rest,
            # without an answer (the parser's state is unknown).
            self._site.bad_request(exc)
            self.abort()
            return
        if not self.waiting_for_request:
            self._stop_header_timer()
        elif was_waiting and data and self._header_timer is None:
            self._start_header_timer()

    def _start_header_timer(self) -> None:
        self._header_timer = self._loop.call_later(
            self._site.limits.read_header_timeout, self._header_deadline
        )

    def _stop_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_deadline(self) -> None:
        self._header_timer = None
        if self.waiting_for_request:
            self._site.header_timeout()
            self.abort()

    def abort(self) -> None:
        """Close at once, without a TLS close_notify exchange the peer could stall."""
        if self.transport is not None:
            self.transport.abort()
        self.force_close()

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> StreamResponse:
        # aiohttp answers what its parser refuses with status 400 and the exception, and logs
        # it at ERROR with a traceback quoting up to 100 of the sender's bytes.
        if status == 400 and isinstance(exc, HttpProcessingError):
            self._site.bad_request(exc)
            response = web.Response(status=400, text=_BAD_REQUEST_BODY)
            response.force_close()
            return response
        return super().handle_error(request, status, exc, message)
