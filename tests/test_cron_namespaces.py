"""The sidekiq-cron namespace scan: a page per poll, a pass a minute at most, and what is known
between passes."""

from __future__ import annotations

from exporter.sidekiq.cron_namespaces import CronNamespaces


def test_a_pass_goes_a_page_per_poll_and_the_next_starts_a_minute_after_it_ended() -> None:
    scan = CronNamespaces()
    assert scan.namespaces == ["default"]  # read before any pass ends
    assert scan.next_page(1000.0) == b"0"
    assert scan.next_page(1000.0) == b"0"  # not yet answered: the same page again
    scan.page_read(1000.0, b"17", ["billing"])
    assert scan.namespaces == ["billing", "default"]  # found so far counts at once
    assert scan.next_page(1010.0) == b"17"
    scan.page_read(1010.0, b"0", ["reports"])
    assert scan.namespaces == ["billing", "default", "reports"]
    for now in (1010.0, 1040.0, 1069.9):
        assert scan.next_page(now) is None
    assert scan.next_page(1070.0) == b"0"
    scan.page_read(1070.0, b"0", ["billing"])  # `reports` was deleted
    assert scan.namespaces == ["billing", "default"]


def test_a_refused_page_ends_the_pass_and_keeps_what_is_known() -> None:
    scan = CronNamespaces()
    scan.next_page(0.0)
    scan.page_read(0.0, b"0", ["billing"])
    assert scan.next_page(60.0) == b"0"
    scan.page_read(60.0, b"5", ["reports"])
    scan.page_failed(70.0)  # e.g. Redis < 6.0 refuses SCAN … TYPE
    assert scan.namespaces == ["billing", "default", "reports"]
    assert scan.next_page(100.0) is None
    assert scan.next_page(130.0) == b"0"


def test_a_clock_that_goes_back_starts_a_pass() -> None:
    scan = CronNamespaces()
    scan.next_page(1000.0)
    scan.page_read(1000.0, b"0", [])
    assert scan.next_page(999.0) == b"0"
