"""Conformance: the exporter's /metrics equal what Sidekiq's own Ruby API says.

For each of Sidekiq 6.4.1, 7.3.2 and 8.1.x on Redis 7.0, and for the newest (8.1.x) also on
Redis 8 and Valkey 9 (`RUNS`), `tests/support/conformance.py` runs one scenario (a real
server, two real Sidekiq processes doing real jobs, then quiet, and a third that stays awake),
reads Sidekiq's API
(`tests/sidekiq_app/truth.rb`) before and after one scrape of the real exporter daemon, which
runs as a read-only Redis ACL user. Every check here requires the exporter's value to lie
between the two truths; ages may be off by one poll interval plus a second.

Where Sidekiq's API has no figure or a different one, the test says why ours is right:
- `Stats#processes_size` (and on 7.x `ProcessSet#size`) is `SCARD processes`, stale members
  included; `sidekiq_processes` counts live processes (hash exists), as `ProcessSet#each` does.
- Sidekiq has no per-queue busy figure; estimating one from process totals (Σ busy of the
  processes serving the queue) is wrong whenever a process serves several queues. We count
  the work hashes by queue, exactly what `WorkSet` lists.
- Capacity per queue is not in the API either: it is Σ concurrency of the live processes
  whose `queues` include it and that are not quiet or stopping (`Process#stopping?`: they
  fetch nothing), which is what the test computes from `ProcessSet`.
- Ages use Redis `TIME` where the API uses the reader's clock (the same host here).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.conformance import (
    ALLOWED_COMMANDS,
    AWAKE_QUEUE,
    EXPORTER_ACL_COMMANDS,
    EXPORTER_USER,
    ORPHAN_QUEUE,
    SERVED_QUEUES,
    STATS_METRICS,
    TARGET,
    ConformanceRun,
    assert_between,
    assert_job_class_metrics,
    process_labels,
    processes_of,
    query_totals,
    queues_of,
    run_scenario,
    running_by_class,
    truth_time,
    work_of,
)
from tests.support.exporter_process import MetricNotFoundError, Scrape, labels_of
from tests.support.families import ALL_FAMILIES, CRON_JOB_FAMILIES, JOB_CLASS_FAMILIES
from tests.support.redis_server import REDIS_7_0, SERVERS, encode_command
from tests.support.resp_proxy import RespCommandParser, command_name
from tests.support.sidekiq import VERSIONS

pytestmark = [pytest.mark.integration, pytest.mark.conformance]

T = TARGET

# Every family of issue 2 that this scenario must produce (sample names as exposed): all of them
# but the per-class job families (Sidekiq 7+ only, checked on their own below), the per-cron-job
# families (where sidekiq-cron runs: 6.4.1 here), the queue SLA families (tested in
# tests/test_sla.py), Sidekiq Enterprise's leader and the skipped-items counter (nothing is
# skipped here).
FAMILIES = (
    ALL_FAMILIES
    - JOB_CLASS_FAMILIES
    - CRON_JOB_FAMILIES
    - {
        "sidekiq_queue_info",
        "sidekiq_queue_sla_seconds",
        "sidekiq_queue_sla_breach_seconds_total",
        "sidekiq_leader_info",
        "sidekiq_exporter_skipped_items_total",
    }
)


# Every Sidekiq on Debian 12's Redis 7.0; the newest also on every other server (the matrix).
NEWEST = "8.1"
RUNS = [(version, REDIS_7_0.name) for version in VERSIONS] + [
    (NEWEST, server) for server in SERVERS if server != REDIS_7_0.name
]


@pytest.fixture(scope="module", params=RUNS, ids=[f"{v}-{s}" for v, s in RUNS])
def run(request: pytest.FixtureRequest) -> ConformanceRun:
    """One scenario per (Sidekiq version, server), shared by every check of this module."""
    version, server = request.param
    return run_scenario(version, server)


# --- helpers ----------------------------------------------------------------------------------


def capacity_of(truth: dict[str, Any]) -> tuple[Counter[str], Counter[str]]:
    """(threads, processes) fetching from each queue, from ProcessSet's `queues`,
    `concurrency` and `stopping?` (a quiet or stopping process fetches nothing)."""
    threads: Counter[str] = Counter()
    listeners: Counter[str] = Counter()
    for process in truth["processes"]:
        if process["stopping"]:
            continue
        for queue in set(process["queues"]):
            threads[queue] += int(process["concurrency"])
            listeners[queue] += 1
    return threads, listeners


def overdue_scores(truth: dict[str, Any], set_name: str, at: float) -> list[float]:
    entries = truth[set_name]["entries"]
    assert len(entries) == truth[set_name]["size"], "truth.rb lists at most 200 entries"
    return [float(e["score"]) for e in entries if float(e["score"]) <= at]


# --- the scenario did what it claims (guards against passing on an empty cluster) --------------


def test_scenario_exercised_every_case(run: ConformanceRun) -> None:
    before, after = run.truth_before, run.truth_after
    print(
        f"Sidekiq {before['sidekiq_version']} (Ruby {before['ruby_version']}, "
        f"{before['client_library']}) on {run.server.name} {run.redis_version}"
    )
    assert before["sidekiq_version"] == run.version.version
    assert sorted(p["tag"] for p in before["processes"]) == sorted(run.specs)
    stopping = {p["tag"]: p["stopping"] for p in before["processes"]}
    assert stopping == {"alpha": True, "beta": True, "gamma": False}, "alpha and beta are quiet"
    classes = {(w["queue"], w["display_class"]) for w in work_of(before)}
    assert classes == {
        ("default", "SlowJob"),
        ("default", "WrappedMailerJob"),  # pushed as JobWrapper with "wrapped"
        ("billing_within_5_minutes", "Billing::InvoiceJob"),
    }
    wrapper = (
        "Sidekiq::ActiveJob::Wrapper"  # renamed in 8.0
        if run.version.major >= 8
        else "ActiveJob::QueueAdapters::SidekiqAdapter::JobWrapper"
    )
    assert any(w["raw_class"] == wrapper for w in work_of(before))
    sizes = {name: q["size"] for name, q in queues_of(before).items()}
    assert sizes == {
        "critical": 3,
        "within_5_seconds": 2,
        "billing_within_5_minutes": 0,
        "default": 0,
        ORPHAN_QUEUE: 3,
    }
    assert queues_of(before)[ORPHAN_QUEUE]["latency"] > 1.0
    assert before["retry"]["size"] == 2
    assert before["dead"]["size"] == 2
    assert before["scheduled"]["size"] == 5  # four an hour out, one overdue
    assert run.stale_member_at_scrape
    assert run.processes_scard_at_scrape == 4
    # The cluster stood still between the two truths (what makes "between" meaningful).
    for key in ("processed", "failed", "enqueued", "scheduled_size", "retry_size", "dead_size"):
        assert before["stats"][key] == after["stats"][key], key
    assert before["stats"]["failed"] == 4  # FailingJob x2, DeadJob x2
    if run.version.has_cron:
        # sidekiq-cron 1.8.0 ticked (and its keys sat in Redis while the exporter read it).
        assert run.cron is not None
        assert run.cron["last_enqueue_time"].endswith("+0000")


# --- global counters and sets -----------------------------------------------------------------


def test_counters_and_set_sizes(run: ConformanceRun) -> None:
    s, before, after = run.scrape, run.truth_before["stats"], run.truth_after["stats"]
    for metric, stat in STATS_METRICS.items():
        assert_between(s.value(metric, **T), before[stat], after[stat], metric)


def test_scheduled_overdue_and_lag(run: ConformanceRun) -> None:
    """Sidekiq has no overdue figure; the truth's set entries (score ≤ now) give it."""
    s, before, after = run.scrape, run.truth_before, run.truth_after
    for set_name in ("schedule", "retry"):
        key = "scheduled" if set_name == "schedule" else "retry"
        due_before = overdue_scores(before, key, truth_time(before, "before"))
        due_after = overdue_scores(after, key, truth_time(after, "after"))
        overdue = s.value("sidekiq_scheduled_overdue_jobs", **T, set=set_name)
        assert_between(overdue, len(due_before), len(due_after), f"{set_name} overdue")
        lag = s.value("sidekiq_scheduled_lag_seconds", **T, set=set_name)
        lag_before = truth_time(before, "before") - min(due_before) if due_before else 0.0
        lag_after = truth_time(after, "after") - min(due_after) if due_after else 0.0
        assert_between(lag, lag_before, lag_after, f"{set_name} lag", run.tolerance)
    assert s.value("sidekiq_scheduled_overdue_jobs", **T, set="schedule") == 1
    assert s.value("sidekiq_scheduled_lag_seconds", **T, set="schedule") > 20  # 30 s overdue


# --- queues -----------------------------------------------------------------------------------


def test_queue_size_latency_paused(run: ConformanceRun) -> None:
    s = run.scrape
    before, after = queues_of(run.truth_before), queues_of(run.truth_after)
    # Sidekiq's queues, and gamma's: served, never pushed to (below).
    assert set(s.by_label("sidekiq_queue_enqueued_jobs", "queue")) == set(before) | {AWAKE_QUEUE}
    for name, q in before.items():
        labels = {**T, "queue": name}
        assert_between(
            s.value("sidekiq_queue_enqueued_jobs", **labels), q["size"], after[name]["size"], name
        )
        assert_between(
            s.value("sidekiq_queue_latency_seconds", **labels),
            q["latency"],
            after[name]["latency"],
            f"{name} latency",
            run.tolerance,
        )
        # OSS Queue#paused? is always false (Pro overrides it); no `paused` set exists here.
        assert s.value("sidekiq_queue_paused", **labels) == int(q["paused"]) == 0
    # Not vacuous: the waiting queues really have an age, the drained ones none.
    assert s.value("sidekiq_queue_latency_seconds", **T, queue=ORPHAN_QUEUE) > 1.0
    assert s.value("sidekiq_queue_latency_seconds", **T, queue="default") == 0.0


def test_payload_timestamp_units(run: ConformanceRun) -> None:
    """8.0+ writes payload timestamps as integer milliseconds, earlier versions float seconds.

    The latencies and ages compared above are equal either way; this checks that the run
    really had the unit it claims (§2.3), and that `run_at` stayed integer seconds (§5.6).
    """
    unit = int if run.version.millisecond_timestamps else float
    waiting = [q for q in queues_of(run.truth_before).values() if q["size"]]
    assert waiting
    running = work_of(run.truth_before)
    for stamp in [q["oldest_enqueued_at"] for q in waiting] + [w["enqueued_at"] for w in running]:
        assert isinstance(stamp, unit), stamp
        # Milliseconds are ~1.7e12 today, seconds ~1.7e9.
        assert (stamp > 1e11) is run.version.millisecond_timestamps, stamp
    assert all(isinstance(w["created_at"], unit) for w in running)
    assert all(isinstance(w["run_at"], int) and w["run_at"] < 1e11 for w in running)


# --- processes --------------------------------------------------------------------------------


def test_live_processes_ignore_stale_member(run: ConformanceRun) -> None:
    """The stale `processes` member (no hash) was in the set during the scrape, uncounted.

    Sidekiq's own `Stats#processes_size` is `SCARD processes` and counts it: 3 for 2 live
    processes. `ProcessSet#each` skips it, and so do we.
    """
    s, before, after = run.scrape, run.truth_before, run.truth_after
    assert run.stale_member_at_scrape
    assert run.processes_scard_at_scrape == 4
    assert before["stats"]["processes_size"] == 4  # Sidekiq's API inflation, documented
    # ProcessSet#size: 6.4.1's ProcessSet.new cleans first (SREM) and the size is 3. 7.x's
    # size is SCARD too, and its cleanup runs at most once a minute (SET process_cleanup NX
    # EX 60, taken by a server's scheduler before it went quiet): the stale member counts.
    assert before["process_set"]["size"] == (3 if run.version.version.startswith("6.") else 4)
    live = s.value("sidekiq_processes", **T)
    assert_between(live, len(before["processes"]), len(after["processes"]), "live processes")
    assert live == 3  # quiet ones included: a process total, as Sidekiq's own
    identities = {dict(ls)["identity"] for ls in s.series("sidekiq_process_busy_workers")}
    assert identities == set(run.identities.values())
    assert run.stale_identity not in identities


def test_total_busy_and_concurrency(run: ConformanceRun) -> None:
    s, before, after = run.scrape, run.truth_before, run.truth_after
    assert_between(
        s.value("sidekiq_busy_workers", **T),
        before["stats"]["workers_size"],
        after["stats"]["workers_size"],
        "total busy (Stats#workers_size)",
    )
    assert s.value("sidekiq_busy_workers", **T) == len(work_of(before)) == 4
    total = sum(p["concurrency"] for p in before["processes"])
    assert total == sum(spec.concurrency for spec in run.specs.values())
    if before["process_set"]["total_concurrency"] is not None:  # ProcessSet#total_concurrency
        assert total == before["process_set"]["total_concurrency"]
    assert s.value("sidekiq_workers", **T) == total


def test_per_process_series(run: ConformanceRun) -> None:
    """Busy, concurrency, quiet, RSS, RTT, heartbeat, start time and version, per process.

    Beat-bound values (RSS, RTT, busy) change at each heartbeat, so the exporter's snapshot
    must match, exactly, the truth whose `beat` it shows; if a beat fell between the two
    truths and the exporter saw a third one, only the range is checked.
    """
    s = run.scrape
    before, after = processes_of(run.truth_before), processes_of(run.truth_after)
    assert set(before) == set(after) == set(run.identities.values())
    for identity, p1 in before.items():
        p2 = after[identity]
        labels = process_labels(p1)
        beat = s.value("sidekiq_process_heartbeat_timestamp_seconds", **labels)
        assert_between(beat, p1["beat"], p2["beat"], f"{identity} beat")
        source = next((p for p in (p1, p2) if math.isclose(p["beat"], beat, abs_tol=1e-6)), None)
        values: dict[str, Callable[[dict[str, Any]], float]] = {
            "sidekiq_process_busy_workers": lambda p: p["busy"],
            "sidekiq_process_memory_rss_bytes": lambda p: p["rss"] * 1024,  # KiB in Redis
            "sidekiq_process_redis_rtt_seconds": lambda p: p["rtt_us"] / 1e6,  # µs in Redis
        }
        for metric, of in values.items():
            actual = s.value(metric, **labels)
            if source is not None:
                assert actual == pytest.approx(of(source), rel=1e-9), f"{identity} {metric}"
            else:
                assert_between(actual, of(p1), of(p2), f"{identity} {metric}")
        assert s.value("sidekiq_process_concurrency", **labels) == p1["concurrency"]
        spec = run.specs[p1["tag"]]
        assert p1["concurrency"] == spec.concurrency
        # 8.1.2+ keeps it in a process-hash field, earlier versions in `info` (§5.2, §5.3).
        stored = (p1["concurrency_field"], p1["info_concurrency"])
        if run.version.concurrency_field:
            assert stored == (str(spec.concurrency), None)
        else:
            assert stored == (None, spec.concurrency)
        assert s.value("sidekiq_process_quiet", **labels) == int(spec.quiet)
        assert p1["quiet"] == p2["quiet"] == ("true" if spec.quiet else "false")
        assert s.value("sidekiq_process_start_time_seconds", **labels) == pytest.approx(
            p1["started_at"], abs=1e-6
        )
        # 6.4.1 has no `version` in `info` (7.0.2+ does): the label is empty, not made up.
        version = p1["version"] or ""
        assert version == ("" if run.version.version.startswith("6.") else run.version.version)
        assert s.value("sidekiq_process_info", **labels, version=version) == 1
        assert s.value("sidekiq_process_busy_workers", **labels) == sum(
            1 for w in work_of(run.truth_before) if w["process_identity"] == identity
        )


# --- running work -----------------------------------------------------------------------------


def test_running_jobs_by_queue_and_class(run: ConformanceRun) -> None:
    s, before, after = run.scrape, run.truth_before, run.truth_after
    count_before, oldest_before = running_by_class(work_of(before))
    count_after, oldest_after = running_by_class(work_of(after))
    assert count_before == count_after
    exported = {
        (dict(ls)["queue"], dict(ls)["class"]): v
        for ls, v in s.series("sidekiq_running_jobs", **T).items()
    }
    assert exported == count_before
    for (queue, klass), _ in count_before.items():
        age = s.value("sidekiq_running_job_max_age_seconds", **T, queue=queue, **{"class": klass})
        assert_between(
            age,
            truth_time(before, "before") - oldest_before[(queue, klass)],
            truth_time(after, "after") - oldest_after[(queue, klass)],
            f"oldest running {queue}/{klass}",
            run.tolerance,
        )
        assert age > 1.0  # the long jobs started before quiet, seconds ago


def test_queue_busy_oldest_running_and_capacity(run: ConformanceRun) -> None:
    s, before, after = run.scrape, run.truth_before, run.truth_after
    busy = Counter(w["queue"] for w in work_of(before))
    _, oldest_before = running_by_class(work_of(before))
    _, oldest_after = running_by_class(work_of(after))
    threads, listeners = capacity_of(before)
    assert capacity_of(after) == (threads, listeners)
    queues = set(s.by_label("sidekiq_queue_busy_workers", "queue"))
    # Every queue a live process serves is exported, quiet or not; only capacity differs.
    served = {q for p in before["processes"] for q in p["queues"]}
    assert queues == set(queues_of(before)) | served
    for queue in queues:
        labels = {**T, "queue": queue}
        assert s.value("sidekiq_queue_busy_workers", **labels) == busy.get(queue, 0), queue
        age = s.value("sidekiq_queue_max_processing_time_seconds", **labels)
        if queue in oldest_before:
            assert_between(
                age,
                truth_time(before, "before") - oldest_before[queue],
                truth_time(after, "after") - oldest_after[queue],
                f"{queue} oldest running",
                run.tolerance,
            )
        else:
            assert age == 0.0, queue
        assert s.value("sidekiq_queue_workers", **labels) == threads.get(queue, 0), queue
        assert s.value("sidekiq_queue_processes", **labels) == listeners.get(queue, 0), queue
    # alpha (4 threads) and beta (3) serve critical, default, within_5_seconds and billing,
    # but both are quiet: jobs waiting there have no thread to take them. gamma (2, awake)
    # serves reports only; nobody orphan_queue.
    assert dict(threads) == {AWAKE_QUEUE: 2}
    assert dict(listeners) == {AWAKE_QUEUE: 1}
    assert served == set(SERVED_QUEUES) | {AWAKE_QUEUE}
    assert s.value("sidekiq_queue_workers", **T, queue="critical") == 0
    assert s.value("sidekiq_queue_workers", **T, queue=ORPHAN_QUEUE) == 0
    # The totals keep counting every live process, the quiet ones too.
    assert s.value("sidekiq_workers", **T) == sum(p["concurrency"] for p in before["processes"])


def test_queue_only_served_has_its_sla_from_its_name(run: ConformanceRun) -> None:
    """gamma's queue is in no `queues` set (Sidekiq adds a name there on push): exported as an
    empty queue all the same, with its SLA, info and breach series from its name."""
    s = run.scrape
    assert AWAKE_QUEUE not in queues_of(run.truth_before)
    labels = {**T, "queue": AWAKE_QUEUE}
    assert s.value("sidekiq_queue_enqueued_jobs", **labels) == 0
    assert s.value("sidekiq_queue_sla_seconds", **labels) == 300
    assert s.value("sidekiq_queue_sla_breach_seconds_total", **labels) == 0
    info = {**labels, "component": "reports", "sla_source": "name"}
    assert s.value("sidekiq_queue_info", **info) == 1


def test_per_queue_busy_from_process_totals_would_be_wrong(run: ConformanceRun) -> None:
    """Why per-queue busy comes from the work hashes, not from process totals.

    An estimate that gives each queue the busy count of every process serving it (what an
    exporter without the work hashes can do) counts beta's billing job under `default` and
    `critical` as well. WorkSet shows no critical job running; the exporter agrees.
    """
    s, before = run.scrape, run.truth_before
    estimate: Counter[str] = Counter()
    for process in before["processes"]:
        for queue in set(process["queues"]):
            estimate[queue] += process["busy"]
    exact = Counter(w["queue"] for w in work_of(before))
    exported = {q: int(v) for q, v in s.by_label("sidekiq_queue_busy_workers", "queue").items()}
    assert estimate["critical"] > 0 == exact["critical"] == exported["critical"]
    assert any(estimate[q] != exact[q] for q in SERVED_QUEUES)
    assert {q: v for q, v in exported.items() if v} == dict(exact)


# --- per-class execution metrics (Sidekiq 7: Sidekiq::Metrics::Query; issue 4 goes further) ---


def test_job_class_metrics_match_metrics_query(run: ConformanceRun) -> None:
    s = run.scrape
    names = s.names
    if not run.version.has_metrics:
        # Sidekiq 6.4 keeps no execution metrics: no per-class family, rather than zeros.
        assert not names & JOB_CLASS_FAMILIES
        return
    assert names >= JOB_CLASS_FAMILIES
    metrics = run.truth_before["metrics"]
    assert metrics["available"], metrics
    assert run.truth_after["metrics"]["top_jobs"] == metrics["top_jobs"]  # flushed, still
    expected = query_totals(metrics)
    assert {"FastJob", "MediumJob", "Billing::InvoiceJob", "FailingJob", "DeadJob"} <= set(expected)
    assert_job_class_metrics(s, expected)


# --- read-only, families, lifecycle -----------------------------------------------------------


def test_read_only_as_acl_user(run: ConformanceRun) -> None:
    """Run as a user allowed only §11's read commands: nothing denied, nothing else sent."""
    # The rule really bites: the deliberate writes were denied and logged before the run.
    assert {(e["username"], e["reason"]) for e in run.acl_selfcheck} == {(EXPORTER_USER, "command")}
    assert "%R~*" in run.acl_rule
    assert "-@all" in run.acl_rule
    assert run.acl_log == (), f"ACL LOG recorded denials: {run.acl_log}"
    assert run.exporter_clients_as_acl_user >= 1
    assert not run.proxy_errors
    sent = set(run.exporter_commands)
    assert sent <= ALLOWED_COMMANDS, f"sent outside §11: {sorted(sent - ALLOWED_COMMANDS)}"
    # On connect only AUTH: no HELLO (RESP3), no CLIENT SETINFO / SETNAME / MAINT_NOTIFICATIONS.
    assert run.exporter_commands["AUTH"] >= 1
    assert not {c for c in sent if c.startswith(("HELLO", "CLIENT"))}
    assert {"TIME", "SSCAN", "LLEN", "LINDEX", "HMGET", "HGETALL"} <= sent


def test_every_family_produced(run: ConformanceRun) -> None:
    s: Scrape = run.scrape
    missing = FAMILIES - s.names
    assert not missing, f"families missing: {sorted(missing)}"
    # sidekiq-cron 1.8.0's jobs (one with a time zone) fired: every per-job family is there.
    assert (s.names >= CRON_JOB_FAMILIES) is run.version.has_cron
    assert s.value("sidekiq_up", **T) == 1
    assert s.value("sidekiq_exporter_redis_round_trips", **T) == 2
    assert s.value("sidekiq_exporter_polls_total", **T, result="error") == 0
    # Nothing in a real Sidekiq's Redis (cron hashes, zsets and lists included) is skipped,
    # and sidekiq-cron's lines (a zone suffix among them) all evaluate.
    assert s.total("sidekiq_exporter_skipped_items_total") == 0
    assert s.types["sidekiq_processed_jobs"] == "counter"


def test_clean_shutdown(run: ConformanceRun) -> None:
    assert run.exporter_stop_seconds < 5.0
    events = [e.get("event") for e in run.exporter_log_events]
    assert events[-1] == "exporter_stopped", events[-5:]
    errors = [e for e in run.exporter_log_events if e.get("level") in {"error", "critical"}]
    assert not errors


# --- the helpers this suite relies on -----------------------------------------------------------


def test_acl_line_is_the_one_documented_in_redis_layout() -> None:
    """The rule granted above is, word for word, the line of docs/redis-layout.md §11."""
    doc = (Path(__file__).resolve().parents[1] / "docs" / "redis-layout.md").read_text()
    section = doc.split("## 11. ", 1)[1].split("\n## 12. ", 1)[0]
    words = section.split("```", 2)[1].replace("\\\n", " ").split()
    assert words[:5] == ["ACL", "SETUSER", EXPORTER_USER, "on", ">CHANGE_ME"]
    assert words[5:9] == ["resetkeys", "%R~*", "resetchannels", "-@all"]
    assert tuple(words[9:]) == EXPORTER_ACL_COMMANDS


def test_resp_parser_handles_split_and_pipelined_requests() -> None:
    parser = RespCommandParser()
    wire = encode_command(["AUTH", "user", "secret"]) + encode_command(["CLIENT", "SETINFO", "x"])
    wire += encode_command(["HGETALL", "a\r\nb"]) + b"PING\r\n"
    seen: list[list[bytes]] = []
    for i in range(len(wire)):  # one byte at a time: every split point
        seen += parser.feed(wire[i : i + 1])
    assert [command_name(c) for c in seen] == ["AUTH", "CLIENT|SETINFO", "HGETALL", "PING"]
    assert seen[2] == [b"HGETALL", b"a\r\nb"]


def test_scrape_parse_keys_by_sample_name_and_labels() -> None:
    text = (
        "# HELP sidekiq_processed_jobs_total Jobs.\n"
        "# TYPE sidekiq_processed_jobs_total counter\n"
        'sidekiq_processed_jobs_total{target="a"} 3.0\n'
        "# HELP sidekiq_queue_enqueued_jobs Size.\n"
        "# TYPE sidekiq_queue_enqueued_jobs gauge\n"
        'sidekiq_queue_enqueued_jobs{queue="q1",target="a"} 1.0\n'
        'sidekiq_queue_enqueued_jobs{queue="q2",target="a"} 2.0\n'
    )
    s = Scrape.parse(text)
    assert s.samples[("sidekiq_processed_jobs_total", labels_of(target="a"))] == 3
    assert s.types["sidekiq_processed_jobs"] == "counter"
    assert s.by_label("sidekiq_queue_enqueued_jobs", "queue", target="a") == {"q1": 1, "q2": 2}
    assert s.total("sidekiq_queue_enqueued_jobs") == 3
    assert s.get("sidekiq_queue_enqueued_jobs", queue="q3", target="a") is None
    with pytest.raises(MetricNotFoundError, match="q1"):
        s.value("sidekiq_queue_enqueued_jobs", queue="q3", target="a")
