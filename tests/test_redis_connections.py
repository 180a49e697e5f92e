"""Targets and Redis connections, for real on loopback (issue 6), and the trimmed read-only ACL.

Every server here is started by the test: redis-server with TLS (a CA and certificates made
with the openssl CLI, tests/support/tls.py), with a client-certificate requirement, with a
unix socket; a master, a replica and Debian's redis-sentinel (tests/support/sentinel.py); a
listener that accepts and never answers (a hung Redis). The exporter is used both as a
library (`create_redis_client`, to pin down TLS verification, SNI and what each mode sends)
and as the real daemon with a `--config.file` listing several targets.

The exporter runs as an ACL user holding only `EXPORTER_ACL` (docs/security.md), which is
docs/redis-layout.md §11 trimmed to what is really sent; `test_trimmed_acl_line_...` proves it
is enough (every family, every Sidekiq generation, `ACL LOG` empty) and that nothing in it is
unused. The full §11 line against real Sidekiq 6.4, 7.3 and 8.1 is tests/test_conformance.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import socket
import ssl
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.asyncio.sentinel import SentinelConnectionPool
from redis.exceptions import AuthenticationError
from redis.exceptions import ConnectionError as RedisConnectionError

from exporter.config_file import ConfigError
from exporter.connection import (
    SentinelMasterConnection,
    SentinelMasterTLSConnection,
    TLSConnection,
    create_redis_client,
    sentinel_timeout,
)
from exporter.logs import TARGET_DOWN
from exporter.settings import load_settings
from exporter.targets import TargetSettings, build_target
from tests.support.exporter_process import ExporterProcess, Scrape
from tests.support.families import ALL_FAMILIES, HTTP_SERVER_FAMILIES, JOB_CLASS_FAMILIES
from tests.support.layouts import CRON_1, V6_4_1, V7, V8_0, V8_1_2, SidekiqWriter
from tests.support.redis_server import SERVERS, RedisServer, free_port
from tests.support.resp_proxy import RecordingProxy
from tests.support.sentinel import MASTER_NAME, SentinelServer
from tests.support.tls import SERVER_NAME, Pki, make_pki, redis_tls_args

pytestmark = pytest.mark.integration

EXPORTER_USER = "sidekiq_exporter"
# docs/security.md: the commands the exporter sends (exporter/sidekiq/reader.py) plus SELECT,
# which redis-py sends on connect for a database other than 0. AUTH needs no grant.
EXPORTER_ACL_COMMANDS = (
    "+time", "+select", "+scan", "+sscan", "+scard", "+smembers", "+get", "+llen", "+lindex",
    "+zcard", "+zcount", "+zrange", "+hmget", "+hgetall",
)  # fmt: skip
EXPORTER_ACL = ("resetkeys", "%R~*", "resetchannels", "-@all", *EXPORTER_ACL_COMMANDS)
SENT_ON_CONNECT = {"AUTH", "SELECT"}

POLL_INTERVAL = 1.0  # the shortest the exporter allows; the poll timeout is 80 % of it


# --- helpers ----------------------------------------------------------------------------------


def add_exporter_user(server: RedisServer, password: str) -> None:
    server.execute("ACL", "SETUSER", EXPORTER_USER, "on", f">{password}", *EXPORTER_ACL)


def acl_log(server: RedisServer) -> list[Any]:
    return list(server.execute("ACL", "LOG") or [])


def commandstats(server: RedisServer) -> set[str]:
    """Command names (lower case, `container|sub`) the server counted since CONFIG RESETSTAT."""
    stats = str(server.execute("INFO", "commandstats"))
    return {
        line.split(":", 1)[0].removeprefix("cmdstat_")
        for line in stats.splitlines()
        if line.startswith("cmdstat_")
    }


def exporter_clients(server: RedisServer) -> list[str]:
    return [
        line
        for line in str(server.execute("CLIENT", "LIST")).splitlines()
        if f" user={EXPORTER_USER} " in line
    ]


def push_jobs(server: RedisServer, queue: str, count: int, db: int = 0) -> None:
    """`count` jobs in `queue`, as Sidekiq::Client pushes them."""
    with server.connect(db) as c:
        c.execute("SADD", "queues", queue)
        for i in range(count):
            now = time.time()
            job: dict[str, Any] = {"class": "HardJob", "queue": queue, "jid": f"{i:024x}"}
            job |= {"args": [i], "created_at": now, "enqueued_at": now}
            c.execute("LPUSH", f"queue:{queue}", json.dumps(job))


def queue_size(scrape: Scrape, target: str, queue: str) -> float | None:
    return scrape.get("sidekiq_queue_enqueued_jobs", None, target=target, queue=queue)


def wait_for_scrape(
    exporter: ExporterProcess, check: Any, timeout: float, what: str
) -> tuple[Scrape, list[Scrape]]:
    """Scrape every 0.1 s until `check(scrape)`; return it and every scrape taken."""
    deadline = time.monotonic() + timeout
    seen: list[Scrape] = []
    while True:
        scrape = exporter.scrape()
        seen.append(scrape)
        if check(scrape):
            return scrape, seen
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not seen within {timeout}s; log:\n{exporter.log_tail()}")
        time.sleep(0.1)


def write_config(path: Path, targets: list[dict[str, Any]]) -> str:
    path.write_text(json.dumps({"targets": targets}, indent=2))  # JSON is YAML
    return str(path)


async def call_time(target: TargetSettings) -> None:
    """One `TIME` through the exporter's client for `target`, which is then closed."""
    client = create_redis_client(target, timeout=2.0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            await client.execute_command("TIME")  # type: ignore[no-untyped-call]
    finally:
        await client.aclose()


class Blackhole:
    """Accepts TCP connections on 127.0.0.1 and never answers: a hung Redis."""

    MAX_SECONDS = 120.0

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.port: int = self._listener.getsockname()[1]
        self._held: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="blackhole", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        deadline = time.monotonic() + self.MAX_SECONDS
        while not self._stop.is_set() and time.monotonic() < deadline and len(self._held) < 500:
            with contextlib.suppress(TimeoutError):
                connection, _ = self._listener.accept()
                self._held.append(connection)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for connection in [*self._held, self._listener]:
            connection.close()


@dataclass
class SentinelCluster:
    master: RedisServer
    replica: RedisServer
    sentinel: SentinelServer


@contextlib.contextmanager
def sentinel_cluster(user_password: str, sentinel_password: str) -> Iterator[SentinelCluster]:
    """A master, one replica and one Sentinel; the exporter's ACL user on both data nodes."""
    fast_sync = ("--repl-diskless-sync-delay", "0")
    with contextlib.ExitStack() as stack:
        master = stack.enter_context(RedisServer(*fast_sync))
        replica = stack.enter_context(
            RedisServer(*fast_sync, "--replicaof", "127.0.0.1", str(master.port))
        )
        for node in (master, replica):  # ACL users are not replicated
            add_exporter_user(node, user_password)
        sentinel = stack.enter_context(SentinelServer(master.port, password=sentinel_password))
        sentinel.wait_for_replicas(1)
        yield SentinelCluster(master, replica, sentinel)


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def password() -> str:
    return secrets.token_hex(16)


@pytest.fixture(scope="module")
def password_file(tmp_path_factory: pytest.TempPathFactory, password: str) -> str:
    path = tmp_path_factory.mktemp("secrets") / "redis-password"
    path.write_text(password + "\n")
    path.chmod(0o600)
    return str(path)


@dataclass
class TLSServer:
    server: RedisServer
    tls_port: int


@contextlib.contextmanager
def tls_server(
    pki: Pki, *, dns_only: bool, client_certs: bool, password: str
) -> Iterator[TLSServer]:
    tls_port = free_port()
    cert = pki.server_dns_only if dns_only else pki.server
    args = redis_tls_args(pki, tls_port, server=cert, auth_clients=client_certs)
    with RedisServer(*args) as server:  # the plain port stays for the admin helpers
        add_exporter_user(server, password)
        yield TLSServer(server, tls_port)


@pytest.fixture(scope="module")
def tls(pki: Pki, password: str) -> Iterator[TLSServer]:
    """TLS with a certificate for redis.test and 127.0.0.1; no client certificate needed."""
    with tls_server(pki, dns_only=False, client_certs=False, password=password) as server:
        yield server


@pytest.fixture(scope="module")
def mtls(pki: Pki, password: str) -> Iterator[TLSServer]:
    """TLS with a certificate for redis.test only, and client certificates required."""
    with tls_server(pki, dns_only=True, client_certs=True, password=password) as server:
        yield server


def tls_target(server: TLSServer, password: str, **tls: Any) -> TargetSettings:
    url = f"rediss://{EXPORTER_USER}@127.0.0.1:{server.tls_port}/0"
    return build_target(name="tls", url=url, password=password, **tls)


# --- TLS --------------------------------------------------------------------------------------


async def test_tls_verifies_the_server_with_the_ca_file(
    tls: TLSServer, pki: Pki, password: str
) -> None:
    await call_time(tls_target(tls, password, tls_ca_file=str(pki.ca.cert)))
    # A CA that did not sign the server certificate; then the system store, which has no
    # test CA either: ca_file replaces the system store, it does not add to it.
    for ca in (str(pki.other_ca.cert), ""):
        with pytest.raises(RedisConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
            await call_time(tls_target(tls, password, tls_ca_file=ca))


async def test_tls_server_name_replaces_the_host_in_verification(
    tls: TLSServer, mtls: TLSServer, pki: Pki, password: str
) -> None:
    ca = str(pki.ca.cert)
    client = {"tls_cert_file": str(pki.client.cert), "tls_key_file": str(pki.client.key)}
    await call_time(tls_target(tls, password, tls_ca_file=ca, tls_server_name=SERVER_NAME))
    # 127.0.0.1 is in this certificate, but the name checked is server_name's.
    with pytest.raises(RedisConnectionError, match="Hostname mismatch"):
        await call_time(tls_target(tls, password, tls_ca_file=ca, tls_server_name="other.test"))
    # A certificate for redis.test only, reached by IP: only server_name makes it verify.
    await call_time(
        tls_target(mtls, password, tls_ca_file=ca, tls_server_name=SERVER_NAME, **client)
    )
    with pytest.raises(RedisConnectionError, match="IP address mismatch"):
        await call_time(tls_target(mtls, password, tls_ca_file=ca, **client))


async def test_tls_server_name_is_sent_as_sni(pki: Pki) -> None:
    """A bare TLS listener records the SNI it receives (Redis does not log it)."""
    names: list[str | None] = []
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(pki.server.cert, pki.server.key)

    def record_sni(_sock: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
        names.append(name)

    server_context.sni_callback = record_sni

    async def close_at_once(_r: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(close_at_once, "127.0.0.1", 0, ssl=server_context)
    port = server.sockets[0].getsockname()[1]
    try:
        for server_name in (SERVER_NAME, ""):
            target = build_target(
                name="sni",
                url=f"rediss://127.0.0.1:{port}/0",
                tls_ca_file=str(pki.ca.cert),
                tls_server_name=server_name,
            )
            with pytest.raises(RedisConnectionError):
                await call_time(target)
    finally:
        server.close()
        await server.wait_closed()
    # With server_name: that name. Without: the URL's host, and an IP is never sent as SNI.
    assert names == [SERVER_NAME, None]


async def test_tls_insecure_skip_verify_checks_neither_chain_nor_name(
    tls: TLSServer, pki: Pki, password: str
) -> None:
    for extra in ({"tls_ca_file": str(pki.other_ca.cert)}, {"tls_server_name": "other.test"}):
        await call_time(tls_target(tls, password, tls_insecure_skip_verify=True, **extra))


async def test_tls_client_certificate(mtls: TLSServer, pki: Pki, password: str) -> None:
    verified = {"tls_ca_file": str(pki.ca.cert), "tls_server_name": SERVER_NAME}
    await call_time(
        tls_target(
            mtls,
            password,
            tls_cert_file=str(pki.client.cert),
            tls_key_file=str(pki.client.key),
            **verified,
        )
    )
    # Without a certificate the server ends the handshake (the error text varies by where
    # the client notices: during the handshake or at the first read).
    with pytest.raises(RedisConnectionError):
        await call_time(tls_target(mtls, password, **verified))
    assert mtls.server.running


async def test_tls_sends_only_auth_and_select_on_connect(
    tls: TLSServer, pki: Pki, password: str
) -> None:
    url = f"rediss://{EXPORTER_USER}@127.0.0.1:{tls.tls_port}/3"
    target = build_target(name="tls", url=url, password=password, tls_ca_file=str(pki.ca.cert))
    tls.server.execute("CONFIG", "RESETSTAT")
    await call_time(target)
    assert commandstats(tls.server) - {"config|resetstat"} == {"auth", "select", "time"}


# --- ACL user with a password file, unix socket -------------------------------------------------


async def test_acl_user_with_password_file_from_the_config_file(
    redis_server: RedisServer, tmp_path: Path, password: str, password_file: str
) -> None:
    add_exporter_user(redis_server, password)
    wrong = tmp_path / "wrong-password"
    wrong.write_text("not-it\n")
    config = write_config(
        tmp_path / "config.yml",
        [
            {
                "name": name,
                "url": f"redis://127.0.0.1:{redis_server.port}/1",
                "username": EXPORTER_USER,
                "password_file": file,
            }
            for name, file in (("right", password_file), ("wrong", str(wrong)))
        ],
    )
    settings = load_settings(["--config.file", config], {}, stdout_is_tty=False)
    right, wrong_target = settings.targets
    assert right.password == password  # the trailing newline is not part of it
    redis_server.execute("CONFIG", "RESETSTAT")
    await call_time(right)
    assert commandstats(redis_server) - {"config|resetstat"} == {"auth", "select", "time"}
    with pytest.raises(AuthenticationError):
        await call_time(wrong_target)
    assert password not in repr(right)


async def test_unix_socket(tmp_path: Path, password: str) -> None:
    socket_path = str(tmp_path / "redis.sock")
    with RedisServer(unix_socket=socket_path) as server:
        add_exporter_user(server, password)
        server.execute("CONFIG", "RESETSTAT")
        url = f"unix://{EXPORTER_USER}@{socket_path}?db=2"
        await call_time(build_target(name="unix", url=url, password=password))
        assert commandstats(server) - {"config|resetstat"} == {"auth", "select", "time"}


# --- Sentinel: options, and what discovery sends -----------------------------------------------


def test_sentinel_client_options(pki: Pki) -> None:
    target = build_target(
        name="ha",
        url=f"redis://{EXPORTER_USER}@unused/4",
        password="data-pw",
        sentinels=(("127.0.0.1", 26379), ("127.0.0.2", 26380)),
        sentinel_master="mymaster",
        sentinel_password="sentinel-pw",
    )
    client = create_redis_client(target, timeout=1.5)
    pool = client.connection_pool
    assert isinstance(pool, SentinelConnectionPool)
    assert pool.connection_class is SentinelMasterConnection
    master = pool.connection_kwargs
    assert (master["username"], master["password"], master["db"]) == (EXPORTER_USER, "data-pw", 4)
    assert "host" not in master
    nodes = [s.connection_pool.connection_kwargs for s in pool.sentinel_manager.sentinels]
    assert [(n["host"], n["port"]) for n in nodes] == [("127.0.0.1", 26379), ("127.0.0.2", 26380)]
    for kwargs in [master, *nodes]:
        assert kwargs["protocol"] == 2
        assert kwargs["driver_info"] is None
        assert kwargs["client_name"] is None
        assert kwargs["retry"].get_retries() == 0
        assert kwargs["health_check_interval"] == 0
    assert (master["socket_timeout"], master["socket_connect_timeout"]) == (1.5, 1.5)
    # Sentinels get a short timeout of their own, so a hung one cannot eat every poll.
    short = sentinel_timeout(1.5, 2)
    for node in nodes:
        assert (node["socket_timeout"], node["socket_connect_timeout"]) == (short, short)
        assert (node["username"], node["password"], node.get("db", 0)) == (None, "sentinel-pw", 0)

    tls = replace(target, url="rediss://unused/0", tls_ca_file=str(pki.ca.cert))
    tls_pool = create_redis_client(tls, timeout=1).connection_pool
    assert isinstance(tls_pool, SentinelConnectionPool)
    assert tls_pool.connection_class is SentinelMasterTLSConnection
    for sentinel in tls_pool.sentinel_manager.sentinels:
        assert sentinel.connection_pool.connection_class is TLSConnection


async def test_no_sentinel_answering_is_a_short_error_naming_them() -> None:
    ports = (free_port(), free_port())
    target = build_target(
        name="ha",
        url="redis://unused/0",
        password="data-secret",
        sentinels=tuple(("127.0.0.1", port) for port in ports),
        sentinel_master=MASTER_NAME,
        sentinel_password="sentinel-secret",
    )
    with pytest.raises(RedisConnectionError) as caught:
        await call_time(target)
    message = str(caught.value)
    # The poller logs the first 200 characters: the Sentinels must be named within them.
    assert message.startswith(f"No master found for '{MASTER_NAME}'")
    assert all(f"sentinel 127.0.0.1:{port} - " in message[:200] for port in ports), message
    assert "secret" not in message


def test_sentinels_need_a_tcp_url() -> None:
    with pytest.raises(ConfigError, match=r"redis:// or rediss://"):
        build_target(
            name="ha", url="unix:///run/redis.sock", sentinels=(("h", 1),), sentinel_master="m"
        )


async def test_sentinel_discovery_sends_auth_and_sentinel_masters(password: str) -> None:
    sentinel_password = secrets.token_hex(8)
    with (
        sentinel_cluster(password, sentinel_password) as cluster,
        RecordingProxy(cluster.sentinel.port) as proxy,
    ):
        cluster.master.execute("CONFIG", "RESETSTAT")
        target = build_target(
            name="ha",
            url=f"redis://{EXPORTER_USER}@unused/5",
            password=password,
            # A Sentinel that is down comes first: discovery moves on to the next one.
            sentinels=(("127.0.0.1", free_port()), ("127.0.0.1", proxy.port)),
            sentinel_master=MASTER_NAME,
            sentinel_password=sentinel_password,
        )
        client = create_redis_client(target, timeout=2)
        try:
            for _ in range(3):  # three polls on one connection
                await client.execute_command("TIME")  # type: ignore[no-untyped-call]
        finally:
            await client.aclose()
        assert commandstats(cluster.master) - {"config|resetstat"} == {"auth", "select", "time"}
        # AUTH once per Sentinel connection; SENTINEL MASTERS once per round trip plus once for the
        # new master connection (the proxy names the command, not its subcommand).
        assert proxy.commands == {"AUTH": 1, "SENTINEL": 4}
        assert not proxy.errors


# --- the daemon: several targets, each on its own ------------------------------------------------


def test_daemon_polls_every_target_independently(
    tmp_path: Path, pki: Pki, mtls: TLSServer, password: str, password_file: str
) -> None:
    """Plain (ACL user, db 3), mTLS, unix, Sentinel, a closed port and a hung server at once."""
    socket_path = str(tmp_path / "redis.sock")
    sentinel_password_file = tmp_path / "sentinel-password"
    sentinel_password_file.write_text("s3ntinel\n")
    user = {"username": EXPORTER_USER, "password_file": password_file}
    with contextlib.ExitStack() as stack:
        plain = stack.enter_context(RedisServer(unix_socket=socket_path))
        add_exporter_user(plain, password)
        proxy = stack.enter_context(RecordingProxy(plain.port))
        cluster = stack.enter_context(sentinel_cluster(password, "s3ntinel"))
        hung = Blackhole()
        stack.callback(hung.close)
        push_jobs(plain, "plain_queue", 3, db=3)
        push_jobs(plain, "unix_queue", 2, db=2)
        push_jobs(mtls.server, "tls_queue", 4)
        push_jobs(cluster.master, "ha_queue", 5)
        config = write_config(
            tmp_path / "config.yml",
            [
                {"name": "plain", "url": f"redis://127.0.0.1:{proxy.port}/3", **user},
                {
                    "name": "tls",
                    "url": f"rediss://127.0.0.1:{mtls.tls_port}/0",
                    **user,
                    "ca_file": str(pki.ca.cert),
                    "cert_file": str(pki.client.cert),
                    "key_file": str(pki.client.key),
                    "server_name": SERVER_NAME,
                },
                {"name": "unix", "url": f"unix://{socket_path}?db=2", **user},
                {
                    "name": "sentinel",
                    "url": "redis://unused/0",
                    **user,
                    "sentinels": [f"127.0.0.1:{cluster.sentinel.port}"],
                    "sentinel_master": MASTER_NAME,
                    "sentinel_password_file": str(sentinel_password_file),
                },
                {"name": "down", "url": f"redis://127.0.0.1:{free_port()}/0"},
                {"name": "hung", "url": f"redis://127.0.0.1:{hung.port}/0"},
            ],
        )
        exporter = stack.enter_context(
            ExporterProcess(None, args=("--config.file", config), ready_path="/-/healthy")
        )
        good = {"plain": "plain_queue", "tls": "tls_queue", "unix": "unix_queue"}
        good["sentinel"] = "ha_queue"
        first, _ = wait_for_scrape(
            exporter,
            lambda s: all(s.get("sidekiq_up", 0, target=t) == 1 for t in good),
            15,
            "every good target up",
        )
        assert exporter.get("/-/ready")[0] == 503  # two targets never had a successful poll
        for target, queue in good.items():
            assert queue_size(first, target, queue) == {"plain": 3, "tls": 4, "unix": 2}.get(
                target, 5
            )
        # Over three intervals the good targets keep their schedule, each poll fast, while the
        # hung target's polls take the whole poll timeout and the down one fails at once.
        started = time.monotonic()
        scrapes = []
        while time.monotonic() - started < 3 * POLL_INTERVAL:
            scrapes.append(exporter.scrape())
            time.sleep(0.25)
        last = exporter.scrape()
        for target in good:
            polls = exporter.polls(last, target) - exporter.polls(first, target)
            assert polls >= 2, f"{target}: {polls} polls in 3 intervals"
            for s in [*scrapes, last]:
                assert s.value("sidekiq_up", target=target) == 1
                age = s.scraped_at - s.value(
                    "sidekiq_exporter_last_poll_success_timestamp_seconds", target=target
                )
                assert age < POLL_INTERVAL + 0.5, f"{target}: last success {age:.2f}s ago"
                assert s.value("sidekiq_exporter_poll_duration_seconds", target=target) < 0.4
        for target in ("down", "hung"):
            assert last.value("sidekiq_up", target=target) == 0
            assert last.value("sidekiq_exporter_polls_total", target=target, result="error") >= 2
        assert last.value("sidekiq_exporter_poll_duration_seconds", target="hung") >= 0.7
        assert last.value("sidekiq_exporter_poll_duration_seconds", target="down") < 0.4

        exporter.stop()
        events = exporter.log_events()
        downs = [e["target"] for e in events if e.get("event") == TARGET_DOWN]
        assert sorted(downs) == ["down", "hung"]  # one line per state change
        assert password not in exporter.log_text()
        assert "s3ntinel" not in exporter.log_text()
        for server in (plain, mtls.server, cluster.master, cluster.replica):
            assert acl_log(server) == [], server
        sent = set(proxy.commands)
        assert sent <= {c[1:].upper() for c in EXPORTER_ACL_COMMANDS} | {"AUTH"}, sent


def test_daemon_follows_a_sentinel_failover(
    tmp_path: Path, password: str, password_file: str
) -> None:
    with sentinel_cluster(password, "s3ntinel") as cluster:
        sentinel_password_file = tmp_path / "sentinel-password"
        sentinel_password_file.write_text("s3ntinel\n")
        push_jobs(cluster.master, "before_failover", 5, db=1)
        config = write_config(
            tmp_path / "config.yml",
            [
                {
                    "name": "ha",
                    "url": "redis://unused/1",
                    "username": EXPORTER_USER,
                    "password_file": password_file,
                    "sentinels": [f"127.0.0.1:{free_port()}", cluster.sentinel.address],
                    "sentinel_master": MASTER_NAME,
                    "sentinel_password_file": str(sentinel_password_file),
                }
            ],
        )
        with ExporterProcess(None, args=("--config.file", config)) as exporter:
            before = exporter.scrape_after_polls(1, target="ha")
            assert queue_size(before, "ha", "before_failover") == 5
            assert exporter_clients(cluster.master)

            started = time.monotonic()
            cluster.sentinel.failover()
            cluster.sentinel.wait_for_master(cluster.replica.port)
            switched = time.monotonic() - started
            # Until Sentinel demotes it (seconds later), the old master is still a master that
            # answers reads: only data written after the switch tells them apart.
            push_jobs(cluster.replica, "after_failover", 6, db=1)
            assert cluster.master.execute("EXISTS", "queue:after_failover", db=1) == 0
            after, during = wait_for_scrape(
                exporter,
                lambda s: queue_size(s, "ha", "after_failover") == 6,
                3 * POLL_INTERVAL + 1,
                "the new master's data",
            )
            followed = time.monotonic() - started
            assert all(s.value("sidekiq_up", target="ha") == 1 for s in [before, *during])
            assert after.value("sidekiq_exporter_polls_total", target="ha", result="error") == 0
            assert queue_size(after, "ha", "before_failover") == 5  # replicated before
            assert exporter_clients(cluster.replica)
            exporter.stop()
            # No failed poll, nothing unclosed at shutdown: only JSON info lines.
            lines = [line for line in exporter.log_text().splitlines() if line.strip()]
            events = exporter.log_events()
            assert len(events) == len(lines), lines
            assert {e["level"] for e in events} == {"info"}, lines
        for server in (cluster.master, cluster.replica):
            assert acl_log(server) == []
        print(f"failover: switched in {switched:.2f}s, exporter on the new master {followed:.2f}s")


# --- the trimmed read-only ACL line: enough for every family, nothing unused ---------------------


def write_sidekiq(client: redis.Redis, version: str, namespace: str, now: float) -> None:
    """A small cluster of one generation, in shapes that produce every family."""
    w = SidekiqWriter(client, version, namespace)
    w.stats(processed=100, failed=3)
    w.push("default", w.job("HardJob", enqueued_at=now - 30, created_at=now - 31, jid="a" * 24))
    w.push("within_5_seconds", w.job("FastJob", "within_5_seconds", enqueued_at=now - 2))
    w.push("broken", b"not json")  # skipped (and counted) when read as a queue's oldest job
    w.zadd("schedule", now + 60, w.job("Later"))
    w.zadd("schedule", now - 5, w.job("Late"))
    w.zadd("retry", now + 30, w.job("Flaky"))
    w.zadd("dead", now - 100, w.job("Gone"))
    identity = f"worker-{version}:4242:0123456789ab"
    w.process(identity, beat=now - 1, queues=("default", "within_5_seconds"), busy=1)
    w.work(identity, "t1", "default", w.job("HardJob", enqueued_at=now - 20), now - 10)
    if version != V6_4_1:
        minute = datetime.fromtimestamp(now - 60, UTC).replace(second=0, microsecond=0)
        w.metrics(
            minute, "HardJob", executions=5, failures=1, milliseconds=900, histogram={3: 2, 6: 2}
        )
    # sidekiq-cron (1.x beside Sidekiq 6, 2.x's namespaces beside 7+) and Enterprise's leader.
    if version == V6_4_1:
        w.cron_job("tick", "* * * * *", generation=CRON_1, last_enqueue=now - 30)
    else:
        w.cron_job("tick", "* * * * *", namespace="reports", last_enqueue=now - 30)
    client.set(w.keys.leader, identity)


def test_documented_acl_line_is_the_tested_one() -> None:
    """docs/security.md shows exactly `EXPORTER_ACL`, the rule the tests below grant."""
    doc = (Path(__file__).resolve().parents[1] / "docs" / "security.md").read_text()
    block = doc.split("### A read-only ACL user", 1)[1].split("```", 2)[1]
    words = block.replace("\\\n", " ").split()
    assert words[:5] == ["ACL", "SETUSER", EXPORTER_USER, "on", ">CHANGE_ME"]
    assert tuple(words[5:]) == EXPORTER_ACL


@pytest.mark.parametrize("kind", sorted(SERVERS))
def test_trimmed_acl_line_is_enough_and_all_of_it_is_used(
    kind: str, tmp_path: Path, password: str, password_file: str
) -> None:
    """Sidekiq 6.4 (namespaced), 7, 8.0 and 8.1.2 shapes, each in its own database.

    On each server of the matrix: Redis 7.0, Redis 8 and Valkey 9 (their ACL categories
    differ; the rule names commands only, so the same line holds on all three).
    """
    with RedisServer(kind=SERVERS[kind]) as redis_server:
        _check_trimmed_acl_line(redis_server, tmp_path, password, password_file)


def _check_trimmed_acl_line(
    redis_server: RedisServer, tmp_path: Path, password: str, password_file: str
) -> None:
    add_exporter_user(redis_server, password)
    now = float(redis_server.execute("TIME")[0])
    generations = {"v6": (V6_4_1, "sidekiq", 1), "v7": (V7, "", 2)}
    generations |= {"v8_0": (V8_0, "", 3), "v8_1": (V8_1_2, "", 4)}
    for version, namespace, db in generations.values():
        client = redis.Redis(port=redis_server.port, db=db)
        try:
            write_sidekiq(client, version, namespace, now)
        finally:
            client.close()
    redis_server.execute("ACL", "LOG", "RESET")
    with RecordingProxy(redis_server.port) as proxy:
        config = write_config(
            tmp_path / "config.yml",
            [
                {
                    "name": name,
                    "url": f"redis://127.0.0.1:{proxy.port}/{db}",
                    "key_prefix": namespace,
                    "username": EXPORTER_USER,
                    "password_file": password_file,
                }
                for name, (_, namespace, db) in generations.items()
            ],
        )
        with ExporterProcess(None, args=("--config.file", config)) as exporter:
            scrape = exporter.scrape_after_polls(2, target="v8_1")
            exporter.stop()
        commands = set(proxy.commands)
    for name in generations:
        assert scrape.value("sidekiq_up", target=name) == 1
        assert scrape.value("sidekiq_exporter_polls_total", target=name, result="error") == 0
        produced = {n for n, labels in scrape.samples if ("target", name) in labels}
        expected = ALL_FAMILIES - {"sidekiq_exporter_build_info"} - HTTP_SERVER_FAMILIES
        if name == "v6":
            expected -= JOB_CLASS_FAMILIES  # 6.4 has none
        assert not expected - produced, f"{name}: missing {sorted(expected - produced)}"
    assert {"sidekiq_exporter_build_info", *HTTP_SERVER_FAMILIES} <= scrape.names
    assert acl_log(redis_server) == []
    # Everything sent is granted, and every grant was used: the line is minimal.
    granted = {c[1:].upper() for c in EXPORTER_ACL_COMMANDS}
    assert commands == granted | {"AUTH"}, commands ^ (granted | {"AUTH"})
