"""deploy/systemd: the unit verifies clean and is hardened (systemd-analyze)."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import time
import tomllib
from pathlib import Path

import pytest

from tests.support.deploy import DEPLOY, REPO_ROOT
from tests.support.exporter_process import ExporterProcess
from tests.support.redis_server import free_port

UNIT = DEPLOY / "systemd" / "sidekiq-exporter.service"
INSTALLED_BINARY = "/opt/sidekiq-exporter/bin/sidekiq-exporter"
VENV_BINARY = REPO_ROOT / ".venv" / "bin" / "sidekiq-exporter"
# systemd-analyze security's exposure, 0 (locked down) to 10; "OK" ends at 3.9.
MAX_EXPOSURE = 2.0


def _systemd_analyze() -> str:
    path = shutil.which("systemd-analyze")
    if path is None:
        pytest.fail(
            "systemd-analyze missing: run `scripts/setup-deploy-tools.sh` "
            "(apt-get install systemd)",
            pytrace=False,
        )
    return path


def _settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text(encoding="utf-8").splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            settings.setdefault(key, []).append(value)
    return settings


def test_unit_verifies_without_any_output(tmp_path: Path) -> None:
    # `verify` checks that ExecStart is executable, so the copy checked here starts the
    # exporter this checkout installed instead; nothing else differs.
    text = UNIT.read_text(encoding="utf-8")
    assert text.count(INSTALLED_BINARY) == 1
    unit = tmp_path / UNIT.name
    unit.write_text(text.replace(INSTALLED_BINARY, str(VENV_BINARY)))
    done = subprocess.run(
        [_systemd_analyze(), "verify", str(unit)], capture_output=True, text=True, check=False
    )
    # verify exits 0 on warnings: any output at all fails.
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


def test_verify_reports_a_broken_unit(tmp_path: Path) -> None:
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text(encoding="utf-8").replace(INSTALLED_BINARY, str(VENV_BINARY)))
    unit.write_text(unit.read_text().replace("ProtectSystem=strict", "ProtectSystem=stricter"))
    done = subprocess.run(
        [_systemd_analyze(), "verify", str(unit)], capture_output=True, text=True, check=False
    )
    # Exit code 0 for a setting it ignores: why the test above fails on any output.
    assert done.returncode == 0
    assert "Failed to parse protect system value, ignoring: stricter" in done.stderr


def test_security_exposure_is_low() -> None:
    done = subprocess.run(
        [_systemd_analyze(), "security", "--offline=yes", "--no-pager", str(UNIT)],
        capture_output=True,
        text=True,
        check=False,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+) (\w+)", done.stdout)
    assert match, done.stdout + done.stderr
    print(f"\nsystemd-analyze security: {match[1]} {match[2]}")
    assert float(match[1]) <= MAX_EXPOSURE, done.stdout


def test_unit_has_the_required_hardening_and_a_credential_for_the_password() -> None:
    settings = _settings()
    for key, value in {
        "DynamicUser": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "NoNewPrivileges": "yes",
        "PrivateTmp": "yes",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
    }.items():
        assert settings[key] == [value], key
    assert "@system-service" in settings["SystemCallFilter"]
    (credential,) = settings["LoadCredential"]
    name = credential.split(":")[0]
    (exec_start,) = settings["ExecStart"]
    # The password arrives as a file in the credentials directory, never as a variable.
    assert f"--redis.password-file=%d/{name}" in exec_start.split()
    assert not any("PASSWORD" in v for v in settings.get("Environment", []))
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert settings["Documentation"] == [pyproject["project"]["urls"]["Homepage"]]


@pytest.mark.integration
def test_exec_reload_makes_a_running_exporter_reload() -> None:
    # `systemctl reload` runs ExecReload with $MAINPID set to the service's process: run the
    # same command line against a real exporter and wait for its reload log line.
    (exec_reload,) = _settings()["ExecReload"]
    redis_url = f"redis://127.0.0.1:{free_port()}/0"
    with ExporterProcess(redis_url, ready_path="/-/healthy") as exporter:
        command = [word.replace("$MAINPID", str(exporter.pid)) for word in shlex.split(exec_reload)]
        subprocess.run(command, check=True, timeout=10)
        deadline = time.monotonic() + 10
        while not any(e.get("event") == "reload_requested" for e in exporter.log_events()):
            assert time.monotonic() < deadline, exporter.log_tail()
            time.sleep(0.02)
        assert exporter.running
