"""sidekiq-cron's cron lines, as its parser (the fugit gem) reads them, turned into a schedule
that tells the first tick after a given time. Evaluated with cronsim; talks to no Redis.

Supported, as fugit reads them (docs/cron.md): five fields, or six with seconds first; names of
months and weekdays; `L` and `#` in the day fields; the
nicknames `@hourly` … `@yearly`; a trailing time zone, an IANA name (`Europe/Berlin`) or an
offset (`+09:00`). Anything else sidekiq-cron accepts (natural language such as "every day at
noon", fugit's `%` and `&` extensions, ranges that wrap around) is unparseable here: the job
is exported without a schedule and counted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from typing import Final

# cronsim and zoneinfo are imported where a cron line is read: a daemon whose Redis has no
# sidekiq-cron jobs never loads them (less memory).

# Skip reason (`sidekiq_exporter_skipped_items_total{reason}`): an enabled job's cron line that
# cannot be evaluated; the job is exported without its next tick and overdue time.
UNPARSEABLE_CRON: Final = "unparseable_cron"

# fugit's nicknames (lib/fugit/cron.rb SPECIALS), written in lower case only, as fugit matches
# them. `@reboot` has no tick in time.
NICKNAMES: Final = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@noon": "0 12 * * *",
    "@hourly": "0 * * * *",
}
# The time-zone token fugit accepts at the end of a line (its `_tz_name` and `_tz_delta`).
_ZONE_NAME = re.compile(r"[A-Z][a-zA-Z0-9+\-]+(/[A-Z][a-zA-Z0-9+\-_]+){0,2}")
_ZONE_OFFSET = re.compile(r"([-+])([01][0-9]|2[0-4]):?(00|15|30|45)")
_DAY_FIELDS: Final = ((3, 1, 31), (5, 0, 6))  # (index among six fields, first, last value)


@dataclass(frozen=True, slots=True)
class CronSchedule:
    """A cron line that can be evaluated: six fields (seconds first) in `zone`."""

    fields: str
    zone: tzinfo

    def next_after(self, timestamp: float) -> float | None:
        """Epoch seconds of the first tick strictly after `timestamp`; None if the line has
        none within 50 years (cronsim's horizon)."""
        from cronsim import CronSim, CronSimError

        start = datetime.fromtimestamp(timestamp, self.zone)
        try:
            return next(CronSim(self.fields, start)).timestamp()
        except (StopIteration, CronSimError):
            return None


def parse_cron_line(line: str) -> CronSchedule | None:
    """The schedule of a sidekiq-cron `cron` field, or None when it cannot be evaluated."""
    from cronsim import CronSim, CronSimError

    tokens = line.split()
    if tokens and tokens[0] in NICKNAMES:
        tokens = NICKNAMES[tokens[0]].split() + tokens[1:]
    zone: tzinfo = UTC
    # fugit reads six tokens as seconds first when the sixth is a weekday, else as five fields
    # and a zone: no weekday is also a zone name, so the zone is tried first here.
    if len(tokens) in (6, 7) and (named := _zone(tokens[-1])) is not None:
        zone, tokens = named, tokens[:-1]
    if len(tokens) == 5:
        tokens = ["0", *tokens]
    if len(tokens) != 6:
        return None
    fields = " ".join(_fugit_days(tokens))
    try:
        CronSim(fields, datetime(2000, 1, 1, tzinfo=zone))  # validates every field
    except CronSimError:
        return None
    return CronSchedule(fields, zone)


def _zone(token: str) -> tzinfo | None:
    if offset := _ZONE_OFFSET.fullmatch(token):
        sign, hours, minutes = offset.groups()
        delta = timedelta(hours=int(hours), minutes=int(minutes))
        return timezone(-delta if sign == "-" else delta)
    if not _ZONE_NAME.fullmatch(token):
        return None
    from zoneinfo import ZoneInfo

    try:
        return ZoneInfo(token)
    except (KeyError, ValueError, OSError):  # ZoneInfoNotFoundError is a KeyError
        return None


def _fugit_days(fields: list[str]) -> list[str]:
    """The day fields rewritten so cronsim matches days as fugit does.

    When both day-of-month and day-of-week are restricted, a day matching either runs (cron's
    rule, and fugit's). cronsim follows Debian's cron, which counts a field starting with `*`
    as unrestricted, so `*/2` in one of them would make it require both; fugit counts `*/2`
    as restricted. Such a step is written out as the list of days it means.
    """

    def restricted(field: str) -> bool:
        return not field.startswith("*") or (field.startswith("*/") and field != "*/1")

    if not all(restricted(fields[index]) for index, _, _ in _DAY_FIELDS):
        return fields
    rewritten = list(fields)
    for index, first, last in _DAY_FIELDS:
        step = fields[index].removeprefix("*/")
        if fields[index].startswith("*/") and step.isdigit() and int(step) > 0:
            rewritten[index] = ",".join(str(d) for d in range(first, last + 1, int(step)))
    return rewritten
