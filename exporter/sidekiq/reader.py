"""Reads one whole `Sample` from a Sidekiq Redis in a fixed number of pipelined round trips.

This is the only module that sends commands to Redis, and it sends only read commands (the
list in `shared/sidekiq-redis-layout.md` §11). The cost of a poll does not grow with the
number of queues, processes or busy jobs in round trips, only in the size of two pipelines:

1. `TIME`, the `queues` and `processes` sets (SSCAN), the global counters, the sorted sets'
   sizes and lowest scores, Sidekiq Pro's `paused` set and the per-minute execution metrics.
   (A set too large for one SSCAN reply costs one more round trip per extra page.)
2. Everything that needs the answers of the first: per queue `LLEN` and `LINDEX -1`; per process
   its hash and work hashes; per job class and minute its histogram; past-due counts at `TIME`.

No read grows with a queue's length, nothing walks `retry` or `dead`, no `KEYS` or `SCAN`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from exporter.cardinality import QUEUE_LIMIT, QueueSelector
from exporter.model import (
    HISTOGRAM_BUCKETS,
    MetricsMinute,
    ProcessSample,
    QueueSample,
    RunningJob,
    Sample,
    ScheduledSetSample,
)
from exporter.resp import Command, Framed, PackCache, round_trip
from exporter.sidekiq import decode
from exporter.sidekiq.decode import Skip
from exporter.sidekiq.keys import KeyNames
from exporter.sidekiq.metrics_window import MIN_WINDOW_MINUTES, minute_starts, minutes_to_read

# Fields read from every process hash, in this order (§5.2). `concurrency` exists from 8.1.2.
PROCESS_FIELDS = ("info", "concurrency", "busy", "beat", "quiet", "rss", "rtt_us")
# `GET u16 #0 … GET u16 #25`: 78 arguments per histogram, the same for every class and minute.
_HISTOGRAM_BITFIELD_ARGS = Framed.of(
    [arg for index in range(HISTOGRAM_BUCKETS) for arg in ("GET", "u16", f"#{index}")]
)


@dataclass(slots=True)
class _Collected:
    """Items skipped during one read, by reason."""

    skipped: Counter[str]

    def error(self, reply: object) -> bool:
        """True (and counted) when `reply` is an error reply rather than a value."""
        if isinstance(reply, ResponseError):
            reason = decode.WRONG_TYPE if str(reply).startswith("WRONGTYPE") else None
            self.skipped[reason or decode.COMMAND_ERROR] += 1
            return True
        return False

    def skip(self, item: object) -> bool:
        """True (and counted) when a decoder returned a `Skip`."""
        if isinstance(item, Skip):
            self.skipped[item.reason] += 1
            return True
        return False


def _int_reply(reply: object, collected: _Collected) -> int:
    if collected.error(reply) or reply is None:
        return 0
    if isinstance(reply, int):
        return reply
    value = decode.parse_int(reply) if isinstance(reply, bytes) else None
    if value is None:
        collected.skipped[decode.COMMAND_ERROR] += 1
        return 0
    return value


def _members(reply: object, collected: _Collected) -> list[bytes]:
    if collected.error(reply) or not isinstance(reply, list):
        return []
    return [m for m in reply if isinstance(m, bytes)]


def _scan_page(reply: object, collected: _Collected) -> tuple[bytes, list[bytes]]:
    """(next cursor, members) of an SSCAN reply; cursor b"0" ends the scan."""
    if collected.error(reply) or not isinstance(reply, list) or len(reply) != 2:
        return b"0", []
    cursor, members = reply
    return (cursor if isinstance(cursor, bytes) else b"0"), _members(members, collected)


def _lowest_score(reply: object, collected: _Collected) -> float | None:
    """Lowest score from `ZRANGE key 0 0 WITHSCORES`.

    RESP2 replies `[member, b"score"]`, RESP3 `[[member, score]]`.
    """
    if collected.error(reply) or not isinstance(reply, list) or not reply:
        return None
    if len(reply) == 1 and isinstance(reply[0], list):
        reply = reply[0]
    if len(reply) != 2:
        return None
    score = reply[1]
    if isinstance(score, float):
        return score
    return decode.parse_float(score) if isinstance(score, bytes) else None


def _hash_reply(reply: object, collected: _Collected) -> dict[bytes, bytes]:
    """A raw `HGETALL` reply as a dict: RESP2 sends a flat list, RESP3 a map."""
    if collected.error(reply):
        return {}
    if isinstance(reply, dict):
        return {k: v for k, v in reply.items() if isinstance(k, bytes) and isinstance(v, bytes)}
    if not isinstance(reply, list):
        return {}
    items = iter(reply)
    return {
        k: v
        for k, v in zip(items, items, strict=False)
        if isinstance(k, bytes) and isinstance(v, bytes)
    }


def _unique_text(members: Iterable[bytes]) -> list[str]:
    # SSCAN may return a member more than once and Sidekiq does not de-duplicate (§2.1).
    return list(dict.fromkeys(m.decode("utf-8", "replace") for m in members))


class Reader:
    """Reads Samples from one Sidekiq Redis; keeps no state between polls but what it learned
    of the server's commands (whether `BITFIELD_RO` is available) and which queues it exported
    (`queues`, so the queue limit keeps the same ones from poll to poll)."""

    def __init__(
        self,
        key_prefix: str = "",
        *,
        # SSCAN's COUNT is hash-table buckets to visit, and a set of N members has up to 2N:
        # with 10,000 the 10,000-queue benchmark fixture needed a second page (3 round trips).
        # 100,000 keeps sets up to ~50,000 members in one reply; one such SSCAN of 10,000
        # queue names costs Redis ~1.3 ms, no more than the two pages it replaces.
        scan_count: int = 100_000,
        metrics_window_minutes: int = MIN_WINDOW_MINUTES,
        queues: QueueSelector | None = None,
    ) -> None:
        self.keys = KeyNames.for_namespace(key_prefix)
        self.scan_count = scan_count
        self.metrics_window_minutes = metrics_window_minutes
        self.queues = queues if queues is not None else QueueSelector()
        # BITFIELD_RO needs Redis 6.0 and an ACL grant; without it the same bytes come by GET.
        self.histograms_by_get = False
        self._packs = PackCache()  # a cache of request bytes, not of data

    async def read(self, client: Redis, now_hint: float, since: float | None = None) -> Sample:
        """One poll: a Sample of everything Sidekiq keeps in this Redis.

        `since` is the Redis time of the last successful read: after a gap (Redis or the
        exporter down) the metrics window widens to cover every minute since
        (`metrics_window.minutes_to_read`).
        """
        keys = self.keys
        collected = _Collected(Counter())
        round_trips = commands_sent = 0
        self._packs.next_poll()

        # --- Round trip 1: sets, counters, sorted-set facts, TIME, metric buckets. ---
        count = minutes_to_read(self.metrics_window_minutes, now_hint, since)
        minutes = minute_starts(now_hint, count)
        metric_keys: list[tuple[str, datetime, str]] = []  # (key, minute, family)
        for minute in minutes:
            metric_keys.append((keys.metrics_minute_v7(minute), minute, "7"))
            metric_keys.append((keys.metrics_minute_v8(minute), minute, "8"))
        first: list[Command] = [
            ("TIME",),
            ("SSCAN", keys.queues, 0, "COUNT", self.scan_count),
            ("SSCAN", keys.processes, 0, "COUNT", self.scan_count),
            ("GET", keys.processed),
            ("GET", keys.failed),
            ("ZCARD", keys.schedule),
            ("ZCARD", keys.retry),
            ("ZCARD", keys.dead),
            ("ZRANGE", keys.schedule, 0, 0, "WITHSCORES"),
            ("ZRANGE", keys.retry, 0, 0, "WITHSCORES"),
            ("SMEMBERS", keys.paused),
            *(("HGETALL", key) for key, _, _ in metric_keys),
        ]
        replies = await round_trip(client, first, self._packs.pack(first))
        round_trips += 1
        commands_sent += len(first)
        (time_reply, queues_reply, processes_reply, processed, failed) = replies[:5]
        (schedule_size, retry_size, dead_size, schedule_low, retry_low, paused) = replies[5:11]
        metric_replies = replies[11:]

        now = _redis_time(time_reply, collected, now_hint)
        queue_cursor, queue_members = _scan_page(queues_reply, collected)
        process_cursor, process_members = _scan_page(processes_reply, collected)
        # Continue SSCAN only for a set too large for one reply (more buckets than scan_count).
        while queue_cursor != b"0" or process_cursor != b"0":
            more: list[Command] = []
            if queue_cursor != b"0":
                more.append(("SSCAN", keys.queues, queue_cursor, "COUNT", self.scan_count))
            if process_cursor != b"0":
                more.append(("SSCAN", keys.processes, process_cursor, "COUNT", self.scan_count))
            page = iter(await round_trip(client, more))
            round_trips += 1
            commands_sent += len(more)
            if queue_cursor != b"0":
                queue_cursor, members = _scan_page(next(page), collected)
                queue_members += members
            if process_cursor != b"0":
                process_cursor, members = _scan_page(next(page), collected)
                process_members += members
        queue_names = _unique_text(queue_members)
        identities = _unique_text(process_members)
        paused_names = set(_unique_text(_members(paused, collected)))

        metric_hashes: list[tuple[str, datetime, str, dict[str, list[int]]]] = []
        for (key, minute, family), reply in zip(metric_keys, metric_replies, strict=True):
            fields = _hash_reply(reply, collected)
            if not fields:
                continue
            by_class, malformed = decode.decode_metrics_fields(fields)
            if malformed:
                collected.skipped[decode.INVALID_METRIC] += malformed
            metric_hashes.append((key, minute, family, by_class))

        # --- Round trip 2: per queue, per process, per class histogram, past-due counts. ---
        second: list[Command] = [
            ("ZCOUNT", keys.schedule, "-inf", repr(now)),
            ("ZCOUNT", keys.retry, "-inf", repr(now)),
        ]
        # Queue limits (exporter/cardinality.py): `LLEN` for every queue, since
        # `sidekiq_enqueued_jobs` is the total over all of them, but `LINDEX` (the oldest job,
        # which can be large) only for the queues that will be exported. Same round trips.
        tails_wanted = self.queues.plan(queue_names)
        for name in queue_names:
            queue_key = keys.queue(name)
            second.append(("LLEN", queue_key))
            if name in tails_wanted:
                second.append(("LINDEX", queue_key, -1))
        for identity in identities:
            second.append(("HMGET", keys.process(identity), *PROCESS_FIELDS))
            second.append(("HGETALL", keys.work(identity)))
            second.append(("HGETALL", keys.workers(identity)))
        histogram_keys = [
            self._histogram_key(job_class, minute, family)
            for _, minute, family, by_class in metric_hashes
            for job_class in by_class
        ]
        second.extend(self._histogram_command(key) for key in histogram_keys)
        replies = await round_trip(client, second, self._packs.pack(second))
        round_trips += 1
        commands_sent += len(second)

        schedule_overdue, retry_overdue = replies[0], replies[1]
        position = 2
        queues: list[QueueSample] = []
        enqueued_jobs = 0
        for name in queue_names:
            # Per queue, the common case first and without calls (~0.3 ms per 1,000 queues):
            # `LLEN` is an int, `LINDEX` a job (bytes) or nil; anything else is checked below.
            size = replies[position]
            if type(size) is not int:
                size = _int_reply(size, collected)
            position += 1
            enqueued_jobs += size
            if name not in tails_wanted:
                continue
            tail = replies[position]
            position += 1
            oldest: float | None = None
            if isinstance(tail, bytes):
                decoded = decode.oldest_job_timestamp(tail)
                if isinstance(decoded, Skip):
                    collected.skip(decoded)
                else:
                    oldest = decoded
            elif tail is not None:
                collected.error(tail)
            queues.append(
                QueueSample(
                    name=name,
                    size=size,
                    oldest_job_timestamp=oldest,
                    paused=name in paused_names,
                )
            )

        processes: list[ProcessSample] = []
        running: list[RunningJob] = []
        for identity in identities:
            fields_reply, work_reply, workers_reply = replies[position : position + 3]
            position += 3
            if collected.error(fields_reply) or not isinstance(fields_reply, list):
                continue
            process = decode.decode_process(identity, fields_reply)
            if not isinstance(process, ProcessSample):
                collected.skip(process)  # None: stale member, its hash expired (§5.5)
                continue
            processes.append(process)
            # 6.4.0–6.4.1 write `<id>:workers`, 6.4.2+ `<id>:work`; a process writes only one.
            for reply in (work_reply, workers_reply):
                for value in _hash_reply(reply, collected).values():
                    job = decode.decode_work_entry(identity, value)
                    if isinstance(job, RunningJob):
                        running.append(job)
                    else:
                        collected.skip(job)
        queues, processes, running, dropped = self.queues.exported_only(
            queue_names, queues, processes, running
        )
        if dropped:
            collected.skipped[QUEUE_LIMIT] += dropped

        histogram_replies = replies[position:]
        if (
            histogram_keys
            and not self.histograms_by_get
            and _bitfield_ro_refused(histogram_replies)
        ):
            self.histograms_by_get = True
            fallback = [self._histogram_command(key) for key in histogram_keys]
            histogram_replies = await round_trip(client, fallback)
            round_trips += 1
            commands_sent += len(fallback)
        histograms = iter(histogram_replies)
        minutes_read: list[MetricsMinute] = []
        for key, minute, _, by_class in metric_hashes:
            classes = []
            for job_class, counts in by_class.items():
                histogram = self._decode_histogram(next(histograms), collected)
                classes.append(decode.class_minute(job_class, counts, histogram))
            minutes_read.append(MetricsMinute(key, int(minute.timestamp()), tuple(classes)))

        schedule_oldest = _lowest_score(schedule_low, collected)
        retry_oldest = _lowest_score(retry_low, collected)
        return Sample(
            redis_time=now,
            processed=_int_reply(processed, collected),
            failed=_int_reply(failed, collected),
            scheduled=ScheduledSetSample(
                size=_int_reply(schedule_size, collected),
                overdue=_int_reply(schedule_overdue, collected),
                oldest_score=schedule_oldest,
            ),
            retry=ScheduledSetSample(
                size=_int_reply(retry_size, collected),
                overdue=_int_reply(retry_overdue, collected),
                oldest_score=retry_oldest,
            ),
            dead_size=_int_reply(dead_size, collected),
            queues=tuple(queues),
            processes=tuple(processes),
            running_jobs=tuple(running),
            metrics_minutes=tuple(minutes_read),
            round_trips=round_trips,
            commands=commands_sent,
            skipped=dict(+collected.skipped),
            enqueued_jobs=enqueued_jobs,
            metrics_window_start=int(minutes[-1].timestamp()),
        )

    def _histogram_key(self, job_class: str, minute: datetime, family: str) -> str:
        if family == "8":
            return self.keys.histogram_v8(job_class, minute)
        return self.keys.histogram_v7(job_class, minute)

    def _histogram_command(self, key: str) -> Command:
        if self.histograms_by_get:
            return ("GET", key)
        return ("BITFIELD_RO", key, _HISTOGRAM_BITFIELD_ARGS)

    def _decode_histogram(self, reply: object, collected: _Collected) -> tuple[int, ...] | None:
        # None, not zeros, for an unreadable histogram: zeros would make derive see the minute
        # shrink and then count it all again at the next good read.
        if collected.error(reply):
            return None
        if self.histograms_by_get:
            result = decode.decode_histogram_bytes(reply if isinstance(reply, bytes) else None)
        else:
            result = decode.decode_histogram_bitfield(reply)
        if isinstance(result, Skip):
            collected.skip(result)
            return None
        return result


def _redis_time(reply: object, collected: _Collected, fallback: float) -> float:
    """Redis `TIME` ([seconds, microseconds]) as epoch seconds; the hint if it failed."""
    if collected.error(reply) or not isinstance(reply, list) or len(reply) != 2:
        return fallback
    seconds, micros = (decode.parse_int(part) for part in reply)
    if seconds is None or micros is None:
        return fallback
    return seconds + micros / 1_000_000


def _bitfield_ro_refused(replies: Sequence[object]) -> bool:
    """True when the server does not know BITFIELD_RO (Redis < 6.0) or the ACL forbids it."""
    for reply in replies:
        if isinstance(reply, ResponseError):
            message = str(reply).lower()
            return "unknown command" in message or "noperm" in message or "permission" in message
    return False
