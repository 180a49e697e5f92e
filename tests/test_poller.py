"""Poller: fixed schedule, no overlap, timeout, backoff, state-change logging, recovery.

Everything runs on a fake clock: `sleep` advances fake time instantly and, after a set number
of sleeps, raises `StopLoop` to end `run()`. Reads are fakes that advance the fake clock to
simulate how long Redis takes.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import random
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from structlog.testing import capture_logs

from exporter.model import Sample, Snapshot
from exporter.poller import BACKOFF_START_SECONDS, SKIPPED_KEY_LINES, Poller
from exporter.settings import Settings
from exporter.store import Store
from exporter.targets import TargetSettings, build_target
from tests.support.samples import empty_sample

WALL_START = 1_700_000_000.0
INTERVAL = 10.0


class StopLoop(Exception):
    """Raised by the fake clock to end `Poller.run()` after enough iterations."""


@dataclass
class FakeClock:
    """Monotonic starts at 0; wall time is WALL_START + monotonic. Sleeping is instant."""

    max_sleeps: int = 100
    now: float = 0.0
    sleeps: list[float] = field(default_factory=list)

    def time(self) -> float:
        return WALL_START + self.now

    def monotonic(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    async def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.sleeps.append(seconds)
        if len(self.sleeps) > self.max_sleeps:
            raise StopLoop
        self.now += seconds
        await asyncio.sleep(0)


def make_sample(
    redis_time: float,
    *,
    round_trips: int = 2,
    skipped: Mapping[str, int] | None = None,
    skipped_keys: tuple[tuple[str, str], ...] = (),
) -> Sample:
    return empty_sample(
        redis_time, round_trips=round_trips, skipped=dict(skipped or {}), skipped_keys=skipped_keys
    )


# An outcome per poll: seconds it takes, and either a Sample builder or an exception to raise.
Outcome = tuple[float, Callable[[float], Sample] | BaseException]


class FakeRead:
    """Plays a script of outcomes, then repeats the last one; records each call's start."""

    def __init__(self, clock: FakeClock, outcomes: Iterable[Outcome]) -> None:
        self.clock = clock
        self.outcomes = deque(outcomes)
        self.calls: list[tuple[float, float]] = []  # (monotonic start, now_hint)
        self.since: list[float | None] = []  # the Redis time of the last success, per call
        self.active = 0
        self.max_active = 0

    async def __call__(self, now_hint: float, since: float | None = None) -> Sample:
        started = self.clock.monotonic()
        self.calls.append((started, now_hint))
        self.since.append(since)
        outcome = self.outcomes[0] if len(self.outcomes) == 1 else self.outcomes.popleft()
        duration, result = outcome
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            await asyncio.sleep(0)  # a real suspension point, as a network read has
            self.clock.advance(duration)
        finally:
            self.active -= 1
        if isinstance(result, BaseException):
            raise result
        # The reader takes Redis TIME in its first round trip: at the start of the read.
        return result(WALL_START + started)

    @property
    def starts(self) -> list[float]:
        return [start for start, _ in self.calls]


def ok(duration: float = 0.2, **kwargs: object) -> Outcome:
    return duration, lambda now: make_sample(now, **kwargs)  # type: ignore[arg-type]


def fail(exc: BaseException | None = None, duration: float = 0.1) -> Outcome:
    return duration, exc if exc is not None else RedisConnectionError("Connection refused")


@dataclass
class FakeDerive:
    target: str = "main"
    skipped: Mapping[str, int] = field(default_factory=dict)
    error: Exception | None = None
    calls: int = 0

    def __call__(self, sample: Sample) -> Snapshot:
        self.calls += 1
        if self.error is not None:
            raise self.error
        return Snapshot(
            target=self.target,
            sample=sample,
            job_classes={},
            job_metrics_supported=False,
            queue_slas={},
            sla_breach_seconds={},
            running_jobs=sample.running_jobs,
            skipped=dict(self.skipped),
        )


class MaxJitter(random.Random):
    """Always the top of the jitter range, to check the backoff ceilings exactly."""

    def uniform(self, a: float, b: float) -> float:
        return b


def settings_for(
    target: TargetSettings, interval: float = INTERVAL, timeout: float = 8.0
) -> Settings:
    return Settings(
        targets=(target,),
        poll_interval=interval,
        poll_timeout=timeout,
        listen_host="127.0.0.1",
        listen_port=0,
        telemetry_path="/metrics",
        log_level="info",
        log_format="json",
        collect_processes=True,
    )


@dataclass
class Rig:
    poller: Poller
    store: Store
    clock: FakeClock
    read: FakeRead
    derive: FakeDerive


def rig(
    outcomes: Iterable[Outcome],
    *,
    max_sleeps: int = 10,
    interval: float = INTERVAL,
    timeout: float = 8.0,
    rng: random.Random | None = None,
    target: TargetSettings | None = None,
    derive: FakeDerive | None = None,
) -> Rig:
    target = target or build_target(name="main", url="redis://localhost/0")
    clock = FakeClock(max_sleeps=max_sleeps)
    store = Store([target.name])
    read = FakeRead(clock, outcomes)
    derive = derive or FakeDerive(target.name)
    poller = Poller(
        target,
        settings_for(target, interval, timeout),
        store,
        read,
        derive,
        clock,
        rng=rng or random.Random(1),
    )
    return Rig(poller, store, clock, read, derive)


async def run_until_stopped(r: Rig) -> None:
    with pytest.raises(StopLoop):
        await r.poller.run()


# --- success ---------------------------------------------------------------------------------


async def test_success_publishes_a_complete_status() -> None:
    r = rig([ok(0.25, round_trips=3, skipped={"bad_json": 2})], max_sleeps=0)
    r.derive.skipped = {"class_limit": 1}
    await run_until_stopped(r)
    status = r.store.get("main")
    assert status.up is True
    assert (status.polls_success, status.polls_error) == (1, 0)
    assert status.snapshot is not None
    assert status.snapshot.sample.redis_time == WALL_START  # TIME: in the first round trip
    assert status.snapshot_completed_at == WALL_START + 0.25
    assert status.last_success_timestamp == WALL_START + 0.25
    assert status.last_poll_duration_seconds == pytest.approx(0.25)
    assert status.last_round_trips == 3
    assert dict(status.skipped_totals) == {"bad_json": 2, "class_limit": 1}
    assert r.poller.status is status


async def test_skipped_totals_accumulate_over_polls() -> None:
    r = rig(
        [ok(skipped={"bad_json": 1}), ok(skipped={"bad_json": 2, "wrong_type": 1}), fail()],
        max_sleeps=2,
    )
    await run_until_stopped(r)
    status = r.store.get("main")
    assert (status.polls_success, status.polls_error) == (2, 1)
    assert dict(status.skipped_totals) == {"bad_json": 3, "wrong_type": 1}


async def test_keys_of_skipped_data_are_logged_at_debug_and_rate_limited() -> None:
    # Bad data stays in Redis and is skipped on every poll: six keys a poll, every 10 s.
    keys = tuple(("invalid_job", f"queue:q{index}") for index in range(6))
    r = rig([ok(0.2, skipped_keys=keys)], max_sleeps=8)
    with capture_logs() as logs:
        await run_until_stopped(r)
    lines = [e for e in logs if e["event"] == "redis_data_skipped"]
    assert all(e["log_level"] == "debug" for e in lines)
    # Polls at 0 … 50 s share a minute: 10 lines. From 60 s, 10 more.
    assert len(lines) == 2 * SKIPPED_KEY_LINES == 20
    assert [(e["reason"], e["key"]) for e in lines[:6]] == list(keys)
    # The first line of a new minute says how many the limit held back (polls 2 to 6).
    assert lines[10]["not_logged_before"] == 6 * 6 - 10
    assert "not_logged_before" not in lines[11]


async def test_now_hint_uses_the_offset_measured_at_the_last_poll() -> None:
    clock_skew = 5.0  # Redis is 5 s ahead of us
    r = rig([(0.2, lambda now: make_sample(now + clock_skew))], max_sleeps=2)
    await run_until_stopped(r)
    (_, first), (start2, second), (start3, third) = r.read.calls
    assert first == WALL_START  # nothing measured yet: our own clock
    assert second == pytest.approx(WALL_START + start2 + clock_skew)
    assert third == pytest.approx(WALL_START + start3 + clock_skew)


async def test_failed_time_keeps_the_offset_instead_of_drifting() -> None:
    # A reader whose TIME was refused returns `now_hint` as its Redis time. The offset must
    # stay what the last real TIME gave, not move by a poll duration on every poll.
    calls: list[tuple[float, float]] = []

    def time_refused(_now: float) -> Sample:
        return make_sample(calls[-1][1])

    r = rig([(0.2, lambda now: make_sample(now + 5.0)), (0.7, time_refused)], max_sleeps=6)
    calls = r.read.calls
    await run_until_stopped(r)
    offsets = [hint - (WALL_START + start) for start, hint in calls]
    assert offsets[0] == 0.0
    assert offsets[1:] == pytest.approx([5.0] * (len(offsets) - 1))


async def test_read_is_told_the_redis_time_of_the_last_success() -> None:
    # The reader widens its metrics window after a gap: it needs the last successful read.
    r = rig([ok(0.2), fail(), fail(), ok(0.2)], max_sleeps=4)
    await run_until_stopped(r)
    first_redis_time = WALL_START + r.read.starts[0]
    assert r.read.since == [
        None,
        first_redis_time,
        first_redis_time,
        first_redis_time,
        pytest.approx(WALL_START + r.read.starts[3]),
    ]


# --- schedule --------------------------------------------------------------------------------


async def test_fixed_schedule() -> None:
    r = rig([ok(0.3), ok(1.7), ok(0.01)], max_sleeps=4)
    await run_until_stopped(r)
    # Ticks stay on the grid whatever each poll took: no drift.
    assert r.read.starts == pytest.approx([0.0, 10.0, 20.0, 30.0, 40.0])
    assert r.clock.sleeps[:4] == pytest.approx([9.7, 8.3, 9.99, 9.99])


async def test_overrun_skips_missed_ticks() -> None:
    # The fake read advances time without real waiting, so the timeout never fires here:
    # this checks what the schedule does when a poll (or the event loop) overran.
    r = rig([ok(0.5), ok(25.0), ok(0.5)], max_sleeps=3)
    await run_until_stopped(r)
    assert r.read.starts == pytest.approx([0.0, 10.0, 40.0, 50.0])


async def test_poll_ending_exactly_on_the_next_tick_starts_at_once() -> None:
    r = rig([ok(10.0), ok(0.5)], max_sleeps=2)
    await run_until_stopped(r)
    assert r.read.starts == pytest.approx([0.0, 10.0, 20.0])
    assert r.clock.sleeps[0] == 0.0


async def test_polls_never_overlap() -> None:
    r = rig([ok(3.0)], max_sleeps=20)
    await run_until_stopped(r)
    assert len(r.read.calls) == 21
    assert r.read.max_active == 1


# --- failures, timeout and backoff -----------------------------------------------------------


async def test_timeout_cancels_the_read_and_counts_an_error() -> None:
    cancelled = asyncio.Event()

    async def hang(now_hint: float, since: float | None = None) -> Sample:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        raise AssertionError("unreachable")

    target = build_target(name="main", url="redis://localhost/0")
    store = Store(["main"])
    poller = Poller(
        target, settings_for(target, timeout=0.02), store, hang, FakeDerive(), FakeClock()
    )
    with capture_logs() as logs:
        assert await poller.poll_once() is False
    assert cancelled.is_set()
    status = store.get("main")
    assert (status.up, status.polls_error, status.polls_success) == (False, 1, 0)
    (down,) = [e for e in logs if e["event"] == "target_down"]
    assert down["error"] == "TimeoutError"
    assert down["message"] == "no answer within the poll timeout (20ms)"


@pytest.mark.parametrize(
    ("exc", "error"),
    [
        (RedisConnectionError("Error 111 connecting"), "redis.exceptions.ConnectionError"),
        (ResponseError("NOPERM no permissions"), "redis.exceptions.ResponseError"),
        (ConnectionResetError(104, "Connection reset by peer"), "ConnectionResetError"),
        (TimeoutError(), "TimeoutError"),
    ],
)
async def test_redis_errors_count_and_keep_the_old_snapshot(exc: Exception, error: str) -> None:
    r = rig([ok(round_trips=2), fail(exc)], max_sleeps=1)
    with capture_logs() as logs:
        await run_until_stopped(r)
    status = r.store.get("main")
    assert (status.up, status.polls_success, status.polls_error) == (False, 1, 1)
    assert status.snapshot is not None
    assert status.snapshot_completed_at == WALL_START + 0.2
    assert status.last_round_trips == 2  # unknown for the failed poll: the last known value
    assert status.last_poll_duration_seconds == pytest.approx(0.1)  # the failed poll's
    assert [e["error"] for e in logs if e["event"] == "target_down"] == [error]
    assert not [e for e in logs if e["event"] == "poll_crashed"]


def test_backoff_ceiling_doubles_from_half_a_second_up_to_the_interval() -> None:
    r = rig([ok()], rng=MaxJitter())
    ceilings = []
    for failures in range(1, 9):
        r.poller._consecutive_failures = failures
        ceilings.append(r.poller.backoff_delay())
    assert ceilings == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0]
    assert BACKOFF_START_SECONDS == 0.5
    r.poller._consecutive_failures = 100_000  # days of outage: no float overflow
    assert r.poller.backoff_delay() == 10.0


def test_backoff_is_fully_jittered() -> None:
    r = rig([ok()], rng=random.Random(7))
    r.poller._consecutive_failures = 4
    delays = [r.poller.backoff_delay() for _ in range(2000)]
    assert all(0.0 <= d <= 4.0 for d in delays)
    assert min(delays) < 0.2
    assert max(delays) > 3.8


async def test_retries_follow_the_backoff_and_never_pass_the_next_tick() -> None:
    r = rig([fail(duration=0.0)], max_sleeps=7, rng=MaxJitter())
    await run_until_stopped(r)
    # 0.5, 1, 2, 4 s; then 8 s would pass the tick at 10 s; from there on the ceiling is the
    # interval, which lands on the next tick.
    assert r.read.starts == pytest.approx([0.0, 0.5, 1.5, 3.5, 7.5, 10.0, 20.0, 30.0])


async def test_retry_delays_stay_within_bounds_with_real_jitter() -> None:
    r = rig([fail(duration=0.05)], max_sleeps=200, rng=random.Random(3))
    await run_until_stopped(r)
    starts = r.read.starts
    for n, (before, after) in enumerate(itertools.pairwise(starts), start=1):
        ceiling = min(INTERVAL, 0.5 * 2 ** (n - 1))
        assert 0.05 <= after - before <= 0.05 + ceiling + 1e-9
        # Never later than the first scheduled tick after the previous attempt ended.
        next_tick = math.ceil((before + 0.05) / INTERVAL) * INTERVAL
        assert after <= next_tick + 1e-9


async def test_back_within_one_interval_of_redis_returning() -> None:
    outcomes = [fail(duration=0.01)] * 30 + [ok(0.1)]
    r = rig(outcomes, max_sleeps=31, rng=random.Random(11))
    await run_until_stopped(r)
    starts = r.read.starts
    assert all(b - a <= INTERVAL + 0.01 + 1e-9 for a, b in itertools.pairwise(starts))
    assert r.store.get("main").up is True


async def test_recovery_returns_to_the_schedule() -> None:
    r = rig(
        [fail(duration=0.0), fail(duration=0.0), ok(0.2), ok(0.2)], max_sleeps=4, rng=MaxJitter()
    )
    await run_until_stopped(r)
    assert r.read.starts == pytest.approx([0.0, 0.5, 1.5, 10.0, 20.0])
    status = r.store.get("main")
    assert (status.up, status.polls_success, status.polls_error) == (True, 3, 2)


# --- logging ---------------------------------------------------------------------------------


def events(logs: Sequence[Mapping[str, Any]], *names: str) -> list[str]:
    return [str(e["event"]) for e in logs if e["event"] in names]


async def test_state_changes_are_logged_once_each() -> None:
    outcomes = [ok()] * 3 + [fail()] * 5 + [ok()] * 3 + [fail()]
    r = rig(outcomes, max_sleeps=len(outcomes) - 1)
    with capture_logs() as logs:
        await run_until_stopped(r)
    assert events(logs, "target_up", "target_down") == [
        "target_up",
        "target_down",
        "target_up",
        "target_down",
    ]
    up, down, recovered, _ = [e for e in logs if e["event"] in ("target_up", "target_down")]
    assert up["log_level"] == "info"
    assert down["log_level"] == "error"
    assert down["error"] == "redis.exceptions.ConnectionError"
    assert down["message"] == "Connection refused"
    assert down["redis"] == "redis://localhost/0"
    assert recovered["down_seconds"] > 0
    assert len(events(logs, "poll_completed")) == 6
    completed = next(e for e in logs if e["event"] == "poll_completed")
    assert completed["log_level"] == "debug"
    assert completed["round_trips"] == 2
    assert len(events(logs, "poll_failed")) == 6
    assert {e["log_level"] for e in logs if e["event"] == "poll_failed"} == {"debug"}


async def test_first_poll_failing_logs_target_down() -> None:
    r = rig([fail()], max_sleeps=3)
    with capture_logs() as logs:
        await run_until_stopped(r)
    assert events(logs, "target_up", "target_down") == ["target_down"]


async def test_credentials_are_masked_in_error_messages() -> None:
    target = build_target(name="main", url="redis://user:url%2Fsecret@localhost/0")
    target = TargetSettings(target.name, target.url, "user", "file-secret", "")  # as if from both
    r = rig(
        [
            fail(
                RedisConnectionError("auth url/secret url%2Fsecret file-secret failed\nsecond line")
            )
        ],
        max_sleeps=0,
        target=target,
    )
    with capture_logs() as logs:
        await run_until_stopped(r)
    (down,) = [e for e in logs if e["event"] == "target_down"]
    assert down["message"] == "auth *** *** *** failed"
    assert down["redis"] == "redis://***:***@localhost/0"
    assert "secret" not in repr(logs)


async def test_long_messages_are_shortened() -> None:
    r = rig([fail(RedisConnectionError("x" * 1000))], max_sleeps=0)
    with capture_logs() as logs:
        await run_until_stopped(r)
    (down,) = [e for e in logs if e["event"] == "target_down"]
    assert len(str(down["message"])) == 200


# --- bugs and cancellation -------------------------------------------------------------------


async def test_unexpected_exceptions_are_logged_counted_and_survived() -> None:
    derive = FakeDerive(error=ValueError("bug in derive"))
    r = rig([ok()], max_sleeps=2, derive=derive)
    with capture_logs() as logs:
        await run_until_stopped(r)
    crashed = [e for e in logs if e["event"] == "poll_crashed"]
    assert len(crashed) == 3  # every crash, with its traceback
    assert crashed[0]["exc_info"] is True
    assert crashed[0]["error"] == "ValueError"
    assert events(logs, "target_down") == ["target_down"]
    status = r.store.get("main")
    assert (status.polls_error, status.up) == (3, False)
    # ... and the loop went on; once the bug is gone it recovers.
    derive.error = None
    r.clock.max_sleeps += 1
    await run_until_stopped(r)
    assert r.store.get("main").up is True


async def test_cancellation_propagates() -> None:
    started = asyncio.Event()

    async def slow(now_hint: float, since: float | None = None) -> Sample:
        started.set()
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")

    target = build_target(name="main", url="redis://localhost/0")
    store = Store(["main"])
    poller = Poller(target, settings_for(target), store, slow, FakeDerive(), FakeClock())
    task = asyncio.create_task(poller.run())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert store.get("main").polls_error == 0  # a cancelled poll is not a failed poll
