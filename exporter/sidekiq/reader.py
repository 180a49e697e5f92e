"""The plan of a poll: the read commands each round trip sends, in sections that each own a
counted slice of the replies and hand it to their decoder (docs/architecture.md).
Keeps no data between polls but the last poll's request bytes and decode's memos (which
change no result), and decodes no value itself; `resp.py` carries the bytes. Only
read commands: the list in `docs/redis-layout.md` §11.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial

from redis.asyncio import Redis

from exporter.cardinality import LABEL_TOO_LONG, CronJobSelector, QueueSelector, label_fits
from exporter.model import (
    CronJobSample,
    MetricsMinute,
    ProcessSample,
    QueueSample,
    RunningJob,
    Sample,
    ScheduledSetSample,
)
from exporter.resp import Command, PackCache, ReadBudget, round_trip
from exporter.sidekiq import decode
from exporter.sidekiq.cron_namespaces import SCAN_PAGE_KEYS, CronNamespaces
from exporter.sidekiq.keys import KeyNames
from exporter.sidekiq.metrics_window import MIN_WINDOW_MINUTES, minute_starts, minutes_to_read

# Fields read from every process hash, in this order (§5.2). `concurrency` exists from 8.1.2.
PROCESS_FIELDS = ("info", "concurrency", "busy", "beat", "quiet", "rss", "rtt_us")
# Fields read from every sidekiq-cron job hash, in this order (§9); never `args` or `message`,
# which can be large.
CRON_JOB_FIELDS = ("status", "cron", "last_enqueue_time")


class _Plan:
    """The commands of one round trip, section by section: each section owns the slice of the
    replies its commands answer, and only its decoder reads it."""

    __slots__ = ("chunks", "commands", "name", "packs")

    def __init__(self, packs: PackCache, name: str) -> None:
        self.packs, self.name = packs, name
        self.commands: list[Command] = []
        self.chunks: list[bytes] = []  # the request bytes, a chunk per section

    def section(self, commands: list[Command], packed: bytes | None = None) -> slice:
        """Add a section's commands (`packed`: their bytes, if already packed); the slice of
        the replies they will own. Commands the last poll's same section sent are not packed
        again."""
        if packed is None:
            name = f"{self.name} {len(self.chunks)}"
            _, packed = self.packs.section(name, commands, lambda: commands)
        start = len(self.commands)
        self.commands += commands
        self.chunks.append(packed)
        return slice(start, len(self.commands))

    def cached(self, name: str, inputs: object, build: Callable[[], list[Command]]) -> slice:
        """A section whose commands `build` makes from `inputs` alone: built and packed only
        when `inputs` differ from the last poll's (`PackCache.section`)."""
        return self.section(*self.packs.section(name, inputs, build))


class _Poll:
    """One read in progress: its client, the round trips and commands so far, what it skipped."""

    __slots__ = ("budget", "client", "commands", "round_trips", "skipped")

    def __init__(self, client: Redis, max_reply_bytes: int | None) -> None:
        self.client = client
        self.budget = ReadBudget(max_reply_bytes) if max_reply_bytes is not None else None
        self.round_trips = 0
        self.commands = 0
        self.skipped = decode.Skipped()

    async def send(self, commands: list[Command], packed: bytes | None = None) -> list[object]:
        """One round trip (`packed`: the commands' bytes, if already packed)."""
        replies = await round_trip(self.client, commands, packed, self.budget)
        self.round_trips += 1
        self.commands += len(commands)
        return replies


@dataclass(frozen=True, slots=True)
class _MetricsHash:
    """One `j|…` hash that held data: its key, minute, key family ("7" or "8") and classes."""

    key: str
    minute: datetime
    family: str
    by_class: dict[str, list[int]]


@dataclass(frozen=True, slots=True)
class _First:
    """What round trip 1 (and any further SSCAN pages) told."""

    now: float  # Redis TIME
    queue_names: list[str]
    identities: list[str]
    paused: set[str]
    processed: int | None
    failed: int | None
    dead_size: int
    schedule: tuple[int, float | None]  # size, lowest score
    retry: tuple[int, float | None]
    metrics: list[_MetricsHash]
    cron_jobs: list[tuple[str, str, str]]  # (namespace, name, key) of the jobs to read
    leader: str | None


@dataclass(frozen=True, slots=True)
class _Second:
    """What round trip 2 told, limits applied."""

    schedule_overdue: int
    retry_overdue: int
    queues: tuple[QueueSample, ...]
    enqueued_jobs: int  # in every queue, exported or not
    processes: tuple[ProcessSample, ...]
    running_jobs: tuple[RunningJob, ...]
    metrics_minutes: tuple[MetricsMinute, ...]
    cron_jobs: tuple[CronJobSample, ...] | None  # None: not collected


class Reader:
    """Reads Samples from one Sidekiq Redis; keeps no state between polls but the queue
    selector's, the cron job selector's, the sidekiq-cron namespace scan's and the last poll's
    request bytes and decoded replies (which change no result)."""

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
        collect_cron: bool = True,
        cron_jobs: CronJobSelector | None = None,
        cron_namespaces: CronNamespaces | None = None,
        # The bytes one poll's replies may take (None: any); past it the poll fails.
        max_reply_bytes: int | None = None,
        # The longest label value the reader itself takes from Redis (the leader identity; the
        # selectors bound the others).
        max_label_bytes: int | None = None,
    ) -> None:
        self.keys = KeyNames.for_namespace(key_prefix)
        self.max_reply_bytes = max_reply_bytes
        self.max_label_bytes = max_label_bytes
        self.scan_count = scan_count
        self.metrics_window_minutes = metrics_window_minutes
        self.queues = queues if queues is not None else QueueSelector()
        self.collect_cron = collect_cron
        self.cron_jobs = cron_jobs if cron_jobs is not None else CronJobSelector()
        self.cron_namespaces = cron_namespaces if cron_namespaces is not None else CronNamespaces()
        self._packs = PackCache()  # a cache of request bytes, not of data
        self._memos = decode.Memos()  # of decoded values by their reply bytes: no state

    async def read(self, client: Redis, now_hint: float, since: float | None = None) -> Sample:
        """One poll: a Sample of everything Sidekiq keeps in this Redis.

        `since` is the Redis time of the last successful read: after a gap (Redis or the
        exporter down) the metrics window widens to cover every minute since
        (`metrics_window.minutes_to_read`).
        """
        self._packs.next_poll()
        self._memos.next_poll()
        poll = _Poll(client, self.max_reply_bytes)
        count = minutes_to_read(self.metrics_window_minutes, now_hint, since)
        minutes = minute_starts(now_hint, count)
        first = await self._round_trip_1(poll, now_hint, minutes)
        second = await self._round_trip_2(poll, first)
        self._packs.settle()  # hold one poll's requests and replies between polls, not two
        self._memos.settle()
        return Sample(
            redis_time=first.now,
            processed=first.processed,
            failed=first.failed,
            scheduled=ScheduledSetSample(
                first.schedule[0], second.schedule_overdue, first.schedule[1]
            ),
            retry=ScheduledSetSample(first.retry[0], second.retry_overdue, first.retry[1]),
            dead_size=first.dead_size,
            queues=second.queues,
            processes=second.processes,
            running_jobs=second.running_jobs,
            metrics_minutes=second.metrics_minutes,
            round_trips=poll.round_trips,
            commands=poll.commands,
            skipped=dict(+poll.skipped),
            skipped_keys=tuple(poll.skipped.examples),
            enqueued_jobs=second.enqueued_jobs,
            metrics_window_start=int(minutes[-1].timestamp()),
            cron_jobs=second.cron_jobs,
            leader=first.leader,
        )

    # --- round trip 1: TIME, the sets, counters, sorted-set facts, paused, metric buckets,
    # the leader, sidekiq-cron's sets and a page of its namespace scan ---

    async def _round_trip_1(
        self, poll: _Poll, now_hint: float, minutes: Sequence[datetime]
    ) -> _First:
        keys, count = self.keys, self.scan_count
        metric_keys = [
            (key, minute, family)
            for minute in minutes
            for key, family in (
                (keys.metrics_minute_v7(minute), "7"),
                (keys.metrics_minute_v8(minute), "8"),
            )
        ]
        plan = _Plan(self._packs, "round trip 1")
        clock = plan.section([("TIME",)])
        sets = plan.section(
            [
                ("SSCAN", keys.queues, 0, "COUNT", count),
                ("SSCAN", keys.processes, 0, "COUNT", count),
            ]
        )
        stats = plan.section(
            [
                ("GET", keys.processed),
                ("GET", keys.failed),
                ("ZCARD", keys.schedule),
                ("ZCARD", keys.retry),
                ("ZCARD", keys.dead),
                ("ZRANGE", keys.schedule, 0, 0, "WITHSCORES"),
                ("ZRANGE", keys.retry, 0, 0, "WITHSCORES"),
            ]
        )
        paused = plan.section([("SMEMBERS", keys.paused)])
        metrics = plan.section([("HGETALL", key) for key, _, _ in metric_keys])
        leader = plan.section([("GET", keys.leader)])
        cron_namespaces, cron_sets_dropped = self._cron_sets_to_read()
        cron_sets = plan.section(self._cron_set_commands(cron_namespaces))
        scan_cursor = self.cron_namespaces.next_page(now_hint) if self.collect_cron else None
        cron_scan = plan.section(self._namespace_scan_commands(scan_cursor))
        replies = await poll.send(plan.commands, b"".join(plan.chunks))

        skipped, int_reply, lowest_score = poll.skipped, decode.int_reply, decode.lowest_score
        queue_names, identities = await self._scan_sets(poll, replies[sets])
        processed, failed, scheduled, retries, dead, scheduled_low, retries_low = replies[stats]
        (time_reply,) = replies[clock]
        (paused_reply,) = replies[paused]
        (leader_reply,) = replies[leader]
        now = decode.redis_time(time_reply, skipped, now_hint)
        if scan_cursor is not None:
            self._namespace_page_read(now, replies[cron_scan][0], skipped)
        return _First(
            now=now,
            queue_names=queue_names,
            identities=identities,
            paused=set(decode.unique_text(decode.members(paused_reply, skipped, keys.paused))),
            processed=decode.counter_reply(processed, skipped, keys.processed),
            failed=decode.counter_reply(failed, skipped, keys.failed),
            dead_size=int_reply(dead, skipped, keys.dead),
            schedule=(
                int_reply(scheduled, skipped, keys.schedule),
                lowest_score(scheduled_low, skipped, keys.schedule),
            ),
            retry=(
                int_reply(retries, skipped, keys.retry),
                lowest_score(retries_low, skipped, keys.retry),
            ),
            metrics=[
                _MetricsHash(key, minute, family, by_class)
                for (key, minute, family), reply in zip(metric_keys, replies[metrics], strict=True)
                if (by_class := decode.metrics_hash(reply, skipped, key, self._memos.metrics))
                is not None
            ],
            cron_jobs=self._cron_jobs_to_read(
                cron_namespaces, replies[cron_sets], cron_sets_dropped, skipped
            ),
            leader=self._leader(leader_reply, skipped),
        )

    def _leader(self, reply: object, skipped: decode.Skipped) -> str | None:
        """Sidekiq Enterprise's leader identity; a label value, so within the label length."""
        leader = decode.text_reply(reply, skipped, self.keys.leader)
        if leader is not None and not label_fits(leader, self.max_label_bytes):
            skipped.add(LABEL_TOO_LONG, self.keys.leader)
            return None
        return leader

    def _cron_sets_to_read(self) -> tuple[list[str], int]:
        """The cron sets of this poll: 1.x's (namespace "") and each 2.x namespace's, within
        the cron limit, and how many namespaces it left out."""
        if not self.collect_cron:
            return [], 0
        return self.cron_jobs.sets(["", *self.cron_namespaces.namespaces])

    def _cron_set_commands(self, namespaces: Sequence[str]) -> list[Command]:
        # One SSCAN page of at most ~limit members, never more: a set too large for it (e.g. a
        # runaway dynamic schedule) is read that far, its SCARD tells how many were left.
        count = self.cron_jobs.limit or self.scan_count
        commands: list[Command] = []
        for namespace in namespaces:
            key = self.keys.cron_set(namespace)
            commands.append(("SSCAN", key, 0, "COUNT", count))
            commands.append(("SCARD", key))
        return commands

    def _namespace_scan_commands(self, cursor: bytes | None) -> list[Command]:
        if cursor is None:
            return []
        pattern = self.keys.cron_namespace_pattern
        return [("SCAN", cursor, "MATCH", pattern, "TYPE", "set", "COUNT", SCAN_PAGE_KEYS)]

    def _namespace_page_read(self, now: float, reply: object, skipped: decode.Skipped) -> None:
        page = decode.namespace_page(reply, skipped)
        if page is None:
            self.cron_namespaces.page_failed(now)
            return
        cursor, keys = page
        namespaces = [ns for key in keys if (ns := self.keys.namespace_of(key)) is not None]
        self.cron_namespaces.page_read(now, cursor, namespaces)

    def _cron_jobs_to_read(
        self,
        namespaces: Sequence[str],
        replies: Sequence[object],
        unread: int,
        skipped: decode.Skipped,
    ) -> list[tuple[str, str, str]]:
        """(namespace, name, key) of the cron jobs round trip 2 reads, limits applied."""
        key_of: dict[tuple[str, str], str] = {}
        pairs = iter(replies)
        for namespace, scan, size in zip(namespaces, pairs, pairs, strict=True):
            members, left = decode.cron_set(scan, size, skipped, self.keys.cron_set(namespace))
            unread += left
            for member in members:
                job = (namespace, self.keys.cron_job_name(member, namespace))
                key_of.setdefault(job, self.keys.cron_job(member))
        if not key_of and not unread:
            return []
        kept, limited = self.cron_jobs.select(list(key_of), unread)
        skipped.update(limited)
        return [(namespace, name, key_of[namespace, name]) for namespace, name in kept]

    async def _scan_sets(
        self, poll: _Poll, replies: Sequence[object]
    ) -> tuple[list[str], list[str]]:
        """The `queues` and `processes` members from their first SSCAN pages, and the rest."""
        keys, skipped = self.keys, poll.skipped
        sets = [
            (keys.queues, *decode.scan_page(replies[0], skipped, keys.queues)),
            (keys.processes, *decode.scan_page(replies[1], skipped, keys.processes)),
        ]
        # Continue SSCAN only for a set too large for one reply (more buckets than scan_count).
        while unfinished := [index for index, (_, cursor, _) in enumerate(sets) if cursor != b"0"]:
            more: list[Command] = [
                ("SSCAN", sets[index][0], sets[index][1], "COUNT", self.scan_count)
                for index in unfinished
            ]
            pages = await poll.send(more)
            for index, reply in zip(unfinished, pages, strict=True):
                key, _, members = sets[index]
                cursor, page = decode.scan_page(reply, skipped, key)
                sets[index] = (key, cursor, members + page)
        return decode.unique_text(sets[0][2]), decode.unique_text(sets[1][2])

    # --- round trip 2: past-due counts, per queue, per process, per class histogram, per
    # cron job ---

    async def _round_trip_2(self, poll: _Poll, first: _First) -> _Second:
        keys, now = self.keys, first.now
        # Queue limits (exporter/cardinality.py): `LLEN` for every queue, since
        # `sidekiq_enqueued_jobs` is the total over all of them, but `LINDEX` (the oldest job,
        # which can be large) only for the queues that will be exported. Same round trips.
        names, identities = first.queue_names, first.identities
        tails = self.queues.plan(names)
        plan = _Plan(self._packs, "round trip 2")
        overdue = plan.section(
            [
                ("ZCOUNT", keys.schedule, "-inf", repr(now)),
                ("ZCOUNT", keys.retry, "-inf", repr(now)),
            ]
        )
        # Sections whose commands follow from names alone are packed once while the names stay.
        queues = plan.cached("queues", (names, tails), partial(self._queue_commands, names, tails))
        processes = plan.cached(
            "processes", identities, partial(self._process_commands, identities)
        )
        histograms = self._histogram_sections(plan, first.metrics)
        cron_keys = [key for _, _, key in first.cron_jobs]
        cron = plan.cached("cron", cron_keys, partial(self._cron_commands, cron_keys))
        replies = await poll.send(plan.commands, b"".join(plan.chunks))

        skipped, commands = poll.skipped, plan.commands
        queue_samples, enqueued, process_samples, running = self._queues_and_processes(
            first,
            tails,
            replies[queues],
            commands[queues],
            replies[processes],
            commands[processes],
            skipped,
        )
        minutes = self._metrics_minutes(
            first.metrics, commands[histograms], replies[histograms], skipped
        )
        schedule_overdue, retry_overdue = replies[overdue]
        return _Second(
            schedule_overdue=decode.int_reply(schedule_overdue, skipped, keys.schedule),
            retry_overdue=decode.int_reply(retry_overdue, skipped, keys.retry),
            queues=tuple(queue_samples),
            enqueued_jobs=enqueued,
            processes=tuple(process_samples),
            running_jobs=tuple(running),
            metrics_minutes=minutes,
            cron_jobs=tuple(
                decode.cron_jobs(
                    [(ns, name) for ns, name, _ in first.cron_jobs],
                    replies[cron],
                    skipped,
                    cron_keys,
                )
            )
            if self.collect_cron
            else None,
        )

    def _queues_and_processes(
        self,
        first: _First,
        tails: frozenset[str],
        queue_replies: Sequence[object],
        queue_commands: Sequence[Command],
        process_replies: Sequence[object],
        process_commands: Sequence[Command],
        skipped: decode.Skipped,
    ) -> tuple[list[QueueSample], int, list[ProcessSample], list[RunningJob]]:
        """The queues and processes sections, the queue limits applied to both."""
        memos = self._memos
        queue_samples, enqueued = decode.queues(
            first.queue_names,
            tails,
            first.paused,
            queue_replies,
            skipped,
            queue_commands,
            memos.tails,
        )
        process_samples, running = decode.processes(
            first.identities, process_replies, skipped, process_commands, memos.work, memos.infos
        )
        queue_samples, process_samples, running, limited = self.queues.exported_only(
            first.queue_names, queue_samples, process_samples, running
        )
        skipped.update(limited)
        # Queues only processes or running jobs name (served, never pushed to: Sidekiq adds a
        # name to `queues` on push) are real, empty queues: in the Sample like any other, so
        # everything downstream (SLAs, breach time, every per-queue family) treats them alike.
        pushed = {q.name for q in queue_samples}
        queue_samples += [
            QueueSample(name, 0, None, name in first.paused)
            for name in sorted(self.queues.exported - pushed)
        ]
        return queue_samples, enqueued, process_samples, running

    def _queue_commands(self, names: Sequence[str], tails: frozenset[str]) -> list[Command]:
        commands: list[Command] = []
        for name in names:
            key = self.keys.queue(name)
            commands.append(("LLEN", key))
            if name in tails:
                commands.append(("LINDEX", key, -1))
        return commands

    def _process_commands(self, identities: Sequence[str]) -> list[Command]:
        keys = self.keys
        commands: list[Command] = []
        for identity in identities:
            commands.append(("HMGET", keys.process(identity), *PROCESS_FIELDS))
            commands.append(("HGETALL", keys.work(identity)))
            commands.append(("HGETALL", keys.workers(identity)))
        return commands

    def _histogram_sections(self, plan: _Plan, hashes: Sequence[_MetricsHash]) -> slice:
        """`GET` of each class-minute's histogram, not `BITFIELD_RO … GET u16 #0 … #25`: the
        same bytes (§6.4) on any Redis and ACL, for a seventh of the Redis time. One section
        per minute hash, packed once while its classes stay (a new minute every minute)."""
        start = len(plan.commands)
        for hashed in hashes:
            build = partial(self._histogram_commands, hashed)
            plan.section(
                *self._packs.section(f"histograms {hashed.key}", list(hashed.by_class), build)
            )
        return slice(start, len(plan.commands))

    def _histogram_commands(self, hashed: _MetricsHash) -> list[Command]:
        minute, family = hashed.minute, hashed.family
        return [
            ("GET", self._histogram_key(job_class, minute, family)) for job_class in hashed.by_class
        ]

    @staticmethod
    def _cron_commands(keys: Sequence[str]) -> list[Command]:
        return [("HMGET", key, *CRON_JOB_FIELDS) for key in keys]

    def _metrics_minutes(
        self,
        hashes: Sequence[_MetricsHash],
        commands: Sequence[Command],
        replies: Sequence[object],
        skipped: decode.Skipped,
    ) -> tuple[MetricsMinute, ...]:
        """The histograms section (`GET key` each), and the metric minutes it completes."""
        minutes: list[MetricsMinute] = []
        end = 0
        for hashed in hashes:
            start, end = end, end + len(hashed.by_class)
            classes = decode.class_minutes(
                hashed.by_class,
                replies[start:end],
                skipped,
                commands[start:end],
                self._memos.minutes,
            )
            minutes.append(MetricsMinute(hashed.key, int(hashed.minute.timestamp()), classes))
        return tuple(minutes)

    def _histogram_key(self, job_class: str, minute: datetime, family: str) -> str:
        if family == "8":
            return self.keys.histogram_v8(job_class, minute)
        return self.keys.histogram_v7(job_class, minute)
