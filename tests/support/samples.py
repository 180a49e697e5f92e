"""Hand-built `Sample`s for unit tests: an empty poll, with only the fields a test cares about."""

from __future__ import annotations

from typing import Any

from exporter.model import Sample, ScheduledSetSample

EMPTY_SET = ScheduledSetSample(size=0, overdue=0, oldest_score=None)


def empty_sample(redis_time: float, **fields: Any) -> Sample:
    """A Sample of an empty Sidekiq at Redis time `redis_time`; `fields` override any field."""
    values: dict[str, Any] = {
        "processed": 0,
        "failed": 0,
        "scheduled": EMPTY_SET,
        "retry": EMPTY_SET,
        "dead_size": 0,
        "queues": (),
        "processes": (),
        "running_jobs": (),
        "metrics_minutes": (),
        "round_trips": 2,
        "commands": 10,
    }
    values.update(fields)
    return Sample(redis_time=redis_time, **values)
