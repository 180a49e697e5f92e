"""The conformance scenario: real Sidekiq processes, the real exporter, Sidekiq's own API.

`run_scenario(version, server)` builds one frozen picture of a small Sidekiq cluster and
returns everything the checks in tests/test_conformance.py compare:

1. a Redis (`server`: Debian 12's redis-server 7.0, or Redis 8 or Valkey 9 from the sid root)
   with a read-only ACL user for the exporter (`EXPORTER_ACL_COMMANDS`, the
   docs/redis-layout.md §11 line), checked to deny and log a write first;
2. the exporter daemon, as that user, through a proxy that records every command it sends;
3. three Sidekiq processes (different tags, concurrencies and queue lists; on 6.4.1 one also
   runs sidekiq-cron), the workload of tests/sidekiq_app/enqueue.rb with long jobs that keep
   two of them busy, and — once every served queue has drained — TSTP to those two (quiet: no
   new fetches, the scheduler stops, running jobs go on), jobs pushed after that (they wait),
   one more heartbeat so Redis holds the quiet state. The third stays awake, without a
   scheduler, serving only a queue nobody pushes to;
4. a stale `processes` member (no hash), truth → a scrape from a poll that began after it →
   truth again, then SIGTERM to the exporter (exit 0 within 5 s) and the ACL log.

Every wait is bounded; every process is reaped on the way out, also after a failure.
"""

from __future__ import annotations

import itertools
import secrets
import time
from collections import Counter
from collections.abc import Iterable
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import pytest

from .exporter_process import ExporterProcess, Scrape
from .redis_server import REDIS_7_0, SERVERS, RedisServer, RespConnection, RespError, ServerKind
from .resp_proxy import RecordingProxy
from .sidekiq import (
    SidekiqProcess,
    SidekiqVersion,
    enqueue,
    get_version,
    load_cron,
    stop_all,
    truth,
    wait_for,
)

POLL_INTERVAL_SECONDS = 1.0
EXPORTER_USER = "sidekiq_exporter"

# The read commands of docs/redis-layout.md §11, verbatim. `%R~*` (Redis 7.0+) lets
# the user read every key and write none; `-@all` then grants only these commands.
EXPORTER_ACL_COMMANDS: tuple[str, ...] = (
    "+ping", "+time", "+info", "+select", "+client|setname",
    "+sscan", "+smembers", "+scard", "+sismember", "+scan", "+exists", "+type", "+ttl",
    "+llen", "+lindex", "+lrange", "+get", "+mget",
    "+zcard", "+zcount", "+zrange",
    "+hget", "+hmget", "+hgetall", "+hlen",
)  # fmt: skip
# What the exporter may send at all: the grants above plus AUTH, which needs no grant.
ALLOWED_COMMANDS = frozenset({c[1:].upper() for c in EXPORTER_ACL_COMMANDS} | {"AUTH"})

# Queues: who serves what. orphan_queue is pushed to but served by nobody.
SERVED_QUEUES = ("critical", "within_5_seconds", "billing_within_5_minutes", "default")
ORPHAN_QUEUE = "orphan_queue"
AWAKE_QUEUE = "reports_within_5_minutes"  # served by the one process that stays awake
LONG_JOB_SECONDS = 600  # long jobs outlive the scenario; TERM requeues them at teardown


@dataclass(frozen=True)
class ProcessSpec:
    tag: str
    queues: tuple[str, ...]  # as given to `-q` (6.x expands `name,weight`)
    concurrency: int
    cron: bool = False
    # Quiet before the truths (TSTP). One that stays awake runs no scheduler, which would move
    # the overdue scheduled job (and on 6.4.1 prune the stale member) during the comparison.
    quiet: bool = True


PROCESS_SPECS = (
    ProcessSpec("alpha", ("critical,2", "within_5_seconds", "default"), 4, cron=True),
    ProcessSpec("beta", ("billing_within_5_minutes", "default", "critical"), 3),
    # Awake, serving only a queue nobody pushes to: capacity that counts, and a queue that is
    # in no `queues` set yet has its SLA from its name.
    ProcessSpec("gamma", (AWAKE_QUEUE,), 2, quiet=False),
)


def exporter_acl_rule(redis_major: int, password: str) -> list[str]:
    """`ACL SETUSER` arguments for the exporter user (`~*` before Redis 7.0 has no `%R~`)."""
    keys = "%R~*" if redis_major >= 7 else "~*"
    return [
        "ACL", "SETUSER", EXPORTER_USER, "on", f">{password}", "resetkeys", keys,
        "resetchannels", "-@all", *EXPORTER_ACL_COMMANDS,
    ]  # fmt: skip


@dataclass(frozen=True)
class ConformanceRun:
    """Everything one scenario observed; checks read it, nothing here changes afterwards."""

    version: SidekiqVersion
    server: ServerKind
    redis_version: str  # the server's own version (`valkey_version` for Valkey)
    acl_rule: tuple[str, ...]  # the ACL SETUSER line used (password masked)
    acl_selfcheck: tuple[dict[str, Any], ...]  # ACL LOG entries of the deliberate denied writes
    identities: dict[str, str]  # tag -> identity
    specs: dict[str, ProcessSpec]  # tag -> spec
    workload: dict[str, Any]  # enqueue.rb summary of the main workload
    late: dict[str, Any]  # enqueue.rb summary of the jobs pushed after quiet
    cron: dict[str, Any] | None  # sidekiq-cron job hash after its first tick (6.4.1)
    quiet_at: float  # Redis TIME when TSTP was sent
    truth_before: dict[str, Any]
    scrape: Scrape
    truth_after: dict[str, Any]
    stale_identity: str
    stale_member_at_scrape: bool  # SISMEMBER processes <stale> right after the scrape
    processes_scard_at_scrape: int
    exporter_clients_as_acl_user: int  # CLIENT LIST entries with user=<EXPORTER_USER>
    exporter_stop_seconds: float
    exporter_log_events: tuple[dict[str, Any], ...]
    exporter_commands: Counter[str]
    proxy_errors: tuple[str, ...]
    acl_log: tuple[Any, ...]
    elapsed_seconds: float

    @property
    def tolerance(self) -> float:
        """Slack for ages: one poll interval plus a second (issue 3)."""
        return POLL_INTERVAL_SECONDS + 1.0


def redis_time(server: RedisServer) -> float:
    seconds, micros = server.execute("TIME")
    return int(seconds) + int(micros) / 1_000_000


def acl_log(server: RedisServer) -> list[Any]:
    return list(server.execute("ACL", "LOG") or [])


def _flat_dict(entry: Any) -> dict[str, Any]:
    items = list(entry)
    return dict(zip(items[0::2], items[1::2], strict=True))


def check_acl_denies_writes(server: RedisServer, password: str) -> list[dict[str, Any]]:
    """The ACL really bites: the exporter user's writes fail with NOPERM and are logged."""
    server.execute("ACL", "LOG", "RESET")
    with RespConnection(server.host, server.port, username=EXPORTER_USER, password=password) as c:
        assert c.execute("GET", "stat:processed") is None  # a read is allowed
        # SET process_cleanup and SREM processes: what Sidekiq's ProcessSet.new writes.
        for command in (
            ("SET", "process_cleanup", "1", "NX", "EX", "60"),
            ("SREM", "processes", "x"),
        ):
            error: str | None = None
            try:
                c.execute(*command)
            except RespError as exc:
                error = str(exc)
            if error is None or not error.startswith("NOPERM"):
                raise AssertionError(f"ACL allowed {command[0]} for {EXPORTER_USER}: {error}")
    entries = [_flat_dict(e) for e in acl_log(server)]
    assert {(e["username"], e["object"]) for e in entries} == {
        (EXPORTER_USER, "set"),
        (EXPORTER_USER, "srem"),
    }, entries
    server.execute("ACL", "LOG", "RESET")
    assert acl_log(server) == []
    return entries


@dataclass(frozen=True)
class ReadOnlyExporter:
    """The exporter daemon, as the read-only ACL user, behind a proxy recording its commands."""

    exporter: ExporterProcess
    proxy: RecordingProxy
    acl_rule: tuple[str, ...]  # the ACL SETUSER line used (password masked)
    acl_selfcheck: tuple[dict[str, Any], ...]  # ACL LOG entries of the deliberate denied writes


def start_read_only_exporter(stack: ExitStack, server: RedisServer) -> ReadOnlyExporter:
    """Add the exporter's ACL user (checked to bite), then start the daemon as that user."""
    password = secrets.token_hex(16)
    rule = exporter_acl_rule(int(server.version().split(".")[0]), password)
    server.execute(*rule)
    selfcheck = check_acl_denies_writes(server, password)
    proxy = stack.enter_context(RecordingProxy(server.port))
    exporter = ExporterProcess(
        f"redis://{EXPORTER_USER}:{password}@127.0.0.1:{proxy.port}/0",
        poll_interval=f"{POLL_INTERVAL_SECONDS:g}s",
    )
    stack.enter_context(exporter)
    masked = tuple("><password>" if arg.startswith(">") else arg for arg in rule)
    return ReadOnlyExporter(exporter, proxy, masked, tuple(selfcheck))


def quiet(server: RedisServer, processes: Iterable[SidekiqProcess]) -> float:
    """TSTP each process; returns Redis TIME just before, once no fetch can take a job."""
    quiet_at = redis_time(server)
    for process in processes:
        process.quiet()
    # A fetch already blocked in BRPOP (2 s timeout, fetch.rb) could still take a job: jobs
    # meant to wait are pushed only after that.
    time.sleep(2.5)
    return quiet_at


def wait_for_quiet_beat(processes: Iterable[SidekiqProcess], quiet_at: float) -> None:
    """Wait until every process has written a heartbeat showing it quiet."""
    processes = list(processes)

    def quiet_beat() -> bool:
        for process in processes:
            fields = process.process_hash()
            if fields.get("quiet") != "true" or float(fields.get("beat", 0)) < quiet_at + 2.5:
                return False
        return True

    beat = max(p.version.beat_seconds for p in processes)
    wait_for(quiet_beat, beat + 8, 0.1, "no heartbeat after quiet")


def _served_queues_drained(server: RedisServer) -> bool:
    return all(server.execute("LLEN", f"queue:{q}") == 0 for q in SERVED_QUEUES)


def run_scenario(version_name: str, server_name: str = REDIS_7_0.name) -> ConformanceRun:
    """Run the whole scenario for one Sidekiq version on one server (see the module docstring)."""
    started = time.monotonic()
    version = get_version(version_name)
    kind = SERVERS[server_name]
    with ExitStack() as stack:
        server = stack.enter_context(RedisServer(kind=kind))
        redis_version = server.version()
        # Started before any job runs, so its per-class counters see every metrics flush.
        watcher = start_read_only_exporter(stack, server)
        exporter, proxy = watcher.exporter, watcher.proxy

        cron_on = version.has_cron
        if cron_on:
            load_cron(version, server.url, due_now=True)
        processes: dict[str, SidekiqProcess] = {}
        for spec in PROCESS_SPECS:
            env = {}
            if spec.cron and cron_on:
                # Cron poller every second, first poll within 5 s of boot (see app.rb).
                env = {"SIDEKIQ_APP_CRON_POLL": "1", "SIDEKIQ_APP_POLL_AVERAGE": "1"}
            if not spec.quiet:
                env["SIDEKIQ_APP_NO_SCHEDULER"] = "1"  # see ProcessSpec.quiet
            process = SidekiqProcess(
                version,
                server.url,
                queues=spec.queues,
                concurrency=spec.concurrency,
                tag=spec.tag,
                env=env,
                cron=spec.cron and cron_on,
            )
            stack.callback(process.cleanup)
            processes[spec.tag] = process.start()
        # Reaped together at exit (before the callbacks above, which then find them stopped).
        stack.callback(stop_all, list(processes.values()))

        workload = enqueue(
            version,
            server.url,
            defaults=True,
            slow=2,
            billing_slow=1,
            wrapped=1,
            slow_seconds=LONG_JOB_SECONDS,
            wrapped_seconds=LONG_JOB_SECONDS,
        )

        def settled() -> bool:
            if cron_on and not server.execute("HGET", "cron_job:every_minute", "last_enqueue_time"):
                return False
            return (
                _served_queues_drained(server)
                and server.execute("ZCARD", "retry") == workload["config"]["failing"]
                and server.execute("ZCARD", "dead") == workload["config"]["dead"]
            )

        wait_for(settled, 30, 0.1, "workload did not settle (queues drained, retry/dead)")
        cron = None
        if cron_on:
            raw = server.execute("HGETALL", "cron_job:every_minute")
            cron = dict(zip(raw[0::2], raw[1::2], strict=True))

        # Quiet alpha and beta: no new fetches, their schedulers (and cron poller) stop, long
        # jobs go on. gamma stays awake; nothing is pushed to its queue.
        quieted = [processes[spec.tag] for spec in PROCESS_SPECS if spec.quiet]
        quiet_at = quiet(server, quieted)
        late = enqueue(version, server.url, critical=3, within_5_seconds=2, overdue=1)
        wait_for_quiet_beat(quieted, quiet_at)

        # A member of `processes` whose hash is gone, as a crashed process leaves it (§5.5).
        stale = "crashed-host:4242:0123456789ab"
        server.execute("SADD", "processes", stale)
        truth_before = truth(version, server.url)
        # truth's ProcessSet.new may have cleaned it up (6.4.1 always does): put it back.
        server.execute("SADD", "processes", stale)
        scrape = exporter.scrape_after_polls(2)
        stale_present = server.execute("SISMEMBER", "processes", stale) == 1
        scard = int(server.execute("SCARD", "processes"))
        clients = str(server.execute("CLIENT", "LIST")).count(f"user={EXPORTER_USER} ")
        truth_after = truth(version, server.url)

        stop_seconds = exporter.stop()
        log_events = tuple(exporter.log_events())
        denials = tuple(acl_log(server))
        commands = proxy.commands
        proxy_errors = tuple(proxy.errors)
        return ConformanceRun(
            version=version,
            server=kind,
            redis_version=redis_version,
            acl_rule=watcher.acl_rule,
            acl_selfcheck=watcher.acl_selfcheck,
            identities={tag: str(p.identity) for tag, p in processes.items()},
            specs={spec.tag: spec for spec in PROCESS_SPECS},
            workload=workload,
            late=late,
            cron=cron,
            quiet_at=quiet_at,
            truth_before=truth_before,
            scrape=scrape,
            truth_after=truth_after,
            stale_identity=stale,
            stale_member_at_scrape=stale_present,
            processes_scard_at_scrape=scard,
            exporter_clients_as_acl_user=clients,
            exporter_stop_seconds=stop_seconds,
            exporter_log_events=log_events,
            exporter_commands=commands,
            proxy_errors=proxy_errors,
            acl_log=denials,
            elapsed_seconds=time.monotonic() - started,
        )
    raise AssertionError("unreachable")


# --- reading the truths, and checks shared with tests/test_rolling_upgrade.py -----------------

TARGET = {"target": "default"}
# The exporter's global families and the `Sidekiq::Stats` value each must equal (truth.rb).
STATS_METRICS = {
    "sidekiq_processed_jobs_total": "processed",
    "sidekiq_failed_jobs_total": "failed",
    "sidekiq_enqueued_jobs": "enqueued",
    "sidekiq_scheduled_jobs": "scheduled_size",
    "sidekiq_retry_jobs": "retry_size",
    "sidekiq_dead_jobs": "dead_size",
}
HISTOGRAM_BUCKETS = 26  # Sidekiq's execution-time buckets (docs/redis-layout.md §6.4)


def assert_between(actual: float, before: float, after: float, what: str, tol: float = 0.0) -> None:
    """`actual` within [min, max] of the two truths, widened by `tol`."""
    low, high = min(before, after) - tol, max(before, after) + tol
    assert low - 1e-9 <= actual <= high + 1e-9, (
        f"{what}: exporter says {actual}, Sidekiq's API said {before} then {after} (± {tol})"
    )


def truth_time(truth: dict[str, Any], edge: str) -> float:
    """Redis TIME at the start ("before") or end ("after") of a truth read."""
    return float(truth[f"redis_time_{edge}"])


def queues_of(truth: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {q["name"]: q for q in truth["queues"]}


def processes_of(truth: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {p["identity"]: p for p in truth["processes"]}


def work_of(truth: dict[str, Any]) -> list[dict[str, Any]]:
    return list(truth["work"])


def process_labels(process: dict[str, Any]) -> dict[str, str]:
    """The exporter's labels of one process's series."""
    return {
        **TARGET,
        "identity": process["identity"],
        "hostname": process["hostname"],
        "tag": process["tag"] or "",
    }


def running_by_class(
    work: list[dict[str, Any]],
) -> tuple[Counter[tuple[str, str]], dict[Any, int]]:
    """Running jobs per (queue, class), and the oldest `run_at` per (queue, class) and queue."""
    count: Counter[tuple[str, str]] = Counter()
    oldest: dict[Any, int] = {}
    for w in work:
        # display_class: Sidekiq's own unwrapping (`wrapped` for ActiveJob's wrapper).
        for key in ((w["queue"], w["display_class"]), w["queue"]):
            oldest[key] = min(oldest.get(key, w["run_at"]), w["run_at"])
        count[(w["queue"], w["display_class"])] += 1
    return count, oldest


@dataclass
class ClassTotals:
    """One job class's execution metrics over a truth's window, as `Metrics::Query` gives them."""

    executions: int = 0  # `p`: failures included
    failures: int = 0  # `f`
    milliseconds: int = 0  # `ms`: successful executions only
    histogram: list[int] = field(default_factory=lambda: [0] * HISTOGRAM_BUCKETS)

    def add(self, other: ClassTotals) -> None:
        self.executions += other.executions
        self.failures += other.failures
        self.milliseconds += other.milliseconds
        self.histogram = [a + b for a, b in zip(self.histogram, other.histogram, strict=True)]


def query_totals(metrics: dict[str, Any]) -> dict[str, ClassTotals]:
    """Per class: `top_jobs` totals and the `for_job` histograms summed over the minutes."""
    totals: dict[str, ClassTotals] = {}
    for klass, result in metrics["top_jobs"].items():
        t = result["totals"]
        # `hist`: storage order, fastest bucket first (truth.rb undoes Query's display order).
        minutes = metrics["for_job"][klass]["hist"].values()
        histogram = [sum(col) for col in zip(*minutes, strict=True)] or [0] * HISTOGRAM_BUCKETS
        totals[klass] = ClassTotals(t.get("p", 0), t.get("f", 0), t.get("ms", 0), histogram)
    return totals


def assert_job_class_metrics(scrape: Scrape, expected: dict[str, ClassTotals]) -> None:
    """Every per-class family equals `expected`: executions, failures, time, every bucket."""
    exported = set(scrape.by_label("sidekiq_job_executions_total", "class", **TARGET))
    assert exported == set(expected)
    for klass, want in expected.items():
        labels = {**TARGET, "class": klass}
        successes = want.executions - want.failures
        assert scrape.value("sidekiq_job_executions_total", **labels) == want.executions, klass
        assert scrape.value("sidekiq_job_failures_total", **labels) == want.failures, klass
        assert scrape.value("sidekiq_job_duration_seconds_count", **labels) == successes, klass
        assert scrape.value("sidekiq_job_duration_seconds_sum", **labels) == pytest.approx(
            want.milliseconds / 1000
        ), klass
        buckets = sorted(
            (float(dict(ls)["le"]), v)
            for ls, v in scrape.series("sidekiq_job_duration_seconds_bucket", **labels).items()
        )
        cumulative = [v for _, v in buckets]
        assert cumulative[:-1] == list(itertools.accumulate(want.histogram[:-1])), klass
        assert cumulative[-1] == successes, klass
