"""The latest state of every target: what pollers publish and scrapes read.

Pollers (on the event loop) replace a target's `TargetStatus` wholesale; scrapes read whatever
is there, from a worker thread (exporter/web.py). Statuses are immutable, the set of targets is
fixed at start and replacing or reading one dict item is atomic, so no locks are needed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from exporter.model import Snapshot

_NO_COUNTS: Mapping[str, int] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class TargetStatus:
    """What the exporter knows about one target after its latest poll."""

    target: str
    snapshot: Snapshot | None  # the last successful poll's snapshot, kept across failures
    # Exporter wall-clock epoch seconds when the poll that produced `snapshot` finished;
    # the collector compares it with its clock to decide staleness.
    snapshot_completed_at: float | None
    polls_success: int
    polls_error: int
    last_poll_duration_seconds: float | None  # of the latest poll, failed or not
    last_success_timestamp: float | None  # wall-clock epoch seconds
    last_round_trips: int | None  # of the latest successful poll
    skipped_totals: Mapping[str, int]  # reason -> items skipped, summed over successful polls
    up: bool  # the latest poll succeeded (freshness is the collector's call)

    @classmethod
    def initial(cls, target: str) -> TargetStatus:
        """The status of a target before its first poll."""
        return cls(
            target=target,
            snapshot=None,
            snapshot_completed_at=None,
            polls_success=0,
            polls_error=0,
            last_poll_duration_seconds=None,
            last_success_timestamp=None,
            last_round_trips=None,
            skipped_totals=_NO_COUNTS,
            up=False,
        )


def add_counts(total: Mapping[str, int], *more: Mapping[str, int]) -> Mapping[str, int]:
    """A new read-only mapping with the per-key sums of `total` and `more`."""
    summed = dict(total)
    for counts in more:
        for key, value in counts.items():
            summed[key] = summed.get(key, 0) + value
    return MappingProxyType(summed)


class Store:
    """The latest `TargetStatus` per configured target."""

    __slots__ = ("_statuses",)

    def __init__(self, targets: Iterable[str]) -> None:
        # Every configured target starts with an initial status, so scrapes before the first
        # poll already show `polls_total 0` and readiness can name what it waits for.
        self._statuses: dict[str, TargetStatus] = {
            name: TargetStatus.initial(name) for name in targets
        }

    def publish(self, status: TargetStatus) -> None:
        """Replace the status of `status.target`; KeyError for a target not configured."""
        if status.target not in self._statuses:
            raise KeyError(f"unknown target {status.target!r}")
        self._statuses[status.target] = status

    def get(self, target: str) -> TargetStatus:
        """The latest status of `target`; KeyError for a target not configured."""
        return self._statuses[target]

    def all(self) -> tuple[TargetStatus, ...]:
        """Every target's latest status, ordered by target name."""
        return tuple(self._statuses[name] for name in sorted(self._statuses))

    def waiting_for(self) -> tuple[str, ...]:
        """Targets that have not had a successful poll yet, ordered by name."""
        return tuple(s.target for s in self.all() if s.polls_success == 0)

    def ready(self) -> bool:
        """True once every configured target has had at least one successful poll."""
        return not self.waiting_for()
