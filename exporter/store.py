"""The latest status of every target: what pollers publish and scrapes read.

Statuses are immutable and a publish swaps in a whole new state, so readers in other threads
need no lock. Decides nothing: freshness is the collector's call.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
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


@dataclass(frozen=True, slots=True)
class StoreState:
    """Every target's status at one `version` of the store."""

    version: int  # 0 at start, +1 on every publish: equal versions, equal statuses
    statuses: tuple[TargetStatus, ...]  # ordered by target name
    by_target: Mapping[str, TargetStatus]


class Store:
    """The latest `TargetStatus` per configured target."""

    __slots__ = ("_listeners", "_state")

    def __init__(self, targets: Iterable[str]) -> None:
        # Every configured target starts with an initial status, so scrapes before the first
        # poll already show `polls_total 0` and readiness can name what it waits for.
        self._state = _state(0, {name: TargetStatus.initial(name) for name in targets})
        self._listeners: tuple[Callable[[], None], ...] = ()

    def publish(self, status: TargetStatus) -> None:
        """Replace the status of `status.target`; KeyError for a target not configured.

        Called from one thread only (the event loop's pollers): two publishes racing from two
        threads could lose one. Reads are safe from any thread.
        """
        state = self._state
        if status.target not in state.by_target:
            raise KeyError(f"unknown target {status.target!r}")
        self._state = _state(state.version + 1, {**state.by_target, status.target: status})
        for listener in self._listeners:
            listener()

    def subscribe(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call `listener` after every publish, on the publishing thread (the web app renders
        the new state then: exporter/render_cache.py); returns the call that unsubscribes."""
        self._listeners = (*self._listeners, listener)

        def unsubscribe() -> None:
            self._listeners = tuple(f for f in self._listeners if f is not listener)

        return unsubscribe

    @property
    def version(self) -> int:
        """Incremented by every publish, so an unchanged version means unchanged statuses."""
        return self._state.version

    def state(self) -> StoreState:
        """The version and every target's status, read together (consistent across a publish)."""
        return self._state

    def get(self, target: str) -> TargetStatus:
        """The latest status of `target`; KeyError for a target not configured."""
        return self._state.by_target[target]

    def all(self) -> tuple[TargetStatus, ...]:
        """Every target's latest status, ordered by target name."""
        return self._state.statuses

    def waiting_for(self) -> tuple[str, ...]:
        """Targets that have not had a successful poll yet, ordered by name."""
        return tuple(s.target for s in self.all() if s.polls_success == 0)

    def ready(self) -> bool:
        """True once every configured target has had at least one successful poll."""
        return not self.waiting_for()


def _state(version: int, statuses: dict[str, TargetStatus]) -> StoreState:
    return StoreState(
        version=version,
        statuses=tuple(statuses[name] for name in sorted(statuses)),
        by_target=MappingProxyType(statuses),
    )
