"""Time as the exporter sees it: a small protocol so pollers and the collector can be tested
with a fake clock instead of sleeping."""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    """Wall time, monotonic time and sleeping, injected wherever the exporter needs time."""

    def time(self) -> float:
        """Wall-clock epoch seconds (may jump; only for timestamps)."""
        ...

    def monotonic(self) -> float:
        """Monotonic seconds (never jumps; for schedules and durations)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Suspend the calling task for `seconds`."""
        ...


class SystemClock:
    """The real clock: `time.time`, `time.monotonic` and `asyncio.sleep`."""

    __slots__ = ()

    def time(self) -> float:
        """Wall-clock epoch seconds."""
        return time.time()

    def monotonic(self) -> float:
        """Monotonic seconds."""
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        """Sleep on the running event loop."""
        await asyncio.sleep(seconds)
