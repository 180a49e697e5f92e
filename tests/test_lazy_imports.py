"""Optional parts are imported only when used: a daemon started without a config file or a web
config, on a Redis without sidekiq-cron jobs, never loads YAML, bcrypt, the web config's TLS and
auth modules, cronsim or the demo (each costs resident memory; docs/performance.md, "Memory").

The daemon runs in a subprocess (`python -m exporter`'s own entry point), serves one scrape
after a successful poll, and writes the names in `sys.modules` before it stops itself.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import bcrypt

from tests.support.redis_server import RedisServer, free_port

# Uses a raw socket, not urllib or http.client, so the watcher itself imports nothing
# (http.client brings email.*, urllib.request brings ssl helpers...).
RUNNER = r"""
import json, os, signal, socket, sys, threading, time

port, out = int(sys.argv[1]), sys.argv[2]

def scrape():
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)

def watch():
    for _ in range(300):
        try:
            if b'sidekiq_exporter_polls_total{result="success"' in scrape():
                break
        except OSError:
            pass
        time.sleep(0.1)
    else:
        os._exit(3)
    with open(out, "w") as f:
        json.dump(sorted(sys.modules), f)
    os.kill(os.getpid(), signal.SIGTERM)

threading.Thread(target=watch, daemon=True).start()
from exporter.cli import main
sys.exit(main(sys.argv[3:]))
"""

# Modules only some configurations need; the reason each is optional.
OPTIONAL = (
    "yaml",  # --config.file / --web.config.file
    "bcrypt",  # basic_auth_users in the web config
    "exporter.web.config",  # --web.config.file
    "exporter.web.auth",  # --web.config.file
    "exporter.web.tls",  # tls_server_config in the web config
    "cronsim",  # sidekiq-cron jobs in Redis
    "zoneinfo",  # a cron line naming a time zone
    "exporter.demo",  # `python -m exporter.demo` only
)


def _daemon_modules(tmp_path: Path, url: str, *args: str) -> set[str]:
    out = tmp_path / "modules.json"
    port = free_port()
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            RUNNER,
            str(port),
            str(out),
            "--redis.url",
            url,
            "--web.listen-address",
            f"127.0.0.1:{port}",
            "--log.level",
            "warning",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return set(json.loads(out.read_text()))


def test_plain_daemon_imports_no_optional_module(
    tmp_path: Path, module_redis_server: RedisServer
) -> None:
    modules = _daemon_modules(tmp_path, module_redis_server.url)
    assert "exporter.poller" in modules  # it did run the daemon
    loaded = sorted(name for name in modules if name.split(".")[0] in OPTIONAL or name in OPTIONAL)
    loaded += sorted(name for name in modules if name.startswith("exporter.demo"))
    assert loaded == []


def test_web_config_imports_what_it_needs(tmp_path: Path) -> None:
    """The other side: a web config loads YAML and the web config's modules, and bcrypt only
    once a credential is checked."""
    config = tmp_path / "web.yml"
    hashed = bcrypt.hashpw(b"secret", bcrypt.gensalt(4)).decode()
    config.write_text(f"basic_auth_users:\n  alice: '{hashed}'\n")
    code = (
        "import asyncio, sys, json\n"
        "from exporter import cli\n"
        "from exporter.web.server import HttpCounters\n"
        f"web = cli.load_web_config({str(config)!r})\n"
        "served = cli._served(web, HttpCounters())\n"
        "before = sorted(sys.modules)\n"
        "checks = served._guard._checks\n"
        f"ok = asyncio.run(checks.check('127.0.0.1', b'secret', {hashed.encode()!r}))\n"
        "print(json.dumps([before, sorted(sys.modules), ok]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    before, after, ok = json.loads(result.stdout)
    assert ok is True
    assert {"yaml", "exporter.web.config", "exporter.web.auth"} <= set(before)
    assert "bcrypt" not in before
    assert "bcrypt" in after
