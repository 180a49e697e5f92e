"""Shared pytest setup: markers and real-Redis fixtures (tests/support/)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# Make `tests.support` importable however pytest was started (with or without tests/__init__.py).
_REPO_ROOT = str(Path(__file__).resolve().parents[1])
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)

from tests.support.redis_server import RedisNotInstalledError, RedisServer  # noqa: E402


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "integration: runs real redis-server / Sidekiq processes (tests/support)"
    )
    config.addinivalue_line(
        "markers", "conformance: compares the exporter with Sidekiq's own Ruby API (truth.rb)"
    )


def pytest_report_header(config: pytest.Config) -> list[str]:
    """The real components this run compares against, with the versions installed."""
    from tests.support.redis_server import SERVERS
    from tests.support.sidekiq import VERSIONS

    sidekiq = [v.version for v in VERSIONS.values() if v.available]
    servers = [f"{name} {kind.installed_version() or 'missing'}" for name, kind in SERVERS.items()]
    return [f"real Sidekiq: {', '.join(sidekiq) or 'none'}", f"real servers: {', '.join(servers)}"]


def _start_redis() -> RedisServer:
    try:
        server = RedisServer()
    except RedisNotInstalledError as e:
        # Deliberately a failure, not a skip: CI must install the real components.
        pytest.fail(str(e), pytrace=False)
    server.__enter__()
    return server


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A fresh, empty redis-server for one test."""
    server = _start_redis()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture(scope="module")
def module_redis_server() -> Iterator[RedisServer]:
    """One redis-server shared by the tests of a module (flush it yourself if needed)."""
    server = _start_redis()
    try:
        yield server
    finally:
        server.cleanup()
