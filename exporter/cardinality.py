"""Which queues a target exports: `--collect.queues.allow/deny` and `--collect.queues.max`.

A queue that does not pass the allow/deny regexes (full match) is simply not exported and not
counted. Of the queues that pass, at most `limit` are exported; each one beyond is dropped and
counted under `sidekiq_exporter_skipped_items_total{reason="queue_limit"}` on every poll that
drops it, never merged into a made-up label value such as "other". The first time a target
drops a queue, one warning says so.

Which queues are kept when there are too many is deterministic and stable across polls, so
series do not flap when a queue appears or disappears:

1. names from the `queues` set that this selector exported on the previous poll, by name;
2. the other names from the `queues` set, by name;
3. names that only processes or running jobs mention (served but never pushed to: the
   collector shows them as empty queues), first those exported before, then by name.

Queues from the `queues` set come first because the reader decides from them alone, before its
second round trip, which queue tails (`LINDEX`) to read; later steps can only use what is left,
so every queue exported from the set had its tail read.

The selector keeps one piece of state per target: the names it exported last time, which is
never larger than the limit.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Sequence

from exporter.logs import get_logger

log = get_logger(__name__)

QUEUE_LIMIT = "queue_limit"  # skip reason: a queue beyond --collect.queues.max
QUEUE_LIMIT_REACHED = "queue_limit_reached"  # log event, once per target


class QueueSelector:
    """Picks the queues one target exports; call `select` once per poll."""

    def __init__(
        self,
        target: str = "",
        *,
        limit: int | None = None,
        allow: re.Pattern[str] | None = None,
        deny: re.Pattern[str] | None = None,
    ) -> None:
        if limit is not None and limit < 0:
            raise ValueError("limit must be at least 0")
        self.target = target
        self.limit = limit
        self.allow = allow
        self.deny = deny
        self._exported: frozenset[str] = frozenset()
        self._limit_logged = False

    @property
    def exported(self) -> frozenset[str]:
        """The names the last `select` kept."""
        return self._exported

    def permitted(self, name: str) -> bool:
        """True unless the allow/deny regexes exclude `name`."""
        if self.allow is not None and self.allow.fullmatch(name) is None:
            return False
        return self.deny is None or self.deny.fullmatch(name) is None

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
        if dropped and not self._limit_logged:
            self._limit_logged = True
            log.warning(
                QUEUE_LIMIT_REACHED,
                target=self.target,
                limit=self.limit,
                dropped=dropped,
                reason="more queues than --collect.queues.max; the rest are not exported and "
                'are counted in sidekiq_exporter_skipped_items_total{reason="queue_limit"}',
            )
        return self._exported, dropped

    def _rank(self, names: Collection[str], budget: int | None) -> tuple[list[str], int]:
        """Permitted `names`, those exported last time first, then by name; cut at `budget`."""
        permitted = [n for n in names if self.permitted(n)]
        if budget is None or len(permitted) <= budget:
            return permitted, 0
        previous = self._exported
        ranked = sorted(permitted, key=lambda n: (n not in previous, n))
        return ranked[:budget], len(ranked) - budget
