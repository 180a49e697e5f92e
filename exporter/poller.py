"""The poll loop: one `Poller` per target reads, derives and publishes on a fixed schedule.

Owns the interval, timeout, backoff and the self-metrics in the target's status (schedule and
backoff: docs/architecture.md); parses no Sidekiq data and calls Redis only through `read`.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Final, Protocol
from urllib.parse import quote

from redis.exceptions import RedisError

from exporter.clock import Clock, SystemClock
from exporter.logs import (
    POLL_COMPLETED,
    POLL_CRASHED,
    POLL_FAILED,
    REDIS_DATA_SKIPPED,
    TARGET_DOWN,
    TARGET_UP,
    get_logger,
)
from exporter.model import Sample, Snapshot
from exporter.redis_url import url_password
from exporter.settings import Settings
from exporter.store import Store, TargetStatus, add_counts
from exporter.targets import TargetSettings
from exporter.values import format_duration

__all__ = [
    "BACKOFF_START_SECONDS",
    "Clock",
    "DeriveFn",
    "Poller",
    "ReadFn",
    "SystemClock",
]

log = get_logger(__name__)

# Reads Redis: takes the best estimate of Redis `TIME` now and the Redis time of the last
# successful read (None before the first), returns one Sample; raises RedisError / OSError /
# TimeoutError when Redis can't be read.
ReadFn = Callable[[float, float | None], Awaitable[Sample]]

# What a failed read may raise. Anything else is a bug, logged with its traceback.
# (asyncio.TimeoutError is the builtin TimeoutError, a subclass of OSError, since 3.11.)
EXPECTED_ERRORS: Final = (RedisError, OSError)

BACKOFF_START_SECONDS: Final = 0.5
_MAX_BACKOFF_EXPONENT: Final = 30  # 0.5 * 2**30 s is far above any interval; avoids overflow
_MAX_MESSAGE_CHARS: Final = 200
# The debug log names the key and reason of skipped Redis data (never its value), at most this
# many lines per target and window: bad data that stays in Redis is skipped on every poll.
SKIPPED_KEY_LINES: Final = 10
SKIPPED_KEY_WINDOW_SECONDS: Final = 60.0
_MAX_KEY_CHARS: Final = 200  # a key name can be as long as a queue name


class DeriveFn(Protocol):
    """Turns a Sample into a Snapshot, carrying state between polls (one per target)."""

    def __call__(self, sample: Sample) -> Snapshot:
        """The snapshot for `sample`, given every sample seen before."""
        ...


class Poller:
    """Polls one target forever on a fixed schedule and publishes each outcome to the store."""

    def __init__(
        self,
        target: TargetSettings,
        settings: Settings,
        store: Store,
        read: ReadFn,
        derive: DeriveFn,
        clock: Clock,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self._target = target
        self._interval = settings.poll_interval
        self._timeout = settings.poll_timeout
        self._store = store
        self._read = read
        self._derive = derive
        self._clock = clock
        self._rng = rng if rng is not None else random.Random()
        self._status = store.get(target.name)
        # Redis TIME minus our wall clock, from the last successful poll: lets the reader
        # compute "now" in Redis time before it has read TIME in this poll.
        self._clock_offset = 0.0
        self._last_read_redis_time: float | None = None  # of the last successful read
        self._consecutive_failures = 0
        self._up: bool | None = None  # None until the first poll: its outcome is logged
        self._down_since: float | None = None  # monotonic
        self._secrets = _secrets_of(target)
        self._skip_lines_window = -math.inf  # monotonic start of the current log window
        self._skip_lines = 0  # lines logged in it
        self._skip_lines_held = 0  # skipped keys not logged since the last line

    @property
    def target(self) -> str:
        """The target's name (its `target` label)."""
        return self._target.name

    @property
    def status(self) -> TargetStatus:
        """The status this poller last published."""
        return self._status

    async def run(self) -> None:
        """Poll until cancelled; Redis errors and bugs are counted and logged, never raised."""
        next_tick = self._clock.monotonic()
        while True:
            started = self._clock.monotonic()
            ok = await self.poll_once()
            now = self._clock.monotonic()
            next_tick = self._next_tick(next_tick, started, now)
            wake = next_tick if ok else min(now + self.backoff_delay(), next_tick)
            await self._clock.sleep(max(0.0, wake - now))

    def _next_tick(self, tick: float, started: float, now: float) -> float:
        """The first grid tick after the attempt that began at `started` and not before `now`."""
        interval = self._interval
        if tick <= started:  # the tick this attempt served (or a retry after it)
            tick += (math.floor((started - tick) / interval) + 1) * interval
        if tick < now:  # ticks that passed while the poll ran are skipped, not bunched up
            tick += math.ceil((now - tick) / interval) * interval
        return tick

    def backoff_delay(self) -> float:
        """Seconds to wait before retrying after the current run of consecutive failures."""
        exponent = min(max(self._consecutive_failures - 1, 0), _MAX_BACKOFF_EXPONENT)
        ceiling = min(self._interval, BACKOFF_START_SECONDS * 2.0**exponent)
        return self._rng.uniform(0.0, ceiling)  # full jitter

    async def poll_once(self) -> bool:
        """Read, derive and publish one poll; True on success. Only cancellation propagates."""
        started = self._clock.monotonic()
        started_wall = self._clock.time()
        now_hint = started_wall + self._clock_offset
        try:
            async with asyncio.timeout(self._timeout):
                sample = await self._read(now_hint, self._last_read_redis_time)
            snapshot = self._derive(sample)
        except EXPECTED_ERRORS as exc:
            self._failed(started, exc)
            return False
        except Exception as exc:
            # A bug (ours or in a dependency): keep the traceback, keep the loop alive.
            log.exception(POLL_CRASHED, target=self.target, error=_error_name(exc))
            self._failed(started, exc)
            return False
        # Redis TIME is read in the first round trip, so compare it with the wall clock at the
        # start of the poll, not its end: no bias by the poll's duration, and when TIME fails
        # (the reader then returns `now_hint` itself) the offset stays where it was.
        self._clock_offset = sample.redis_time - started_wall
        self._last_read_redis_time = sample.redis_time
        self._succeeded(started, sample, snapshot)
        return True

    def _succeeded(self, started: float, sample: Sample, snapshot: Snapshot) -> None:
        finished = self._clock.monotonic()
        completed_at = self._clock.time()
        duration = finished - started
        previous = self._status
        self._publish(
            replace(
                previous,
                snapshot=snapshot,
                snapshot_completed_at=completed_at,
                polls_success=previous.polls_success + 1,
                last_poll_duration_seconds=duration,
                last_success_timestamp=completed_at,
                last_round_trips=sample.round_trips,
                skipped_totals=add_counts(
                    previous.skipped_totals, sample.skipped, snapshot.skipped
                ),
                up=True,
            )
        )
        if self._up is not True:
            fields: dict[str, object] = {}
            if self._down_since is not None:
                fields["down_seconds"] = round(finished - self._down_since, 3)
            log.info(
                TARGET_UP,
                target=self.target,
                redis=self._target.redacted_url,
                round_trips=sample.round_trips,
                duration_seconds=round(duration, 6),
                **fields,
            )
        self._up = True
        self._down_since = None
        self._consecutive_failures = 0
        log.debug(
            POLL_COMPLETED,
            target=self.target,
            duration_seconds=round(duration, 6),
            round_trips=sample.round_trips,
            commands=sample.commands,
            queues=len(sample.queues),
            processes=len(sample.processes),
            running_jobs=len(sample.running_jobs),
            skipped=sum(sample.skipped.values()) + sum(snapshot.skipped.values()),
        )
        self._log_skipped_keys(sample, finished)

    def _log_skipped_keys(self, sample: Sample, now: float) -> None:
        """One debug line per skipped item the sample names (key and reason, never the
        value), at most SKIPPED_KEY_LINES per SKIPPED_KEY_WINDOW_SECONDS."""
        if not sample.skipped_keys:
            return
        if now - self._skip_lines_window >= SKIPPED_KEY_WINDOW_SECONDS:
            self._skip_lines_window, self._skip_lines = now, 0
        for reason, key in sample.skipped_keys:
            if self._skip_lines >= SKIPPED_KEY_LINES:
                self._skip_lines_held += 1
                continue
            self._skip_lines += 1
            fields: dict[str, object] = {}
            if self._skip_lines_held:  # what the limit held back since the last line
                fields["not_logged_before"] = self._skip_lines_held
                self._skip_lines_held = 0
            shown = key if len(key) <= _MAX_KEY_CHARS else key[:_MAX_KEY_CHARS] + "…"
            log.debug(REDIS_DATA_SKIPPED, target=self.target, reason=reason, key=shown, **fields)

    def _failed(self, started: float, exc: BaseException) -> None:
        finished = self._clock.monotonic()
        previous = self._status
        # The old snapshot stays: the collector decides when it is too old to export.
        self._publish(
            replace(
                previous,
                polls_error=previous.polls_error + 1,
                last_poll_duration_seconds=finished - started,
                up=False,
            )
        )
        self._consecutive_failures += 1
        error, message = _error_name(exc), self._describe(exc)
        if self._up is not False:
            log.error(
                TARGET_DOWN,
                target=self.target,
                redis=self._target.redacted_url,
                error=error,
                message=message,
            )
            self._down_since = finished
        self._up = False
        log.debug(
            POLL_FAILED,
            target=self.target,
            error=error,
            message=message,
            consecutive_failures=self._consecutive_failures,
        )

    def _publish(self, status: TargetStatus) -> None:
        self._status = status
        self._store.publish(status)

    def _describe(self, exc: BaseException) -> str:
        """One short line about `exc`, with any credential of this target masked."""
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        if not text and isinstance(exc, TimeoutError):
            text = f"no answer within the poll timeout ({format_duration(self._timeout)})"
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text[:_MAX_MESSAGE_CHARS]


def _error_name(exc: BaseException) -> str:
    """`redis.exceptions.ConnectionError` for library errors, `TimeoutError` for builtins."""
    cls = type(exc)
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


def _secrets_of(target: TargetSettings) -> tuple[str, ...]:
    """Every form in which this target's password could appear in an error message."""
    found: set[str] = set()
    for secret in (target.password, url_password(target.url), target.sentinel_password):
        if secret:
            found.update((secret, quote(secret, safe="")))
    # Longest first, so a secret that contains another is masked whole.
    return tuple(sorted(found, key=len, reverse=True))
