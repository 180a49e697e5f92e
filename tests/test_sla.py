"""Queue SLAs: names, config rules and precedence, bad config, breach time (fake and real clock)."""

from __future__ import annotations

import itertools
import math
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import AsyncExitStack
from pathlib import Path

import fakeredis
import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from exporter import cli
from exporter.clock import SystemClock
from exporter.derive import DeriveConfig, Deriver
from exporter.model import NO_SLA, STALE_AFTER_INTERVALS, QueueSample, QueueSla, Sample
from exporter.settings import Settings, load_settings
from exporter.sla import NUMBER_WORDS, UNIT_SECONDS, SlaResolver, sla_from_name
from exporter.store import Store
from exporter.targets import QueueRule, build_target
from tests.support.exporter_process import ExporterProcess, Scrape
from tests.support.layouts import V7, SidekiqWriter
from tests.support.pipeline import Pipeline
from tests.support.redis_server import RedisServer
from tests.support.samples import empty_sample

REPO_ROOT = Path(__file__).resolve().parents[1]

# --- names -----------------------------------------------------------------------------------

POSITIVE = [
    # (queue name, SLA seconds, component)
    ("within_5_seconds", 5, ""),
    ("within_1_second", 1, ""),
    ("within_1_seconds", 1, ""),  # plural after 1: not policed
    ("within_5_second", 5, ""),
    ("within_1_minute", 60, ""),
    ("within_5_hours", 5 * 3600, ""),
    ("within_2_days", 2 * 86400, ""),
    ("within_1_day", 86400, ""),
    ("within_500_ms", 0.5, ""),
    ("within_250_millisecond", 0.25, ""),
    ("within_100_milliseconds", 0.1, ""),
    ("within_5_s", 5, ""),
    ("within_5_sec", 5, ""),
    ("within_5_secs", 5, ""),
    ("within_3_m", 180, ""),
    ("within_3_min", 180, ""),
    ("within_3_mins", 180, ""),
    ("within_3_minutes", 180, ""),
    ("within_2_h", 7200, ""),
    ("within_2_hour", 7200, ""),
    ("within_7_d", 7 * 86400, ""),
    ("within_90_minutes", 5400, ""),
    ("within_0005_seconds", 5, ""),  # leading zeros
    ("within_999999999_ms", 999_999.999, ""),  # the largest amount in digits
    # words
    ("within_one_minute", 60, ""),
    ("within_thirty_seconds", 30, ""),
    ("within_ten_minutes", 600, ""),
    ("within_eleven_seconds", 11, ""),
    ("within_fifteen_minutes", 900, ""),
    ("within_nineteen_seconds", 19, ""),
    ("within_twenty_seconds", 20, ""),
    ("within_forty_seconds", 40, ""),
    ("within_fifty_seconds", 50, ""),
    ("within_sixty_seconds", 60, ""),
    ("within_ninety_seconds", 90, ""),
    ("within_hundred_ms", 0.1, ""),
    ("within_one_hundred_ms", 0.1, ""),
    ("within_one-hundred_ms", 0.1, ""),
    ("within_twenty_five_seconds", 25, ""),
    ("within_twenty-five_seconds", 25, ""),
    ("within_forty_two_minutes", 42 * 60, ""),
    ("within_fifty-nine_seconds", 59, ""),
    # components
    ("billing_within_5_minutes", 300, "billing"),
    ("billing_within_five_minutes", 300, "billing"),
    ("billing_within_thirty_five_minutes", 35 * 60, "billing"),
    ("search_indexing_within_1_hour", 3600, "search_indexing"),
    ("billing-eu_within_1_minute", 60, "billing-eu"),
    ("app.billing_within_1_minute", 60, "app.billing"),
    ("a__b_within_1_minute", 60, "a__b"),  # only the part right before `within` must be set
    ("within_within_5_seconds", 5, "within"),
    ("within_1_hour_within_5_seconds", 5, "within_1_hour"),  # the final part counts
    ("low_within_twenty_within_5_seconds", 5, "low_within_twenty"),
    # case: keywords are case-insensitive, the component is kept as written
    ("WITHIN_5_SECONDS", 5, ""),
    ("Within_Five_Minutes", 300, ""),
    ("Billing_Within_5_Seconds", 5, "Billing"),
    ("BILLING_WITHIN_TWENTY-FIVE_MS", 0.025, "BILLING"),
    ("Ops_wItHiN_1_MiN", 60, "Ops"),
]

NEGATIVE = [
    "",
    "default",
    "critical",
    "within",
    "within_5",
    "within_five",  # no unit
    "within_seconds",  # no amount
    "within_5_secondsx",  # unit must be a whole part
    "within_5_seconds_",
    "within_5_seconds_v2",  # the SLA part must end the name
    "within_5_seconds2",
    "within_5s",  # unit must be its own part
    "within_5sec",
    "within5_seconds",
    "within__5_seconds",
    "within_5__seconds",
    "xwithin_5_seconds",  # `within` must be a whole part
    "billingwithin_5_seconds",
    "_within_5_seconds",  # empty component
    "billing__within_5_seconds",  # component ending in "_"
    "billing-within-5-minutes",  # only "_" separates parts
    "billing_within-5-minutes",
    "billing.within_5_minutes",
    "within_0_seconds",  # a zero SLA promises nothing
    "within_000_seconds",
    "within_-5_seconds",
    "within_+5_seconds",
    "within_1.5_hours",  # no fractions
    "within_1,5_hours",
    "within_1e3_ms",
    "within_1234567890_ms",  # more than 9 digits
    "within_" + "9" * 5000 + "_seconds",  # far more digits than int() parses by default
    "within_5_weeks",
    "within_5_hrs",
    "within_5_msec",
    "within_5_years",
    "within_zero_seconds",
    "within_seventy_seconds",  # words beyond the list
    "within_eighty_seconds",
    "within_sixty_five_seconds",  # compounds only from 21 to 59
    "within_ninety_nine_seconds",
    "within_two_hundred_seconds",
    "within_a_hundred_seconds",
    "within_twenty_ten_seconds",
    "within_five_twenty_seconds",
    "within_twenty__five_seconds",
    "within_twenty_-five_seconds",
    "within_twentyfive_seconds",
    "within_fourty_seconds",  # misspelt
    "within_five_5_seconds",
    "within_5_5_seconds",
    "within_5_seconds within_5_seconds",
    "within_5_seconds\n",
    "within_5_ seconds",
    # Unicode look-alikes never fold into a keyword or a digit.
    "within_\u0665_seconds",  # ARABIC-INDIC DIGIT FIVE
    "within_\uff15_seconds",  # FULLWIDTH DIGIT FIVE
    "within_5_\u017feconds",  # LATIN SMALL LETTER LONG S
    "within_5_\u212aays",  # KELVIN SIGN (lower() is "k")
    "w\u0130thin_5_seconds",  # LATIN CAPITAL LETTER I WITH DOT ABOVE
    "within_\u00b2_seconds",  # SUPERSCRIPT TWO (isdigit() but not a digit)
]


@pytest.mark.parametrize(("name", "seconds", "component"), POSITIVE)
def test_names_with_an_sla(name: str, seconds: float, component: str) -> None:
    parsed = sla_from_name(name)
    assert parsed is not None, name
    assert parsed[0] == pytest.approx(seconds)
    assert parsed[1] == component


@pytest.mark.parametrize("name", NEGATIVE)
def test_names_without_an_sla(name: str) -> None:
    assert sla_from_name(name) is None


def test_every_number_word_and_unit() -> None:
    assert NUMBER_WORDS["one"] == 1
    assert NUMBER_WORDS["twenty"] == 20
    assert NUMBER_WORDS["sixty"] == 60
    assert NUMBER_WORDS["ninety"] == 90
    assert NUMBER_WORDS["hundred"] == 100
    single = {w: v for w, v in NUMBER_WORDS.items() if "_" not in w and "-" not in w}
    assert sorted(single.values()) == [*range(1, 21), 30, 40, 50, 60, 90, 100]
    compounds = {v for w, v in NUMBER_WORDS.items() if "_" in w and w != "one_hundred"}
    assert compounds == set(range(21, 60)) - {30, 40, 50}
    for word, value in NUMBER_WORDS.items():
        for unit, factor in UNIT_SECONDS.items():
            for spelled in (f"q_within_{word}_{unit}", f"Q_WITHIN_{word.upper()}_{unit.upper()}"):
                assert sla_from_name(spelled) == (pytest.approx(value * factor), spelled[:1])


@given(st.text(max_size=60))
def test_any_text_parses_or_not_without_raising(text: str) -> None:
    parsed = sla_from_name(text)
    if parsed is not None:
        seconds, component = parsed
        assert math.isfinite(seconds)
        assert seconds > 0
        assert text.lower().endswith(tuple(UNIT_SECONDS))
        assert text.startswith(component)


@given(
    st.from_regex(r"[a-z][a-z0-9_.-]{0,20}[a-z0-9]", fullmatch=True),
    st.integers(min_value=1, max_value=10**6),
    st.sampled_from(sorted(UNIT_SECONDS)),
)
def test_component_amount_and_unit_round_trip(component: str, amount: int, unit: str) -> None:
    assert sla_from_name(f"{component}_within_{amount}_{unit}") == (
        pytest.approx(amount * UNIT_SECONDS[unit]),
        component,
    )


# --- config rules and precedence --------------------------------------------------------------


def rule(
    name: str | None = None, match: str | None = None, sla: float | None = None, component: str = ""
) -> QueueRule:
    return QueueRule(name, re.compile(match) if match is not None else None, sla, component)


def test_without_rules_the_name_decides() -> None:
    resolve = SlaResolver(())
    assert resolve("billing_within_5_minutes") == QueueSla(300.0, "billing", "name")
    assert resolve("within_5_seconds") == QueueSla(5.0, "", "name")
    assert resolve("default") is NO_SLA
    assert resolve("within_five") == QueueSla(None, "", "none")


def test_config_beats_name() -> None:
    resolve = SlaResolver([rule(name="billing_within_5_minutes", sla=60, component="payments")])
    assert resolve("billing_within_5_minutes") == QueueSla(60.0, "payments", "config")
    assert resolve("billing_within_1_minute") == QueueSla(60.0, "billing", "name")


def test_first_matching_rule_wins_and_regexes_match_whole_names() -> None:
    resolve = SlaResolver(
        [
            rule(name="reports_urgent", sla=60),
            rule(match="reports_.*", sla=3600, component="reporting"),
            rule(match="report", sla=1),  # full match only: never "reports_daily"
            rule(match=".*", sla=30, component="catch-all"),
        ]
    )
    assert resolve("reports_urgent") == QueueSla(60.0, "", "config")
    assert resolve("reports_daily") == QueueSla(3600.0, "reporting", "config")
    assert resolve("report") == QueueSla(1.0, "", "config")
    assert resolve("old_reports_daily") == QueueSla(30.0, "catch-all", "config")
    # A catch-all also beats names, as config always does.
    assert resolve("within_5_seconds") == QueueSla(30.0, "catch-all", "config")


def test_regexes_are_case_sensitive_unless_they_say_otherwise() -> None:
    resolve = SlaResolver([rule(match="mail.*", sla=10), rule(match="(?i)sms.*", sla=20)])
    assert resolve("mailers").source == "config"
    assert resolve("Mailers") is NO_SLA
    assert resolve("SMS_outbound") == QueueSla(20.0, "", "config")


def test_fields_a_rule_leaves_out_come_from_the_name() -> None:
    resolve = SlaResolver(
        [
            rule(match="billing_.*", component="payments"),  # component only
            rule(match="search_.*", sla=120),  # SLA only
            rule(name="legacy"),  # neither: same as no rule
            rule(match=".*", sla=1, component="never reached by the names above"),
        ]
    )
    assert resolve("billing_within_5_minutes") == QueueSla(300.0, "payments", "name")
    assert resolve("billing_batch") == QueueSla(None, "payments", "none")
    assert resolve("search_within_1_minute") == QueueSla(120.0, "search", "config")
    assert resolve("search_reindex") == QueueSla(120.0, "", "config")
    assert resolve("legacy") is NO_SLA


def test_an_sla_only_rule_can_exclude_named_queues_with_a_lookahead() -> None:
    # The documented way to give a default only to queues whose name promises nothing.
    resolve = SlaResolver([rule(match=r"(?!(?:.*_)?within_).*", sla=600)])
    assert resolve("default") == QueueSla(600.0, "", "config")
    assert resolve("billing_within_5_minutes") == QueueSla(300.0, "billing", "name")


def write_config(tmp_path: Path, text: str) -> str:
    path = tmp_path / "sla.yml"
    path.write_text(text)
    return str(path)


def test_rules_from_a_real_config_file(tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        """
queues:
  - name: default
    sla: 30s
    component: core
  - match: "billing_.*"
    component: payments
  - match: "(reports|exports)_.*"
    sla: 1h30m
""",
    )
    settings = load_settings(["--config.file", config], {}, stdout_is_tty=False)
    resolve = SlaResolver(settings.queue_rules)
    assert resolve("default") == QueueSla(30.0, "core", "config")
    assert resolve("billing_within_2_seconds") == QueueSla(2.0, "payments", "name")
    assert resolve("exports_csv") == QueueSla(5400.0, "", "config")
    assert resolve("critical") is NO_SLA


def test_the_worked_example_in_the_docs_is_right(tmp_path: Path) -> None:
    doc = (REPO_ROOT / "docs" / "queue-slas.md").read_text()
    section = doc.split("### Worked example", 1)[1].split("\n## ", 1)[0]
    config = write_config(tmp_path, section.split("```yaml\n", 1)[1].split("```", 1)[0])
    resolve = SlaResolver(
        load_settings(["--config.file", config], {}, stdout_is_tty=False).queue_rules
    )
    rows = re.findall(r"^\| `([^`]+)` \| ([^|]+) \| `([^`]*)` \| `(\w+)` \|", section, re.M)
    assert len(rows) == 10
    for queue, seconds, component, source in rows:
        expected = None if seconds.strip() == "—" else float(seconds.replace(" ", ""))
        assert resolve(queue) == QueueSla(expected, component.strip('"'), source), queue


BAD_CONFIGS = [
    ("queues: [{match: 'billing_(.*'}]", "queues[0].match: invalid regex"),
    ("queues: [{name: a, sla: soon}]", "queues[0].sla: invalid duration"),
    ("queues: [{name: a, sla: 5 minutes}]", "queues[0].sla: invalid duration"),
    ("queues: [{name: a, sla: 0s}]", "queues[0].sla: must be more than 0"),
    ("queues: [{name: a}, {name: b, match: c}]", "queues[1]: give exactly one of name or match"),
    ("queues: [{name: a, slo: 5s}]", "queues[0]: unknown key 'slo'"),
    ("queues: [{name: a, component: [x]}]", "queues[0].component: expected text"),
    ("queues: {name: a}", "queues: expected a list of mappings"),
    ("queues: [{name: a, sla: 5s}", "is not valid YAML"),
]


@pytest.mark.parametrize(("text", "reason"), BAD_CONFIGS)
def test_bad_config_exits_2_with_one_line(
    tmp_path: Path, text: str, reason: str, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, text)
    assert cli.main(["--config.file", config]) == cli.EXIT_CONFIG == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("sidekiq-exporter: error: --config.file: ")
    assert captured.err.count("\n") == 1
    assert reason in captured.err


def test_bad_config_exits_2_with_one_line_from_the_real_command(tmp_path: Path) -> None:
    config = write_config(tmp_path, "queues:\n  - match: 'billing_(.*'\n    sla: 5m\n")
    done = subprocess.run(
        [sys.executable, "-m", "exporter", "--config.file", config],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("sidekiq-exporter: error: --config.file: ")
    assert "queues[0].match: invalid regex" in lines[0]


# --- breach time with a controlled clock ------------------------------------------------------

T0 = 1_755_450_000.0


def sample(now: float, **oldest: float | None) -> Sample:
    """A sample at Redis time `now` with one queue per keyword: its oldest job's timestamp."""
    queues = tuple(
        QueueSample(name, 0 if ts is None else 1, ts, False) for name, ts in oldest.items()
    )
    return empty_sample(now, queues=queues)


def deriver(*rules: QueueRule, max_gap: float = 3.0) -> Deriver:
    config = DeriveConfig(sla_for=SlaResolver(rules), max_breach_gap_seconds=max_gap)
    return Deriver("main", config)


def test_unserved_queue_accumulates_observed_time_after_its_sla_is_crossed() -> None:
    derive = deriver()
    pushed = T0 + 0.4  # a job nobody serves, pushed after the first poll
    breach = []
    for tick in range(12):  # polls every second at T0, T0+1, ...
        oldest = pushed if T0 + tick >= pushed else None
        snap = derive(sample(T0 + tick, billing_within_2_seconds=oldest))
        breach.append(snap.sla_breach_seconds["billing_within_2_seconds"])
    # Breach began at pushed + 2 = T0 + 2.4; at T0 + 11 that is 8.6 s, exactly latency - SLA.
    assert breach[:3] == [0, 0, 0]
    assert breach[3] == pytest.approx(0.6)
    assert breach[-1] == pytest.approx(11 - 0.4 - 2)
    assert all(b2 - b1 == pytest.approx(1) for b1, b2 in itertools.pairwise(breach[3:]))


def test_nothing_counts_before_the_first_poll() -> None:
    derive = deriver()
    long_ago = T0 - 3600  # stuck for an hour when the exporter starts
    first = derive(sample(T0, billing_within_2_seconds=long_ago))
    assert first.sla_breach_seconds == {"billing_within_2_seconds": 0.0}
    for tick in range(1, 6):
        later = derive(sample(T0 + tick, billing_within_2_seconds=long_ago))
    assert later.sla_breach_seconds["billing_within_2_seconds"] == pytest.approx(5)


def test_healthy_queues_and_queues_without_sla() -> None:
    derive = deriver(rule(name="default", sla=30))
    for tick in range(10):
        now = T0 + tick
        snap = derive(
            sample(
                now,
                fast_within_2_seconds=now - 1.9,  # always just inside its SLA
                empty_within_1_second=None,
                at_limit_within_2_seconds=now - 2,  # exactly at the SLA is not a breach
                default=now - 29,
                legacy=now - 3600,  # no SLA: never counted, never listed
            )
        )
    assert snap.sla_breach_seconds == {
        "fast_within_2_seconds": 0.0,
        "empty_within_1_second": 0.0,
        "at_limit_within_2_seconds": 0.0,
        "default": 0.0,
    }
    assert snap.queue_slas["legacy"] is NO_SLA
    assert snap.queue_slas["default"] == QueueSla(30.0, "", "config")


def test_breach_intervals_add_up_and_recovery_stops_the_count() -> None:
    derive = deriver()
    times = [T0, T0 + 1, T0 + 2, T0 + 3.5, T0 + 4, T0 + 5]
    oldest = [T0 - 10, T0 - 10, T0 - 10, T0 + 3, T0 + 3, T0 - 10]  # recovers at T0+3.5
    totals = [
        derive(sample(t, q_within_2_seconds=o)).sla_breach_seconds["q_within_2_seconds"]
        for t, o in zip(times, oldest, strict=True)
    ]
    assert totals == pytest.approx([0, 1, 2, 2, 2, 3])


def test_a_missed_poll_within_the_gap_limit_still_counts_a_longer_one_does_not() -> None:
    derive = deriver(max_gap=3.0)  # 3 intervals at 1 s, as cli.build_pollers sets it
    stuck = T0 - 100
    derive(sample(T0, q_within_2_seconds=stuck))
    assert derive(sample(T0 + 3, q_within_2_seconds=stuck)).sla_breach_seconds[
        "q_within_2_seconds"
    ] == pytest.approx(3)  # two failed polls in between: gap exactly at the limit
    assert derive(sample(T0 + 7, q_within_2_seconds=stuck)).sla_breach_seconds[
        "q_within_2_seconds"
    ] == pytest.approx(3)  # 4 s unobserved: not counted
    assert derive(sample(T0 + 8, q_within_2_seconds=stuck)).sla_breach_seconds[
        "q_within_2_seconds"
    ] == pytest.approx(4)


def test_sla_is_resolved_once_per_queue_while_it_exists() -> None:
    calls: list[str] = []
    resolver = SlaResolver(())

    def counting(queue: str) -> QueueSla:
        calls.append(queue)
        return resolver(queue)

    derive = Deriver("main", DeriveConfig(sla_for=counting))
    for tick in range(5):
        derive(sample(T0 + tick, a_within_1_second=None, b=None))
    assert sorted(calls) == ["a_within_1_second", "b"]


# --- wiring and the real daemon on a real redis-server ----------------------------------------


def redis_time(client: redis.Redis) -> float:
    seconds, micros = client.time()
    return float(seconds) + micros / 1e6


def settings_with_rules(url: str, rules: tuple[QueueRule, ...]) -> Settings:
    return Settings(
        targets=(build_target(name="main", url=url),),
        poll_interval=1.0,
        poll_timeout=0.8,
        listen_host="127.0.0.1",
        listen_port=0,
        telemetry_path="/metrics",
        log_level="info",
        log_format="json",
        collect_processes=True,
        queue_rules=rules,
    )


@pytest.mark.integration
async def test_build_pollers_resolves_slas_from_config_and_names(
    redis_server: RedisServer,
) -> None:
    client = redis.Redis.from_url(redis_server.url)
    writer = SidekiqWriter(client, V7)
    now = redis_time(client)
    for queue in ("default", "billing_within_5_minutes", "critical"):
        writer.push(queue, writer.job("Job", queue, enqueued_at=now))
    client.close()
    settings = settings_with_rules(redis_server.url, (rule(name="default", sla=30, component="c"),))
    store = Store(["main"])
    async with AsyncExitStack() as stack:
        (poller,) = cli.build_pollers(
            settings, store, CollectorRegistry(auto_describe=False), SystemClock(), stack
        )
        assert await poller.poll_once()
    snapshot = store.get("main").snapshot
    assert snapshot is not None
    assert snapshot.queue_slas == {
        "default": QueueSla(30.0, "c", "config"),
        "billing_within_5_minutes": QueueSla(300.0, "billing", "name"),
        "critical": NO_SLA,
    }


async def test_every_exported_queue_gets_its_sla_wherever_its_name_came_from() -> None:
    # Sidekiq adds a name to the `queues` set only on push: a queue that processes serve (or
    # that a running job came from) and nobody pushed to yet is exported as an empty queue,
    # and its SLA, info and breach series come from its name like any other's.
    server = fakeredis.FakeServer()
    with fakeredis.FakeRedis(server=server) as sync:
        writer = SidekiqWriter(sync, V7)
        now = redis_time(sync)
        writer.push("pushed_within_1_minute", writer.job("Job", enqueued_at=now))
        writer.process("w:1:a", beat=now, queues=["reports_within_5_minutes", "default"])
        job = writer.job("Mail", "mailers_within_2_minutes")
        writer.work("w:1:a", "t1", "mailers_within_2_minutes", job, run_at=now)
    client = fakeredis.FakeAsyncRedis(server=server)
    async with Pipeline.build(["--poll.interval=1s"], client=client) as pipeline:
        assert await pipeline.poll()
        scrape = pipeline.scrape()
    slas = {
        "pushed_within_1_minute": 60,
        "reports_within_5_minutes": 300,  # served, never pushed to
        "mailers_within_2_minutes": 120,  # a job runs from it, nobody serves or pushed to it
    }
    for queue, seconds in slas.items():
        assert queue_value(scrape, "sidekiq_queue_sla_seconds", queue) == seconds
        assert queue_value(scrape, "sidekiq_queue_sla_breach_seconds_total", queue) == 0
        component = queue.split("_within_")[0]
        info = {"target": "default", "queue": queue, "component": component}
        assert scrape.value("sidekiq_queue_info", **info, sla_source="name") == 1
    assert queue_value(scrape, "sidekiq_queue_enqueued_jobs", "reports_within_5_minutes") == 0
    assert queue_value(scrape, "sidekiq_queue_workers", "reports_within_5_minutes") == 5
    assert queue_value(scrape, "sidekiq_queue_busy_workers", "mailers_within_2_minutes") == 1
    # Every queue with any per-queue series has its info series: one set of queues throughout.
    queues = set(scrape.by_label("sidekiq_queue_enqueued_jobs", "queue", target="default"))
    assert queues == set(slas) | {"default"}
    assert set(scrape.by_label("sidekiq_queue_info", "queue", target="default")) == queues


@pytest.fixture
def sync_redis(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.url)
    yield client
    client.close()


class FreshJobs:
    """Keeps one queue's oldest job younger than `max_age` from a background thread."""

    def __init__(self, url: str, queue: str, every: float = 0.25) -> None:
        self.url, self.queue, self.every = url, queue, every
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.errors: list[BaseException] = []

    def _run(self) -> None:
        client = redis.Redis.from_url(self.url)
        writer = SidekiqWriter(client, V7)
        key = writer.keys.queue(self.queue)
        try:
            while not self.stop.wait(self.every):
                writer.push(self.queue, writer.job("Fresh", self.queue, enqueued_at=time.time()))
                client.ltrim(key, 0, 0)  # LPUSH adds at the head; the tail is the oldest
        except BaseException as exc:  # surfaced by the test
            self.errors.append(exc)
        finally:
            client.close()

    def __enter__(self) -> FreshJobs:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)


def queue_value(scrape: Scrape, name: str, queue: str) -> float:
    return scrape.value(name, target="default", queue=queue)


@pytest.mark.integration
def test_daemon_counts_breach_time_of_an_unserved_queue_and_none_for_healthy_ones(
    redis_server: RedisServer, sync_redis: redis.Redis, tmp_path: Path
) -> None:
    interval = 1.0
    writer = SidekiqWriter(sync_redis, V7)
    now = redis_time(sync_redis)
    # Stuck for a minute before the exporter starts: only time after its first poll counts.
    long_ago = now - 60
    writer.push(
        "ops_within_2_seconds", writer.job("Ops", "ops_within_2_seconds", enqueued_at=long_ago)
    )
    writer.push("default", writer.job("Job", "default", enqueued_at=now))  # 30 s from config
    writer.push("legacy", writer.job("Job", "legacy", enqueued_at=now - 3600))  # no SLA
    sync_redis.sadd(writer.keys.queues, "empty_within_1_second")  # a known, empty queue
    writer.push(
        "fast_within_2_seconds", writer.job("Fresh", "fast_within_2_seconds", enqueued_at=now)
    )
    config = write_config(
        tmp_path,
        """
queues:
  - name: default
    sla: 30s
    component: core
  - match: "billing_.*"
    component: payments
""",
    )
    before_start = redis_time(sync_redis)
    with (
        FreshJobs(redis_server.url, "fast_within_2_seconds") as fresh,
        ExporterProcess(
            redis_server.url, poll_interval=f"{interval:g}s", args=["--config.file", config]
        ) as exporter,
    ):
        ready = redis_time(sync_redis)  # the first poll happened between before_start and now
        # A job nobody serves, pushed after the first poll: its whole breach is observed.
        pushed = redis_time(sync_redis)
        writer.push(
            "billing_within_2_seconds",
            writer.job("Invoice", "billing_within_2_seconds", enqueued_at=pushed),
        )
        deadline = time.monotonic() + 30
        while True:
            scrape = exporter.scrape()
            latency = scrape.get(
                "sidekiq_queue_latency_seconds",
                0.0,
                target="default",
                queue="billing_within_2_seconds",
            )
            assert queue_value(scrape, "sidekiq_queue_latency_seconds", "fast_within_2_seconds") < 2
            if latency is not None and latency >= 7:
                break
            assert time.monotonic() < deadline, exporter.log_tail()
            time.sleep(0.2)
        scraped_by = redis_time(sync_redis)
    assert not fresh.errors

    def breach(queue: str) -> float:
        return queue_value(scrape, "sidekiq_queue_sla_breach_seconds_total", queue)

    # Latency and breach come from the same snapshot (same Redis TIME): a breach observed from
    # its start is exactly latency - SLA, whatever the scrape timing.
    assert breach("billing_within_2_seconds") == pytest.approx(latency - 2, abs=1e-3)
    # ... and the snapshot is at most a few intervals old when scraped.
    observed = scraped_by - pushed - 2
    assert 0 <= observed - breach("billing_within_2_seconds") <= STALE_AFTER_INTERVALS * interval

    # Stuck before start: breach = time from the first poll to the snapshot, nothing earlier.
    ops_latency = queue_value(scrape, "sidekiq_queue_latency_seconds", "ops_within_2_seconds")
    snapshot_time = long_ago + ops_latency
    ops_breach = breach("ops_within_2_seconds")
    assert snapshot_time - ready - 1e-3 <= ops_breach <= snapshot_time - before_start + 1e-3
    assert breach("ops_within_2_seconds") < 30  # not the minute before the exporter started

    for healthy in ("fast_within_2_seconds", "empty_within_1_second", "default"):
        assert breach(healthy) == 0, healthy

    sla = scrape.by_label("sidekiq_queue_sla_seconds", "queue", target="default")
    assert sla == {
        "billing_within_2_seconds": 2,
        "ops_within_2_seconds": 2,
        "fast_within_2_seconds": 2,
        "empty_within_1_second": 1,
        "default": 30,
    }
    info = {
        dict(labels)["queue"]: (dict(labels)["component"], dict(labels)["sla_source"], value)
        for labels, value in scrape.series("sidekiq_queue_info", target="default").items()
    }
    assert info == {
        "billing_within_2_seconds": ("payments", "name", 1),
        "ops_within_2_seconds": ("ops", "name", 1),
        "fast_within_2_seconds": ("fast", "name", 1),
        "empty_within_1_second": ("empty", "name", 1),
        "default": ("core", "config", 1),
        "legacy": ("", "none", 1),
    }
    assert (
        scrape.get("sidekiq_queue_sla_breach_seconds_total", target="default", queue="legacy")
        is None
    )
    assert scrape.types["sidekiq_queue_sla_breach_seconds"] == "counter"
