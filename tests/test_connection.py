"""The Redis client: no retries, RESP2, nothing sent on connect beyond AUTH and SELECT."""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio.connection import SSLConnection, UnixDomainSocketConnection
from redis.exceptions import ConnectionError as RedisConnectionError

from exporter.config_file import ConfigError
from exporter.connection import PasswordReload, Reload, create_redis_client
from exporter.targets import build_target
from tests.support.redis_server import RedisServer, free_port

# The full ACL of docs/redis-layout.md §11, without +hello and +client|setinfo.
MINIMAL_ACL = (
    "resetkeys ~* resetchannels -@all +ping +time +info +select +client|setname "
    "+sscan +smembers +scard +sismember +scan +exists +type +ttl +llen +lindex +lrange "
    "+get +mget +zcard +zcount +zrange +hget +hmget +hgetall +hlen"
)


def kwargs_of(url: str, **target: Any) -> dict[str, Any]:
    client = create_redis_client(build_target(name="t", url=url, **target), timeout=1.5)
    return dict(client.connection_pool.connection_kwargs)


def connection_class_of(url: str) -> type:
    client = create_redis_client(build_target(name="t", url=url), timeout=1.5)
    return client.connection_pool.connection_class


def test_client_options() -> None:
    kwargs = kwargs_of("redis://localhost:6379/3")
    assert kwargs["host"] == "localhost"
    assert kwargs["port"] == 6379
    assert kwargs["db"] == 3
    assert kwargs["socket_timeout"] == 1.5
    assert kwargs["socket_connect_timeout"] == 1.5
    assert kwargs["health_check_interval"] == 0
    assert kwargs["decode_responses"] is False
    assert kwargs["retry"].get_retries() == 0
    assert kwargs["driver_info"] is None
    assert kwargs["client_name"] is None
    assert kwargs["protocol"] == 2


def test_credentials_from_url_and_from_settings() -> None:
    from_url = kwargs_of("redis://exporter:pw@localhost/0")
    assert (from_url["username"], from_url["password"]) == ("exporter", "pw")
    from_file = kwargs_of("redis://exporter@localhost/0", password="from-file")
    assert (from_file["username"], from_file["password"]) == ("exporter", "from-file")


def test_connection_classes_by_scheme() -> None:
    # rediss:// uses our SSLConnection subclass (own SSLContext, server_name).
    assert issubclass(connection_class_of("rediss://localhost/0"), SSLConnection)
    assert connection_class_of("unix:///run/redis.sock?db=2") is UnixDomainSocketConnection
    unix = kwargs_of("unix:///run/redis.sock?db=2")
    assert (unix["path"], unix["db"]) == ("/run/redis.sock", 2)


def test_no_deprecation_warnings() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        create_redis_client(build_target(name="t", url="redis://localhost/0"), timeout=1)


async def test_a_refused_connection_fails_at_once() -> None:
    client = create_redis_client(
        build_target(name="t", url=f"redis://127.0.0.1:{free_port()}/0"), timeout=5
    )
    started = time.monotonic()
    with pytest.raises(RedisConnectionError):
        await client.time()
    assert time.monotonic() - started < 1.0  # no retries with backoff inside redis-py
    await client.aclose()


@pytest.mark.integration
async def test_only_auth_select_and_our_commands_reach_redis(redis_server: RedisServer) -> None:
    redis_server.execute("ACL", "SETUSER", "exporter", "on", ">s3cret", *MINIMAL_ACL.split())
    redis_server.execute("CONFIG", "RESETSTAT")
    url = f"redis://exporter@127.0.0.1:{redis_server.port}/2"
    client = create_redis_client(build_target(name="t", url=url, password="s3cret"), timeout=2)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            async with client.pipeline(transaction=False) as pipe:
                pipe.time()
                pipe.llen("queue:default")
                _, length = await pipe.execute()
        assert length == 0
    finally:
        await client.aclose()
    stats = str(redis_server.execute("INFO", "commandstats"))
    commands = {
        line.split(":", 1)[0].removeprefix("cmdstat_")
        for line in stats.splitlines()
        if line.startswith("cmdstat_")
    }
    # config|resetstat (and info, once counted) are this test's own admin connection.
    assert commands - {"config|resetstat", "info"} == {"auth", "select", "time", "llen"}
    errors = str(redis_server.execute("INFO", "errorstats"))
    assert "errorstat_" not in errors, errors


async def test_password_files_are_credential_providers_read_again_on_reload(
    tmp_path: Path,
) -> None:
    data, sentinel = tmp_path / "data", tmp_path / "sentinel"
    data.write_text("one\n")
    sentinel.write_text("s-one\n")
    target = build_target(
        name="t",
        url="redis://exporter@unused/0",
        password="one",
        password_file=str(data),
        sentinels=(("127.0.0.1", free_port()), ("127.0.0.1", free_port())),
        sentinel_master="mymaster",
        sentinel_password="s-one",
        sentinel_password_file=str(sentinel),
    )
    reloads: list[Reload] = []
    client = create_redis_client(target, timeout=1, reloads=reloads)
    try:
        (reload,) = reloads
        assert isinstance(reload, PasswordReload)
        files = dict(reload.files)
        assert files["password"].get_credentials() == ("exporter", "one")
        assert files["sentinel password"].get_credentials() == ("s-one",)
        master_kwargs = client.connection_pool.connection_kwargs
        assert master_kwargs["credential_provider"] is files["password"]
        assert "password" not in master_kwargs  # redis-py refuses both
        data.write_text("two\n")
        assert await files["password"].reload() is True
        assert files["password"].get_credentials() == ("exporter", "two")
        assert await files["sentinel password"].reload() is False
        data.write_text("")
        with pytest.raises(ConfigError, match="empty"):
            await files["password"].reload()
        assert files["password"].get_credentials() == ("exporter", "two")
    finally:
        await client.aclose()


def test_without_a_password_file_there_is_nothing_to_reload() -> None:
    reloads: list[Reload] = []
    create_redis_client(build_target(name="t", url="redis://:pw@h/0"), timeout=1, reloads=reloads)
    assert reloads == []
