"""Runs `bench/sidekiq_api.rb` (Sidekiq's own Ruby API, timed inside Ruby) against a Redis."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

import redis

from tests.support.sidekiq import REPO_ROOT, VERSIONS, ruby_cmd, ruby_env

SCRIPT = Path(__file__).with_name("sidekiq_api.rb")


@dataclass(frozen=True)
class ApiTimes:
    version: str
    wall: list[float]
    cpu: list[float]
    round_trips: int | None  # per scrape, from a redis-client middleware (7.x only)
    commands: float | None  # per scrape, from INFO commandstats


def available() -> list[str]:
    """The Sidekiq versions installed here (scripts/setup-test-services.sh installs them all)."""
    return [name for name, version in VERSIONS.items() if version.available]


def _total_calls(client: redis.Redis) -> int:
    stats = client.info("commandstats")
    return sum(int(v["calls"]) for k, v in stats.items() if k != "cmdstat_info")


def time_api(
    version: str,
    url: str,
    *,
    min_iterations: int = 3,
    max_iterations: int = 50,
    budget: float = 3.0,
    minutes: int = 3,
    warmup: bool = True,
    timeout: float = 600.0,
) -> ApiTimes:
    """Run the Ruby script; also counts the Redis commands it sent, from INFO commandstats."""
    command = ruby_cmd(
        VERSIONS[version],
        SCRIPT,
        f"min_iterations={min_iterations}",
        f"max_iterations={max_iterations}",
        f"budget={budget}",
        f"minutes={minutes}",
        f"warmup={int(warmup)}",
    )
    client = redis.Redis.from_url(url)
    try:
        calls_before = _total_calls(client)
        result = subprocess.run(
            command,
            cwd=REPO_ROOT,
            env=ruby_env(url),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        calls = _total_calls(client) - calls_before
    finally:
        client.close()
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {result.returncode}:\n{result.stderr}")
    data = json.loads(result.stdout.strip().splitlines()[-1])
    scrapes = len(data["wall"]) + (1 if warmup else 0)
    return ApiTimes(
        version=data["sidekiq_version"],
        wall=[float(w) for w in data["wall"]],
        cpu=[float(c) for c in data["cpu"]],
        round_trips=data["round_trips"],
        commands=calls / scrapes,
    )
