"""Building the Redis client for one target: TCP, TLS, unix socket or via Sentinel. No I/O here.

What the client sends on connect is kept to what the minimal ACL in the layout spec (§11)
allows: `AUTH` (if credentials are set) and `SELECT` (if the URL names a database other than
0), nothing else. Checked against redis-py 8.1 (tests/test_connection.py,
tests/test_redis_connections.py):

- `protocol=2`: redis-py 8 defaults to RESP3 and opens every connection with `HELLO 3`, which
  Redis < 6.0 (still seen under Sidekiq 6) rejects and which the spec's ACL does not grant.
  RESP2 also keeps raw replies in one shape for the reader.
- `driver_info=None`: no `CLIENT SETINFO LIB-NAME/LIB-VER`. (`lib_name=None, lib_version=None`
  does the same but is deprecated in 8.x and emits a DeprecationWarning.)
- no `client_name`: no `CLIENT SETNAME`.
- `retry` with 0 retries: a failure surfaces at once to the poller, which owns backoff. Retries
  inside redis-py would also make one poll's round-trip count and duration lie.
- `health_check_interval=0`: with no retries a health-check `PING` fails exactly when the
  command after it would, so it only adds a round trip.

TLS (`rediss://`): the exporter builds its own `ssl.SSLContext` (TLS 1.2+) for every new
connection, so renewed certificates are picked up on reconnect and a broken file fails that
target's polls (logged, `sidekiq_up 0`) instead of the process. `ca_file` is the only trust
anchor when given (the system store otherwise); `cert_file`/`key_file` are the client
certificate; `server_name` is the name sent as SNI and checked against the server certificate
instead of the URL's host (redis-py's asyncio `SSLConnection` has no option for it, so
`TLSConnection` passes `server_hostname` to `asyncio.open_connection` itself);
`insecure_skip_verify` checks neither chain nor name.

Sentinel: the master named `sentinel_master` is looked up with `SENTINEL MASTERS` (redis-py's
discovery: the first Sentinel that answers and reports the master neither `s_down` nor
`o_down` wins), asked on every connection checkout, that is before each round trip of a poll
(a poll makes two or more), and again when a new connection is opened. When the answer
changes, idle connections to the old master are dropped, so a poll after a failover reads the
new master even if the old one is still up and still a master (Sentinel demotes it only
later, or never if it is cut off from the Sentinels). If no Sentinel answers, connections to
the master already known keep being used; a new connection fails until one answers. Sentinel
connections use the same client options (RESP2, no retries, no `CLIENT SETINFO`) except the
timeouts, authenticate with `sentinel_password` (the Sentinel's `requirepass`) and use TLS
with the same settings when the target's URL is `rediss://`. So a Sentinel sees `AUTH` and
`SENTINEL MASTERS`, nothing else. The URL of a Sentinel target gives only scheme,
credentials and database; its host and port are not used.

Sentinel timeouts: connect and socket timeouts of Sentinel connections are
`poll timeout / (2 × number of Sentinels)`, at most 1 s and at least 0.1 s
(`sentinel_timeout`), not the poll timeout. redis-py asks the Sentinels in list order and moves
only one that answers to the front. With the poll timeout for each, a Sentinel that accepts
connections but never answers, or whose packets are dropped, would use up every poll while
it is first in the list: no other Sentinel would ever be asked, so every poll would fail for
good. With the short timeout, asking all of them takes at most half the poll timeout (above
the floor), so a hung Sentinel costs one short wait, then the next one answers and moves to
the front. A Sentinel answers `SENTINEL MASTERS` from memory: 0.1 s is ample on a network
fit for polling Redis.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Mapping
from typing import Any, Final, cast
from urllib.parse import urlsplit

from redis.asyncio import Redis
from redis.asyncio.connection import (
    AbstractConnection,
    Connection,
    ConnectionPool,
    SSLConnection,
    parse_url,
)
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import (
    Sentinel,
    SentinelConnectionPool,
    SentinelManagedConnection,
)
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from exporter.targets import TargetSettings

RESP_VERSION: Final = 2
# Bounds of the Sentinel connections' timeouts (see "Sentinel timeouts" above).
MAX_SENTINEL_TIMEOUT: Final = 1.0
MIN_SENTINEL_TIMEOUT: Final = 0.1
MIN_TLS_VERSION: Final = ssl.TLSVersion.TLSv1_2


def tls_context(target: TargetSettings) -> ssl.SSLContext:
    """A client SSLContext for `target`'s TLS settings (reads the CA and certificate files)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies chain and host name
    context.minimum_version = MIN_TLS_VERSION
    if target.tls_ca_file:
        context.load_verify_locations(cafile=target.tls_ca_file)
    else:
        context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    if target.tls_cert_file:
        context.load_cert_chain(target.tls_cert_file, target.tls_key_file or None)
    if target.tls_insecure_skip_verify:
        context.check_hostname = False  # must come before CERT_NONE
        context.verify_mode = ssl.CERT_NONE
    return context


class TLSConnection(SSLConnection):
    """`rediss://` with the exporter's SSLContext and an optional `server_name` (SNI/verify)."""

    def __init__(self, *, tls_target: TargetSettings, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.tls_target = tls_target

    def _connection_arguments(self) -> Mapping[str, Any]:
        # Replaces SSLConnection's (redis-py's own context from the ssl_* options): called by
        # `_connect` for every new socket, so errors here become that connection's error.
        arguments = dict(Connection._connection_arguments(self))
        arguments["ssl"] = tls_context(self.tls_target)
        if self.tls_target.tls_server_name:
            arguments["server_hostname"] = self.tls_target.tls_server_name
        return arguments


class SentinelMasterConnection(SentinelManagedConnection):
    """A connection to the master that Sentinel names (plain TCP)."""

    # SentinelManagedConnection overrides read_response only to turn a ReadOnlyError (a write
    # sent to a demoted master) into a reconnect. The exporter never writes, so the plain
    # method is kept: the bulk reply reader (exporter/resp.py) uses hiredis only under it.
    read_response = AbstractConnection.read_response  # type: ignore[assignment]


class SentinelMasterTLSConnection(SentinelMasterConnection, TLSConnection):
    """A TLS connection to the master that Sentinel names."""


class SentinelMasterPool(SentinelConnectionPool):
    """Asks Sentinel for the master on every checkout (each round trip), not only on connect."""

    async def get_connection(self, *args: Any, **kwargs: Any) -> AbstractConnection:
        # A master demoted by a failover still answers reads, and Sentinel tells it to become
        # a replica (closing its clients) only some seconds later, if it can reach it at all.
        # `get_master_address` drops the idle connections when the address changed.
        with contextlib.suppress(RedisConnectionError, RedisTimeoutError):
            await self.get_master_address()  # type: ignore[no-untyped-call]
        connection: AbstractConnection = await super().get_connection(  # type: ignore[no-untyped-call]
            *args, **kwargs
        )
        return connection


class SentinelMasterClient(Redis):
    """The client for a Sentinel target: closing it also closes the Sentinel connections."""

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        try:
            await super().aclose(close_connection_pool)
        finally:
            pool = cast(SentinelConnectionPool, self.connection_pool)
            await pool.sentinel_manager.aclose()


class _SentinelNodeClient(Redis):
    """The client for one Sentinel; its repr is short because discovery errors quote it."""

    def __repr__(self) -> str:
        kwargs = self.connection_pool.connection_kwargs
        return f"sentinel {kwargs.get('host')}:{kwargs.get('port')}"


class _Sentinel(Sentinel):
    """redis-py's Sentinel manager with Sentinel clients built here (same options as ours)."""

    def __init__(self, sentinels: list[Redis]) -> None:
        super().__init__([])  # type: ignore[no-untyped-call]
        self.sentinels = sentinels


def _client_options(target: TargetSettings, timeout: float) -> dict[str, Any]:
    """Connection options shared by every connection of this target (see module docstring)."""
    return {
        # Credentials in the URL win inside redis-py; settings forbid giving a password both ways.
        "username": target.username,
        "password": target.password,
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "health_check_interval": 0,
        "decode_responses": False,
        "retry": Retry(NoBackoff(), retries=0),
        "driver_info": None,
        "client_name": None,
        "protocol": RESP_VERSION,
    }


def sentinel_timeout(poll_timeout: float, sentinels: int) -> float:
    """Connect and socket timeout of Sentinel connections (module docstring: why)."""
    share = poll_timeout / (2 * max(sentinels, 1))
    return max(MIN_SENTINEL_TIMEOUT, min(MAX_SENTINEL_TIMEOUT, share))


def _is_tls(target: TargetSettings) -> bool:
    return urlsplit(target.url).scheme == "rediss"


def create_redis_client(target: TargetSettings, *, timeout: float) -> Redis:
    """A lazily connecting client for `target` whose socket operations time out after `timeout`."""
    options = _client_options(target, timeout)
    if target.sentinels:
        node_timeout = sentinel_timeout(timeout, len(target.sentinels))
        return _sentinel_client(target, options, node_timeout)
    # As Redis.from_url does: what the URL says wins over the keyword options.
    options.update(parse_url(target.url))
    if _is_tls(target):
        options["connection_class"] = TLSConnection
        options["tls_target"] = target
    return Redis.from_pool(ConnectionPool(**options))


def _sentinel_client(target: TargetSettings, options: dict[str, Any], node_timeout: float) -> Redis:
    tls = _is_tls(target)
    sentinel_clients = []
    for host, port in target.sentinels:
        node = {
            **options,
            "host": host,
            "port": port,
            "username": None,
            "password": target.sentinel_password,
            "socket_timeout": node_timeout,
            "socket_connect_timeout": node_timeout,
        }
        if tls:
            node.update(connection_class=TLSConnection, tls_target=target)
        sentinel_clients.append(_SentinelNodeClient.from_pool(ConnectionPool(**node)))
    master = dict(options)
    url_options = parse_url(target.url)
    for key in ("username", "password", "db"):  # host and port come from Sentinel
        if key in url_options:
            master[key] = url_options[key]
    if tls:
        master.update(connection_class=SentinelMasterTLSConnection, tls_target=target)
    else:
        master["connection_class"] = SentinelMasterConnection
    client: Redis = _Sentinel(sentinel_clients).master_for(
        target.sentinel_master,
        redis_class=SentinelMasterClient,
        connection_pool_class=SentinelMasterPool,
        **master,
    )
    return client
