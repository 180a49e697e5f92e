"""The redis-py client of one target: TCP, TLS, unix socket or via Sentinel, connecting lazily.

Owns every connection option; sends nothing on connect but what the read-only ACL allows
(`AUTH`, `SELECT`) and never a Sidekiq command. Why each option: docs/architecture.md.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Awaitable, Callable, Mapping
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
from redis.credentials import CredentialProvider
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from exporter.config_file import ConfigError
from exporter.logs import REDIS_PASSWORD_RELOAD_FAILED, REDIS_PASSWORD_RELOADED, get_logger
from exporter.targets import TargetSettings, read_password_file

log = get_logger(__name__)

RESP_VERSION: Final = 2
Reload = Callable[[], Awaitable[None]]  # reads a target's password files again (SIGHUP)
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


class PasswordFile(CredentialProvider):
    """A user name and the password in a file, for every new connection of one pool.

    `reload()` reads the file again (SIGHUP). When the password changed, the pool's idle
    connections are closed and the one in use (a poll in flight) is closed when the poll
    returns it, so the next poll authenticates with the new password and shows at once
    whether it works.
    """

    def __init__(self, path: str, password: str, username: str | None) -> None:
        self.path = path
        self._password = password
        self._username = username
        self.pools: list[ConnectionPool] = []  # the pools whose connections use it

    def get_credentials(self) -> tuple[str] | tuple[str, str]:
        if self._username:
            return (self._username, self._password)
        return (self._password,)

    async def get_credentials_async(self) -> tuple[str] | tuple[str, str]:
        return self.get_credentials()

    async def reload(self) -> bool:
        """Read the file again; True if the password changed. ConfigError (the old password
        kept) if the file cannot be read or is empty."""
        password = read_password_file(self.path)
        if password == self._password:
            return False
        self._password = password
        for pool in self.pools:
            await pool.update_active_connections_for_reconnect()  # type: ignore[no-untyped-call]
            await pool.disconnect(inuse_connections=False)
        return True


class PasswordReload:
    """Reads a target's password files again (SIGHUP) and logs what came of it."""

    def __init__(self, target: str, files: list[tuple[str, PasswordFile]]) -> None:
        self.target = target
        self.files = files  # (which password, its file)

    async def __call__(self) -> None:
        for which, file in self.files:
            try:
                changed = await file.reload()
            except ConfigError as exc:
                log.error(
                    REDIS_PASSWORD_RELOAD_FAILED,
                    target=self.target,
                    password=which,
                    error=str(exc),
                )
                continue
            log.info(REDIS_PASSWORD_RELOADED, target=self.target, password=which, changed=changed)


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


def _use_password_file(options: dict[str, Any], path: str) -> PasswordFile | None:
    """With a password file, the user name and password go to redis-py as a credential
    provider (asked by every new connection) instead of the `username`/`password` options."""
    if not path:
        return None
    file = PasswordFile(path, options.pop("password"), options.pop("username", None))
    options["credential_provider"] = file
    return file


def create_redis_client(
    target: TargetSettings, *, timeout: float, reloads: list[Reload] | None = None
) -> Redis:
    """A lazily connecting client for `target` whose socket operations time out after `timeout`.

    For a target with password files, what reads them again (SIGHUP) is added to `reloads`.
    """
    options = _client_options(target, timeout)
    if target.sentinels:
        node_timeout = sentinel_timeout(timeout, len(target.sentinels))
        client, files = _sentinel_client(target, options, node_timeout)
    else:
        # As Redis.from_url does: what the URL says wins over the keyword options.
        options.update(parse_url(target.url))
        if _is_tls(target):
            options["connection_class"] = TLSConnection
            options["tls_target"] = target
        password = _use_password_file(options, target.password_file)
        client = Redis.from_pool(ConnectionPool(**options))
        files = []
        if password is not None:
            password.pools.append(client.connection_pool)
            files.append(("password", password))
    if files and reloads is not None:
        reloads.append(PasswordReload(target.name, files))
    return client


def _sentinel_client(
    target: TargetSettings, options: dict[str, Any], node_timeout: float
) -> tuple[Redis, list[tuple[str, PasswordFile]]]:
    tls = _is_tls(target)
    files: list[tuple[str, PasswordFile]] = []
    sentinel_password = None
    if target.sentinel_password_file and target.sentinel_password is not None:
        # One file, one provider, asked by every Sentinel's connections.
        sentinel_password = PasswordFile(
            target.sentinel_password_file, target.sentinel_password, None
        )
        files.append(("sentinel password", sentinel_password))
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
        if sentinel_password is not None:
            del node["username"], node["password"]
            node["credential_provider"] = sentinel_password
        sentinel_client = _SentinelNodeClient.from_pool(ConnectionPool(**node))
        if sentinel_password is not None:
            sentinel_password.pools.append(sentinel_client.connection_pool)
        sentinel_clients.append(sentinel_client)
    master = dict(options)
    url_options = parse_url(target.url)
    for key in ("username", "password", "db"):  # host and port come from Sentinel
        if key in url_options:
            master[key] = url_options[key]
    password = _use_password_file(master, target.password_file)
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
    if password is not None:
        password.pools.append(client.connection_pool)
        files.insert(0, ("password", password))
    return client, files
