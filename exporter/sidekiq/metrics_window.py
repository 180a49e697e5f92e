"""The metrics window: which of Sidekiq's per-minute execution-metric buckets a poll re-reads.

Owns the one formula for how many minutes can change between two reads; talks to no Redis.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Final

# The narrowest window: enough for any poll interval up to a minute.
MIN_WINDOW_MINUTES: Final = 3
# The widest window after a gap between reads: an hour of per-minute buckets, two hash reads
# per minute plus one histogram read per class and minute, once. Sidekiq keeps the buckets for
# 8 h; a longer gap loses the executions before the last hour.
MAX_CATCH_UP_MINUTES: Final = 60


def _minutes_that_can_change(seconds: float) -> int:
    """Buckets that can change within `seconds` between two reads.

    Sidekiq flushes into the bucket of the flush time (§6.2): the current minute, every minute
    that began since the previous read, and one more for a flush landing after its minute ended
    (the worker's clock is behind, or it flushed late).
    """
    return math.ceil(max(0.0, seconds) / 60) + 2


def window_minutes(poll_interval: float) -> int:
    """Minutes to re-read on every poll so that no bucket changes unseen between two polls."""
    return max(MIN_WINDOW_MINUTES, _minutes_that_can_change(poll_interval))


def minutes_to_read(window: int, now: float, since: float | None) -> int:
    """The window of one read: `window`, widened to cover every minute since the last read at
    `since` (Redis time; None before the first) up to MAX_CATCH_UP_MINUTES, so executions
    flushed while Redis or the exporter was down are still counted."""
    if since is None:
        return window
    return max(window, min(MAX_CATCH_UP_MINUTES, _minutes_that_can_change(now - since)))


def minute_starts(now: float, count: int) -> list[datetime]:
    """Starts of the `count` UTC minutes whose buckets can still change: now's and earlier ones.

    A minute stops growing when it ends on the clock of the last worker to flush; the earlier
    minutes cover that worker's skew, `now`'s own error and the gap between two polls.
    """
    current = int(now // 60) * 60
    return [datetime.fromtimestamp(current - 60 * i, UTC) for i in range(count)]


def window_start(now: float, count: int) -> int:
    """Epoch start of the oldest of the `count` minutes ending with the one holding `now`."""
    return (int(now // 60) - count + 1) * 60
