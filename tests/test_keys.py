"""Key names for every Sidekiq generation, across minute, hour, day and year boundaries."""

from datetime import UTC, datetime

import pytest

from exporter.sidekiq.keys import KeyNames

KEYS = KeyNames()


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_global_and_per_item_keys_without_prefix() -> None:
    assert (KEYS.queues, KEYS.processes, KEYS.schedule, KEYS.retry, KEYS.dead) == (
        "queues",
        "processes",
        "schedule",
        "retry",
        "dead",
    )
    assert (KEYS.processed, KEYS.failed, KEYS.paused) == ("stat:processed", "stat:failed", "paused")
    assert KEYS.queue("default") == "queue:default"
    assert KEYS.process("host:1:abc") == "host:1:abc"
    assert KEYS.work("host:1:abc") == "host:1:abc:work"
    assert KEYS.workers("host:1:abc") == "host:1:abc:workers"


def test_namespace_prefixes_key_names_only() -> None:
    keys = KeyNames.for_namespace("myapp")
    assert keys.queues == "myapp:queues"
    assert keys.queue("default") == "myapp:queue:default"
    assert keys.work("h:1:n") == "myapp:h:1:n:work"
    assert keys.metrics_minute_v7(utc(2025, 2, 14, 8, 3)) == "myapp:j|20250214|8:3"
    assert KeyNames.for_namespace("").queues == "queues"


@pytest.mark.parametrize(
    ("minute", "v7", "v8"),
    [
        (utc(2025, 2, 14, 8, 3), "j|20250214|8:3", "j|250214|8:03"),
        (utc(2025, 2, 14, 8, 43), "j|20250214|8:43", "j|250214|8:43"),
        (utc(2025, 2, 14, 0, 0), "j|20250214|0:0", "j|250214|0:00"),
        (utc(2025, 12, 31, 23, 59), "j|20251231|23:59", "j|251231|23:59"),
        (utc(2026, 1, 1, 0, 0), "j|20260101|0:0", "j|260101|0:00"),
    ],
)
def test_metrics_minute_keys_both_families(minute: datetime, v7: str, v8: str) -> None:
    assert KEYS.metrics_minute_v7(minute) == v7
    assert KEYS.metrics_minute_v8(minute) == v8


@pytest.mark.parametrize(
    ("minute", "v7", "v8"),
    [
        (utc(2025, 2, 14, 8, 3), "HardJob-14-08:3", "h|HardJob-14-8:3"),
        (utc(2025, 2, 4, 18, 30), "HardJob-04-18:30", "h|HardJob-4-18:30"),
        (utc(2025, 3, 1, 0, 0), "HardJob-01-00:0", "h|HardJob-1-0:0"),
    ],
)
def test_histogram_keys_both_families(minute: datetime, v7: str, v8: str) -> None:
    assert KEYS.histogram_v7("HardJob", minute) == v7
    assert KEYS.histogram_v8("HardJob", minute) == v8


def test_keys_are_utc_whatever_the_timezone_of_the_datetime() -> None:
    from datetime import timedelta, timezone

    local = datetime(2025, 2, 14, 10, 3, tzinfo=timezone(timedelta(hours=2)))
    assert KEYS.metrics_minute_v8(local) == "j|250214|8:03"


def test_sidekiq_cron_and_enterprise_keys() -> None:
    assert (KEYS.cron_jobs, KEYS.cron_namespace("default"), KEYS.leader) == (
        "cron_jobs",
        "cron_jobs:default",
        "dear-leader",
    )
    assert KEYS.cron_set("") == "cron_jobs"  # 1.x
    assert KEYS.cron_set("billing") == "cron_jobs:billing"
    assert KEYS.cron_namespace_pattern == "cron_jobs:*"
    # Set members are key names: never split on ':' (namespaces and names may hold one).
    assert KEYS.namespace_of("cron_jobs:billing:eu") == "billing:eu"
    assert KEYS.namespace_of("cron_jobs:") is None
    assert KEYS.namespace_of("cron_job:default:x") is None
    assert KEYS.cron_job_name("cron_job:nightly", "") == "nightly"
    assert KEYS.cron_job_name("cron_job:billing:eu:a:b", "billing:eu") == "a:b"
    assert KEYS.cron_job_name("stray", "default") == "stray"


def test_sidekiq_cron_keys_under_a_namespace_prefix() -> None:
    keys = KeyNames.for_namespace("my*app")
    assert keys.cron_jobs == "my*app:cron_jobs"
    assert keys.cron_namespace("default") == "my*app:cron_jobs:default"
    # Members carry no prefix; the reader adds it. The pattern matches the prefix literally.
    assert keys.cron_job("cron_job:default:x") == "my*app:cron_job:default:x"
    assert keys.cron_namespace_pattern == "my\\*app:cron_jobs:*"
    assert keys.namespace_of("my*app:cron_jobs:default") == "default"
    assert keys.leader == "my*app:dear-leader"
