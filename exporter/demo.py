"""The embedded demo: a private redis-server holding a simulated Sidekiq cluster.

`sidekiq-exporter-demo` (or `python -m exporter.demo`) starts `redis-server` on a free loopback
port with no persistence, simulates a small Sidekiq 7 cluster in it (queues named by SLA, three
processes with heartbeats and running jobs, retries, per-minute execution metrics, one queue
that falls behind its SLA every few minutes) and runs the exporter against it, so every metric
family can be seen without a Sidekiq of your own.

The simulation writes only to the redis-server this module started itself; the exporter's own
poll path (`exporter.sidekiq.reader`) never writes to any Redis. `SidekiqWriter` writes each
Sidekiq generation's shapes exactly as `shared/sidekiq-redis-layout.md` describes them; the
tests and benchmarks use it too.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis

from exporter.model import HISTOGRAM_BUCKET_BOUNDS_MS, HISTOGRAM_BUCKETS
from exporter.sidekiq.keys import KeyNames

# Layout generations: what changes between them for a reader.
V6_4_1 = "6.4.1"  # `:workers`, no metrics, no `version` in info, seconds
V7 = "7.3"  # `:work`, metrics j|%Y%m%d|%-H:%-M, info.version, seconds
V8_0 = "8.0"  # ms timestamps, metrics j|%y%m%d|%-H:%M and h| histograms
V8_1_2 = "8.1.2"  # + `concurrency` as a hash field, `capsules` in info
ALL = (V6_4_1, V7, V8_0, V8_1_2)


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


# --- the simulated cluster ---------------------------------------------------------------

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


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_redis_server(directory: str) -> tuple[subprocess.Popen[bytes], int]:
    """A private redis-server on a free loopback port, without persistence."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit(
            "sidekiq-exporter-demo: error: redis-server is not installed "
            "(Debian: apt-get install redis-server)"
        )
    port = _free_port()
    server = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            directory,
        ],
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if redis.Redis(port=port, socket_timeout=1).ping():
                return server, port
        except redis.ConnectionError:
            time.sleep(0.05)
    server.kill()
    raise SystemExit("sidekiq-exporter-demo: error: redis-server did not start within 10 s")


def _simulate(writer: SidekiqWriter, stop: threading.Event) -> None:
    simulation = Simulation(writer)
    previous = time.time()
    while not stop.wait(0.5):
        now = time.time()
        simulation.step(now, now - previous)
        previous = now


def main(argv: Sequence[str] | None = None) -> int:
    """Start the private Redis and the simulation, then run the exporter against them."""
    from exporter.cli import main as exporter_main

    args = list(sys.argv[1:] if argv is None else argv)
    with tempfile.TemporaryDirectory(prefix="sidekiq-exporter-demo-") as directory:
        server, port = start_redis_server(directory)
        stop = threading.Event()
        writer = SidekiqWriter(redis.Redis(port=port), V7)
        thread = threading.Thread(target=_simulate, args=(writer, stop), daemon=True)
        thread.start()
        try:
            print(
                f"sidekiq-exporter-demo: simulated Sidekiq 7 cluster in redis://127.0.0.1:{port}/0",
                file=sys.stderr,
                flush=True,
            )
            os.environ.setdefault("SIDEKIQ_EXPORTER_TARGET_NAME", "demo")
            return exporter_main(["--redis.url", f"redis://127.0.0.1:{port}/0", *args])
        finally:
            stop.set()
            thread.join(timeout=5)
            server.terminate()
            server.wait(timeout=10)


if __name__ == "__main__":
    raise SystemExit(main())
