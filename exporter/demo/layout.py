"""Writes Sidekiq's Redis layout as each Sidekiq generation does, through a redis-py client.

The one writer for Sidekiq-shaped data without a Sidekiq: the demo's simulation, the tests
(tests/support/layouts.py) and the benchmarks' fixtures; never used by the daemon. Each shape
is as `docs/redis-layout.md` describes it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis

from exporter.model import HISTOGRAM_BUCKETS
from exporter.sidekiq.keys import KeyNames

# Layout generations: what changes between them for a reader.
V6_4_1 = "6.4.1"  # `:workers`, no metrics, no `version` in info, seconds
V7 = "7.3"  # `:work`, metrics j|%Y%m%d|%-H:%-M, info.version, seconds
V8_0 = "8.0"  # ms timestamps, metrics j|%y%m%d|%-H:%M and h| histograms
V8_1_2 = "8.1.2"  # + `concurrency` as a hash field, `capsules` in info
ALL = (V6_4_1, V7, V8_0, V8_1_2)
# sidekiq-cron generations (§9): 1.x one `cron_jobs` set (read at v1.8.0), 2.x a set per
# namespace (read at v2.3.1, commit 520ef09).
CRON_1 = "1.8.0"
CRON_2 = "2.3.1"


def is_v8(version: str) -> bool:
    return version.startswith("8.")


@dataclass
class SidekiqWriter:
    """Writes one Sidekiq generation's keys through a synchronous redis-py client."""

    client: redis.Redis
    version: str = V7
    namespace: str = ""

    @property
    def keys(self) -> KeyNames:
        return KeyNames.for_namespace(self.namespace)

    def timestamp(self, seconds: float) -> float | int:
        """A payload timestamp as this generation writes it: float s, or 8.x integer ms."""
        return int(seconds * 1000) if is_v8(self.version) else float(seconds)

    def job(
        self,
        job_class: str,
        queue: str = "default",
        *,
        enqueued_at: float | None = None,
        created_at: float | None = None,
        wrapped: str | None = None,
        jid: str = "0123456789abcdef01234567",
    ) -> dict[str, Any]:
        job: dict[str, Any] = {"retry": True, "queue": queue, "class": job_class, "args": [1]}
        if wrapped:
            job["wrapped"] = wrapped
        job["jid"] = jid
        if created_at is not None:
            job["created_at"] = self.timestamp(created_at)
        if enqueued_at is not None:
            job["enqueued_at"] = self.timestamp(enqueued_at)
        return job

    def push(self, queue: str, job: dict[str, Any] | bytes) -> None:
        """`SADD queues` + `LPUSH queue:<q>` as Sidekiq::Client does."""
        self.client.sadd(self.keys.queues, queue)
        payload = job if isinstance(job, bytes) else json.dumps(job)
        self.client.lpush(self.keys.queue(queue), payload)

    def stats(self, processed: int, failed: int) -> None:
        self.client.set(self.keys.processed, processed)
        self.client.set(self.keys.failed, failed)

    def zadd(self, set_name: str, score: float, job: dict[str, Any]) -> None:
        key = {"schedule": self.keys.schedule, "retry": self.keys.retry, "dead": self.keys.dead}
        self.client.zadd(key[set_name], {json.dumps(job): score})

    def process(
        self,
        identity: str,
        *,
        beat: float,
        hostname: str = "worker-1",
        tag: str = "app",
        concurrency: int = 5,
        queues: Sequence[str] = ("default",),
        busy: int = 0,
        quiet: bool = False,
        rss_kib: int = 123_456,
        rtt_us: int = 312,
        started_at: float | None = None,
        capsules: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        """The heartbeat: `SADD processes`, the process hash, as `Launcher#❤` writes it."""
        info: dict[str, Any] = {
            "hostname": hostname,
            "started_at": float(started_at if started_at is not None else beat - 100),
            "pid": 4242,
            "tag": tag,
        }
        if self.version != V8_1_2:
            info["concurrency"] = concurrency
        info["queues"] = list(queues)
        if self.version != V6_4_1:
            weights = {q: 0 for q in queues}
            info["weights"] = [weights]
            if self.version in (V8_0, V8_1_2):
                info["capsules"] = capsules or {
                    "default": {"concurrency": concurrency, "mode": "strict", "weights": weights}
                }
        info["labels"] = []
        info["identity"] = identity
        if self.version != V6_4_1:
            info["version"] = {V7: "7.3.2", V8_0: "8.0.9", V8_1_2: "8.1.7"}[self.version]
            info["embedded"] = False
        fields: dict[str, str | int] = {"info": json.dumps(info)}
        if self.version == V8_1_2:
            fields["concurrency"] = concurrency
        fields.update(
            busy=busy,
            beat=repr(float(beat)),
            rtt_us=rtt_us,
            quiet="true" if quiet else "false",
            rss=rss_kib,
        )
        self.client.sadd(self.keys.processes, identity)
        self.client.hset(self.keys.process(identity), mapping=fields)  # type: ignore[arg-type]
        self.client.expire(self.keys.process(identity), 60)

    def work(self, identity: str, tid: str, queue: str, job: dict[str, Any], run_at: float) -> None:
        """One running job in the work hash (`:workers` on 6.4.0–6.4.1, else `:work`)."""
        key = self.keys.workers(identity) if self.version == V6_4_1 else self.keys.work(identity)
        value = {"queue": queue, "payload": json.dumps(job), "run_at": int(run_at)}
        self.client.hset(key, tid, json.dumps(value))
        self.client.expire(key, 60)

    def metrics(
        self,
        minute: datetime,
        job_class: str,
        *,
        executions: int,
        failures: int = 0,
        milliseconds: int = 0,
        histogram: dict[int, int] | None = None,
    ) -> None:
        """A tracker flush: HINCRBY the minute hash, BITFIELD INCRBY the histogram."""
        minute = minute.astimezone(UTC)
        if is_v8(self.version):
            key = self.keys.metrics_minute_v8(minute)
            hist_key = self.keys.histogram_v8(job_class, minute)
        else:
            key = self.keys.metrics_minute_v7(minute)
            hist_key = self.keys.histogram_v7(job_class, minute)
        self.client.hincrby(key, f"{job_class}|p", executions)
        if failures:
            self.client.hincrby(key, f"{job_class}|f", failures)
        self.client.hincrby(key, f"{job_class}|ms", milliseconds)
        self.client.expire(key, 8 * 3600)
        for index, count in sorted((histogram or {}).items()):
            assert 0 <= index < HISTOGRAM_BUCKETS
            self.client.execute_command(  # type: ignore[no-untyped-call]
                "BITFIELD", hist_key, "OVERFLOW", "SAT", "INCRBY", "u16", f"#{index}", count
            )
        if histogram:
            self.client.expire(hist_key, 8 * 3600)

    def cron_job(
        self,
        name: str,
        cron: str,
        *,
        generation: str = CRON_2,
        namespace: str = "default",
        klass: str = "HardJob",
        enabled: bool = True,
        last_enqueue: float | None = None,
        saved_after_enqueue: bool = False,
    ) -> None:
        """A sidekiq-cron job as `Job#save` writes it, with what its last enqueue left.

        1.8.0 (`cron@v1.8.0 lib/sidekiq/cron/job.rb` `to_hash`, `save`): SET `cron_jobs`, HASH
        `cron_job:<name>` written by HMSET with Ruby's `to_s` (`"false"`, nil as `""`).
        2.3.1 (`cron@v2.3.1 lib/sidekiq/cron/job.rb` `to_hash`, `save`, `jobs_key`,
        `redis_key`): SET `cron_jobs:<namespace>`, HASH `cron_job:<namespace>:<name>` written
        by HSET, booleans `"1"`/`"0"`, nil as `""`, plus `namespace`, `source` and `retry`.
        `last_enqueue` None: never enqueued (`""`). An enqueue writes `%Y-%m-%d %H:%M:%S %z`;
        `saved_after_enqueue` (1.x) is a later `save` of the loaded job, which writes Ruby's
        `Time#to_s` (`… UTC`). The enqueue also leaves the tick in `<key>:enqueued` and the
        jid in `<key>:jid_history`, keys the exporter must not mistake for jobs.
        """
        keys = self.keys
        if generation == CRON_1:
            member = f"cron_job:{name}"
            jobs_key = keys.cron_jobs
        else:
            member = f"cron_job:{namespace}:{name}"
            jobs_key = keys.cron_namespace(namespace)
        key = keys.cron_job(member)
        enqueued = ""
        if last_enqueue is not None:
            moment = datetime.fromtimestamp(last_enqueue, UTC)
            enqueued = moment.strftime("%Y-%m-%d %H:%M:%S +0000")
            if saved_after_enqueue:
                enqueued = moment.strftime("%Y-%m-%d %H:%M:%S UTC")
        message = json.dumps({"retry": True, "queue": "default", "class": klass, "args": []})
        fields: dict[str, str] = {
            "name": name,
            "klass": klass,
            "cron": cron,
            "description": "",
            "args": "[]",
            "date_as_argument": "false",
            "message": message,
            "status": "enabled" if enabled else "disabled",
            "active_job": "false",
            "queue_name_prefix": "",
            "queue_name_delimiter": "",
            "last_enqueue_time": enqueued,
            "symbolize_args": "false",
        }
        if generation == CRON_2:
            fields.update(
                namespace=namespace,
                source="schedule",
                date_as_argument="0",
                active_job="0",
                symbolize_args="0",
                retry="",
            )
        self.client.sadd(jobs_key, member)
        self.client.hset(key, mapping=fields)  # type: ignore[arg-type]
        if last_enqueue is not None:
            tick = float(int(last_enqueue // 60) * 60)
            iso = datetime.fromtimestamp(tick, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            self.client.zadd(f"{key}:enqueued", {iso: tick})
            self.client.lpush(
                f"{key}:jid_history", json.dumps({"jid": "ab" * 12, "enqueued": enqueued})
            )
