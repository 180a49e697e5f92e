"""A small Sidekiq 7 cluster simulated step by step (pushes, fetches, runs, heartbeats, retries,
per-minute metrics, sidekiq-cron 2.x jobs), written through the layout writer. Keeps its own
clock and randomness; writes only to the writer's Redis.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from exporter.demo.layout import SidekiqWriter
from exporter.model import HISTOGRAM_BUCKET_BOUNDS_MS, HISTOGRAM_BUCKETS

# queue -> (jobs pushed per second, job classes with their typical duration in seconds)
DEMO_QUEUES: dict[str, tuple[float, tuple[tuple[str, float], ...]]] = {
    "critical": (2.0, (("PaymentCaptureJob", 0.05),)),
    "within_5_seconds": (4.0, (("PushNotificationJob", 0.02), ("WebhookDeliveryJob", 0.3))),
    "billing_within_5_minutes": (1.0, (("Billing::InvoiceJob", 1.5),)),
    "default": (2.0, (("HardJob", 0.2), ("ReportCacheJob", 0.8))),
    "mailers": (1.0, (("ActionMailer::MailDeliveryJob", 0.4),)),
    "exports_within_1_hour": (0.1, (("CsvExportJob", 45.0),)),
}
# (identity suffix, tag, concurrency, queues): three processes, one for long jobs only.
DEMO_PROCESSES = (
    ("web-worker-1", "app", 10, ("critical", "within_5_seconds", "default", "mailers")),
    ("web-worker-2", "app", 10, ("critical", "within_5_seconds", "billing_within_5_minutes")),
    ("slow-worker-1", "exports", 2, ("exports_within_1_hour",)),
)
ACTIVE_JOB_WRAPPER = "ActiveJob::QueueAdapters::SidekiqAdapter::JobWrapper"
# sidekiq-cron jobs (name, cron line, class): one its poller enqueues every minute, and one
# that stopped 17 minutes before the demo started (its poller died): overdue, and growing.
DEMO_CRON_FIRING = ("refresh_report_cache", "* * * * *", "ReportCacheJob")
DEMO_CRON_STOPPED = ("sync_exchange_rates", "*/5 * * * *", "HardJob")
DEMO_CRON_STOPPED_SECONDS = 17 * 60


@dataclass
class _Running:
    jid: str
    job: dict[str, Any]
    queue: str
    started: float
    finishes: float


@dataclass
class _Process:
    identity: str
    tag: str
    concurrency: int
    queues: tuple[str, ...]
    running: dict[str, _Running] = field(default_factory=dict)  # tid -> job


class Simulation:
    """A Sidekiq 7 cluster simulated in steps: pushes, fetches, runs, beats, metrics."""

    def __init__(self, writer: SidekiqWriter, seed: int = 7) -> None:
        self.writer = writer
        self.random = random.Random(seed)
        self.processes = [
            _Process(f"{name}:{1000 + i}:{i:012x}", tag, concurrency, queues)
            for i, (name, tag, concurrency, queues) in enumerate(DEMO_PROCESSES)
        ]
        self.processed = self.failed = 0
        self.jid = 0
        self.started_at = time.time()  # when the simulated processes started
        self.last_beat = 0.0
        # per (minute start, class): [executions, failures, ms, histogram counts]
        self.pending_metrics: dict[tuple[int, str], list[Any]] = {}
        self.cron_minute: int | None = None  # the minute the firing cron job last enqueued

    def _next_jid(self) -> str:
        self.jid += 1
        return f"{self.jid:024x}"

    def _push(self, queue: str, now: float) -> None:
        job_class, _ = self.random.choice(DEMO_QUEUES[queue][1])
        wrapped = job_class if job_class.startswith("ActionMailer") else None
        job = self.writer.job(
            ACTIVE_JOB_WRAPPER if wrapped else job_class,
            queue,
            enqueued_at=now,
            created_at=now,
            wrapped=wrapped,
            jid=self._next_jid(),
        )
        self.writer.push(queue, job)

    def step(self, now: float, elapsed: float) -> None:
        """Advance the cluster by `elapsed` seconds ending at `now`."""
        client, keys = self.writer.client, self.writer.keys
        # Every 5 minutes the billing queue loses its processes for 90 s: its latency climbs
        # past the 5 minute SLA only if that lasts, so the demo shows a breach now and then.
        billing_outage = int(now) % 300 < 90
        for queue, (rate, _) in DEMO_QUEUES.items():
            for _ in range(self._poisson(rate * elapsed)):
                self._push(queue, now)
        self._cron(now)
        for process in self.processes:
            for tid, run in list(process.running.items()):
                if run.finishes <= now:
                    del process.running[tid]
                    self._finish(run, now)
            for queue in process.queues:
                if queue == "billing_within_5_minutes" and billing_outage:
                    continue
                while len(process.running) < process.concurrency:
                    raw = client.rpop(keys.queue(queue))
                    if not isinstance(raw, bytes | str):
                        break
                    job = json.loads(raw)
                    duration = self._duration(job)
                    tid = f"t{self.random.randrange(36**4):04x}"
                    process.running[tid] = _Running(job["jid"], job, queue, now, now + duration)
        if now - self.last_beat >= 10:  # Sidekiq 7's heartbeat cadence
            self.last_beat = now
            self._beat(now)

    def _cron(self, now: float) -> None:
        """sidekiq-cron's poller: the firing job enqueues once a minute, the other never."""
        minute = int(now // 60) * 60
        if self.cron_minute is None:
            name, line, klass = DEMO_CRON_STOPPED
            last = now - DEMO_CRON_STOPPED_SECONDS
            self.writer.cron_job(name, line, klass=klass, last_enqueue=last)
        if self.cron_minute is None or minute > self.cron_minute:
            self.cron_minute = minute
            name, line, klass = DEMO_CRON_FIRING
            jid = self._next_jid()
            job = self.writer.job(klass, "default", enqueued_at=now, created_at=now, jid=jid)
            self.writer.push("default", job)
            self.writer.cron_job(name, line, klass=klass, last_enqueue=now)

    def _duration(self, job: dict[str, Any]) -> float:
        klass = job.get("wrapped") or job["class"]
        typical = next(d for _, jobs in DEMO_QUEUES.values() for c, d in jobs if c == klass)
        return typical * self.random.lognormvariate(0, 0.5)

    def _finish(self, run: _Running, now: float) -> None:
        klass = run.job.get("wrapped") or run.job["class"]
        failed = self.random.random() < 0.02
        self.processed += 1
        minute = int(now // 60) * 60
        metrics = self.pending_metrics.setdefault((minute, klass), [0, 0, 0, {}])
        metrics[0] += 1
        if failed:
            self.failed += 1
            metrics[1] += 1
            job = dict(run.job, retry_count=0, error_class="Net::ReadTimeout", failed_at=now)
            self.writer.zadd("retry", now + 30 + self.random.random() * 60, job)
            return
        ms = int((now - run.started) * 1000)
        metrics[2] += ms
        bucket = next(
            (i for i, bound in enumerate(HISTOGRAM_BUCKET_BOUNDS_MS) if ms < bound),
            HISTOGRAM_BUCKETS - 1,
        )
        metrics[3][bucket] = metrics[3].get(bucket, 0) + 1

    def _beat(self, now: float) -> None:
        """What each process does every 10 s: flush stats and metrics, write its hashes."""
        client, keys = self.writer.client, self.writer.keys
        client.set(keys.processed, self.processed)
        client.set(keys.failed, self.failed)
        for (minute, klass), (p, f, ms, histogram) in self.pending_metrics.items():
            self.writer.metrics(
                datetime.fromtimestamp(minute, UTC),
                klass,
                executions=p,
                failures=f,
                milliseconds=ms,
                histogram=histogram,
            )
        self.pending_metrics.clear()
        # Retries whose time has come go back to their queue, as the scheduler does.
        for raw in client.zrangebyscore(keys.retry, "-inf", now):
            assert isinstance(raw, bytes)
            if client.zrem(keys.retry, raw):
                job = json.loads(raw)
                if self.random.random() < 0.2:
                    self.writer.zadd("dead", now, job)
                else:
                    self.writer.push(job["queue"], job)
        for process in self.processes:
            client.delete(keys.work(process.identity))
            for tid, run in process.running.items():
                self.writer.work(process.identity, tid, run.queue, run.job, run.started)
            self.writer.process(
                process.identity,
                beat=now,
                hostname=process.identity.split(":")[0],
                tag=process.tag,
                concurrency=process.concurrency,
                queues=process.queues,
                busy=len(process.running),
                started_at=self.started_at,
            )

    def _poisson(self, mean: float) -> int:
        # Knuth's method: fine for the small means of a one-second step.
        limit, count, product = math.exp(-mean), 0, self.random.random()
        while product > limit:
            count += 1
            product *= self.random.random()
        return count
