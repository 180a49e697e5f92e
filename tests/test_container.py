"""The container image: the Dockerfile linted, built for real and run read-only as non-root.

The build (tests/support/container.py) takes about a minute cold (mmdebstrap makes the Debian
base) and well under that warm (the base tarball is cached in .cache/container-base/). A
missing tool fails the test with the command that installs it: never a skip.
"""

from __future__ import annotations

import re
import subprocess
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from exporter.settings import LISTEN_ADDRESS
from tests.support.container import (
    INSTALL_HINT,
    REPO_ROOT,
    BuiltImage,
    ReadOnlyContainer,
    build_from_dockerfile,
    image_environment,
    missing_tools,
    mounted,
)
from tests.support.exporter_process import Scrape
from tests.support.layouts import V7, SidekiqWriter
from tests.support.redis_server import RedisServer, free_port

DOCKERFILE = REPO_ROOT / "Dockerfile"
HADOLINT = REPO_ROOT / ".venv" / "bin" / "hadolint"
PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def test_hadolint_passes_and_every_ignore_says_why() -> None:
    if not HADOLINT.exists():
        pytest.fail(f"{HADOLINT} missing: run `scripts/setup.sh --dev`", pytrace=False)
    done = subprocess.run(
        [str(HADOLINT), "--no-color", str(DOCKERFILE)], capture_output=True, text=True, check=False
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    lines = DOCKERFILE.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines):
        if "hadolint ignore" in line:
            reason = lines[number - 1] if number else ""
            why = f"Dockerfile:{number + 1}: say why on the line before an ignored hadolint rule"
            assert reason.startswith("#"), why
            assert "hadolint" not in reason, why


def test_hadolint_reports_a_broken_dockerfile(tmp_path: Path) -> None:
    # The lint must be able to fail: a shell-form ENTRYPOINT and apt-get without pinning.
    broken = tmp_path / "Dockerfile"
    broken.write_text("FROM debian:12\nRUN apt-get install curl\nENTRYPOINT sidekiq-exporter\n")
    done = subprocess.run(
        [str(HADOLINT), "--no-color", str(broken)], capture_output=True, text=True
    )
    assert done.returncode != 0
    assert "DL3025" in done.stdout  # exec form for ENTRYPOINT


def test_dockerfile_labels_match_pyproject() -> None:
    # The OCI labels repeat the package's version and home (pyproject.toml is the source).
    text = DOCKERFILE.read_text(encoding="utf-8")
    labels = dict(re.findall(r'(org\.opencontainers\.image\.[a-z]+)="([^"]*)"', text))
    homepage = PYPROJECT["project"]["urls"]["Homepage"]
    assert labels["org.opencontainers.image.version"] == PYPROJECT["project"]["version"]
    assert labels["org.opencontainers.image.source"] == homepage
    assert labels["org.opencontainers.image.url"] == homepage
    assert labels["org.opencontainers.image.licenses"] == PYPROJECT["project"]["license"]


def test_dockerfile_port_is_the_exporters_default() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    exposed = re.findall(r"^EXPOSE (.+)$", text, flags=re.MULTILINE)
    assert exposed == [str(LISTEN_ADDRESS.default[1])]
    # The HEALTHCHECK's address: the exporter's, from its variable or its default.
    assert f"'{LISTEN_ADDRESS.env}', '{LISTEN_ADDRESS.default_text}'" in text


@pytest.fixture(scope="module")
def image() -> Iterator[BuiltImage]:
    if missing := missing_tools():
        pytest.fail(f"missing {', '.join(missing)}: {INSTALL_HINT}", pytrace=False)
    yield from build_from_dockerfile()


def test_image_follows_the_container_conventions(image: BuiltImage) -> None:
    config = image.config
    uid, gid = config["User"].split(":")
    assert uid.isdigit(), config["User"]  # numeric, so runAsNonRoot can check it
    assert gid.isdigit(), config["User"]
    assert int(uid) != 0
    assert config["Entrypoint"] == ["/opt/sidekiq-exporter/bin/sidekiq-exporter"]  # exec form
    assert image_environment(config)["PYTHONUNBUFFERED"] == "1"
    assert f"{LISTEN_ADDRESS.default[1]}/tcp" in config["ExposedPorts"]
    test = image.info["Healthcheck"]["Test"]
    assert test[0] == "CMD", test
    assert test[1].endswith("/python"), test  # Python, no curl in the image
    labels = config["Labels"]
    assert labels["org.opencontainers.image.version"] == PYPROJECT["project"]["version"]
    # The runtime stage holds the venv, not the build's inputs or its installer.
    with mounted(image.tag) as root:
        assert not (root / "src").exists()
        site = next((root / "opt/sidekiq-exporter/lib").glob("python3*/site-packages"))
        assert (site / "exporter").is_dir()
        assert not (site / "pip").exists()
        assert list(site.glob("**/__pycache__/*.pyc")) != []  # compiled at build time
    print(f"\nimage {image.size_bytes / 1e6:.1f} MB; times (s): {image.timings}")


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as error:
        return int(error.code), ""


@pytest.mark.integration
def test_image_runs_read_only_as_its_user_and_serves_sidekiq_data(
    image: BuiltImage, redis_server: RedisServer, tmp_path: Path
) -> None:
    client = redis.Redis(port=redis_server.port)
    writer = SidekiqWriter(client, V7)
    seconds, _ = client.time()
    for n in range(3):
        writer.push(
            "within_5_seconds", writer.job("HardJob", enqueued_at=seconds - 2, jid=f"{n:024}")
        )
    writer.stats(processed=42, failed=1)
    # A cron line naming a zone: the image has no system tz database, so the zone must come
    # from the tzdata package the exporter depends on.
    writer.cron_job("berlin_report", "0 9 * * * Europe/Berlin", last_enqueue=seconds - 60)

    port = free_port()
    env = image_environment(image.config)
    # The HEALTHCHECK reads the listen address from the environment.
    env["SIDEKIQ_EXPORTER_WEB_LISTEN_ADDRESS"] = f"127.0.0.1:{port}"
    command = [
        *image.config["Entrypoint"],
        "--redis.url",
        redis_server.url,
        "--poll.interval",
        "1s",
    ]
    healthcheck = image.info["Healthcheck"]["Test"][1:]
    with mounted(image.tag) as root:
        container = ReadOnlyContainer(root, image.config["User"], command, env, tmp_path / "log")
        try:
            container.start()
            deadline = time.monotonic() + 30
            scrape = None
            while time.monotonic() < deadline and container.proc and container.proc.poll() is None:
                try:
                    if _get(f"http://127.0.0.1:{port}/-/ready")[0] == 200:
                        scrape = Scrape.parse(_get(f"http://127.0.0.1:{port}/metrics")[1])
                        break
                except OSError:
                    pass
                time.sleep(0.1)
            assert scrape is not None, f"never ready; log:\n{container.log_text()}"

            status = container.status()
            uid, gid = image.config["User"].split(":")
            assert status["Uid"].split() == [uid] * 4
            assert status["Gid"].split() == [gid] * 4
            assert status["NoNewPrivs"] == "1"
            assert int(status["CapEff"], 16) == 0
            assert "ro" in container.root_mount_options()

            assert scrape.value("sidekiq_up", target="default") == 1
            queue = {"target": "default", "queue": "within_5_seconds"}
            assert scrape.value("sidekiq_queue_enqueued_jobs", **queue) == 3
            assert scrape.value("sidekiq_queue_latency_seconds", **queue) >= 2
            assert scrape.value("sidekiq_processed_jobs_total", target="default") == 42
            cron = {"target": "default", "cron_namespace": "default", "cron_job": "berlin_report"}
            assert scrape.value("sidekiq_cron_job_next_expected_timestamp_seconds", **cron) > 0
            assert scrape.get("sidekiq_exporter_skipped_items_total", None, target="default",
                              reason="unparseable_cron") is None  # fmt: skip

            checked = container.exec(healthcheck)
            assert checked.returncode == 0, checked.stderr
            assert container.stop() == 0, container.log_text()
            # The check can fail: with the exporter gone it must.
            assert container.exec(healthcheck).returncode != 0
        finally:
            container.cleanup()
    assert "Traceback" not in container.log_text(), container.log_text()
