"""Credential checks (exporter/web/auth.py): a few at a time, taking turns between sources,
refused at once (429) beyond a bounded number waiting; a valid user is not starved by a flood
of wrong passwords. (The rest of the middleware is tested with the web config file, in
tests/test_web_config.py.)"""

from __future__ import annotations

import asyncio
import base64
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import bcrypt
import pytest
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry

from exporter.settings import load_settings
from exporter.store import Store
from exporter.web.app import create_app
from exporter.web.auth import CredentialChecks, client_source
from exporter.web.config import ServedWebConfig, parse_web_config
from exporter.web.server import HttpCounters

PASSWORD = "the-right-one"


class Gate:
    """A check function whose calls block until released, one by one, in the order asked."""

    def __init__(self) -> None:
        self.started: list[bytes] = []  # the passwords, in the order their checks started
        self._lock = threading.Lock()
        self._release: dict[bytes, threading.Event] = {}

    def __call__(self, password: bytes, hashed: bytes) -> bool:
        event = threading.Event()
        with self._lock:
            self.started.append(password)
            self._release[password] = event
        assert event.wait(10), f"{password!r} never released"
        return password == hashed

    async def running(self, count: int) -> None:
        """Wait until `count` checks have started."""
        async with asyncio.timeout(10):
            while len(self.started) < count:  # noqa: ASYNC110 (they start in worker threads)
                await asyncio.sleep(0.005)

    def release(self, password: bytes) -> None:
        with self._lock:
            self._release[password].set()

    async def drain(self, tasks: list[asyncio.Task[bool | None]]) -> None:
        """Release every check as it starts until `tasks` are done."""
        async with asyncio.timeout(10):
            while not all(task.done() for task in tasks):
                for password in list(self.started):
                    self.release(password)
                await asyncio.sleep(0.005)


async def checks_with_gate(
    workers: int = 1, max_waiting: int = 32, per_source: int = 4
) -> tuple[CredentialChecks, Gate]:
    gate = Gate()
    return CredentialChecks(workers, max_waiting, per_source, check=gate), gate


def submit(checks: CredentialChecks, source: str, password: bytes) -> asyncio.Task[bool | None]:
    return asyncio.create_task(checks.check(source, password, b"hash"))


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_sources_take_turns() -> None:
    checks, gate = await checks_with_gate(workers=1)
    flood = [submit(checks, "10.0.0.1", b"a%d" % i) for i in range(4)]
    await gate.running(1)
    await settle()
    valid = submit(checks, "10.0.0.2", b"b")
    await settle()
    await gate.drain([*flood, valid])
    # The second source waits for the running check and one check of the first, not for all.
    assert gate.started == [b"a0", b"a1", b"b", b"a2", b"a3"]


async def test_a_free_worker_goes_to_the_source_with_fewest_checks_running() -> None:
    checks, gate = await checks_with_gate(workers=2)
    flood = [submit(checks, "10.0.0.1", b"a%d" % i) for i in range(6)]
    await gate.running(2)
    await settle()
    valid = submit(checks, "10.0.0.2", b"b")
    await settle()
    gate.release(b"a0")
    await gate.running(3)
    # The first worker to come free goes to the source with none running.
    assert gate.started[2] == b"b"
    await gate.drain([*flood, valid])


async def test_beyond_the_waiting_bounds_a_check_is_refused_at_once() -> None:
    checks, gate = await checks_with_gate(workers=1, max_waiting=5, per_source=3)
    tasks = [submit(checks, "10.0.0.1", b"r")]
    await gate.running(1)
    tasks += [submit(checks, "10.0.0.1", b"w%d" % i) for i in range(3)]
    await settle()
    # The source has 3 waiting: its 4th is refused; other sources still get in.
    assert await checks.check("10.0.0.1", b"x", b"hash") is None
    tasks += [submit(checks, "10.0.0.2", b"o1"), submit(checks, "10.0.0.3", b"o2")]
    await settle()
    assert checks.waiting == 5
    assert await checks.check("10.0.0.4", b"y", b"hash") is None  # 5 waiting in all
    await gate.drain(tasks)
    assert [task.result() for task in tasks] == [False] * 6
    assert checks.waiting == 0
    assert len(gate.started) == 6


async def test_a_client_that_goes_away_leaves_its_place() -> None:
    checks, gate = await checks_with_gate(workers=1, per_source=2)
    running = submit(checks, "10.0.0.1", b"r")
    await gate.running(1)
    gone = submit(checks, "10.0.0.1", b"gone")
    await settle()
    gone.cancel()
    await settle()
    assert checks.waiting == 0
    stays = submit(checks, "10.0.0.1", b"stays")
    await settle()
    gate.release(b"r")
    await gate.running(2)
    gate.release(b"stays")
    assert await running is False
    assert await stays is False
    assert gate.started == [b"r", b"stays"]  # the cancelled check never ran


async def test_a_check_whose_client_went_away_still_holds_its_worker() -> None:
    checks, gate = await checks_with_gate(workers=1)
    abandoned = submit(checks, "10.0.0.1", b"abandoned")
    await gate.running(1)
    abandoned.cancel()
    nxt = submit(checks, "10.0.0.2", b"next")
    await asyncio.sleep(0.05)
    assert gate.started == [b"abandoned"]  # bcrypt cannot be stopped: no second one at once
    gate.release(b"abandoned")
    await gate.running(2)
    gate.release(b"next")
    assert await nxt is False


@pytest.mark.parametrize(
    ("remote", "source"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:bbbb::9", "2001:db8:1:2::/64"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
        ("unix socket", "unix socket"),
        (None, ""),
    ],
)
def test_client_source(remote: str | None, source: str) -> None:
    assert client_source(remote) == source


# --------------------------------------------------------------------------- over HTTP


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


@pytest.fixture
async def auth_server(tmp_path: Path) -> AsyncIterator[tuple[TestServer, HttpCounters]]:
    """An app with one basic-auth user (bcrypt cost 10, ~50 ms a check), on 127.0.0.1."""
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(10)).decode()
    config = parse_web_config(f"basic_auth_users:\n  prometheus: '{hashed}'\n", str(tmp_path))
    counters = HttpCounters()
    settings = load_settings(["--redis.url=redis://127.0.0.1:1/0"], {}, stdout_is_tty=False)
    app = create_app(
        settings,
        CollectorRegistry(),
        Store(["default"]),
        middlewares=[ServedWebConfig(config, counters).middleware()],
    )
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield server, counters
    await server.close()


async def get(session: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> int:
    async with session.get(url, headers=headers) as response:
        await response.read()
        return response.status


async def test_a_valid_user_is_not_starved_by_a_flood_of_wrong_passwords(
    auth_server: tuple[TestServer, HttpCounters],
) -> None:
    server, counters = auth_server
    url = str(server.make_url("/-/healthy"))
    flood_done: list[int] = []  # statuses, in the order the flood's answers arrived

    async def wrong(session: aiohttp.ClientSession, i: int) -> None:
        flood_done.append(await get(session, url, basic("prometheus", f"wrong-{i}")))

    # The flood from 127.0.0.1, the valid user from 127.0.0.2: two sources.
    flood_connector = aiohttp.TCPConnector(limit=0)
    valid_connector = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
    async with (
        aiohttp.ClientSession(connector=flood_connector) as flooding,
        aiohttp.ClientSession(connector=valid_connector) as valid,
    ):
        flood = [asyncio.create_task(wrong(flooding, i)) for i in range(40)]
        await asyncio.sleep(0.3)  # every flood request is in, waiting or refused
        checked_before = flood_done.count(401)
        assert await get(valid, url, basic("prometheus", PASSWORD)) == 200
        checked_meanwhile = flood_done.count(401) - checked_before
        await asyncio.gather(*flood)
    # While the valid user waited, a few wrong passwords were checked: the ones running and
    # one turn of the flooding source; not every one queued before it.
    assert checked_meanwhile <= 6, flood_done
    assert set(flood_done) == {401, 429}
    assert counters.limit_hits["credential_queue"] == flood_done.count(429)
