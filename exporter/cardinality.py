"""Every rule that limits series: allow/deny regexes and a cap per kind, with stable ranking.

One selector per kind (`QueueSelector`, `JobClassSelector`, `ProcessSelector`), each keeping
its target's state between polls; no I/O. Which names are kept, and why in that order:
docs/architecture.md.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Sequence
from dataclasses import KW_ONLY, dataclass, field, replace
from typing import Final

from exporter.logs import (
    JOB_CLASS_LIMIT_REACHED,
    PROCESS_LIMIT_REACHED,
    QUEUE_LIMIT_REACHED,
    get_logger,
)
from exporter.model import ProcessSample, QueueSample, RunningJob

log = get_logger(__name__)

# Skip reasons: values of `sidekiq_exporter_skipped_items_total{reason}`.
QUEUE_LIMIT: Final = "queue_limit"  # a queue beyond --collect.queues.max
CLASS_LIMIT: Final = "class_limit"  # a job class beyond --collect.job-classes.max
PROCESS_LIMIT: Final = "process_limit"  # a process beyond --collect.processes.max
# Every reason above: the limits' share of `sidekiq_exporter_skipped_items_total{reason}`.
REASONS: Final = (QUEUE_LIMIT, CLASS_LIMIT, PROCESS_LIMIT)


@dataclass(eq=False)
class _Selector:
    """What every kind's selector has: its target, a cap (None: none), allow/deny regexes."""

    target: str = ""
    _: KW_ONLY
    limit: int | None = None
    allow: re.Pattern[str] | None = None
    deny: re.Pattern[str] | None = None
    _limit_logged: bool = field(default=False, init=False, repr=False)
    _exported: frozenset[str] = field(default=frozenset(), init=False, repr=False)

    def __post_init__(self) -> None:
        if self.limit is not None and self.limit < 0:
            raise ValueError("limit must be at least 0")

    def permitted(self, name: str) -> bool:
        """True unless the allow/deny regexes (full match) exclude `name`."""
        if self.allow is not None and self.allow.fullmatch(name) is None:
            return False
        return self.deny is None or self.deny.fullmatch(name) is None

    def _limit_reached(self, event: str, **fields: object) -> None:
        """Warn, once per target, that the cap dropped something."""
        if not self._limit_logged:
            self._limit_logged = True
            log.warning(event, target=self.target, limit=self.limit, **fields)

    def _rank(self, names: Collection[str], budget: int | None) -> tuple[list[str], int]:
        """Permitted `names`, those exported last time first, then by name; cut at `budget`.

        Stable: a name keeps its place while it is present, so series do not flap when others
        come and go; a free place goes to the first newcomer by name."""
        permitted = [n for n in names if self.permitted(n)]
        if budget is None or len(permitted) <= budget:
            return permitted, 0
        previous = self._exported
        ranked = sorted(permitted, key=lambda n: (n not in previous, n))
        return ranked[:budget], len(ranked) - budget


@dataclass(eq=False)
class QueueSelector(_Selector):
    """Picks the queues one target exports; call `select` once per poll."""

    @property
    def exported(self) -> frozenset[str]:
        """The names the last `select` kept."""
        return self._exported

    def plan(self, queue_set: Sequence[str]) -> frozenset[str]:
        """The names of the `queues` set that `select(queue_set, …)` will keep, whatever the
        extras: the queues whose tails are worth reading. Changes no state."""
        kept, _ = self._rank(queue_set, self.limit)
        return frozenset(kept)

    def select(
        self, queue_set: Sequence[str], extra: Iterable[str] = ()
    ) -> tuple[frozenset[str], int]:
        """(names to export, how many permitted names the limit dropped) for one poll.

        `queue_set` are the members of Sidekiq's `queues` set; `extra` other queue names seen in
        this poll (process capacities, running jobs). Remembers the result for the next poll.
        """
        kept, dropped = self._rank(queue_set, self.limit)
        known = set(queue_set)
        left = None if self.limit is None else self.limit - len(kept)
        more, more_dropped = self._rank(sorted({n for n in extra if n not in known}), left)
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
        return self._exported, dropped

    def exported_only(
        self,
        queue_set: Sequence[str],
        queues: list[QueueSample],
        processes: list[ProcessSample],
        running: list[RunningJob],
    ) -> tuple[list[QueueSample], list[ProcessSample], list[RunningJob], int]:
        """`select` for one poll's data, and every queue it does not export dropped wherever a
        queue label would come from: the `queues` set, process capacities (served, never pushed
        to), running jobs. The last item is how many queues the cap dropped."""
        extra = {q for p in processes for q in p.queue_capacity}
        extra.update(job.queue for job in running)
        exported, dropped = self.select(queue_set, extra)
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
            dropped,
        )


@dataclass(eq=False)
class ProcessSelector(_Selector):
    """Picks the processes whose per-process series one target exports, by identity; call
    `select` once per poll. Totals and per-queue capacity count every process regardless."""

    def select(self, processes: Sequence[ProcessSample]) -> tuple[tuple[ProcessSample, ...], int]:
        """(processes to export, in the given order; how many the cap dropped) for one poll.

        Those exported last poll first while they are still live, then the others by
        identity. Remembers the result for the next poll."""
        kept, dropped = self._rank([p.identity for p in processes], self.limit)
        if not dropped:
            self._exported = frozenset(kept)
            return tuple(processes), 0
        self._exported = exported = frozenset(kept)
        self._limit_reached(
            PROCESS_LIMIT_REACHED,
            dropped=dropped,
            reason="more live processes than --collect.processes.max; the rest have no "
            "per-process series and are counted in "
            'sidekiq_exporter_skipped_items_total{reason="process_limit"} (totals and '
            "per-queue capacity still count them)",
        )
        return tuple(p for p in processes if p.identity in exported), dropped


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

    @property
    def exported(self) -> frozenset[str]:
        """The classes the last `select` kept."""
        return self._exported

    def select(self, present: Iterable[str], now: float) -> tuple[frozenset[str], int, set[str]]:
        """(classes to export, how many permitted classes the cap turned away, classes that
        lost their slot) for one poll, `present` being the classes this poll saw.

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
        newcomers = sorted(set(newcomers))
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
        return self._exported, dropped, released
