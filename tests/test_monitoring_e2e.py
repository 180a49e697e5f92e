"""End to end: real Sidekiq 7.3.2 -> the exporter -> Prometheus 2 and 3 -> Alertmanager -> webhook.

One run (`run_stack`) serves every check here. Both Prometheus versions scrape the same exporter
every second and load the shipped rules with every duration 30 times shorter (generated from
alerts/sidekiq.rules.yml, see `speed_up_rules`). The Alertmanager runs the shipped example
configuration with its receivers replaced by webhooks to this test. Timeline:

1. Two Sidekiq processes: one serves `default` and `critical` (a workload with failures, dead
   jobs, a 12 s job and a 10 minute one), one serves the queue `e2e_within_2_seconds`, to which
   the test pushes a job every 0.25 s: it keeps up, and the SLA alert must stay silent.
2. The second process stops: nobody serves the queue, its latency passes the 2 s SLA, and
   SidekiqQueueLatencyOverSLA must fire on both Prometheus and reach the `paging` webhook.
3. A new process serves the queue again: it drains, the alert resolves, and the resolution is
   delivered too.
4. Every dashboard query (variables set to real values) and every rule expression runs on both
   Prometheus over the whole run.

Alongside step 1, the queues the shipped KEDA ScaledObject (deploy/keda/scaledobject.yaml) scales
on get a job each that nobody serves: its queries, as shipped, must give one series per queue
equal to that queue's latency ÷ SLA; once the queues are gone (step 4) they must give none,
which KEDA treats as an error and answers with the ScaledObject's fallback.
"""

from __future__ import annotations

import re
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from exporter.demo.layout import V7, SidekiqWriter
from exporter.sla import sla_from_name
from monitoring import dashboards, grafana, rules
from monitoring.config import DEFAULT_EXPORTER_JOB
from tests.support.deploy import scaledobject_queries
from tests.support.exporter_process import ExporterProcess
from tests.support.prometheus import (
    PROMETHEUS,
    AlertmanagerServer,
    Notification,
    PrometheusServer,
    WebhookReceiver,
    alertmanager_test_config,
    amtool,
    speed_up_rules,
)
from tests.support.redis_server import RedisServer
from tests.support.sidekiq import SidekiqProcess, enqueue, get_version, stop_all, wait_for

pytestmark = [pytest.mark.integration]

REPO = Path(__file__).resolve().parents[1]
SPEED_UP = 30  # [2m] -> [4s], for: 3m -> 6s, keep_firing_for: 5m -> 10s
QUEUE = "e2e_within_2_seconds"
ALERT = "SidekiqQueueLatencyOverSLA"
KEEP_UP_SECONDS = 15  # longer than the sped-up window + for: (10 s)
CLASSES = "FastJob|MediumJob|FailingJob|DeadJob|SlowJob|WrappedMailerJob"
# {queue: query} of the shipped ScaledObject's triggers.
AUTOSCALED = scaledobject_queries()
# How long the job pushed to each of those queues has waited already: with the keep-up phase
# added, still well under 75 % of their SLAs (a minute or more), so no SLA alert fires for them.
AUTOSCALED_WAIT = 10.0


@dataclass(frozen=True)
class ScaledQuery:
    """One ScaledObject query, evaluated at the time its recording rule was last evaluated."""

    series: list[dict[str, Any]]  # its result
    reference: float  # latency ÷ SLA of the queue at that time, from the exporter's series
    # The reference from the scrape before, and how long before the rule's evaluation the last
    # scrape started: a scrape that started just before an evaluation may not be stored yet
    # when the rule reads it.
    previous_reference: float
    scrape_lead_seconds: float


@dataclass
class StackRun:
    """What one run observed; the checks below read it."""

    versions: dict[str, str] = field(default_factory=dict)  # major -> promtool version
    keep_up_ratios: dict[str, list[float]] = field(default_factory=dict)
    alerts_while_kept_up: list[dict[str, Any]] = field(default_factory=list)
    firing: dict[str, dict[str, Any]] = field(default_factory=dict)  # major -> the alert
    resolved_seen: dict[str, bool] = field(default_factory=dict)
    notifications: list[Notification] = field(default_factory=list)
    query_results: dict[str, dict[str, int]] = field(default_factory=dict)  # major -> expr -> n
    label_values: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    rule_health: dict[str, list[tuple[str, str, str]]] = field(default_factory=dict)
    rule_results: dict[str, dict[str, int]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)  # phase -> duration
    am_config_check: str = ""
    autoscaling: dict[str, dict[str, ScaledQuery]] = field(default_factory=dict)  # major, queue
    autoscaling_after: dict[str, dict[str, int]] = field(default_factory=dict)  # series found


def _sla_alerts(prom: PrometheusServer) -> list[dict[str, Any]]:
    return [
        a
        for a in prom.alerts()
        if a["labels"].get("alertname") == ALERT and a["labels"].get("queue") == QUEUE
    ]


def _substitute(expr: str, values: dict[str, str], rate_interval: str, range_: str) -> str:
    for name, value in values.items():
        expr = expr.replace(f"${name}", value)
    return expr.replace("$__rate_interval", rate_interval).replace("$__range", range_)


def _only_value(result: list[dict[str, Any]]) -> float:
    (series,) = result
    return float(series["value"][1])


def _scaled_query(prom: PrometheusServer, queue: str, query: str) -> ScaledQuery:
    """The shipped query and the queue's latency ÷ SLA at the rule's last evaluation time."""
    selector = f'{{target="default", queue="{queue}"}}'
    evaluated = _only_value(prom.query(f"timestamp({rules.LATENCY_OVER_SLA}{selector})"))
    reference = f"sidekiq_queue_latency_seconds{selector} / sidekiq_queue_sla_seconds{selector}"
    scraped = _only_value(
        prom.query(f"timestamp(sidekiq_queue_latency_seconds{selector})", at=evaluated)
    )
    return ScaledQuery(
        series=prom.query(query, at=evaluated),
        reference=_only_value(prom.query(reference, at=evaluated)),
        previous_reference=_only_value(prom.query(reference, at=scraped - 0.001)),
        scrape_lead_seconds=evaluated - scraped,
    )


def _notified(run_receiver: WebhookReceiver, major: str, status: str) -> bool:
    for n in run_receiver.received():
        for alert in n.body.get("alerts", []):
            labels = alert["labels"]
            if (
                labels.get("alertname") == ALERT
                and labels.get("queue") == QUEUE
                and labels.get("prometheus") == major
                and alert["status"] == status
            ):
                return True
    return False


def run_stack(tmp: Path) -> StackRun:
    run = StackRun()
    started = time.monotonic()
    version = get_version("7.3.2")
    with ExitStack() as stack:
        server = stack.enter_context(RedisServer())
        exporter = stack.enter_context(ExporterProcess(server.url, poll_interval="1s"))
        receiver = stack.enter_context(WebhookReceiver())
        am_config = alertmanager_test_config(
            (REPO / "alerts" / "alertmanager.example.yml").read_text(), receiver
        )
        (tmp / "alertmanager.yml").write_text(am_config)
        run.am_config_check = amtool("check-config", str(tmp / "alertmanager.yml")).stdout
        alertmanager = stack.enter_context(AlertmanagerServer(am_config))
        rule_file = tmp / "sidekiq.rules.yml"
        rule_file.write_text(speed_up_rules((REPO / rules.RULE_FILE).read_text(), SPEED_UP))
        proms: dict[str, PrometheusServer] = {}
        for major, release in sorted(PROMETHEUS.items()):
            run.versions[major] = release.version()
            proms[major] = stack.enter_context(
                PrometheusServer(
                    release,
                    scrape=f"127.0.0.1:{exporter.port}",
                    rule_files=[rule_file],
                    alertmanager=alertmanager.address,
                    external_labels={"prometheus": major},
                )
            )
        start_time = time.time()
        run.seconds["start services"] = time.monotonic() - started

        # 1. A worker keeps up with the SLA queue; the other one runs a varied workload.
        main = SidekiqProcess(version, server.url, queues=("critical", "default"), tag="main")
        stack.callback(main.cleanup)
        sla = SidekiqProcess(version, server.url, queues=(QUEUE,), concurrency=2, tag="sla")
        stack.callback(sla.cleanup)
        main.start()
        sla.start()
        enqueue(version, server.url, fast=20, medium=5, failing=2, dead=1, scheduled=2, slow=1,
                slow_seconds=12)  # fmt: skip
        enqueue(version, server.url, wrapped=1, wrapped_seconds=600)
        writer = SidekiqWriter(redis.Redis.from_url(server.url), V7)
        stack.callback(writer.client.close)
        # A sidekiq-cron job, on time all along, for the dashboards' cron panels.
        writer.cron_job("refresh_reports", "@daily", last_enqueue=time.time())

        def push() -> None:
            now = time.time()
            writer.push(QUEUE, writer.job("FastJob", QUEUE, enqueued_at=now, created_at=now))

        def ratio(major: str) -> list[dict[str, Any]]:
            return proms[major].query(f'{rules.LATENCY_OVER_SLA}{{queue="{QUEUE}"}}')

        phase = time.monotonic()

        def ratio_everywhere() -> bool:
            push()  # the queue exists (and has an SLA) once a job was pushed to it
            return all(ratio(m) for m in proms)

        wait_for(ratio_everywhere, 30, 0.25, "no latency ÷ SLA for the queue")
        waiting_since = time.time() - AUTOSCALED_WAIT
        for queue in AUTOSCALED:
            writer.push(queue, writer.job("FastJob", queue, enqueued_at=waiting_since))
        keep_up_until = time.monotonic() + KEEP_UP_SECONDS
        while time.monotonic() < keep_up_until:
            push()
            for major, prom in proms.items():
                run.keep_up_ratios.setdefault(major, []).extend(
                    float(s["value"][1]) for s in ratio(major)
                )
                run.alerts_while_kept_up.extend(_sla_alerts(prom))
            time.sleep(0.25)
        for major, prom in proms.items():
            run.autoscaling[major] = {q: _scaled_query(prom, q, e) for q, e in AUTOSCALED.items()}
        for queue in AUTOSCALED:  # as Sidekiq's Queue#clear does
            writer.client.delete(writer.keys.queue(queue))
            writer.client.srem(writer.keys.queues, queue)
        run.seconds["keep up"] = time.monotonic() - phase

        # 2. Nobody serves the queue any more; jobs keep coming.
        phase = time.monotonic()
        sla.stop()

        def firing_everywhere() -> bool:
            push()
            for major, prom in proms.items():
                for alert in _sla_alerts(prom):
                    if alert["state"] == "firing":
                        run.firing[major] = alert
            return len(run.firing) == len(proms)

        wait_for(firing_everywhere, 90, 0.5, f"{ALERT} did not fire on every Prometheus")
        run.seconds["unserved until firing"] = time.monotonic() - phase
        wait_for(
            lambda: all(_notified(receiver, m, "firing") for m in proms),
            30,
            0.25,
            "Alertmanager did not deliver the firing alert",
        )
        run.seconds["firing until delivered"] = time.monotonic() - phase

        # 3. Served again: the queue drains and the alert resolves.
        phase = time.monotonic()
        again = SidekiqProcess(version, server.url, queues=(QUEUE,), concurrency=2, tag="again")
        stack.callback(again.cleanup)
        again.start()

        def resolved_everywhere() -> bool:
            for major, prom in proms.items():
                run.resolved_seen[major] = not _sla_alerts(prom)
            return all(run.resolved_seen.values())

        wait_for(resolved_everywhere, 90, 0.5, f"{ALERT} did not resolve")
        wait_for(
            lambda: all(_notified(receiver, m, "resolved") for m in proms),
            30,
            0.25,
            "Alertmanager did not deliver the resolution",
        )
        run.seconds["served until resolution delivered"] = time.monotonic() - phase
        run.notifications = receiver.received()

        # 4. Every dashboard query and every rule, on both versions, over the whole run.
        phase = time.monotonic()
        end_time = time.time()
        values = {
            "job": DEFAULT_EXPORTER_JOB,
            "instance": f"127.0.0.1:{exporter.port}",
            "target": "default",
            "queue": f"default|critical|{QUEUE}",
            "class": CLASSES,
        }
        range_ = f"{int(end_time - start_time)}s"
        shipped = yaml.safe_load((REPO / rules.RULE_FILE).read_text())
        for major, prom in proms.items():
            results: dict[str, int] = {}
            labels: dict[str, list[str]] = {}
            for dashboard in dashboards.DASHBOARDS:
                for variable in dashboard.variables:
                    match = re.fullmatch(r"label_values\((.*), (\w+)\)", variable.query)
                    assert match, variable.query
                    if "{" not in match.group(1):
                        selector = match.group(1)
                    else:
                        selector = _substitute(match.group(1), values, "4s", range_)
                    labels[variable.name] = prom.label_values(match.group(2), selector)
                for _, query in grafana.queries(dashboard):
                    expr = _substitute(query.expr, values, "4s", range_)
                    if query.instant:
                        results[query.expr] = len(prom.query(expr, at=end_time))
                    else:
                        results[query.expr] = len(prom.query_range(expr, start_time, end_time))
            run.query_results[major] = results
            run.label_values[major] = labels
            run.rule_health[major] = [
                (r["name"], r["health"], r.get("lastError", "")) for r in prom.rules()
            ]
            run.rule_results[major] = {
                r.get("alert") or r["record"]: len(prom.query(r["expr"]))
                for g in shipped["groups"]
                for r in g["rules"]
            }
            run.autoscaling_after[major] = {
                queue: len(prom.query(query, at=end_time)) for queue, query in AUTOSCALED.items()
            }
        run.seconds["queries"] = time.monotonic() - phase
        stop_all([main, again])
    run.seconds["total"] = time.monotonic() - started
    return run


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> StackRun:
    result = run_stack(tmp_path_factory.mktemp("e2e"))
    print(f"\nend-to-end timings (s): {result.seconds}; prometheus {result.versions}")
    for major, checks in result.autoscaling.items():
        print(f"ScaledObject queries on Prometheus {major}: {checks}")
    return result


def test_both_prometheus_versions_ran(run: StackRun) -> None:
    assert run.versions["2"].startswith("2.")
    assert run.versions["3"].startswith("3.")
    assert "SUCCESS" in run.am_config_check


def test_no_alert_while_a_worker_keeps_up(run: StackRun) -> None:
    for major in PROMETHEUS:
        ratios = run.keep_up_ratios[major]
        # The rule saw the queue throughout (so silence means something) and far below 1.
        assert len(ratios) >= KEEP_UP_SECONDS, major
        assert max(ratios) < 1, (major, max(ratios))
    assert run.alerts_while_kept_up == []


def test_sla_alert_fires_on_both_versions_with_its_labels_and_annotations(run: StackRun) -> None:
    for major in PROMETHEUS:
        alert = run.firing[major]
        labels, annotations = alert["labels"], alert["annotations"]
        assert labels["severity"] == "critical"
        assert labels["queue"] == QUEUE
        assert labels["target"] == "default"
        assert labels["job"] == DEFAULT_EXPORTER_JOB
        assert annotations["runbook_url"].endswith("/docs/runbooks.md#sidekiqqueuelatencyoversla")
        assert f"var-queue={QUEUE}" in annotations["dashboard_url"]
        # The wait and the SLA, read by the description's own queries, as durations.
        description = re.match(
            rf"Queue {QUEUE} on default: the oldest job has waited (?:(\d+)m )?([0-9.]+)s, past "
            r"the SLA of 2s\. Over the SLA for 5 minutes \(at least [0-9.]+% of it throughout "
            r"the last 2\)\.$",
            annotations["description"],
        )
        assert description, annotations["description"]
        assert 60 * int(description[1] or 0) + float(description[2]) > 2


def test_alertmanager_delivers_to_paging_grouped_by_queue_then_resolves(run: StackRun) -> None:
    sla = [
        n
        for n in run.notifications
        if any(a["labels"].get("alertname") == ALERT for a in n.body["alerts"])
    ]
    assert sla, "no notification of the SLA alert"
    for n in sla:
        assert n.path == "/paging"  # critical goes to paging
        assert n.body["groupLabels"] == {"alertname": ALERT, "target": "default", "queue": QUEUE}
        for alert in n.body["alerts"]:
            assert alert["labels"]["queue"] == QUEUE
            assert alert["annotations"]["runbook_url"].endswith("#sidekiqqueuelatencyoversla")
    statuses = [(a["labels"]["prometheus"], a["status"]) for n in sla for a in n.body["alerts"]]
    for major in PROMETHEUS:
        assert (major, "firing") in statuses
        assert (major, "resolved") in statuses
        first_resolved = statuses.index((major, "resolved"))
        assert statuses.index((major, "firing")) < first_resolved


def test_dashboard_variables_find_real_values(run: StackRun) -> None:
    for major, labels in run.label_values.items():
        assert labels["job"] == [DEFAULT_EXPORTER_JOB], major
        assert labels["target"] == ["default"], major
        assert {"default", "critical", QUEUE} <= set(labels["queue"]), major
        assert {"FastJob", "FailingJob", "SlowJob"} <= set(labels["class"]), major


def test_every_dashboard_query_returns_data(run: StackRun) -> None:
    """Each query ran without error on both versions; all but the `quiet` ones found series."""
    for major, results in run.query_results.items():
        for dashboard in dashboards.DASHBOARDS:
            for panel, query in grafana.queries(dashboard):
                if query.quiet:
                    continue
                assert results[query.expr] > 0, (major, dashboard.uid, panel.title, query.expr)


def test_every_rule_evaluates(run: StackRun) -> None:
    for major, health in run.rule_health.items():
        assert health, major
        assert all(h == "ok" and not err for _, h, err in health), (major, health)
    for major, results in run.rule_results.items():
        # Queue and monitoring-path records describe this activity; all others ran cleanly.
        assert results[rules.LATENCY_OVER_SLA] > 0, major
        assert results[rules.UTILISATION] > 0, major
        assert results[rules.failure_ratio("5m")] > 0, major


def test_scaledobject_queries_give_one_series_per_queue_with_its_latency_over_sla(
    run: StackRun,
) -> None:
    for major in PROMETHEUS:
        assert set(run.autoscaling[major]) == set(AUTOSCALED)
        for queue, check in run.autoscaling[major].items():
            # One series per trigger (KEDA refuses several), the queue's, with its ratio.
            (series,) = check.series
            assert series["metric"] == {"target": "default", "queue": queue}, (major, queue)
            value = float(series["value"][1])
            sla = sla_from_name(queue)
            assert sla is not None, queue
            assert value >= AUTOSCALED_WAIT / sla[0], (major, queue, value)  # it waits
            if value != check.reference:
                # Only when the last scrape started a moment before the evaluation.
                assert check.scrape_lead_seconds < 0.5, (major, queue, check)
                assert value == check.previous_reference, (major, queue, check)


def test_scaledobject_queries_give_no_series_once_the_data_is_gone(run: StackRun) -> None:
    # No series is an error for KEDA (`ignoreNullValues: "false"`): the fallback holds capacity.
    for major in PROMETHEUS:
        assert run.autoscaling_after[major] == dict.fromkeys(AUTOSCALED, 0), major
