"""The demo's simulated cluster produces every kind of data the exporter reads."""

from __future__ import annotations

import fakeredis

from exporter.demo import V7, SidekiqWriter, Simulation
from exporter.derive import Deriver
from exporter.sidekiq.reader import Reader


async def test_simulation_feeds_every_family() -> None:
    server = fakeredis.FakeServer()
    writer = SidekiqWriter(fakeredis.FakeRedis(server=server), V7)
    simulation = Simulation(writer, seed=1)
    start = 1_755_450_000.0 + 200  # inside the billing outage window (t % 300 < 90 is false)
    reader, derive = Reader(), Deriver("demo")
    reader.histograms_by_get = True  # fakeredis has no BITFIELD_RO
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
