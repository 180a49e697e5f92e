"""Sidekiq-shaped data for tests: the one layout writer, `exporter/demo/layout.py`, which the
demo and the benchmarks use too.

Used where no real Sidekiq of that generation runs here (8.0, 8.1.2+), for edge cases, and by
the benchmarks; the real 6.4.1 and 7.3.2 processes of the conformance suite check that the
writer matches reality.
"""

from exporter.demo.layout import (
    ALL,
    CRON_1,
    CRON_2,
    V6_4_1,
    V7,
    V8_0,
    V8_1_2,
    SidekiqWriter,
    is_v8,
)

__all__ = ["ALL", "CRON_1", "CRON_2", "V6_4_1", "V7", "V8_0", "V8_1_2", "SidekiqWriter", "is_v8"]
