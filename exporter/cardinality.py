"""Every rule that limits series: allow/deny regexes, a cap per kind with stable ranking, and
the length of label values taken from Redis.

One selector per kind (`QueueSelector`, `JobClassSelector`, `ProcessSelector`,
`CronJobSelector`), each keeping its target's state between polls; no I/O. Which names are
kept, and why in that order: docs/architecture.md.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Sequence
from dataclasses import KW_ONLY, dataclass, field, replace
from typing import Final

from exporter.logs import (
    CRON_JOB_LIMIT_REACHED,
    JOB_CLASS_LIMIT_REACHED,
    LABEL_VALUE_TOO_LONG,
    PROCESS_LIMIT_REACHED,
    QUEUE_LIMIT_REACHED,
    get_logger,
)
from exporter.model import ProcessSample, QueueSample, RunningJob

log = get_logger(__name__)

# Skip reasons: values of `sidekiq_exporter_skipped_items_total{reason}`.
QUEUE_LIMIT: Final = "queue_limit"  # a queue beyond --collect.queues.max
CLASS_LIMIT: Final = "class_limit"  # a job class beyond --collect.job-classes.max
CRON_LIMIT: Final = "cron_limit"  # a sidekiq-cron job (or namespace) beyond --collect.cron.max
PROCESS_LIMIT: Final = "process_limit"  # a process beyond --collect.processes.max
# A queue, class, process, cron job or leader with a label value from Redis (name, identity,
# hostname, tag, version, cron namespace) longer than --collect.label-value-length.max.
LABEL_TOO_LONG: Final = "label_too_long"
# Every reason above: the limits' share of `sidekiq_exporter_skipped_items_total{reason}`.
REASONS: Final = (QUEUE_LIMIT, CLASS_LIMIT, CRON_LIMIT, PROCESS_LIMIT, LABEL_TOO_LONG)
# How much of a too-long value the one warning about it shows.
_LOGGED_PREFIX_CHARS: Final = 64

Skips = dict[str, int]  # reason -> items skipped, only reasons with some


def label_fits(value: str, max_bytes: int | None) -> bool:
    """True if `value` is at most `max_bytes` long in UTF-8 (None: any length), the bound on
    every label value taken from Redis (--collect.label-value-length.max)."""
    # Length in characters first: a UTF-8 character is 1 to 4 bytes (names from Redis are
    # valid text by now: bytes are decoded with replacement, JSON strings sanitised).
    if max_bytes is None or len(value) * 4 <= max_bytes:
        return True
    return len(value) <= max_bytes and len(value.encode()) <= max_bytes


def _skips(counts: Skips) -> Skips:
    return {reason: count for reason, count in counts.items() if count}


@dataclass(eq=False)
class _Selector:
    """What every kind's selector has: its target, a cap (None: none), allow/deny regexes, and
    the longest label value it exports (UTF-8 bytes; None: any)."""

    target: str = ""
    _: KW_ONLY
    limit: int | None = None
    allow: re.Pattern[str] | None = None
    deny: re.Pattern[str] | None = None
    max_label_bytes: int | None = None
    _limit_logged: bool = field(default=False, init=False, repr=False)
    _too_long_logged: bool = field(default=False, init=False, repr=False)
    _exported: frozenset[str] = field(default=frozenset(), init=False, repr=False)

    def __post_init__(self) -> None:
        if self.limit is not None and self.limit < 0:
            raise ValueError("limit must be at least 0")

    @property
    def exported(self) -> frozenset[str]:
        """The names the last `select` kept."""
        return self._exported

    def permitted(self, name: str) -> bool:
        """True unless the allow/deny regexes (full match) exclude `name`."""
        if self.allow is not None and self.allow.fullmatch(name) is None:
            return False
        return self.deny is None or self.deny.fullmatch(name) is None

    def fits(self, value: str) -> bool:
        """True if `value` is short enough to be a label value (`max_label_bytes` of UTF-8)."""
        return label_fits(value, self.max_label_bytes)

    def _limit_reached(self, event: str, **fields: object) -> None:
        """Warn, once per target, that the cap dropped something."""
        if not self._limit_logged:
            self._limit_logged = True
            log.warning(event, target=self.target, limit=self.limit, **fields)

    def _too_long(self, kind: str, value: str) -> None:
        """Warn, once per target, that a value from Redis was too long to be a label."""
        if not self._too_long_logged:
            self._too_long_logged = True
            log.warning(
                LABEL_VALUE_TOO_LONG,
                target=self.target,
                kind=kind,
                limit_bytes=self.max_label_bytes,
                length_bytes=len(value.encode()),
                prefix=value[:_LOGGED_PREFIX_CHARS],
                reason="not exported; counted in "
                'sidekiq_exporter_skipped_items_total{reason="label_too_long"}',
            )

    def _fitting(self, names: list[str], kind: str) -> tuple[list[str], int]:
        """`names` short enough to be label values, and how many were not (warned once)."""
        if self.max_label_bytes is None:
            return names, 0
        fitting = [n for n in names if self.fits(n)]
        if len(fitting) < len(names):
            self._too_long(kind, next(n for n in names if not self.fits(n)))
        return fitting, len(names) - len(fitting)

    def _rank(
        self, names: Collection[str], budget: int | None, kind: str
    ) -> tuple[list[str], int, int]:
        """Permitted `names` that fit, those exported last time first, then by name; cut at
        `budget`. Also how many the cut dropped and how many were too long.

        Stable: a name keeps its place while it is present, so series do not flap when others
        come and go; a free place goes to the first newcomer by name."""
        if self.allow is None and self.deny is None:  # no call per name (10,000 queues)
            candidates = list(names)
        else:
            candidates = [n for n in names if self.permitted(n)]
        permitted, too_long = self._fitting(candidates, kind)
        if budget is None or len(permitted) <= budget:
            return permitted, 0, too_long
        previous = self._exported
        ranked = sorted(permitted, key=lambda n: (n not in previous, n))
        return ranked[:budget], len(ranked) - budget, too_long


@dataclass(eq=False)
class QueueSelector(_Selector):
    """Picks the queues one target exports; call `select` once per poll."""

    def plan(self, queue_set: Sequence[str]) -> frozenset[str]:
        """The names of the `queues` set that `select(queue_set, …)` will keep, whatever the
        extras: the queues whose tails are worth reading. Changes no state."""
        kept, _, _ = self._rank(queue_set, self.limit, "queue")
        return frozenset(kept)

    def select(
        self, queue_set: Sequence[str], extra: Iterable[str] = ()
    ) -> tuple[frozenset[str], Skips]:
        """(names to export, what was skipped by reason) for one poll.

        `queue_set` are the members of Sidekiq's `queues` set; `extra` other queue names seen in
        this poll (process capacities, running jobs). Remembers the result for the next poll.
        """
        kept, dropped, too_long = self._rank(queue_set, self.limit, "queue")
        known = set(queue_set)
        left = None if self.limit is None else self.limit - len(kept)
        extra_names = sorted({n for n in extra if n not in known})
        more, more_dropped, more_too_long = self._rank(extra_names, left, "queue")
        kept += more
        dropped += more_dropped
        self._exported = frozenset(kept)
        if dropped:
            self._limit_reached(
                QUEUE_LIMIT_REACHED,
                dropped=dropped,
                reason="more queues than --collect.queues.max; the rest are not exported and "
                'are counted in sidekiq_exporter_skipped_items_total{reason="queue_limit"}',
            )
        skipped = _skips({QUEUE_LIMIT: dropped, LABEL_TOO_LONG: too_long + more_too_long})
        return self._exported, skipped

    def exported_only(
        self,
        queue_set: Sequence[str],
        queues: list[QueueSample],
        processes: list[ProcessSample],
        running: list[RunningJob],
    ) -> tuple[list[QueueSample], list[ProcessSample], list[RunningJob], Skips]:
        """`select` for one poll's data, and every queue it does not export dropped wherever a
        queue label would come from: the `queues` set, process capacities (served, never pushed
        to), running jobs. The last item is what was skipped, by reason."""
        extra = {q for p in processes for q in p.queue_capacity}
        extra.update(job.queue for job in running)
        exported, skipped = self.select(queue_set, extra)
        return (
            [q for q in queues if q.name in exported],
            [
                p
                if exported.issuperset(p.queue_capacity)
                else replace(
                    p,
                    queue_capacity={q: n for q, n in p.queue_capacity.items() if q in exported},
                )
                for p in processes
            ],
            [job for job in running if job.queue in exported],
            skipped,
        )


@dataclass(eq=False)
class ProcessSelector(_Selector):
    """Picks the processes whose per-process series one target exports, by identity; call
    `select` once per poll. Totals and per-queue capacity count every process regardless."""

    def select(self, processes: Sequence[ProcessSample]) -> tuple[tuple[ProcessSample, ...], Skips]:
        """(processes to export, in the given order; what was skipped by reason) for one poll.

        Those exported last poll first while they are still live, then the others by
        identity. A process with any label value too long (identity, hostname, tag,
        version) is skipped before the ranking. Remembers the result for the next poll."""
        candidates = processes
        if self.max_label_bytes is not None:
            candidates = [p for p in processes if self._labels_fit(p)]
        kept, dropped, _ = self._rank([p.identity for p in candidates], self.limit, "process")
        self._exported = exported = frozenset(kept)
        if dropped:
            self._limit_reached(
                PROCESS_LIMIT_REACHED,
                dropped=dropped,
                reason="more live processes than --collect.processes.max; the rest have no "
                "per-process series and are counted in "
                'sidekiq_exporter_skipped_items_total{reason="process_limit"} (totals and '
                "per-queue capacity still count them)",
            )
        if len(kept) == len(processes):
            return tuple(processes), {}
        skipped = _skips({PROCESS_LIMIT: dropped, LABEL_TOO_LONG: len(processes) - len(candidates)})
        return tuple(p for p in processes if p.identity in exported), skipped

    def _labels_fit(self, process: ProcessSample) -> bool:
        for value in (process.identity, process.hostname, process.tag, process.version):
            if not self.fits(value):
                self._too_long("process", value)
                return False
        return True


@dataclass(eq=False)
class JobClassSelector(_Selector):
    """Picks the job classes one target exports; call `select` once per poll.

    A class keeps its slot while it is present (in the metrics window the reader read, or
    running) and for `idle_seconds` after; under the cap a class absent longer gives its slot
    to a class present now, so new class names (a deploy that renames jobs) become visible.
    """

    # Absent from the metrics window this long (Redis time), a class yields its slot to a
    # newcomer. The window already covers the last few minutes, so this is ~8 minutes after
    # its last execution at a 10 s poll interval: a class that runs every few minutes never
    # flaps, one gone since a deploy makes room soon.
    idle_seconds: float = 300.0
    # class -> Redis time it was last present, for every exported class
    _last_seen: dict[str, float] = field(default_factory=dict, init=False, repr=False)

    def select(self, present: Iterable[str], now: float) -> tuple[frozenset[str], Skips, set[str]]:
        """(classes to export, what was skipped by reason, classes that lost their slot) for
        one poll, `present` being the classes this poll saw.

        Kept first: the exported classes seen within `idle_seconds`; then newcomers present
        now, by name; then the exported classes idle longer, most recently seen first. A
        class that loses its slot is forgotten (its counters start again if it comes back)."""
        last_seen = self._last_seen
        newcomers: list[str] = []
        for job_class in present:
            if job_class in last_seen:
                last_seen[job_class] = now
            elif self.permitted(job_class):
                newcomers.append(job_class)
        newcomers, too_long = self._fitting(sorted(set(newcomers)), "job class")
        released: set[str] = set()
        dropped = 0
        if self.limit is None or len(last_seen) + len(newcomers) <= self.limit:
            last_seen.update(dict.fromkeys(newcomers, now))
        else:
            recent = now - self.idle_seconds
            holding = [c for c, seen in last_seen.items() if seen >= recent]
            idle = sorted(
                (c for c, seen in last_seen.items() if seen < recent),
                key=lambda c: (-last_seen[c], c),
            )
            ranked = holding + newcomers + idle
            kept = set(ranked[: self.limit])
            released = {c for c in idle if c not in kept}
            for job_class in released:
                del last_seen[job_class]
            admitted = [c for c in newcomers if c in kept]
            last_seen.update(dict.fromkeys(admitted, now))
            dropped = len(newcomers) - len(admitted)
            if dropped:
                first = next(c for c in newcomers if c not in kept)
                self._limit_reached(JOB_CLASS_LIMIT_REACHED, first_dropped=first)
        if newcomers or released:
            self._exported = frozenset(last_seen)
        return self._exported, _skips({CLASS_LIMIT: dropped, LABEL_TOO_LONG: too_long}), released


@dataclass(eq=False)
class CronJobSelector(_Selector):
    """Picks the sidekiq-cron jobs one target reads and exports, by (namespace, name): allow/deny
    on the job name, then up to `limit`, those exported last time first, then in order."""

    _exported_jobs: frozenset[tuple[str, str]] = field(default=frozenset(), init=False, repr=False)

    def sets(self, namespaces: Sequence[str]) -> tuple[list[str], int]:
        """The namespaces whose sets are read, in order, and how many the limit left out.

        At most `limit`: Redis deletes an empty set, so each one holds a job at least, and more
        sets than the limit cannot all have a job exported.
        """
        if self.limit is None or len(namespaces) <= self.limit:
            return list(namespaces), 0
        return list(namespaces[: self.limit]), len(namespaces) - self.limit

    def select(
        self, jobs: Sequence[tuple[str, str]], unread: int = 0
    ) -> tuple[list[tuple[str, str]], Skips]:
        """(jobs to read, what was skipped by reason) for one poll; `unread` are jobs already
        dropped, left unread in sets or namespaces too large to read (counted, and warned of).
        A job whose namespace or name is too long to be a label is skipped before the limit."""
        permitted = [job for job in dict.fromkeys(jobs) if self.permitted(job[1])]
        too_long = 0
        if self.max_label_bytes is not None:
            fitting = [job for job in permitted if self.fits(job[0]) and self.fits(job[1])]
            too_long = len(permitted) - len(fitting)
            if too_long:
                namespace, name = next(job for job in permitted if job not in fitting)
                self._too_long("cron job", name if not self.fits(name) else namespace)
            permitted = fitting
        dropped = unread
        if self.limit is not None and len(permitted) > self.limit:
            previous = self._exported_jobs
            permitted = sorted(permitted, key=lambda job: (job not in previous, job))
            dropped += len(permitted) - self.limit
            permitted = permitted[: self.limit]
        self._exported_jobs = frozenset(permitted)
        if dropped:
            self._limit_reached(
                CRON_JOB_LIMIT_REACHED,
                dropped=dropped,
                reason="more sidekiq-cron jobs than --collect.cron.max; the rest are not "
                "exported and are counted in "
                'sidekiq_exporter_skipped_items_total{reason="cron_limit"}',
            )
        return permitted, _skips({CRON_LIMIT: dropped, LABEL_TOO_LONG: too_long})
