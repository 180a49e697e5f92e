"""Which sidekiq-cron 2.x namespaces one Redis holds, found by the exporter's only keyspace scan.

sidekiq-cron 2.x keeps each namespace's jobs in a set `cron_jobs:<namespace>` that no other
key lists (§9.2), so the namespaces are found with `SCAN MATCH cron_jobs:* TYPE set`. The scan
goes one page per poll, inside the poll's first round trip, so a poll's round trips stay the
same; a new pass starts at most once a minute, a minute after the previous one ended. Between
passes the last complete pass is kept; during one, what it found so far is added.

The reader asks `next_page` what to send and reports each page back; the state is per target
and lives here, outside the reader (which keeps no data between polls), like the queue
selector's. No I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

# sidekiq-cron 2.x's default namespace (cron@v2.3.1 lib/sidekiq/cron.rb): read from the first
# poll on, before any pass ends.
DEFAULT_NAMESPACE: Final = "default"
SCAN_EVERY_SECONDS: Final = 60.0
# Keys a page visits. A page blocks Redis ~0.5 µs a key (MATCH and TYPE checked for each):
# ~5 ms at 10,000 (bench/cron_cost.py), where 100,000 cost 50 ms on a 1M-key Redis. So a pass
# over a million keys takes 100 polls, and a smaller keyspace one page.
SCAN_PAGE_KEYS: Final = 10_000


class CronNamespaces:
    """The namespaces of one target, and the state of the scan that finds them."""

    __slots__ = ("_cursor", "_every", "_found", "_known", "_last_pass_end")

    def __init__(self, every: float = SCAN_EVERY_SECONDS) -> None:
        self._every = every
        self._known: frozenset[str] = frozenset()  # found by the last complete pass
        self._found: set[str] = set()  # found by the pass in progress
        self._cursor: bytes | None = None  # where the pass in progress goes on; None: no pass
        self._last_pass_end: float | None = None

    @property
    def namespaces(self) -> list[str]:
        """Every namespace to read, sorted: the default one and every one found."""
        return sorted(self._known | self._found | {DEFAULT_NAMESPACE})

    def next_page(self, now: float) -> bytes | None:
        """The `SCAN` cursor to send in the poll at `now` (Redis time), or None: no page.

        A pass in progress goes on; a new one starts when the last ended a minute ago or more
        (or the clock went back).
        """
        if self._cursor is None:
            ended = self._last_pass_end
            if ended is not None and 0 <= now - ended < self._every:
                return None
            self._cursor = b"0"
        return self._cursor

    def page_read(self, now: float, cursor: bytes, namespaces: Iterable[str]) -> None:
        """Fold in one page: the namespaces on it and the cursor Redis returned (b"0": done)."""
        self._found.update(namespaces)
        if cursor != b"0":
            self._cursor = cursor
            return
        self._known = frozenset(self._found)
        self._found = set()
        self._end(now)

    def page_failed(self, now: float) -> None:
        """The page was refused (an old Redis without `SCAN … TYPE`, an ACL without `SCAN`):
        the pass ends, what is known stays, and the next pass comes a minute later."""
        self._known = self._known | self._found
        self._found = set()
        self._end(now)

    def _end(self, now: float) -> None:
        self._cursor = None
        self._last_pass_end = now
