"""Every rule that limits series: allow/deny regexes and a cap per kind, with stable ranking.

One selector per kind (`QueueSelector`, `JobClassSelector`, `CronJobSelector`), each keeping
its target's state between polls; no I/O. Which names are kept, and why in that order:
docs/architecture.md.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Sequence
from dataclasses import KW_ONLY, dataclass, field, replace
from typing import Final

from exporter.logs import (
    CRON_JOB_LIMIT_REACHED,
    JOB_CLASS_LIMIT_REACHED,
    QUEUE_LIMIT_REACHED,
    get_logger,
)
from exporter.model import ProcessSample, QueueSample, RunningJob

log = get_logger(__name__)

# Skip reasons: values of `sidekiq_exporter_skipped_items_total{reason}`.
QUEUE_LIMIT: Final = "queue_limit"  # a queue beyond --collect.queues.max
CLASS_LIMIT: Final = "class_limit"  # a job class beyond --collect.job-classes.max
CRON_LIMIT: Final = "cron_limit"  # a sidekiq-cron job (or namespace) beyond --collect.cron.max


@dataclass(eq=False)
class _Selector:
    """What every kind's selector has: its target, a cap (None: none), allow/deny regexes."""

    target: str = ""
    _: KW_ONLY
    limit: int | None = None
    allow: re.Pattern[str] | None = None
    deny: re.Pattern[str] | None = None
    _limit_logged: bool = field(default=False, init=False, repr=False)

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


@dataclass(eq=False)
class QueueSelector(_Selector):
    """Picks the queues one target exports; call `select` once per poll."""

    _exported: frozenset[str] = field(default=frozenset(), init=False, repr=False)

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

    def _rank(self, names: Collection[str], budget: int | None) -> tuple[list[str], int]:
        """Permitted `names`, those exported last time first, then by name; cut at `budget`."""
        permitted = [n for n in names if self.permitted(n)]
        if budget is None or len(permitted) <= budget:
            return permitted, 0
        previous = self._exported
        ranked = sorted(permitted, key=lambda n: (n not in previous, n))
        return ranked[:budget], len(ranked) - budget


@dataclass(eq=False)
class JobClassSelector(_Selector):
    """Picks the job classes one target exports: first come, first kept, up to `limit`."""

    _admitted: dict[str, None] = field(default_factory=dict, init=False, repr=False)

    def admit(self, job_class: str, dropped: set[str]) -> bool:
        """True if `job_class` is exported; one the cap turns away is added to `dropped`."""
        if job_class in self._admitted:
            return True
        if not self.permitted(job_class):
            return False
        if self.limit is not None and len(self._admitted) >= self.limit:
            dropped.add(job_class)
            self._limit_reached(JOB_CLASS_LIMIT_REACHED, first_dropped=job_class)
            return False
        self._admitted[job_class] = None
        return True


@dataclass(eq=False)
class CronJobSelector(_Selector):
    """Picks the sidekiq-cron jobs one target reads and exports, by (namespace, name): allow/deny
    on the job name, then up to `limit`, those exported last time first, then in order."""

    _exported: frozenset[tuple[str, str]] = field(default=frozenset(), init=False, repr=False)

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
    ) -> tuple[list[tuple[str, str]], int]:
        """(jobs to read, how many the limit dropped) for one poll; `unread` are jobs already
        dropped, left unread in sets or namespaces too large to read (counted, and warned of)."""
        permitted = [job for job in dict.fromkeys(jobs) if self.permitted(job[1])]
        dropped = unread
        if self.limit is not None and len(permitted) > self.limit:
            previous = self._exported
            permitted = sorted(permitted, key=lambda job: (job not in previous, job))
            dropped += len(permitted) - self.limit
            permitted = permitted[: self.limit]
        self._exported = frozenset(permitted)
        if dropped:
            self._limit_reached(
                CRON_JOB_LIMIT_REACHED,
                dropped=dropped,
                reason="more sidekiq-cron jobs than --collect.cron.max; the rest are not "
                "exported and are counted in "
                'sidekiq_exporter_skipped_items_total{reason="cron_limit"}',
            )
        return permitted, dropped
