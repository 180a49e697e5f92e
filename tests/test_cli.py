"""The entry point: exit codes and messages, wiring, serving, a clean stop on SIGTERM, and
the other signals (SIGHUP reloads)."""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import os
import resource
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import aiohttp
import bcrypt
import pytest
from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from exporter import __version__, cli
from exporter.clock import Clock, SystemClock
from exporter.collector import SidekiqCollector
from exporter.connection import Reload
from exporter.model import Sample, Snapshot
from exporter.poller import Poller
from exporter.settings import Settings
from exporter.store import Store
from exporter.targets import build_target
from tests.support.exporter_process import ExporterProcess, ListeningExporter
from tests.support.redis_server import RedisServer, free_port
from tests.support.samples import empty_sample
from tests.support.tls import CertPair, make_pki

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def no_logging_setup(monkeypatch: pytest.MonkeyPatch) -> None:
    """main() configures process-wide logging; in-process tests must not clobber pytest's."""
    monkeypatch.setattr(cli, "configure_logging", lambda level, fmt: None)


# --- main(): exit codes ----------------------------------------------------------------------


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out == f"sidekiq-exporter {__version__}\n"


def test_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: sidekiq-exporter")
    assert "SIDEKIQ_EXPORTER_REDIS_URL" in out


@pytest.mark.parametrize(
    ("argv", "reason"),
    [
        (["--redis.url=http://user:pw@localhost"], "scheme must be"),
        (["--poll.interval=forever"], "invalid duration"),
        (["--redis.password-file=/nonexistent/secret"], "/nonexistent/secret"),
        (["--web.listen-address=nope"], "missing :PORT"),
        (["--unknown"], "unrecognized arguments"),
        (["--poll.max-bytes=64MB"], "invalid size"),
        (["--collect.processes.max=0"], "invalid limit"),
        (["--collect.label-value-length.max=-1"], "invalid limit"),
    ],
)
def test_bad_configuration_exits_2_with_one_line(
    argv: list[str], reason: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("sidekiq-exporter: error: ")
    assert captured.err.count("\n") == 1
    assert reason in captured.err
    assert "pw@" not in captured.err


def test_environment_is_read(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SIDEKIQ_EXPORTER_POLL_INTERVAL", "10m")
    assert cli.main([]) == 2
    assert "SIDEKIQ_EXPORTER_POLL_INTERVAL" in capsys.readouterr().err


def test_port_in_use_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = cli.main(
            [
                f"--web.listen-address=127.0.0.1:{port}",
                f"--redis.url=redis://127.0.0.1:{free_port()}/0",
            ]
        )
    assert code == 2
    err = capsys.readouterr().err
    assert (
        err
        == f"sidekiq-exporter: error: cannot listen on 127.0.0.1:{port}: Address already in use\n"
    )


def test_more_connections_than_descriptors_exits_2_with_one_line() -> None:
    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))

    result = subprocess.run(
        [sys.executable, "-m", "exporter", "--web.listen-address=127.0.0.1:0"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        preexec_fn=low_limit,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr == (
        "sidekiq-exporter: error: --web.max-connections 512: with 1 Redis connection(s) and 64 "
        "other descriptors the process needs 577 file descriptors, but may open only 256 "
        "(ulimit -n); lower --web.max-connections to 191 or less, or raise the limit\n"
    )


# --- wiring ----------------------------------------------------------------------------------


def settings_for(port: int = 0, *names: str) -> Settings:
    return Settings(
        targets=tuple(
            build_target(name=name, url=f"redis://:pw@127.0.0.1:{free_port()}/0")
            for name in (names or ("main",))
        ),
        poll_interval=1.0,
        poll_timeout=0.5,
        listen_host="127.0.0.1",
        listen_port=port,
        telemetry_path="/metrics",
        log_level="info",
        log_format="json",
        collect_processes=True,
        shutdown_timeout=2.0,
    )


async def test_build_pollers_wires_one_poller_and_client_per_target() -> None:
    settings = settings_for(0, "a", "b")
    registry = CollectorRegistry(auto_describe=False)
    store = Store(["a", "b"])
    async with AsyncExitStack() as stack:
        pollers = cli.build_pollers(settings, store, registry, SystemClock(), stack)
        assert [p.target for p in pollers] == ["a", "b"]
        collectors = list(registry._collector_to_names)  # no public listing in client_python
        assert [type(c) for c in collectors] == [SidekiqCollector]
        # Unreachable Redis: the real reader fails and the poller counts it.
        assert await pollers[0].poll_once() is False
        assert store.get("a").polls_error == 1


# --- serve(): in process, with fake pollers --------------------------------------------------


def fake_sample(now: float) -> Sample:
    return empty_sample(now, processed=1)


class FakeBuild:
    """A Builder with instant fake reads; records that its resources were released."""

    def __init__(self) -> None:
        self.closed = asyncio.Event()
        self.pollers: list[Poller] = []

    def __call__(
        self,
        settings: Settings,
        store: Store,
        registry: CollectorRegistry,
        clock: Clock,
        stack: AsyncExitStack,
        reloads: list[Reload],
    ) -> list[Poller]:
        Gauge("fake_wired", "Proves the builder's registry is served.", registry=registry).set(1)
        registry.register(SidekiqCollector(store, settings, clock))  # as build_pollers does

        async def close() -> None:
            self.closed.set()

        stack.push_async_callback(close)

        async def read(now_hint: float, since: float | None = None) -> Sample:
            return fake_sample(clock.time())

        def derive(sample: Sample) -> Snapshot:
            return Snapshot("main", sample, {}, False, {}, {}, sample.running_jobs)

        self.pollers = [Poller(t, settings, store, read, derive, clock) for t in settings.targets]
        return self.pollers


async def get(session: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    async with session.get(url) as response:
        return response.status, await response.text()


async def wait_until_serving(session: aiohttp.ClientSession, base: str) -> None:
    async with asyncio.timeout(5):
        while True:
            try:
                status, _ = await get(session, f"{base}/-/ready")
                if status == 200:
                    return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.02)


async def test_serve_until_stopped_then_releases_everything() -> None:
    port = free_port()
    settings = settings_for(port)
    build, stop = FakeBuild(), asyncio.Event()
    with capture_logs() as logs:
        task = asyncio.create_task(cli.serve(settings, build=build, stop=stop))
        base = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as session:
            await wait_until_serving(session, base)
            status, text = await get(session, f"{base}/metrics")
            # `name[]` reaches the Sidekiq collector too (by the names it describes from the table).
            filtered = await get(session, f"{base}/metrics?name[]=sidekiq_up&name[]=python_info")
        assert status == 200
        names = {f.name for f in text_string_to_metric_families(text)}
        assert {"fake_wired", "process_cpu_seconds", "python_info", "sidekiq_up"} <= names
        assert filtered[0] == 200
        filtered_names = {f.name for f in text_string_to_metric_families(filtered[1])}
        assert filtered_names == {"sidekiq_up", "python_info"}
        stop.set()
        async with asyncio.timeout(settings.shutdown_timeout):
            await task
    assert build.closed.is_set()
    (started,) = [e for e in logs if e["event"] == "exporter_started"]
    assert started["addresses"] == [f"127.0.0.1:{port}"]
    assert started["targets"] == {"main": settings.targets[0].redacted_url}
    assert "pw" not in json.dumps(started)
    assert [e["event"] for e in logs if e["event"].startswith("exporter_")] == [
        "exporter_started",
        "exporter_stopping",
        "exporter_stopped",
    ]


async def test_serve_port_in_use_releases_everything() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        settings = settings_for(taken.getsockname()[1])
        build = FakeBuild()
        with pytest.raises(cli.StartupError, match="Address already in use"):
            await cli.serve(settings, build=build, stop=asyncio.Event())
    assert build.closed.is_set()


# --- the real process ------------------------------------------------------------------------


@pytest.fixture
def exporter_process() -> Iterator[tuple[subprocess.Popen[str], str]]:
    """`python -m exporter` against an unreachable Redis, on a free loopback port."""
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "exporter",
            f"--redis.url=redis://user:hunter2@127.0.0.1:{free_port()}/0",
            f"--web.listen-address=127.0.0.1:{port}",
            "--poll.interval=1s",
        ],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        yield proc, f"http://127.0.0.1:{port}"
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=5)


def http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def wait_for_http(url: str, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        try:
            http_get(url)
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"{url} never answered")


def test_process_serves_while_redis_is_down_and_stops_on_sigterm(
    exporter_process: tuple[subprocess.Popen[str], str],
) -> None:
    proc, base = exporter_process
    wait_for_http(f"{base}/-/healthy", proc)
    assert http_get(f"{base}/-/healthy") == (200, "OK")
    assert http_get(f"{base}/-/ready")[0] == 503
    status, text = http_get(f"{base}/metrics")
    assert status == 200
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("sidekiq_up", (("target", "default"),))] == 0
    assert (
        samples[("sidekiq_exporter_polls_total", (("result", "error"), ("target", "default")))] >= 1
    )
    body = http_get(f"{base}/")[1]
    assert "hunter2" not in body

    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=5) == 0
    assert time.monotonic() - started < 5
    output = proc.stdout.read() if proc.stdout else ""
    lines = [json.loads(line) for line in output.splitlines()]  # JSON: stdout is not a TTY
    events = [line["event"] for line in lines]
    assert events.count("target_down") == 1
    assert events[-2:] == ["exporter_stopping", "exporter_stopped"]
    assert "hunter2" not in output
    assert "Traceback" not in output


def test_python_dash_m_version() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "exporter", "--version"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert (result.returncode, result.stdout, result.stderr) == (
        0,
        f"sidekiq-exporter {__version__}\n",
        "",
    )


# --- signals: reload, ignore, stop -------------------------------------------------------------


def wait_for_events(exporter: ExporterProcess, event: str, count: int = 1) -> list[dict[str, Any]]:
    """The log's `event` lines, once there are `count` of them (within 10 s)."""
    deadline = time.monotonic() + 10
    while True:
        found = [e for e in exporter.log_events() if e.get("event") == event]
        if len(found) >= count or time.monotonic() > deadline:
            assert len(found) >= count, f"{count} × {event} expected; log:\n{exporter.log_tail()}"
            return found
        time.sleep(0.02)


@pytest.mark.integration
def test_signals_other_than_stop_signals_do_not_end_the_daemon() -> None:
    redis_url = f"redis://127.0.0.1:{free_port()}/0"
    with ExporterProcess(redis_url, ready_path="/-/healthy") as exporter:
        for sig in (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2, signal.SIGPIPE):
            os.kill(exporter.pid, sig)
        wait_for_events(exporter, "reload_requested")
        ignored = wait_for_events(exporter, "signal_ignored", 2)
        assert exporter.get("/-/healthy") == (200, "OK")
        assert {e["signal"] for e in ignored} == {"SIGUSR1", "SIGUSR2"}
        # SIGQUIT stops it cleanly, like SIGTERM.
        os.kill(exporter.pid, signal.SIGQUIT)
        assert exporter.proc is not None
        assert exporter.proc.wait(5) == 0
        (stopping,) = wait_for_events(exporter, "exporter_stopping")
        assert stopping["signal"] == "SIGQUIT"


def https_status(port: int, context: ssl.SSLContext, user: str, password: str) -> int:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=5)
    try:
        connection.request("GET", "/-/healthy", headers={"Authorization": f"Basic {token}"})
        return connection.getresponse().status
    finally:
        connection.close()


def served_certificate(port: int, ca: Path) -> bytes:
    context = ssl.create_default_context(cafile=str(ca))
    context.check_hostname = False  # one of the two certificates has no IP SAN
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw) as tls,
    ):
        certificate = tls.getpeercert(binary_form=True)
    assert certificate is not None
    return certificate


def web_yaml(cert: CertPair, user_hash: str) -> str:
    return (
        f"tls_server_config:\n  cert_file: {cert.cert}\n  key_file: {cert.key}\n"
        f"basic_auth_users:\n  prometheus: '{user_hash}'\n"
    )


@pytest.mark.integration
def test_sighup_reloads_the_web_config_or_keeps_the_old_one(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    old_hash, new_hash = (bcrypt.hashpw(p, bcrypt.gensalt(4)).decode() for p in (b"old", b"new"))
    web = tmp_path / "web.yml"
    web.write_text(web_yaml(pki.server, old_hash))
    context = ssl.create_default_context(cafile=str(pki.ca.cert))
    redis_url = f"redis://127.0.0.1:{free_port()}/0"
    with ListeningExporter(redis_url, args=("--web.config.file", str(web))) as exporter:
        first = served_certificate(exporter.port, pki.ca.cert)
        assert https_status(exporter.port, context, "prometheus", "old") == 200
        # Another certificate (other files: only a reload sees them) and another password.
        web.write_text(web_yaml(pki.server_dns_only, new_hash))
        os.kill(exporter.pid, signal.SIGHUP)
        (reloaded,) = wait_for_events(exporter, "web_config_reloaded")
        assert reloaded["basic_auth_users"] == 1
        assert served_certificate(exporter.port, pki.ca.cert) != first
        relaxed = ssl.create_default_context(cafile=str(pki.ca.cert))
        relaxed.check_hostname = False
        assert https_status(exporter.port, relaxed, "prometheus", "new") == 200
        assert https_status(exporter.port, relaxed, "prometheus", "old") == 401
        # A broken file, and one that would switch TLS off: logged, the config in use stays.
        for text, reason in (
            ("basic_auth_users: [", "invalid YAML"),
            (f"basic_auth_users:\n  prometheus: '{old_hash}'\n", "needs a restart"),
        ):
            web.write_text(text)
            before = len(wait_for_events(exporter, "web_config_reload_failed", 0))
            os.kill(exporter.pid, signal.SIGHUP)
            failed = wait_for_events(exporter, "web_config_reload_failed", before + 1)[-1]
            assert reason in failed["error"], failed
            assert failed["level"] == "error"
            assert https_status(exporter.port, relaxed, "prometheus", "new") == 200
        assert exporter.running
        log = exporter.log_text()
    assert "Traceback" not in log
    assert new_hash not in log


@pytest.mark.integration
def test_sighup_reads_the_redis_password_file_again(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    redis_server.execute("ACL", "SETUSER", "exporter", "on", ">pw-1-a7c3", "~*", "&*", "+@all")
    password_file = tmp_path / "redis-password"
    password_file.write_text("pw-1-a7c3\n")
    url = f"redis://exporter@127.0.0.1:{redis_server.port}/0"
    with ExporterProcess(url, args=("--redis.password-file", str(password_file))) as exporter:

        def reload_with(text: str, count: int) -> None:
            password_file.write_text(text)
            os.kill(exporter.pid, signal.SIGHUP)
            wait_for_events(exporter, "reload_requested", count)

        # A wrong password in the file: used at once (the target goes down on the next poll).
        reload_with("pw-wrong-5e1b\n", 1)
        (reloaded,) = wait_for_events(exporter, "redis_password_reloaded")
        assert (reloaded["target"], reloaded["changed"]) == ("default", True)
        wait_for_events(exporter, "target_down")
        # The server's password changed, and the file with it: up again, no restart.
        redis_server.execute("ACL", "SETUSER", "exporter", "resetpass", ">pw-2-c94d")
        reload_with("pw-2-c94d\n", 2)
        wait_for_events(exporter, "target_up", 2)
        # An empty file is refused: the password in use stays.
        reload_with("", 3)
        (failed,) = wait_for_events(exporter, "redis_password_reload_failed")
        assert "empty" in failed["error"]
        polls = exporter.polls()
        assert exporter.scrape_at_polls(polls + 2).value("sidekiq_up", target="default") == 1
        log = exporter.log_text()
    for secret in ("pw-1-a7c3", "pw-2-c94d", "pw-wrong-5e1b"):
        assert secret not in log
