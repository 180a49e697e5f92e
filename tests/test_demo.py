"""The demo's simulated cluster produces every kind of data the exporter reads."""

from __future__ import annotations

import time

import fakeredis
import pytest

from exporter.demo.layout import V7, SidekiqWriter
from exporter.demo.simulation import (
    DEMO_CRON_FIRING,
    DEMO_CRON_STOPPED,
    DEMO_CRON_STOPPED_SECONDS,
    Simulation,
)
from exporter.derive import Deriver
from exporter.sidekiq.reader import Reader


async def test_simulation_feeds_every_family() -> None:
    server = fakeredis.FakeServer()
    writer = SidekiqWriter(fakeredis.FakeRedis(server=server), V7)
    simulation = Simulation(writer, seed=1)
    # The billing outage is `t % 300 < 90`: the run starts outside it (t % 300 == 200) and
    # its last 20 steps fall inside it.
    start = 1_755_450_000.0 + 200
    assert start % 300 == 200
    reader, derive = Reader(), Deriver("demo")
    client = fakeredis.FakeAsyncRedis(server=server)
    derive(await reader.read(client, start))  # the first poll is the per-class baseline
    for second in range(0, 120):
        simulation.step(start + second, 1.0)
    snapshot = derive(await reader.read(client, start + 120))
    sample = snapshot.sample
    assert {q.name for q in sample.queues} >= {"critical", "within_5_seconds", "default"}
    assert len(sample.processes) == 3
    assert sample.processed > 100
    assert sample.running_jobs
    assert snapshot.job_classes
    assert sum(t.executions for t in snapshot.job_classes.values()) > 50
    assert "ActionMailer::MailDeliveryJob" in snapshot.job_classes  # wrapped class
    assert sample.skipped == {}
    # sidekiq-cron: one job firing every minute of the simulated two, one stopped before.
    cron = {s.job.name: s for s in snapshot.cron_jobs}
    firing, stopped = cron[DEMO_CRON_FIRING[0]], cron[DEMO_CRON_STOPPED[0]]
    last_minute = (start + 119) // 60 * 60
    assert last_minute > start
    assert firing.job.last_enqueue_timestamp is not None
    assert int(firing.job.last_enqueue_timestamp) // 60 * 60 == last_minute
    assert firing.next_expected == last_minute + 60
    assert stopped.job.last_enqueue_timestamp == int(start - DEMO_CRON_STOPPED_SECONDS)
    assert stopped.next_expected is not None
    assert stopped.next_expected <= start  # a tick of */5 passed since: overdue in the demo
    assert snapshot.skipped == {}


def test_simulation_start_time_is_taken_per_instance(monkeypatch: pytest.MonkeyPatch) -> None:
    writer = SidekiqWriter(fakeredis.FakeRedis(), V7)
    monkeypatch.setattr(time, "time", lambda: 1_000.0)
    assert (
        Simulation(writer).started_at == 1_000.0
    )  # not the time `exporter.demo.simulation` was imported
    monkeypatch.setattr(time, "time", lambda: 2_000.0)
    assert Simulation(writer).started_at == 2_000.0


def test_poisson_draws_have_the_requested_mean() -> None:
    simulation = Simulation(SidekiqWriter(fakeredis.FakeRedis(), V7), seed=3)
    assert simulation._poisson(0.0) == 0
    draws = [simulation._poisson(4.0) for _ in range(4000)]
    assert sum(draws) / len(draws) == pytest.approx(4.0, abs=0.2)  # 6 standard errors
