"""A real rolling upgrade: Sidekiq 7.3.2 and 8.1.x processes on one Redis, at the same time.

Two 7.3.2 processes (Ruby 3.1, Debian 12) and two 8.1.x processes (Ruby 3.3, the Debian sid
root) serve the same queues; both versions' clients enqueue, so jobs pushed by one run on the
other, one queue holds jobs with float-second and integer-millisecond timestamps, and both
per-minute metric key families (7.x `j|%Y%m%d|…` + `<Class>-…` histograms, 8.x `j|%y%m%d|…` +
`h|…`) are written for the same minutes. A job scheduled by a 7.3.2 client and moved to its
queue by an 8.1 scheduler carries both units in one payload. The 7.3.2 processes have no
`concurrency` hash field (8.1.2+ writes it).

The exporter (read-only ACL user, started before any job) must equal both versions' APIs
wherever they agree, and, where they disagree, the one that is right (docs/compatibility.md,
"Rolling upgrade"): each version's API is right about its own kind of data only.
- Latency: 7.3.2's `Queue#latency` subtracts milliseconds from seconds for a queue whose
  oldest job came from 8.x (a huge negative number); 8.1's handles both units.
- Concurrency: 8.1's `ProcessSet` reads the 8.1.2+ hash field and says 0 for a 7.3.2 process;
  7.3.2's reads `info.concurrency`, which 8.1.2+ no longer writes (nil).
- Per-class metrics: each version's `Metrics::Query` reads only its own key family; the
  cluster's executions are the sum of both.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import pytest

from tests.support.conformance import (
    ALLOWED_COMMANDS,
    POLL_INTERVAL_SECONDS,
    STATS_METRICS,
    TARGET,
    ClassTotals,
    acl_log,
    assert_between,
    assert_job_class_metrics,
    process_labels,
    processes_of,
    query_totals,
    queues_of,
    quiet,
    redis_time,
    running_by_class,
    start_read_only_exporter,
    truth_time,
    wait_for_quiet_beat,
    work_of,
)
from tests.support.exporter_process import Scrape
from tests.support.redis_server import RedisServer
from tests.support.sidekiq import (
    SidekiqProcess,
    SidekiqVersion,
    enqueue,
    get_version,
    stop_all,
    truth,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.conformance]

T = TARGET
OLD, NEW = "7.3.2", "8.1"
LONG_JOB_SECONDS = 600  # outlive the scenario; TERM requeues them at teardown
TOLERANCE = POLL_INTERVAL_SECONDS + 1.0  # for ages: one poll interval plus a second


@dataclass(frozen=True)
class Spec:
    tag: str
    version: str
    queues: tuple[str, ...]
    concurrency: int


# `legacy` and `fresh`: one long job each, so both versions' processes are running one.
SPECS = (
    Spec("old-a", OLD, ("critical,2", "within_5_seconds", "default", "legacy"), 3),
    Spec("old-b", OLD, ("billing_within_5_minutes", "default"), 2),
    Spec("new-a", NEW, ("critical,2", "within_5_seconds", "default", "fresh"), 3),
    Spec("new-b", NEW, ("billing_within_5_minutes", "default", "critical"), 2),
)
SERVED = ("critical", "within_5_seconds", "billing_within_5_minutes", "default", "legacy", "fresh")
# Each client pushes this; every class runs on both versions (ten threads share the queues).
WORKLOAD: dict[str, int | str] = {
    "fast": 30,
    "medium": 3,
    "billing": 5,
    "failing": 1,
    "dead": 1,
    "slow": 1,
    "slow_seconds": LONG_JOB_SECONDS,
    "wrapped_seconds": LONG_JOB_SECONDS,
}
# ActiveJob's wrapper: only the 7.3.2 client pushes it (8.x's adapter runs the 7.x name too,
# a 7.x process cannot run 8.x's `Sidekiq::ActiveJob::Wrapper`).
OLD_ONLY = {"wrapped": 1}
HANDOFF = "handoff"  # one job: created by a 7.3.2 client, enqueued by an 8.1 scheduler


@dataclass(frozen=True)
class UpgradeRun:
    """What the mixed cluster showed: both APIs before and after one scrape."""

    versions: dict[str, SidekiqVersion]  # OLD / NEW -> the version that ran
    specs: dict[str, Spec]  # tag -> spec
    identities: dict[str, str]  # tag -> identity
    redis_version: str
    truth: dict[str, tuple[dict[str, Any], dict[str, Any]]]  # OLD / NEW -> (before, after)
    scrape: Scrape
    raw_queues: dict[str, list[dict[str, Any]]]  # SERVED queues + HANDOFF, oldest job first
    acl_log: tuple[Any, ...]
    commands: Counter[str]
    proxy_errors: tuple[str, ...]

    def before(self, version: str) -> dict[str, Any]:
        return self.truth[version][0]

    def after(self, version: str) -> dict[str, Any]:
        return self.truth[version][1]


def _fresh_minute(server: RedisServer, seconds_left: float) -> None:
    """Wait, if needed, until the current UTC minute has `seconds_left` to go.

    Both versions flush metrics on their heartbeat (every 10 s) into the minute of the flush:
    a workload started early in a minute is flushed by both within that same minute.
    """
    left = 60 - redis_time(server) % 60
    if left < seconds_left:
        time.sleep(left + 0.2)


@pytest.fixture(scope="module")
def run() -> Iterator[UpgradeRun]:
    versions = {OLD: get_version(OLD), NEW: get_version(NEW)}
    with ExitStack() as stack:
        server = stack.enter_context(RedisServer())
        watcher = start_read_only_exporter(stack, server)
        processes: dict[str, SidekiqProcess] = {}
        for spec in SPECS:
            process = SidekiqProcess(
                versions[spec.version],
                server.url,
                queues=spec.queues,
                concurrency=spec.concurrency,
                tag=spec.tag,
                # The scheduler polls about every second (app.rb), so the 8.1 processes move
                # the hand-off job soon after it is due.
                env={"SIDEKIQ_APP_POLL_AVERAGE": "1"},
            )
            stack.callback(process.cleanup)
            processes[spec.tag] = process.start()
        stack.callback(stop_all, list(processes.values()))

        _fresh_minute(server, 25)
        enqueue(versions[OLD], server.url, **WORKLOAD, **OLD_ONLY, slow_queue="legacy")
        enqueue(versions[NEW], server.url, **WORKLOAD, slow_queue="fresh")

        def settled() -> bool:
            return (
                all(server.execute("LLEN", f"queue:{q}") == 0 for q in SERVED)
                and server.execute("ZCARD", "retry") == 2
                and server.execute("ZCARD", "dead") == 2
            )

        wait_for(settled, 30, 0.1, "workload did not settle (queues drained, retry/dead)")

        # The 7.3.2 processes go quiet (their schedulers stop); a 7.3.2 client schedules a job
        # already due, which only an 8.1 scheduler can then move to its queue.
        old = [p for tag, p in processes.items() if tag.startswith("old")]
        new = [p for tag, p in processes.items() if tag.startswith("new")]
        quiet_at = quiet(server, old)
        enqueue(versions[OLD], server.url, overdue=1, overdue_queue=HANDOFF)
        wait_for(lambda: server.execute("LLEN", f"queue:{HANDOFF}") == 1, 15, 0.1, "no hand-off")
        quiet(server, new)
        # Jobs that wait: oldest from 7.3.2 in `critical`, oldest from 8.1 in `within_5_seconds`.
        enqueue(versions[OLD], server.url, critical=2)
        enqueue(versions[NEW], server.url, critical=2, within_5_seconds=2)
        enqueue(versions[OLD], server.url, within_5_seconds=2)
        wait_for_quiet_beat(processes.values(), quiet_at)

        before = {v: truth(versions[v], server.url) for v in (OLD, NEW)}
        scrape = watcher.exporter.scrape_after_polls(2)
        after = {v: truth(versions[v], server.url) for v in (OLD, NEW)}
        raw_queues = {
            q: [json.loads(j) for j in reversed(server.execute("LRANGE", f"queue:{q}", 0, -1))]
            for q in (*SERVED, HANDOFF)
        }
        watcher.exporter.stop()
        yield UpgradeRun(
            versions=versions,
            specs={s.tag: s for s in SPECS},
            identities={tag: str(p.identity) for tag, p in processes.items()},
            redis_version=server.version(),
            truth={v: (before[v], after[v]) for v in (OLD, NEW)},
            scrape=scrape,
            raw_queues=raw_queues,
            acl_log=tuple(acl_log(server)),
            commands=watcher.proxy.commands,
            proxy_errors=tuple(watcher.proxy.errors),
        )


# --- the cluster really was mixed -------------------------------------------------------------


def test_both_versions_ran_side_by_side(run: UpgradeRun) -> None:
    old, new = run.versions[OLD], run.versions[NEW]
    print(f"Sidekiq {old.version} + {new.version} on redis {run.redis_version}")
    assert run.before(OLD)["sidekiq_version"] == old.version
    assert run.before(NEW)["sidekiq_version"] == new.version
    processes = processes_of(run.before(NEW))
    assert len(processes) == 4
    for tag, identity in run.identities.items():
        p = processes[identity]
        version = run.versions[run.specs[tag].version]
        assert p["version"] == version.version
        assert p["stopping"]
        # 7.3.2 has no `concurrency` hash field, 8.1.2+ no `info.concurrency` (§5.2, §5.3).
        if version.concurrency_field:
            assert (p["concurrency_field"], p["info_concurrency"]) == (
                str(run.specs[tag].concurrency),
                None,
            )
        else:
            assert (p["concurrency_field"], p["info_concurrency"]) == (
                None,
                run.specs[tag].concurrency,
            )
    # Running jobs on both versions' processes.
    busy_by_version = Counter(
        run.specs[tag].version
        for w in work_of(run.before(NEW))
        for tag, identity in run.identities.items()
        if identity == w["process_identity"]
    )
    assert busy_by_version[OLD] >= 1, busy_by_version  # the SlowJob from `legacy`
    assert busy_by_version[NEW] >= 1, busy_by_version  # the SlowJob from `fresh`


def _unit(stamp: Any) -> str:
    return "s" if isinstance(stamp, float) else "ms"


def test_one_queue_holds_both_timestamp_units(run: UpgradeRun) -> None:
    """§2.3: a float is seconds (7.x clients), an integer milliseconds (8.x clients)."""
    units = {q: [_unit(job["enqueued_at"]) for job in jobs] for q, jobs in run.raw_queues.items()}
    assert units["critical"] == ["s", "s", "ms", "ms"]  # oldest first
    assert units["within_5_seconds"] == ["ms", "ms", "s", "s"]
    # Created by the 7.3.2 client (seconds), enqueued by the 8.1 scheduler (milliseconds).
    [handoff] = run.raw_queues[HANDOFF]
    assert (_unit(handoff["created_at"]), _unit(handoff["enqueued_at"])) == ("s", "ms")


def test_both_metric_key_families_for_the_same_minute(run: UpgradeRun) -> None:
    """Both versions flushed FastJob executions into the same minute, each into its family."""
    raw = run.before(NEW)["metrics"]["raw_minutes"] + run.before(OLD)["metrics"]["raw_minutes"]
    families: dict[str, set[str]] = {}
    for entry in raw:
        if "FastJob|p" in entry["fields"]:
            families.setdefault(entry["minute"], set()).add(entry["family"])
    assert {"7", "8"} in families.values(), families
    # And each Query saw only its own family: together they add up to everything that ran.
    old = query_totals(run.before(OLD)["metrics"])["FastJob"].executions
    new = query_totals(run.before(NEW)["metrics"])["FastJob"].executions
    assert old > 0
    assert new > 0
    assert old + new == 2 * int(WORKLOAD["fast"])


# --- where both APIs agree, the exporter equals them ------------------------------------------


def test_counters_and_set_sizes(run: UpgradeRun) -> None:
    s = run.scrape
    for version in (OLD, NEW):
        before, after = run.before(version)["stats"], run.after(version)["stats"]
        for metric, stat in STATS_METRICS.items():
            assert_between(s.value(metric, **T), before[stat], after[stat], f"{version} {metric}")
    assert s.value("sidekiq_failed_jobs_total", **T) == 4  # FailingJob, DeadJob from each


def test_running_jobs_and_busy(run: UpgradeRun) -> None:
    s = run.scrape
    for version in (OLD, NEW):
        count, oldest_before = running_by_class(work_of(run.before(version)))
        _, oldest_after = running_by_class(work_of(run.after(version)))
        exported = {
            (dict(ls)["queue"], dict(ls)["class"]): v
            for ls, v in s.series("sidekiq_running_jobs", **T).items()
        }
        assert exported == count, version
        for queue in {q for q, _ in count}:
            assert_between(
                s.value("sidekiq_queue_max_processing_time_seconds", **T, queue=queue),
                truth_time(run.before(version), "before") - oldest_before[queue],
                truth_time(run.after(version), "after") - oldest_after[queue],
                f"{version} {queue} oldest running",
                TOLERANCE,
            )
        assert_between(
            s.value("sidekiq_busy_workers", **T),
            run.before(version)["stats"]["workers_size"],
            run.after(version)["stats"]["workers_size"],
            f"{version} busy",
        )
    assert s.value("sidekiq_busy_workers", **T) == 3  # two SlowJobs, one wrapped job


# --- where they disagree, the exporter is right -------------------------------------------------


def test_queue_latency_equals_the_api_that_reads_both_units(run: UpgradeRun) -> None:
    """8.1's latency is right for every queue; 7.3.2's only where the oldest job is 7.x's."""
    s = run.scrape
    new_before, new_after = queues_of(run.before(NEW)), queues_of(run.after(NEW))
    old_before, old_after = queues_of(run.before(OLD)), queues_of(run.after(OLD))
    assert set(s.by_label("sidekiq_queue_enqueued_jobs", "queue")) == set(new_before)
    for name, q in new_before.items():
        latency = s.value("sidekiq_queue_latency_seconds", **T, queue=name)
        assert_between(latency, q["latency"], new_after[name]["latency"], name, TOLERANCE)
        size = s.value("sidekiq_queue_enqueued_jobs", **T, queue=name)
        assert size == q["size"] == old_before[name]["size"]
        oldest = (run.raw_queues.get(name) or [{}])[0].get("enqueued_at")
        if isinstance(oldest, int):
            # 7.3.2 computes now_s − milliseconds: about −1.7e12 "seconds".
            assert old_before[name]["latency"] < -1e9, name
        else:
            old = (old_before[name]["latency"], old_after[name]["latency"])
            assert_between(latency, *old, f"7.3.2 {name}", TOLERANCE)
    for name in ("critical", "within_5_seconds", HANDOFF):
        assert s.value("sidekiq_queue_latency_seconds", **T, queue=name) > 0.5


def test_concurrency_of_every_process(run: UpgradeRun) -> None:
    """Each API under-counts the other version's processes; the exporter counts all."""
    s = run.scrape
    new, old = processes_of(run.before(NEW)), processes_of(run.before(OLD))
    for tag, identity in run.identities.items():
        spec = run.specs[tag]
        labels = process_labels(new[identity])
        assert s.value("sidekiq_process_concurrency", **labels) == spec.concurrency, tag
        if spec.version == OLD:
            assert new[identity]["concurrency"] == 0  # 8.1: HMGET concurrency → nil.to_i
            assert old[identity]["concurrency"] == spec.concurrency
        else:
            assert new[identity]["concurrency"] == spec.concurrency
            assert old[identity]["concurrency"] is None  # 7.3.2: info["concurrency"]
    total = sum(spec.concurrency for spec in SPECS)
    assert s.value("sidekiq_workers", **T) == total
    by_version = {v: sum(x.concurrency for x in SPECS if x.version == v) for v in (OLD, NEW)}
    assert run.before(NEW)["process_set"]["total_concurrency"] == by_version[NEW]
    assert run.before(OLD)["process_set"]["total_concurrency"] == by_version[OLD]
    # Capacity per queue: threads of the processes (of either version) serving it that are
    # not quiet or stopping (`Process#stopping?`, which both APIs agree on).
    threads: Counter[str] = Counter()
    for spec in SPECS:
        if new[run.identities[spec.tag]]["stopping"]:
            continue
        for queue in {q.split(",")[0] for q in spec.queues}:
            threads[queue] += spec.concurrency
    assert {p["stopping"] for p in new.values()} == {p["stopping"] for p in old.values()}
    for queue in SERVED:
        assert s.value("sidekiq_queue_workers", **T, queue=queue) == threads[queue], queue


def test_job_class_metrics_are_the_sum_of_both_queries(run: UpgradeRun) -> None:
    """Executions, failures, time and every histogram bucket: 7.3.2's Query + 8.1's Query."""
    expected: dict[str, ClassTotals] = {}
    for version in (OLD, NEW):
        metrics = run.before(version)["metrics"]
        assert metrics["available"], metrics
        assert run.after(version)["metrics"]["top_jobs"] == metrics["top_jobs"]  # still
        for klass, totals in query_totals(metrics).items():
            expected.setdefault(klass, ClassTotals()).add(totals)
    assert {"FastJob", "MediumJob", "Billing::InvoiceJob", "FailingJob", "DeadJob"} <= set(expected)
    assert_job_class_metrics(run.scrape, expected)


def test_read_only_and_nothing_skipped(run: UpgradeRun) -> None:
    assert run.acl_log == (), f"ACL LOG recorded denials: {run.acl_log}"
    assert not run.proxy_errors
    sent = set(run.commands)
    assert sent <= ALLOWED_COMMANDS, sorted(sent - ALLOWED_COMMANDS)
    s = run.scrape
    assert s.value("sidekiq_up", **T) == 1
    assert s.total("sidekiq_exporter_skipped_items_total") == 0
    assert s.value("sidekiq_exporter_redis_round_trips", **T) == 2
