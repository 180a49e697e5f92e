"""The real-component test helpers work, and real Sidekiq writes what the layout doc says.

Confirms docs/redis-layout.md §13 items 1, 2 and 6 against real processes: 6.4.1 writes
``<identity>:workers`` with a string ``payload``; 7.3.2 and 8.1 write ``<identity>:work``;
``quiet`` is stored as the text ``"false"`` / ``"true"`` (6.4.1 passes a raw boolean); 8.1.2+
keeps ``concurrency`` in its own hash field, not in ``info``, and payload timestamps are
integer milliseconds.
Also: every server kind starts and stops, and what runs in the sid root is cleaned up.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from tests.support import sid_root
from tests.support.processes import kill_process_group, stop_process
from tests.support.redis_server import (
    SERVERS,
    RedisServer,
    RespConnection,
    RespError,
    hgetall_dict,
)
from tests.support.sidekiq import (
    VERSIONS,
    SidekiqProcess,
    enqueue,
    get_version,
    load_cron,
    truth,
    wait_for,
)

pytestmark = pytest.mark.integration


def test_redis_server_ping_restart_kill() -> None:
    with RedisServer() as server:
        assert server.url == f"redis://127.0.0.1:{server.port}/0"
        assert server.execute("PING") == "PONG"
        assert server.execute("CONFIG", "GET", "save") == ["save", ""]
        assert server.execute("CONFIG", "GET", "appendonly") == ["appendonly", "no"]
        server.execute("SET", "k", "v")
        port = server.port
        server.restart()
        assert server.port == port
        assert server.execute("GET", "k") is None  # no persistence
        server.kill()
        assert not server.ping()
        server.restart()
        assert server.ping()
    assert not server.dir.exists()


def test_redis_server_password_and_unix_socket(tmp_path: Path) -> None:
    sock = f"{tmp_path}/redis.sock"
    with RedisServer("--requirepass", "s3cret", password="s3cret", unix_socket=sock) as server:
        assert server.url.startswith("redis://:s3cret@127.0.0.1:")
        assert server.execute("PING") == "PONG"
        with RespConnection(unix_socket=sock, password="s3cret") as c:
            assert c.execute("PING") == "PONG"
        with RespConnection(port=server.port) as c, pytest.raises(RespError, match="NOAUTH"):
            c.execute("GET", "x")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0): look at its state.
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    return state != "Z"


def _sid_root_mounts() -> list[str]:
    """Mounts under the sid root visible here: none may outlive the command that made them."""
    with open("/proc/self/mountinfo") as f:
        return [line for line in f if str(sid_root.SID_ROOT) in line]


@pytest.mark.parametrize("kind", sorted(SERVERS))
def test_every_server_kind_starts_and_cleans_up(kind: str) -> None:
    server = RedisServer(kind=SERVERS[kind])
    with server:
        version = server.version()
        print(f"{kind}: {version}")
        assert version.split(".")[0] == {"redis-7.0": "7", "redis-8": "8", "valkey-9": "9"}[kind]
        assert server.execute("PING") == "PONG"
        assert server.execute("CONFIG", "GET", "save") == ["save", ""]
        # The server writes its log into the test's temp dir, at the same path in the root.
        assert "Ready to accept connections" in server.log_tail()
        pid = server.pid
        assert pid is not None
        assert _sid_root_mounts() == []
    assert not _alive(pid)
    assert not server.dir.exists()
    assert _sid_root_mounts() == []


def test_in_sid_root_keeps_the_pid_and_group_cleanup_ends_strays(tmp_path: Path) -> None:
    """The pid seen inside is the Popen's; a child left behind dies with the process group."""
    out = tmp_path / "pids"
    proc = subprocess.Popen(
        sid_root.command("sh", "-c", f'sleep 300 & echo "$$ $!" > {out}; exec sleep 300'),
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 10
        while not out.exists() or not out.read_text().endswith("\n"):
            assert time.monotonic() < deadline, "the command in the sid root did not start"
            time.sleep(0.02)
        inner_pid, stray = (int(x) for x in out.read_text().split())
        assert inner_pid == proc.pid  # exec all the way: signals reach the program itself
        assert stop_process(proc, 5) is not None
        assert _alive(stray)  # TERM to the program alone leaves its child running...
    finally:
        kill_process_group(proc.pid)
    deadline = time.monotonic() + 5
    while _alive(stray):  # ...until the group is killed (reaped by init, not by us)
        assert time.monotonic() < deadline, f"pid {stray} survived its process group"
        time.sleep(0.02)
    assert _sid_root_mounts() == []


def test_redis_server_fixture(redis_server: RedisServer) -> None:
    assert redis_server.execute("DBSIZE") == 0


# Per-minute metric keys by Sidekiq major (docs/redis-layout.md §6.3): pattern -> expiry.
METRIC_KEY_FAMILIES: dict[int, dict[str, int]] = {
    6: {},  # 6.4 keeps no execution metrics
    7: {r"j\|\d{8}\|\d{1,2}:\d{1,2}": 28_800, r"FastJob-\d\d-\d\d:\d{1,2}": 28_800},
    8: {
        r"j\|\d{6}\|\d{1,2}:\d\d": 28_800,  # 1 minute, minute zero-padded
        r"j\|\d{6}\|\d{1,2}:\d": 259_200,  # 10 minutes: the minute's tens digit
        r"h\|FastJob-\d{1,2}-\d{1,2}:\d{1,2}": 28_800,
    },
}


def _metric_key_families(ttls: dict[str, int]) -> dict[str, int]:
    """Which family each key belongs to, with its expiry rounded up to the minute."""
    families: dict[str, int] = {}
    for key, ttl in ttls.items():
        [family] = [f for fam in METRIC_KEY_FAMILIES.values() for f in fam if re.fullmatch(f, key)]
        families[family] = -(-ttl // 60) * 60
    return families


@pytest.mark.parametrize("version", sorted(VERSIONS))
def test_sidekiq_process_layout(version: str, redis_server: RedisServer) -> None:
    v = get_version(version)  # fails (not skips) with an install hint when missing
    r = redis_server
    beat_wait = v.beat_seconds + 6
    other_suffix = ":work" if v.work_key_suffix == ":workers" else ":workers"

    with SidekiqProcess(
        v, r.url, queues=["critical,2", "default"], concurrency=3, tag="infra"
    ) as p:
        ident = p.identity
        assert ident is not None
        assert ident in r.execute("SMEMBERS", "processes")
        host, pid, nonce = ident.rsplit(":", 2)
        assert int(pid) == p.pid
        assert len(nonce) == 12
        h = p.process_hash()
        assert set(h) >= {"info", "busy", "beat", "quiet", "rss", "rtt_us"}
        assert h["quiet"] == "false"  # §13 item 2: the text redis-rb 4.8 / redis-client store
        assert int(h["rss"]) > 0  # read from /proc, mounted in the sid root too
        info = json.loads(h["info"])
        assert info["tag"] == "infra"
        if v.concurrency_field:  # §13 item 6: 8.1.2+ moved it out of `info`
            assert h["concurrency"] == "3"
            assert "concurrency" not in info
            weights = {"critical": 2, "default": 0}
            capsule = {"concurrency": 3, "mode": "weighted", "weights": weights}
            assert info["capsules"] == {"default": capsule}
        else:
            assert "concurrency" not in h
            assert info["concurrency"] == 3
        assert info["queues"] == ["critical", "default"]
        assert info["identity"] == ident
        assert info["hostname"] == host
        assert info.get("version") == (None if version == "6.4.1" else v.version)
        processed_before = int(r.execute("GET", "stat:processed") or 0)

        pushed = enqueue(v, r.url, fast=1, slow=1, slow_seconds=30, failing=1, dead=1)
        assert pushed["pushed"] == {"default": 4}
        assert pushed["sidekiq_version"] == v.version
        # Failures are handled synchronously: retry (default policy) and dead (retry: 0).
        wait_for(
            lambda: r.execute("ZCARD", "retry") == 1 and r.execute("ZCARD", "dead") == 1,
            10,
            message="FailingJob/DeadJob did not reach retry/dead",
        )
        # Everything fetched -> the SlowJob is running. Quiet now so that the next beat shows
        # both the running job and quiet="true".
        wait_for(lambda: r.execute("LLEN", "queue:default") == 0, 10)
        p.quiet()

        def beat_with_work() -> dict[str, dict[str, object]] | None:
            if p.process_hash().get("quiet") != "true":
                return None
            return p.work() or None

        work = wait_for(beat_with_work, beat_wait, 0.2, "no beat with quiet=true and work")
        assert r.execute("EXISTS", ident + v.work_key_suffix) == 1  # §13 item 1
        assert r.execute("EXISTS", ident + other_suffix) == 0
        [(tid, entry)] = work.items()
        assert set(entry) == {"queue", "payload", "run_at"}
        assert entry["queue"] == "default"
        assert isinstance(entry["run_at"], int)
        assert isinstance(entry["payload"], str)  # double-encoded
        job = json.loads(entry["payload"])
        assert job["class"] == "SlowJob"
        assert job["args"] == [30]
        # Seconds as a JSON float before 8.0; integer milliseconds from 8.0 (§2.3).
        unit = int if v.millisecond_timestamps else float
        assert isinstance(job["enqueued_at"], unit)
        assert isinstance(job["created_at"], unit)
        assert p.process_hash()["busy"] == "1"

        # Counters are flushed on the beat, so the FastJob and both failures are counted.
        processed = int(r.execute("GET", "stat:processed") or 0)
        assert processed - processed_before == 3  # FastJob + FailingJob + DeadJob
        assert int(r.execute("GET", "stat:failed") or 0) == 2
        # The same beat flushed FastJob's execution metrics: key names and expiries (§6.3).
        metric_keys = {
            key: int(r.execute("TTL", key))
            for key in r.execute("KEYS", "*")
            if key.startswith("j|") or "FastJob" in key
        }
        assert _metric_key_families(metric_keys) == METRIC_KEY_FAMILIES[v.major], metric_keys

        t = truth(v, r.url)
        assert t["sidekiq_version"] == v.version
        assert t["stats"]["processes_size"] == 1
        assert t["stats"]["workers_size"] == 1
        assert t["stats"]["retry_size"] == 1
        assert t["stats"]["dead_size"] == 1
        [proc] = t["processes"]
        assert proc["identity"] == ident
        assert proc["stopping"] is True
        assert proc["quiet"] == "true"
        [w] = t["work"]
        assert (w["tid"], w["class"], w["queue"]) == (tid, "SlowJob", "default")
        assert t["metrics"]["available"] is v.has_metrics

        t0 = time.monotonic()
        assert p.stop() == 0
        assert time.monotonic() - t0 < p.shutdown_timeout + 8
    assert ident not in (r.execute("SMEMBERS", "processes") or [])
    assert r.execute("EXISTS", ident + v.work_key_suffix) == 0
    # The interrupted SlowJob went back to its queue.
    assert r.execute("LLEN", "queue:default") == 1


def test_sidekiq_cron_6_4_1(redis_server: RedisServer) -> None:
    v = get_version("6.4.1")
    out = load_cron(v, redis_server.url)
    assert out["sidekiq_cron_version"] == "1.8.0"
    assert sorted(redis_server.execute("SMEMBERS", "cron_jobs")) == [
        "cron_job:every_minute",
        "cron_job:every_minute_berlin",
        "cron_job:hourly_disabled",
    ]
    job = hgetall_dict(redis_server.execute("HGETALL", "cron_job:every_minute"))
    assert job["status"] == "enabled"
    assert job["cron"] == "* * * * *"
    assert job["klass"] == "CronTickJob"
    assert redis_server.execute("HGET", "cron_job:hourly_disabled", "status") == "disabled"
