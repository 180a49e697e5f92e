"""Building the Redis client for one target. No command is sent here.

What the client sends on connect is kept to what the minimal ACL in the layout spec (§11)
allows: `AUTH` (if credentials are set) and `SELECT` (if the URL names a database), nothing else.
Checked against redis-py 8.1 (see tests/test_connection.py):

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
"""

from __future__ import annotations

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from exporter.settings import TargetSettings

RESP_VERSION = 2


def create_redis_client(target: TargetSettings, *, timeout: float) -> Redis:
    """A lazily connecting client for `target` whose socket operations time out after `timeout`."""
    client: Redis = Redis.from_url(
        target.url,
        # Credentials in the URL win inside redis-py; settings forbid giving a password both ways.
        username=target.username,
        password=target.password,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        health_check_interval=0,
        decode_responses=False,
        retry=Retry(NoBackoff(), retries=0),
        driver_info=None,
        client_name=None,
        protocol=RESP_VERSION,
    )
    return client
