"""The redis-py client of one target: TCP, TLS, unix socket or via Sentinel, connecting lazily.

Owns every connection option; sends nothing on connect but what the read-only ACL allows
(`AUTH`, `SELECT`) and never a Sidekiq command. Why each option: docs/architecture.md.
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
