"""The metrics window (exporter/sidekiq/metrics_window.py): the per-minute buckets a poll reads."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from exporter.sidekiq.metrics_window import (
    MAX_CATCH_UP_MINUTES,
    minute_starts,
    minutes_to_read,
    window_minutes,
    window_start,
)

NOW = datetime(2025, 2, 14, 8, 3, 59, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(("interval", "minutes"), [(1, 3), (10, 3), (60, 3), (61, 4), (300, 7)])
def test_metrics_window_covers_every_minute_between_polls(interval: float, minutes: int) -> None:
    assert window_minutes(interval) == minutes


@pytest.mark.parametrize(
    ("since", "minutes"),
    [
        (None, 3),  # the first read
        (NOW - 10, 3),  # a regular poll: the window itself
        (NOW + 5, 3),  # Redis clock went back: never narrower
        (NOW - 20 * 60, 22),  # a gap: every minute since, plus the two of the window rule
        (NOW - 5 * 3600, MAX_CATCH_UP_MINUTES),  # a long gap: capped
    ],
)
def test_a_gap_between_reads_widens_the_window_up_to_the_cap(
    since: float | None, minutes: int
) -> None:
    assert minutes_to_read(3, NOW, since) == minutes


def test_minute_starts_go_back_from_now_and_the_window_starts_at_the_oldest() -> None:
    starts = minute_starts(NOW, 3)
    assert starts == [
        datetime(2025, 2, 14, 8, 3, tzinfo=UTC),
        datetime(2025, 2, 14, 8, 2, tzinfo=UTC),
        datetime(2025, 2, 14, 8, 1, tzinfo=UTC),
    ]
    assert window_start(NOW, 3) == int(starts[-1].timestamp())
