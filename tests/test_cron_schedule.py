"""sidekiq-cron's cron lines evaluated as its parser, fugit, evaluates them.

The unit tests pin what is and is not accepted; the comparison runs Debian's fugit (the one
sidekiq-cron 1.8.0 uses here) on the same lines and times, DST transitions included, and
requires the same next tick.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from exporter.sidekiq.cron_schedule import NICKNAMES, parse_cron_line

FUGIT_TICKS = Path(__file__).resolve().parent / "sidekiq_app" / "fugit_ticks.rb"


def utc(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()


def next_after(line: str, when: float) -> float | None:
    schedule = parse_cron_line(line)
    assert schedule is not None, line
    return schedule.next_after(when)


def test_five_fields_fire_at_second_zero_strictly_after() -> None:
    assert next_after("* * * * *", utc(2025, 2, 14, 8, 0, 20)) == utc(2025, 2, 14, 8, 1)
    # A job enqueued exactly on its tick is next expected a period later.
    assert next_after("* * * * *", utc(2025, 2, 14, 8, 1)) == utc(2025, 2, 14, 8, 2)
    assert next_after("0 3 * * *", utc(2025, 2, 14, 8)) == utc(2025, 2, 15, 3)


def test_six_fields_take_seconds_first_as_fugit() -> None:
    assert next_after("*/10 * * * * *", utc(2025, 2, 14, 8, 0, 21)) == utc(2025, 2, 14, 8, 0, 30)
    # A sixth field that is a weekday, not a zone: seconds, minutes, … weekday.
    assert next_after("0 0 * * * MON", utc(2025, 2, 14, 8)) == utc(2025, 2, 17, 0)


def test_time_zone_suffix_names_and_offsets() -> None:
    berlin = parse_cron_line("0 9 * * * Europe/Berlin")
    assert berlin is not None
    assert berlin.zone == ZoneInfo("Europe/Berlin")
    assert berlin.next_after(utc(2025, 2, 14, 6)) == utc(2025, 2, 14, 8)  # 09:00 CET
    assert berlin.next_after(utc(2025, 7, 14, 6)) == utc(2025, 7, 14, 7)  # 09:00 CEST
    tokyo = parse_cron_line("0 9 * * * +09:00")
    assert tokyo is not None
    assert tokyo.zone == timezone(timedelta(hours=9))
    assert tokyo.next_after(utc(2025, 2, 14, 6)) == utc(2025, 2, 15, 0)
    assert parse_cron_line("0 9 * * * -0530") is not None
    # Seconds, five fields and a zone: seven tokens.
    assert next_after("30 0 9 * * * Asia/Tokyo", utc(2025, 2, 14, 6)) == utc(2025, 2, 15, 0, 0, 30)


@pytest.mark.parametrize(("nickname", "fields"), sorted(NICKNAMES.items()))
def test_nicknames_as_fugit_spells_them(nickname: str, fields: str) -> None:
    assert parse_cron_line(nickname) == parse_cron_line(fields)
    assert parse_cron_line(f"{nickname} Europe/Berlin") == parse_cron_line(
        f"{fields} Europe/Berlin"
    )


@pytest.mark.parametrize(
    "line",
    [
        "",
        "every day at noon",  # fugit's natural language
        "@reboot",  # no tick in time
        "@Daily",  # fugit matches nicknames in lower case only
        "0 25 * * *",
        "22-2 * * * *",  # a range that wraps around (fugit takes it)
        "0 0 * * tue%2",  # fugit's modulo
        "0 0 1 * 1&",  # fugit's "and" of the day fields
        "0 0 * * * Not/AZone",
        "0 0 * * * europe/berlin",  # fugit wants a capital
        "0 0 * * * ../../etc/passwd",
        "0 0 30 2 *",  # never: February has no 30th
        "1 2 3 4 5 6 7 8",
    ],
)
def test_lines_that_cannot_be_evaluated(line: str) -> None:
    assert parse_cron_line(line) is None


def test_day_fields_are_ored_when_both_restricted_even_with_a_star_step() -> None:
    # 2025-02-14 is a Friday: the 15th (odd) comes before Monday the 17th.
    assert next_after("0 0 */2 * 1", utc(2025, 2, 14, 8)) == utc(2025, 2, 15)
    assert next_after("0 0 1,15 * 5", utc(2025, 2, 14, 8)) == utc(2025, 2, 15)
    # One unrestricted day field: the other alone decides.
    assert next_after("0 0 * * 1", utc(2025, 2, 14, 8)) == utc(2025, 2, 17)
    assert next_after("0 0 */1 * 1", utc(2025, 2, 14, 8)) == utc(2025, 2, 17)


# --- the same ticks as fugit ------------------------------------------------------------------

LINES = (
    "* * * * *", "*/5 * * * *", "*/7 * * * *", "2/5 * * * *", "0 * * * *", "15 */2 * * *",
    "0 */7 * * *", "30 3 * * *", "0 9 * * 1-5", "*/15 9-17 * * mon-fri", "0 0 1 * *",
    "0 0 31 * *", "0 0 L * *", "0 0 29 2 *", "59 23 31 12 *", "0 0 * JAN,JUL *",
    "0 0 * * mon#2", "0 0 * * 7", "0 0 * * sun", "0 0 * * */2", "0 0 1-7 * 1", "0 0 */2 * 1",
    "0 0 */3 * */2", "0 0 1,15 * 5", "*/10 * * * * *", "30 0 * * * *",
    "@hourly", "@daily", "@midnight", "@noon", "@weekly", "@monthly", "@yearly", "@annually",
    "0 2 * * * America/New_York", "30 1 * * * America/New_York", "0 * * * * Europe/Berlin",
    "0 30 2 * * * Europe/London", "0 12 * * 1-5 Asia/Tokyo", "5 4 * * 0 UTC",
    "0 9 * * * +09:00", "0 0 * * 1 -05:00", "@daily America/Los_Angeles",
)  # fmt: skip
FROM = (
    utc(2025, 2, 14, 8, 0, 20),
    utc(2024, 12, 31, 23, 59, 59),
    utc(2025, 3, 9, 6, 30),  # the US springs forward at 07:00 UTC
    utc(2025, 3, 30, 0, 59),  # the EU springs forward at 01:00 UTC
    utc(2025, 11, 2, 5, 10),  # the US falls back at 06:00 UTC
    utc(2025, 10, 26, 0, 30),  # the EU falls back at 01:00 UTC
)


@pytest.mark.integration
def test_next_ticks_equal_fugits() -> None:
    if shutil.which("ruby") is None:
        pytest.fail("ruby is not installed: run scripts/setup-test-services.sh")
    cases = [(line, when) for line in LINES for when in FROM]
    run = subprocess.run(
        ["ruby", str(FUGIT_TICKS)],
        input=json.dumps(cases),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    fugit = json.loads(run.stdout)
    version = tuple(int(part) for part in fugit["fugit_version"].split("."))
    compared = 0
    for (line, when), theirs in zip(cases, fugit["ticks"], strict=True):
        ours = next_after(line, when)
        if theirs is None:
            # Nicknames with a zone came in fugit 1.11.2 (sidekiq-cron 2.x needs >= 1.11.1).
            assert version < (1, 11, 2), line
            assert line.split()[0] in NICKNAMES, line
            assert len(line.split()) == 2, line
            continue
        assert ours == theirs, f"{line!r} after {datetime.fromtimestamp(when, UTC)}"
        compared += 1
    assert compared >= len(cases) - len(FROM)
