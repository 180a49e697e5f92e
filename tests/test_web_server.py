"""The HTTP server under the app (exporter/web/server.py): the connection limit, descriptors
running out, the header, idle and TLS handshake timeouts, and malformed requests (answered
400, counted, never logged above DEBUG); first in process, then against the real daemon.

The daemons run with Redis down (`sidekiq_up 0`): only the HTTP side matters here. Their
limits are set by environment variables, the way a container sets them. Every client socket
is closed by the test that opened it; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import resource
import socket
import ssl
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from aiohttp import web

from exporter.web.server import ConnectionLimits, HttpCounters, LimitedSite
from tests.support.exporter_process import ExporterProcess, ListeningExporter, Scrape
from tests.support.redis_server import free_port
from tests.support.tls import make_pki

MARKER = b"ATTACKERBYTES"  # in every malformed request: must never reach the log
LIMITS = {
    "SIDEKIQ_EXPORTER_WEB_MAX_CONNECTIONS": "20",
    "SIDEKIQ_EXPORTER_WEB_READ_HEADER_TIMEOUT": "1s",
    "SIDEKIQ_EXPORTER_WEB_IDLE_TIMEOUT": "2s",
}
CLOSE_WAIT_SECONDS = 10.0  # far above the timeouts above: a bound, not a measurement
READ_HEADER = {"limit": "read_header_timeout"}
MAX_CONN = {"limit": "max_connections"}


def closed_redis_url() -> str:
    return f"redis://127.0.0.1:{free_port()}/0"  # nothing listens: sidekiq_up 0


# --------------------------------------------------------------------------- in process


def test_the_aiohttp_internals_it_relies_on_are_there() -> None:
    # exporter/web/server.py subclasses aiohttp's RequestHandler and BaseSite. If an aiohttp
    # release changes these, this fails first (the behaviour tests below fail too).
    assert "_waiter" in web.RequestHandler.__slots__
    init = inspect.signature(web.RequestHandler.__init__).parameters
    assert {"manager", "loop", "keepalive_timeout", "access_log"} <= set(init)
    handle_error = inspect.signature(web.RequestHandler.handle_error).parameters
    assert list(handle_error) == ["self", "request", "status", "exc", "message"]
    assert {"_runner", "_backlog"} <= set(web.BaseSite.__slots__)


@contextlib.asynccontextmanager
async def in_process(
    limits: ConnectionLimits,
) -> AsyncIterator[tuple[LimitedSite, HttpCounters, asyncio.Event]]:
    """A LimitedSite serving `/` (answers at once) and `/hold` (answers once the event is set)."""
    release = asyncio.Event()

    async def hold(request: web.Request) -> web.Response:
        await release.wait()
        return web.Response(text="held")

    async def answer(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/", answer)
    app.router.add_get("/hold", hold)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    counters = HttpCounters()
    site = LimitedSite(runner, "127.0.0.1", 0, limits=limits, counters=counters)
    await site.start()
    try:
        yield site, counters, release
    finally:
        release.set()
        await runner.cleanup()


async def connect(site: LimitedSite) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    port = int(site.addresses[0].rsplit(":", 1)[1])
    return await asyncio.open_connection("127.0.0.1", port)


async def until(check: Callable[[], bool]) -> None:
    async with asyncio.timeout(5):
        while not check():  # noqa: ASYNC110 (the server's state, no event to wait on)
            await asyncio.sleep(0.01)


async def test_a_connection_busy_with_a_request_is_never_closed_to_make_room() -> None:
    limits = ConnectionLimits(max_connections=2, read_header_timeout=30, idle_timeout=30)
    async with in_process(limits) as (site, counters, release):
        busy_reader, busy = await connect(site)
        busy.write(b"GET /hold HTTP/1.1\r\nHost: x\r\n\r\n")
        _, idle = await connect(site)
        await until(lambda: site.connections == 2)
        new_reader, new = await connect(site)  # at the limit: the idle one makes room
        new.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await new_reader.readuntil(b"ok")).startswith(b"HTTP/1.1 200")
        assert counters.limit_hits["max_connections"] == 1
        # Both connections busy with a request: a new one is refused, not either of them.
        new.write(b"GET /hold HTTP/1.1\r\nHost: x\r\n\r\n")
        await until(lambda: not any(slot.idle for slot in site._slots))
        refused_reader, refused = await connect(site)
        assert (await refused_reader.read()).startswith(b"HTTP/1.1 503 Service Unavailable")
        assert counters.limit_hits["max_connections"] == 2
        release.set()
        assert b"held" in await busy_reader.readuntil(b"held")
        assert site.connections <= 2
        for writer in (busy, idle, new, refused):
            writer.close()


@contextlib.contextmanager
def daemon(env: dict[str, str], args: tuple[str, ...] = ()) -> Iterator[ExporterProcess]:
    with ExporterProcess(closed_redis_url(), env=env, args=args, ready_path="/-/healthy") as d:
        yield d


@pytest.fixture(scope="module")
def limited() -> Iterator[ExporterProcess]:
    """A daemon with low limits and DEBUG logging."""
    with daemon(LIMITS, ("--log.level", "debug")) as exporter:
        yield exporter


def log_lines(exporter: ExporterProcess) -> list[str]:
    return exporter.log_text().splitlines()


def events(lines: list[str]) -> list[dict[str, object]]:
    found = []
    for line in lines:
        with contextlib.suppress(ValueError):
            found.append(json.loads(line))
    return found


def open_idle(port: int, count: int) -> list[socket.socket]:
    """`count` connections that send nothing (non-blocking connects: none waits)."""
    sockets = []
    for _ in range(count):
        sock = socket.socket()
        sock.setblocking(False)
        sock.connect_ex(("127.0.0.1", port))
        sockets.append(sock)
    return sockets


def closed_by_server(sock: socket.socket, within: float, trickle: bytes = b"") -> float | None:
    """Seconds until the server closed `sock` (sending `trickle` every 0.1 s meanwhile), or
    None if it was still open after `within` seconds."""
    started = time.monotonic()
    sock.settimeout(0.1)
    while time.monotonic() - started < within:
        try:
            if trickle:
                sock.sendall(trickle)
            if sock.recv(65536) == b"":
                return time.monotonic() - started
        except TimeoutError:
            continue
        except OSError:  # reset: closed too
            return time.monotonic() - started
    return None


def http_exchange(sock: socket.socket, request: bytes) -> bytes:
    """Send `request`, read until the server closes or 5 s pass; the bytes read."""
    sock.settimeout(5)
    sock.sendall(request)
    received = b""
    with contextlib.suppress(TimeoutError, ConnectionResetError):
        while chunk := sock.recv(65536):
            received += chunk
    return received


# --------------------------------------------------------------------------- connections


@pytest.mark.integration
@pytest.mark.parametrize(
    ("max_connections", "descriptors"),
    [
        pytest.param("20", 128, id="the connection limit comes first"),
        pytest.param("200", 100, id="descriptors run out first"),
    ],
)
def test_more_connections_than_it_can_hold_and_a_scrape_still_succeeds(
    max_connections: str, descriptors: int
) -> None:
    env = {**LIMITS, "SIDEKIQ_EXPORTER_WEB_MAX_CONNECTIONS": max_connections}
    with daemon(env) as exporter:
        # Lowered after the start, as a crowded host or a small container would have it.
        resource.prlimit(exporter.pid, resource.RLIMIT_NOFILE, (descriptors, descriptors))
        before = len(log_lines(exporter))
        held = open_idle(exporter.port, 300)
        try:
            time.sleep(1.0)  # let the daemon take in what it can
            scrape = exporter.scrape(timeout=5)
            assert scrape.value("sidekiq_up", target="default") == 0
            assert exporter.open_fds() <= min(int(max_connections), descriptors) + 30
        finally:
            for sock in held:
                sock.close()
        new = log_lines(exporter)[before:]
        assert exporter.running
    # A line per 10 s at most for what an outsider causes (the warning, or the accept error).
    assert len(new) <= 3, "\n".join(new[:20])
    assert "Traceback" not in "".join(new)
    assert '"exception"' not in "".join(new)
    assert scrape.value("sidekiq_exporter_http_limit_hits_total", limit="max_connections") >= 1


@pytest.mark.integration
def test_the_oldest_idle_connection_makes_room() -> None:
    patient = {**LIMITS, "SIDEKIQ_EXPORTER_WEB_READ_HEADER_TIMEOUT": "1m"}  # no timeout meanwhile
    with daemon(patient) as exporter:
        held = [socket.create_connection(("127.0.0.1", exporter.port)) for _ in range(20)]
        try:
            with socket.create_connection(("127.0.0.1", exporter.port)) as newest:
                request = b"GET /-/healthy HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                assert http_exchange(newest, request).startswith(b"HTTP/1.1 200")
            # The first one held was the oldest idle one: closed to make room; the next not.
            assert closed_by_server(held[0], within=CLOSE_WAIT_SECONDS) is not None
            held[1].setblocking(False)
            with pytest.raises(BlockingIOError):
                held[1].recv(1)
            hits = exporter.scrape().value("sidekiq_exporter_http_limit_hits_total", **MAX_CONN)
            assert hits == 1  # for the newest (the scrape found room after it closed)
        finally:
            for sock in held:
                sock.close()


@pytest.mark.integration
def test_a_client_that_sends_nothing_is_closed(limited: ExporterProcess) -> None:
    with socket.create_connection(("127.0.0.1", limited.port)) as silent:
        assert closed_by_server(silent, within=CLOSE_WAIT_SECONDS) is not None


@pytest.mark.integration
def test_a_client_that_sends_its_headers_slowly_is_closed(limited: ExporterProcess) -> None:
    with socket.create_connection(("127.0.0.1", limited.port)) as slow:
        slow.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        # A byte every 0.1 s keeps the connection busy but never completes the headers.
        assert closed_by_server(slow, within=CLOSE_WAIT_SECONDS, trickle=b"a") is not None


@pytest.mark.integration
def test_an_idle_keep_alive_connection_is_closed(limited: ExporterProcess) -> None:
    with socket.create_connection(("127.0.0.1", limited.port)) as client:
        client.settimeout(5)
        client.sendall(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n")
        assert client.recv(65536).startswith(b"HTTP/1.1 200")
        assert closed_by_server(client, within=CLOSE_WAIT_SECONDS) is not None


@pytest.mark.integration
def test_the_header_timeout_counts(limited: ExporterProcess) -> None:
    before = limited.scrape().value("sidekiq_exporter_http_limit_hits_total", **READ_HEADER)
    with socket.create_connection(("127.0.0.1", limited.port)) as silent:
        assert closed_by_server(silent, within=CLOSE_WAIT_SECONDS) is not None
    after = limited.scrape().value("sidekiq_exporter_http_limit_hits_total", **READ_HEADER)
    assert after == before + 1


# --------------------------------------------------------------------------- malformed requests

# Malformed requests, smuggling shapes included. aiohttp 3.14's parser refuses every one with
# 400; with 3.11, 200 headers pass and the bad authority is refused without an answer.
MALFORMED: dict[str, bytes] = {
    "bad method": b"G\x01T / HTTP/1.1\r\nHost: x\r\n\r\n",
    "lowercase method": b"get / HTTP/1.1\r\nHost: x\r\n\r\n",
    "method with text": MARKER + b"@ / HTTP/1.1\r\nHost: x\r\n\r\n",
    "long URL": b"GET /" + MARKER + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    "long header value": b"GET / HTTP/1.1\r\nHost: x\r\nX-A: " + MARKER + b"b" * 9000 + b"\r\n\r\n",
    "long header name": b"GET / HTTP/1.1\r\nHost: x\r\n" + MARKER + b"c" * 9000 + b": v\r\n\r\n",
    "too many headers": b"GET / HTTP/1.1\r\nHost: x\r\n"
    + b"".join(b"X-%d: v\r\n" % i for i in range(200))
    + b"\r\n",
    "space in header name": b"GET / HTTP/1.1\r\nHo st: " + MARKER + b"\r\n\r\n",
    "header without colon": b"GET / HTTP/1.1\r\nHost: x\r\n" + MARKER + b"\r\n\r\n",
    "NUL in header": b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x00" + MARKER + b"\r\n\r\n",
    "control byte in header": b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x01" + MARKER + b"\r\n\r\n",
    "obsolete line folding": b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n " + MARKER + b"\r\n\r\n",
    "space before colon": b"GET / HTTP/1.1\r\nHost : x\r\n\r\n",
    "bare LF": b"GET / HTTP/1.1\r\nHost: x\nX-A: " + MARKER + b"\r\n\r\n",
    "bare CR": b"GET / HTTP/1.1\rHost: x\r\n\r\n",
    "unknown version": b"GET / HTTP/9.9\r\nHost: x\r\n\r\n",
    "garbage version": b"GET / " + MARKER + b"\r\nHost: x\r\n\r\n",
    "bad authority": b"GET http://[" + MARKER + b"/ HTTP/1.1\r\nHost: x\r\n\r\n",
    "space in URL": b"GET /a b" + MARKER + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    "DEL in URL": b"GET /a\x7f" + MARKER + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    "Content-Length and Transfer-Encoding": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5"
    b"\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "two Content-Lengths": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n"
    b"Content-Length: 2\r\n\r\nab",
    "negative Content-Length": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    "Content-Length not a number": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: "
    + MARKER
    + b"\r\n\r\n",
    "Content-Length with +": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\nhello",
    "chunked not last": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, "
    + MARKER
    + b"\r\n\r\n",
    "unknown Transfer-Encoding": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: "
    + MARKER
    + b"\r\n\r\n",
    "two Transfer-Encodings": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
    b"Transfer-Encoding: x\r\n\r\n",
    "bad chunk size": b"POST /metrics HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nZZ"
    + MARKER
    + b"\r\n\r\n",
    "NUL in chunk extension": b"POST /metrics HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked"
    b"\r\n\r\n1;\x00" + MARKER + b"\r\na\r\n0\r\n\r\n",
    "HTTP/2 preface": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    "TLS ClientHello": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + MARKER,
    "binary noise": bytes(range(256)) + MARKER,
    "blank lines then garbage": b"\r\n\r\n" + MARKER + b"\r\n\r\n",
    "UTF-8 header name": b"GET / HTTP/1.1\r\nHost: x\r\nX-\xc3\xa9: v\r\n\r\n",
    "control byte in Host": b"GET / HTTP/1.1\r\nHost: a\x01" + MARKER + b"\r\n\r\n",
    "data after Connection: close": b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    b"GET /" + MARKER + b" HTTP/1.1\r\nHost: x\r\n\r\n",
}


@pytest.mark.integration
def test_malformed_requests_get_400_and_are_counted_not_logged(limited: ExporterProcess) -> None:
    before_lines = len(log_lines(limited))
    before = limited.scrape().total("sidekiq_exporter_http_bad_requests_total")
    started = time.monotonic()
    refused = 0
    for name, request in MALFORMED.items():
        with socket.create_connection(("127.0.0.1", limited.port)) as client:
            response = http_exchange(client, request)
        status_line = response.split(b"\r\n", 1)[0]
        refused += status_line.endswith(b" 400 Bad Request") or response == b""
        assert not status_line.startswith(b"HTTP/1.1 5"), (name, response[:200])
        assert MARKER not in response, name  # the body does not echo the request either
    assert refused >= len(MALFORMED) - 2, refused  # see MALFORMED
    scrape = limited.scrape()
    assert scrape.total("sidekiq_exporter_http_bad_requests_total") == before + refused
    new = log_lines(limited)[before_lines:]
    assert MARKER.decode() not in "\n".join(new)
    found = [e for e in events(new) if e.get("logger") != "exporter.poller"]
    # DEBUG at most, and at most one line per 10 s for all of them.
    assert {e["level"] for e in found} <= {"debug"}, found
    assert [e["event"] for e in found if e["event"] != "http_bad_request"] == []
    assert len(found) <= 1 + (time.monotonic() - started) // 10, found


@pytest.mark.integration
def test_malformed_requests_log_nothing_at_the_default_level() -> None:
    with daemon(LIMITS) as exporter:
        before = len(log_lines(exporter))
        for request in MALFORMED.values():
            with socket.create_connection(("127.0.0.1", exporter.port)) as client:
                http_exchange(client, request)
        scrape = exporter.scrape()
        new = log_lines(exporter)[before:]
    assert scrape.total("sidekiq_exporter_http_bad_requests_total") >= len(MALFORMED) - 2
    assert [e for e in events(new) if e.get("logger") != "exporter.poller"] == []


# --------------------------------------------------------------------------- TLS


@pytest.fixture(scope="module")
def tls_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ExporterProcess, Path]]:
    """A daemon serving TLS with the low limits; yields it and the CA that signed it."""
    directory = tmp_path_factory.mktemp("tls")
    pki = make_pki(directory)
    web = directory / "web.yml"
    web.write_text(
        f"tls_server_config:\n  cert_file: {pki.server.cert}\n  key_file: {pki.server.key}\n"
    )
    args = ("--web.config.file", str(web))
    with ListeningExporter(closed_redis_url(), env=LIMITS, args=args) as exporter:
        yield exporter, pki.ca.cert


@pytest.mark.integration
@pytest.mark.parametrize("sent", [b"", b"\x16\x03\x01\x00\xff"], ids=["nothing", "half a hello"])
def test_a_stalled_tls_handshake_is_closed(
    tls_daemon: tuple[ExporterProcess, Path], sent: bytes
) -> None:
    exporter, _ = tls_daemon
    with socket.create_connection(("127.0.0.1", exporter.port)) as client:
        client.sendall(sent)
        assert closed_by_server(client, within=CLOSE_WAIT_SECONDS) is not None


@pytest.mark.integration
def test_tls_scrapes_work_within_the_limits(tls_daemon: tuple[ExporterProcess, Path]) -> None:
    exporter, ca = tls_daemon
    context = ssl.create_default_context(cafile=str(ca))
    with (
        socket.create_connection(("127.0.0.1", exporter.port)) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as client,
    ):
        response = http_exchange(
            client, b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
    body = response.split(b"\r\n\r\n", 1)[1].decode()
    assert Scrape.parse(body).value("sidekiq_up", target="default") == 0
