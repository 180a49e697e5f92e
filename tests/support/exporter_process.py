"""Run the real exporter daemon (`python -m exporter`) as a subprocess and scrape it over HTTP.

    with ExporterProcess(redis.url) as exporter:      # waits for /-/ready
        scrape = exporter.scrape()                    # GET /metrics, parsed
        scrape.value("sidekiq_queue_enqueued_jobs", target="default", queue="critical")
        exporter.stop()                               # SIGTERM; asserts exit 0 within 5 s

Everything listens on loopback only. Every wait is bounded in time; a process this helper
started is always reaped (killed if need be) when the context exits, also after a failure.
Output goes to a log file, never to a pipe that could fill up and block the daemon.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from prometheus_client.openmetrics import parser as openmetrics_parser
from prometheus_client.parser import text_string_to_metric_families

from .exposition import check_reference_format
from .processes import StartCleanupContext, kill_process, stop_process
from .redis_server import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
_VENV_PYTHON = REPO_ROOT / ".venv" / "bin" / "python"

OPENMETRICS_ACCEPT = "application/openmetrics-text; version=1.0.0"
# The daemon must end within this long after SIGTERM (issue 2: "exit 0 within 5 s").
STOP_TIMEOUT_SECONDS = 5.0

LabelSet = frozenset[tuple[str, str]]
MetricKey = tuple[str, LabelSet]  # (sample name as exposed, e.g. "..._total", labels)


def labels_of(**labels: str) -> LabelSet:
    """The frozenset of label pairs a `MetricKey` uses: `labels_of(queue="default")`."""
    return frozenset(labels.items())


class ExporterExitedError(RuntimeError):
    """The exporter process ended when it should still be running."""


class MetricNotFoundError(KeyError):
    """No series with that name and exactly those labels in a scrape."""


@dataclass(frozen=True)
class Scrape:
    """One parsed `/metrics` response.

    `samples` maps (sample name, frozenset of label pairs) to the value, e.g.
    `("sidekiq_processed_jobs_total", frozenset({("target", "default")}))`. Sample names are
    as exposed: counters end in `_total`, histograms have `_bucket`, `_sum` and `_count`.
    `types` maps each family name (without `_total`) to its type.
    """

    samples: Mapping[MetricKey, float]
    types: Mapping[str, str]
    text: str
    scraped_at: float  # time.time() when the response arrived

    @classmethod
    def parse(
        cls, text: str, scraped_at: float | None = None, *, openmetrics: bool = False
    ) -> Scrape:
        """Parse the text exposition format with prometheus_client's own parser, or with
        `openmetrics` its OpenMetrics parser, which also refuses what OpenMetrics forbids (a
        negative counter, a histogram whose `_count` is not its `+Inf` bucket, ...)."""
        samples: dict[MetricKey, float] = {}
        types: dict[str, str] = {}
        parse = (
            openmetrics_parser.text_string_to_metric_families
            if openmetrics
            else text_string_to_metric_families
        )
        for family in parse(text):
            types[family.name] = family.type
            for sample in family.samples:
                key = (sample.name, frozenset(sample.labels.items()))
                if key in samples:
                    raise ValueError(f"duplicate series in exposition: {key}")
                samples[key] = sample.value
        return cls(samples, types, text, time.time() if scraped_at is None else scraped_at)

    @property
    def names(self) -> set[str]:
        """Every sample name present (`sidekiq_processed_jobs_total`, not the family name)."""
        return {name for name, _ in self.samples}

    def value(self, name: str, **labels: str) -> float:
        """The value of the series with exactly these labels; MetricNotFoundError if absent."""
        key = (name, frozenset(labels.items()))
        try:
            return self.samples[key]
        except KeyError:
            known = sorted(str(dict(sorted(ls))) for n, ls in self.samples if n == name)[:20]
            raise MetricNotFoundError(
                f"no series {name}{labels}; series of that name: {known or 'none'}"
            ) from None

    def get(self, name: str, default: float | None = None, **labels: str) -> float | None:
        """Like `value`, but `default` when the series is absent."""
        return self.samples.get((name, frozenset(labels.items())), default)

    def series(self, name: str, **match: str) -> dict[LabelSet, float]:
        """Every series of `name` whose labels include `match` (a subset match)."""
        wanted = set(match.items())
        return {
            labels: value
            for (n, labels), value in self.samples.items()
            if n == name and wanted <= labels
        }

    def by_label(self, name: str, label: str, **match: str) -> dict[str, float]:
        """`{label value: value}` over the series of `name` matching `match` (values unique)."""
        out: dict[str, float] = {}
        for labels, value in self.series(name, **match).items():
            label_value = dict(labels)[label]
            if label_value in out:
                raise ValueError(f"{name}: label {label}={label_value!r} is not unique")
            out[label_value] = value
        return out

    def total(self, name: str, **match: str) -> float:
        """Sum over the series of `name` matching `match`."""
        return math.fsum(self.series(name, **match).values())


@dataclass
class ExporterProcess(StartCleanupContext):
    """The exporter daemon as a subprocess, on a free loopback port.

    `args` are appended to the command line; `env` is added to a copy of the environment
    from which every `SIDEKIQ_EXPORTER_*` variable was removed (so the caller's shell cannot
    change a test). `redis_url` may carry credentials; it is passed as `--redis.url`
    (None: not passed, e.g. when `args` give a `--config.file` with `targets:`).
    `ready_path` is polled until 200 at start: `/-/healthy` for a daemon with a target
    that is meant to stay down (then `/-/ready` never answers 200).
    """

    redis_url: str | None
    poll_interval: str = "1s"
    args: Sequence[str] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    python: str = field(
        default_factory=lambda: str(_VENV_PYTHON) if _VENV_PYTHON.exists() else sys.executable
    )
    startup_timeout: float = 20.0
    ready_path: str = "/-/ready"
    port: int = 0
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _dir: Path = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="exporter-test-"))

    # --- addresses -------------------------------------------------------------------------
    @property
    def log_path(self) -> Path:
        return self._dir / "exporter.log"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def command(self) -> list[str]:
        return [
            self.python,
            "-m",
            "exporter",
            *(["--redis.url", self.redis_url] if self.redis_url is not None else []),
            "--web.listen-address",
            f"127.0.0.1:{self.port}",
            "--poll.interval",
            self.poll_interval,
            "--log.format",
            "json",
            *self.args,
        ]

    # --- lifecycle -------------------------------------------------------------------------
    def start(self) -> Self:
        """Start the daemon and wait until `/-/ready` answers 200 (one successful poll)."""
        if self.running:
            return self
        fixed_port = self.port
        for attempt in range(3):
            if not fixed_port:
                self.port = free_port()
            self._spawn()
            try:
                self.wait_ready(self.startup_timeout)
                return self
            except ExporterExitedError:
                # Another process may have taken the free port between probe and bind.
                if fixed_port or attempt == 2 or "cannot listen" not in self.log_text():
                    raise
        raise AssertionError("unreachable")

    def launch(self, timeout: float | None = None) -> Self:
        """Start the daemon and wait only until it serves HTTP (`/-/healthy` 200), not for a
        successful poll: for a Redis that is down or stuck from the start."""
        if self.running:
            return self
        if not self.port:
            self.port = free_port()
        self._spawn()
        limit = self.startup_timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            self._check_alive()
            with contextlib.suppress(OSError):
                if self.get("/-/healthy", timeout=1.0)[0] == 200:
                    return self
            time.sleep(0.05)
        raise TimeoutError(f"exporter not serving within {limit}s; log:\n{self.log_tail()}")

    def open_fds(self) -> int:
        """File descriptors the daemon has open now (Linux `/proc/<pid>/fd`)."""
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def _spawn(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SIDEKIQ_EXPORTER_")}
        env.update(self.env)
        env["PYTHONUNBUFFERED"] = "1"
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.command,
                cwd=REPO_ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def wait_ready(self, timeout: float) -> None:
        """Poll `/-/ready` until 200; ExporterExitedError if the process ends meanwhile."""
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                status, body = self.get(self.ready_path, timeout=1.0)
                if status == 200:
                    return
                last = f"{status} {body.strip()}"
            except OSError as exc:
                last = str(exc)
            time.sleep(0.05)
        raise TimeoutError(
            f"exporter not ready within {timeout}s (last: {last}); log:\n{self.log_tail()}"
        )

    def _check_alive(self) -> None:
        if self.proc is None:
            raise ExporterExitedError("exporter not started")
        code = self.proc.poll()
        if code is not None:
            raise ExporterExitedError(f"exporter exited with {code}; log:\n{self.log_tail()}")

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError("not started")
        return self.proc.pid

    def stop(self, timeout: float = STOP_TIMEOUT_SECONDS) -> float:
        """SIGTERM; assert a clean exit 0 within `timeout`. Returns the seconds it took."""
        if self.proc is None:
            raise RuntimeError("not started")
        self._check_alive()
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"exporter did not exit within {timeout}s of SIGTERM; log:\n{self.log_tail()}"
            ) from None
        elapsed = time.monotonic() - started
        assert code == 0, f"exporter exited {code} after SIGTERM; log:\n{self.log_tail()}"
        return elapsed

    def kill(self) -> None:
        """SIGKILL and reap (no-op when not running)."""
        kill_process(self.proc)

    def cleanup(self) -> None:
        """Reap the process if it still runs and remove the log directory."""
        stop_process(self.proc, STOP_TIMEOUT_SECONDS)
        shutil.rmtree(self._dir, ignore_errors=True)

    # --- HTTP ------------------------------------------------------------------------------
    def get(self, path: str, timeout: float = 5.0, accept: str = "") -> tuple[int, str]:
        """(status, body) of `GET path`; HTTP error statuses are returned, not raised."""
        request = urllib.request.Request(
            self.base_url + path, headers={"Accept": accept} if accept else {}
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return int(response.status), response.read().decode("utf-8")
        except urllib.error.HTTPError as error:
            with contextlib.closing(error):
                return int(error.code), error.read().decode("utf-8", "replace")

    def scrape(self, path: str = "/metrics", timeout: float = 5.0) -> Scrape:
        """GET `/metrics` and parse it; AssertionError unless 200."""
        self._check_alive()
        status, body = self.get(path, timeout)
        assert status == 200, f"GET {path} -> {status}: {body[:500]}"
        # Both formats, byte for byte as prometheus_client writes what they hold (the daemon
        # writes them itself: exporter/exposition.py).
        check_reference_format(body, openmetrics=False)
        status, openmetrics = self.get(path, timeout, accept=OPENMETRICS_ACCEPT)
        assert status == 200, f"GET {path} (OpenMetrics) -> {status}: {openmetrics[:500]}"
        check_reference_format(openmetrics, openmetrics=True)
        return Scrape.parse(body)

    def polls(self, scrape: Scrape | None = None, target: str = "default") -> int:
        """Successful polls so far (`sidekiq_exporter_polls_total{result="success"}`)."""
        scrape = scrape or self.scrape()
        return int(
            scrape.get("sidekiq_exporter_polls_total", 0.0, target=target, result="success") or 0
        )

    def scrape_after_polls(
        self, count: int = 2, timeout: float = 15.0, target: str = "default"
    ) -> Scrape:
        """A scrape whose snapshot comes from a poll that *started* after this call.

        A poll in flight when called may have read Redis before; `count=2` new successful polls
        guarantee the one shown began afterwards.
        """
        return self.scrape_at_polls(self.polls(target=target) + count, timeout, target)

    def scrape_at_polls(self, polls: int, timeout: float = 15.0, target: str = "default") -> Scrape:
        """A scrape taken once `polls` successful polls have completed (see `polls`).

        Take `exporter.polls() + 2` before changing Redis, change it, then call this: the
        scrape shows a poll that began after the change. Lets several exporters wait at once.
        """
        deadline = time.monotonic() + timeout
        while True:
            scrape = self.scrape()
            if self.polls(scrape, target) >= polls:
                return scrape
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"fewer than {polls} polls after {timeout}s; log:\n{self.log_tail()}"
                )
            time.sleep(0.05)

    # --- logs ------------------------------------------------------------------------------
    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:]) or "(no output)"

    def log_events(self) -> list[dict[str, Any]]:
        """The JSON log lines as dicts (other lines are skipped)."""
        return list(_json_lines(self.log_text().splitlines()))


class ListeningExporter(ExporterProcess):
    """The daemon "up" once its port accepts connections: with TLS or basic auth, where a
    plain GET of `/-/ready` gets no 200 (and with Redis down, /-/ready stays 503)."""

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            time.sleep(0.05)
        raise TimeoutError(f"exporter not listening within {timeout}s:\n{self.log_tail()}")


def _json_lines(lines: Iterable[str]) -> Iterator[dict[str, Any]]:
    for line in lines:
        with contextlib.suppress(ValueError):
            value = json.loads(line)
            if isinstance(value, dict):
                yield value
