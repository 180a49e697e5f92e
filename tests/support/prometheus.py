"""Real Prometheus 2 and 3, a real Alertmanager and a webhook receiver, for tests.

    with PrometheusServer(PROMETHEUS["3"], scrape=exporter_address, rule_files=[path]) as prom:
        prom.query('sidekiq_up')                       # /api/v1/query, the result list

Prometheus 2 is Debian 12's `prometheus` (2.42); Prometheus 3 is Debian sid's, unpacked into
.cache/prometheus-3 by scripts/setup-monitoring-tools.sh; Alertmanager is Debian 12's
`prometheus-alertmanager`. Each server runs on a free loopback port with a temporary config
and storage directory, removed on cleanup; every wait is bounded.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self

import yaml

from monitoring.config import DEFAULT_EXPORTER_JOB

from .processes import StartCleanupContext, log_file_tail, stop_process
from .redis_server import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
SETUP_HINT = (
    "run `sudo scripts/setup-test-services.sh` (it installs Prometheus 2 and 3, Alertmanager)"
)


@dataclass(frozen=True)
class PrometheusRelease:
    """One Prometheus major version: its server and its promtool."""

    major: str
    prometheus: Path
    promtool: Path

    def require(self) -> Self:
        for path in (self.prometheus, self.promtool):
            if not path.is_file():
                raise RuntimeError(f"Prometheus {self.major}: {path} is missing; {SETUP_HINT}")
        return self

    def version(self) -> str:
        out = subprocess.run(
            [str(self.require().promtool), "--version"], capture_output=True, text=True, check=True
        ).stdout
        return out.split()[2]


_P3 = REPO_ROOT / ".cache" / "prometheus-3" / "usr" / "bin"
PROMETHEUS: dict[str, PrometheusRelease] = {
    "2": PrometheusRelease("2", Path("/usr/bin/prometheus"), Path("/usr/bin/promtool")),
    "3": PrometheusRelease("3", _P3 / "prometheus", _P3 / "promtool"),
}
ALERTMANAGER = Path("/usr/bin/prometheus-alertmanager")
AMTOOL = Path("/usr/bin/amtool")


def _get_json(url: str, timeout: float = 10.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.load(response)


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1.0) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


class _Server(StartCleanupContext):
    """A server subprocess on a free loopback port, logging to a file in its temp dir."""

    name = "server"
    startup_timeout = 30.0

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix=f"{self.name}-test-"))
        self.log_path = self.dir / "server.log"
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> Self:
        for _ in range(3):  # another process may take the free port before we bind it
            self.port = free_port()
            with self.log_path.open("ab") as log:
                self.proc = subprocess.Popen(
                    self.command(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
                )
            deadline = time.monotonic() + self.startup_timeout
            while time.monotonic() < deadline and self.proc.poll() is None:
                if _ready(f"{self.url}/-/ready"):
                    return self
                time.sleep(0.1)
            if self.proc.poll() is None:
                self.cleanup()
                raise TimeoutError(f"{self.name} not ready; log:\n{self.log_tail()}")
            if "address already in use" not in self.log_tail().lower():
                break
        raise RuntimeError(
            f"{self.name} exited with {self.proc.returncode}; log:\n{self.log_tail()}"
        )

    def log_tail(self, lines: int = 40) -> str:
        return log_file_tail(self.log_path, lines)

    def cleanup(self) -> None:
        stop_process(self.proc, 10.0)
        shutil.rmtree(self.dir, ignore_errors=True)


class PrometheusServer(_Server):
    """A Prometheus scraping the exporter at `scrape` every `interval`, as the rules' job."""

    name = "prometheus"

    def __init__(
        self,
        release: PrometheusRelease,
        *,
        scrape: str,
        rule_files: Sequence[Path] = (),
        alertmanager: str | None = None,
        external_labels: Mapping[str, str] | None = None,
        interval: str = "1s",
        metric_relabel_configs: Sequence[Mapping[str, Any]] = (),
    ) -> None:
        self.release = release.require()
        super().__init__()
        config: dict[str, Any] = {
            "global": {
                "scrape_interval": interval,
                "evaluation_interval": interval,
                "external_labels": dict(external_labels or {}),
            },
            "rule_files": [str(p) for p in rule_files],
            "scrape_configs": [
                {"job_name": DEFAULT_EXPORTER_JOB, "static_configs": [{"targets": [scrape]}]}
            ],
        }
        if metric_relabel_configs:
            config["scrape_configs"][0]["metric_relabel_configs"] = [
                dict(rule) for rule in metric_relabel_configs
            ]
        if alertmanager is not None:
            config["alerting"] = {
                "alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]
            }
        self.config_path = self.dir / "prometheus.yml"
        self.config_path.write_text(yaml.safe_dump(config))

    def command(self) -> list[str]:
        return [
            str(self.release.prometheus),
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={self.dir / 'data'}",
            f"--web.listen-address={self.address}",
            "--log.level=warn",
        ]

    def api(self, path: str, params: Iterable[tuple[str, str]] = ()) -> Any:
        """GET /api/v1/<path>; the `data` of a successful answer, else an AssertionError."""
        url = f"{self.url}/api/v1/{path}"
        query = urllib.parse.urlencode(list(params))
        try:
            body = _get_json(f"{url}?{query}" if query else url)
        except urllib.error.HTTPError as e:
            detail = e.read()
            raise AssertionError(
                f"Prometheus {self.release.major} {path} {query}: {detail!r}"
            ) from e
        if body.get("status") != "success":
            raise AssertionError(f"Prometheus {self.release.major} {path} {query}: {body}")
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        params = [("query", expr)] + ([("time", f"{at:.3f}")] if at is not None else [])
        result: list[dict[str, Any]] = self.api("query", params)["result"]
        return result

    def query_range(
        self, expr: str, start: float, end: float, step: str = "1s"
    ) -> list[dict[str, Any]]:
        params = [("query", expr), ("start", f"{start:.3f}"), ("end", f"{end:.3f}"), ("step", step)]
        result: list[dict[str, Any]] = self.api("query_range", params)["result"]
        return result

    def label_values(self, label: str, match: str) -> list[str]:
        values: list[str] = self.api(f"label/{label}/values", [("match[]", match)])
        return values

    def alerts(self) -> list[dict[str, Any]]:
        alerts: list[dict[str, Any]] = self.api("alerts")["alerts"]
        return alerts

    def rules(self) -> list[dict[str, Any]]:
        groups: list[dict[str, Any]] = self.api("rules")["groups"]
        return [rule for group in groups for rule in group["rules"]]


class AlertmanagerServer(_Server):
    """An Alertmanager with the given configuration, clustering off."""

    name = "alertmanager"

    def __init__(self, config: str) -> None:
        super().__init__()
        self.config_path = self.dir / "alertmanager.yml"
        self.config_path.write_text(config)

    def command(self) -> list[str]:
        return [
            str(ALERTMANAGER),
            f"--config.file={self.config_path}",
            f"--storage.path={self.dir / 'data'}",
            f"--web.listen-address={self.address}",
            "--cluster.listen-address=",
            "--log.level=warn",
        ]

    def post_alerts(self, alerts: Sequence[Mapping[str, Any]]) -> None:
        request = urllib.request.Request(
            f"{self.url}/api/v2/alerts",
            data=json.dumps(list(alerts)).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10.0) as response:
            assert response.status == 200

    def alerts(self) -> list[dict[str, Any]]:
        alerts: list[dict[str, Any]] = _get_json(f"{self.url}/api/v2/alerts")
        return alerts


def amtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(AMTOOL), *args], capture_output=True, text=True, timeout=30, check=False
    )


@dataclass(frozen=True)
class Notification:
    path: str  # /<receiver name>
    received_at: float
    body: dict[str, Any]


class WebhookReceiver:
    """An HTTP server on loopback that records every JSON POST (Alertmanager's webhooks)."""

    def __init__(self) -> None:
        self.notifications: list[Notification] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length) or b"{}")
                with receiver._lock:
                    receiver.notifications.append(Notification(self.path, time.time(), body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/{path}"

    def received(self) -> list[Notification]:
        with self._lock:
            return list(self.notifications)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5.0)


_DURATION = re.compile(r"(\d+)(ms|s|m|h|d|w|y)")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
_UNIT_MS["y"] = 365 * _UNIT_MS["d"]


def _duration_ms(text: str) -> int:
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a Prometheus duration: {text!r}")
    return sum(int(n) * _UNIT_MS[u] for n, u in parts)


def _format_ms(ms: int) -> str:
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def speed_up_rules(text: str, factor: int) -> str:
    """The rule file with every `for`, `keep_firing_for` and range window `factor` times shorter.

    For tests that must see alerts fire within seconds: the rules stay the shipped ones, only
    their time scale changes (a [2m] window becomes [4s] at factor 30).
    """

    def shorter(duration: str) -> str:
        return _format_ms(max(1, _duration_ms(duration) // factor))

    doc = yaml.safe_load(text)
    for group in doc["groups"]:
        for rule in group["rules"]:
            rule["expr"] = re.sub(
                r"\[([0-9a-z]+)\]", lambda m: f"[{shorter(m.group(1))}]", rule["expr"]
            )
            for key in ("for", "keep_firing_for"):
                if key in rule:
                    rule[key] = shorter(rule[key])
    return yaml.safe_dump(doc, sort_keys=False)


def alertmanager_test_config(example: str, receiver: WebhookReceiver) -> str:
    """The shipped example configuration, each receiver replaced by a webhook to `receiver`.

    Routes, grouping and inhibition stay as shipped; only the timers shrink to a second so a
    test sees notifications at once.
    """
    doc = yaml.safe_load(example)
    doc["receivers"] = [
        {
            "name": r["name"],
            "webhook_configs": [{"url": receiver.url(r["name"]), "send_resolved": True}],
        }
        for r in doc["receivers"]
    ]
    routes = [doc["route"]]
    while routes:
        route = routes.pop()
        for key, value in (("group_wait", "1s"), ("group_interval", "1s")):
            if route is doc["route"] or key in route:
                route[key] = value
        routes.extend(route.get("routes", []))
    return yaml.safe_dump(doc, sort_keys=False)
