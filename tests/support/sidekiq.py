"""Run real Sidekiq (6.4.1 from Debian 12, 7.3.2 from .cache/, 8.1 from sid) against a test Redis.

6.4.1 and 7.3.2 run on this system's Ruby 3.1, selected only by ``ruby -I`` load paths; 8.1
(Ruby 3.3) runs in the Debian sid root (tests/support/sid_root.py), where it is the only
Sidekiq. See scripts/setup-test-services.sh. `VERSIONS` is keyed "6.4.1", "7.3.2" and "8.1"
(whatever 8.1.x sid has: `SidekiqVersion.version` is the exact one).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self
from urllib.parse import urlsplit

from . import sid_root
from .processes import (
    StartCleanupContext,
    kill_process,
    kill_process_group,
    log_file_tail,
    stop_process,
)
from .redis_server import SETUP_HINT, RespConnection, hgetall_dict

REPO_ROOT = Path(__file__).resolve().parents[2]
APP_DIR = REPO_ROOT / "tests" / "sidekiq_app"
_DEBIAN_GEMS = Path("/usr/share/rubygems-integration/all/gems")
_CACHE_GEMS = REPO_ROOT / ".cache" / "sidekiq-7.3.2" / "usr/share/rubygems-integration/all/gems"
_SID_GEMS = Path("/usr/share/rubygems-integration/all/gems")  # inside the sid root


@dataclass(frozen=True)
class SidekiqVersion:
    """One Sidekiq version the tests can run, and the layout facts that depend on it."""

    version: str
    lib_dirs: tuple[Path, ...]  # passed as `ruby -I`, in order
    executable: Path  # the gem's bin/sidekiq, run as `ruby -I... <executable>`
    work_key_suffix: str  # "<identity>:workers" (6.4.0-6.4.1) or "<identity>:work"
    beat_seconds: int  # heartbeat period
    has_metrics: bool  # j|... per-minute execution metrics
    has_cron: bool  # sidekiq-cron 1.8.0 (Debian 12) usable
    millisecond_timestamps: bool = False  # 8.0+: created_at, enqueued_at… are integer ms
    concurrency_field: bool = False  # 8.1.2+: `concurrency` is a process-hash field
    in_sid_root: bool = False  # runs in the Debian sid root; paths above are inside it

    @property
    def available(self) -> bool:
        if self.in_sid_root:
            return sid_root.built() and sid_root.host_path(self.executable).is_file()
        return (
            shutil.which("ruby") is not None
            and self.executable.is_file()
            and all(d.is_dir() for d in self.lib_dirs)
        )

    @property
    def ruby(self) -> list[str]:
        """The Ruby to run this version with: this system's, or the sid root's Ruby 3.3."""
        return sid_root.command("ruby") if self.in_sid_root else ["ruby"]

    @property
    def ruby_args(self) -> list[str]:
        """``["-I", dir, ...]`` selecting this version."""
        return [arg for d in self.lib_dirs for arg in ("-I", str(d))]

    @property
    def major(self) -> int:
        return int(self.version.split(".")[0])


SIDEKIQ_6_4_1 = SidekiqVersion(
    version="6.4.1",
    # redis-rb 4.8.0 and connection_pool 2.2.5 are activated by RubyGems (Debian 12 packages).
    lib_dirs=(_DEBIAN_GEMS / "sidekiq-6.4.1" / "lib",),
    executable=_DEBIAN_GEMS / "sidekiq-6.4.1" / "bin" / "sidekiq",
    work_key_suffix=":workers",
    beat_seconds=5,
    has_metrics=False,
    has_cron=True,
)
SIDEKIQ_7_3_2 = SidekiqVersion(
    version="7.3.2",
    lib_dirs=(
        _CACHE_GEMS / "sidekiq-7.3.2" / "lib",
        _CACHE_GEMS / "redis-client-0.22.2" / "lib",
        _CACHE_GEMS / "connection_pool-2.4.1" / "lib",
    ),
    executable=_CACHE_GEMS / "sidekiq-7.3.2" / "bin" / "sidekiq",
    work_key_suffix=":work",
    beat_seconds=10,
    has_metrics=True,
    has_cron=False,
)


def _sid_sidekiq() -> SidekiqVersion:
    """The Sidekiq 8.1.x of the sid root ("8.1" until the root is built)."""
    found = [
        g.name.removeprefix("sidekiq-") for g in sid_root.host_path(_SID_GEMS).glob("sidekiq-8.1.*")
    ]
    version = max(found, key=lambda v: [int(x) for x in v.split(".")], default="8.1")
    patch = int(version.split(".")[2]) if version.count(".") == 2 else 0
    return SidekiqVersion(
        version=version,
        # The only Sidekiq in the root: RubyGems activates it and redis-client, connection_pool.
        lib_dirs=(),
        executable=_SID_GEMS / f"sidekiq-{version}" / "bin" / "sidekiq",
        work_key_suffix=":work",
        beat_seconds=10,
        has_metrics=True,
        has_cron=False,  # sid's sidekiq-cron is 1.8.0, which app.rb runs with Sidekiq 6 only
        millisecond_timestamps=True,
        concurrency_field=patch >= 2,
        in_sid_root=True,
    )


SIDEKIQ_8_1 = _sid_sidekiq()
VERSIONS: dict[str, SidekiqVersion] = {
    "6.4.1": SIDEKIQ_6_4_1,
    "7.3.2": SIDEKIQ_7_3_2,
    "8.1": SIDEKIQ_8_1,
}


def available_versions() -> list[str]:
    """Versions whose files are installed (run scripts/setup-test-services.sh for all)."""
    return [name for name, v in VERSIONS.items() if v.available]


def get_version(version: str | SidekiqVersion) -> SidekiqVersion:
    """Look up a version and fail with an install hint if its files are missing."""
    v = version if isinstance(version, SidekiqVersion) else VERSIONS[version]
    if not v.available:
        hint = sid_root.SETUP_HINT if v.in_sid_root else SETUP_HINT
        raise RuntimeError(f"Sidekiq {v.version} is not installed; {hint}")
    return v


def ruby_cmd(
    version: str | SidekiqVersion, script: str | os.PathLike[str], *args: str
) -> list[str]:
    """``ruby -I... <script> args...``; ``"truth"`` means tests/sidekiq_app/truth.rb."""
    v = get_version(version)
    path = Path(script)
    if not path.is_absolute() and not path.exists():
        path = APP_DIR / (path.name if path.suffix == ".rb" else f"{path.name}.rb")
    return [*v.ruby, *v.ruby_args, str(path), *args]


def sidekiq_cmd(version: str | SidekiqVersion, *args: str) -> list[str]:
    """``ruby -I... <bin/sidekiq> -r tests/sidekiq_app/app.rb args...``."""
    v = get_version(version)
    return [*v.ruby, *v.ruby_args, str(v.executable), "-r", str(APP_DIR / "app.rb"), *args]


def ruby_env(redis_url: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("DYNO", None)  # would replace the hostname in the identity
    env.pop("RUBYOPT", None)
    env.pop("BUNDLE_GEMFILE", None)
    env["REDIS_URL"] = redis_url
    if extra:
        env.update(extra)
    return env


def run_ruby_json(
    version: str | SidekiqVersion,
    script: str,
    *args: str,
    redis_url: str,
    env: Mapping[str, str] | None = None,
    timeout: float = 60.0,
) -> dict[str, Any]:
    """Run a script from tests/sidekiq_app and parse the JSON object on its last stdout line."""
    cmd = ruby_cmd(version, script, *args)
    res = subprocess.run(
        cmd,
        cwd=REPO_ROOT,
        env=ruby_env(redis_url, env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if res.returncode != 0:
        raise RuntimeError(
            f"{' '.join(cmd)} exited {res.returncode}\nstdout:\n{res.stdout}\nstderr:\n{res.stderr}"
        )
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        raise RuntimeError(f"no JSON from {script}\nstdout:\n{res.stdout}\nstderr:\n{res.stderr}")
    data: dict[str, Any] = json.loads(lines[-1])
    return data


def enqueue(
    version: str | SidekiqVersion,
    redis_url: str,
    *,
    defaults: bool = False,
    timeout: float = 60.0,
    **counts: int | float | str,
) -> dict[str, Any]:
    """Push jobs with tests/sidekiq_app/enqueue.rb and return its JSON summary.

    With ``defaults=False`` (the default) only the given counts are pushed, e.g.
    ``enqueue("7.3.2", url, fast=1)``; with ``defaults=True`` the script's full default
    workload is pushed and ``counts`` override parts of it. Keys: fast, medium, critical,
    within_5_seconds, billing, billing_slow, orphan, scheduled, overdue, failing, dead,
    wrapped, slow, slow_seconds, slow_queue, scheduled_in, overdue_seconds, overdue_queue,
    wrapped_seconds.
    """
    args = [f"{k}={v}" for k, v in counts.items()]
    if not defaults:
        args.insert(0, "defaults=0")
    return run_ruby_json(version, "enqueue", *args, redis_url=redis_url, timeout=timeout)


def truth(
    version: str | SidekiqVersion,
    redis_url: str,
    *,
    minutes: int = 10,
    classes: Iterable[str] = (),
    timeout: float = 60.0,
) -> dict[str, Any]:
    """What Sidekiq's own Ruby API reports (tests/sidekiq_app/truth.rb). Not read-only."""
    args = [f"minutes={minutes}"]
    cls = ",".join(classes)
    if cls:
        args.append(f"classes={cls}")
    return run_ruby_json(version, "truth", *args, redis_url=redis_url, timeout=timeout)


def load_cron(
    version: str | SidekiqVersion, redis_url: str, *, due_now: bool = False
) -> dict[str, Any]:
    """Load the sidekiq-cron jobs from tests/sidekiq_app/cron.rb (6.4.1 only).

    ``due_now=True``: the first cron poll enqueues the current minute's tick instead of
    waiting for the next minute boundary (see cron.rb).
    """
    args = ["due_now=1"] if due_now else []
    return run_ruby_json(version, "cron", *args, redis_url=redis_url)


def cron_jobs(version: str | SidekiqVersion, redis_url: str) -> list[dict[str, Any]]:
    """What `Sidekiq::Cron::Job.all` reads (tests/sidekiq_app/cron.rb, 6.4.1 only): per job
    its name, status, `enabled?` and last enqueue time (text and epoch seconds)."""
    jobs: list[dict[str, Any]] = run_ruby_json(version, "cron", "load=0", redis_url=redis_url)[
        "jobs"
    ]
    return jobs


def _resp_for_url(redis_url: str) -> RespConnection:
    u = urlsplit(redis_url)
    if u.scheme == "unix":
        return RespConnection(unix_socket=u.path, password=u.password, username=u.username or None)
    db = int(u.path.lstrip("/") or 0)
    return RespConnection(
        u.hostname or "127.0.0.1",
        u.port or 6379,
        password=u.password,
        username=u.username or None,
        db=db,
    )


def wait_for(
    predicate: Callable[[], Any], timeout: float, interval: float = 0.1, message: str = ""
) -> Any:
    """Poll ``predicate`` until it returns something truthy; return it or raise TimeoutError."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(message or f"condition not met within {timeout}s")
        time.sleep(interval)


class SidekiqProcess(StartCleanupContext):
    """A real Sidekiq server process (``bin/sidekiq -r tests/sidekiq_app/app.rb``).

    :meth:`start` waits until the process's identity is in the ``processes`` set and its
    hash exists. ``shutdown_timeout`` is Sidekiq's ``-t`` (how long TERM waits for jobs).
    """

    def __init__(
        self,
        version: str | SidekiqVersion,
        redis_url: str,
        *,
        queues: Iterable[str] = ("critical,2", "default"),
        concurrency: int = 5,
        tag: str | None = None,
        shutdown_timeout: int = 3,
        env: Mapping[str, str] | None = None,
        cron: bool = False,
        extra_args: Iterable[str] = (),
    ) -> None:
        self.version = get_version(version)
        self.redis_url = redis_url
        self.queues = list(queues)
        self.concurrency = concurrency
        self.tag = tag
        self.shutdown_timeout = shutdown_timeout
        self.extra_env = dict(env or {})
        if cron:
            if not self.version.has_cron:
                raise ValueError(
                    f"sidekiq-cron is not available for Sidekiq {self.version.version}"
                )
            self.extra_env["SIDEKIQ_APP_CRON"] = "1"
        self.extra_args = list(extra_args)
        self.proc: subprocess.Popen[bytes] | None = None
        self.identity: str | None = None
        self._logdir = Path(tempfile.mkdtemp(prefix="sidekiq-test-"))
        self.log_path = self._logdir / "sidekiq.log"

    @property
    def command(self) -> list[str]:
        args: list[str] = []
        for q in self.queues:
            args += ["-q", q]
        args += ["-c", str(self.concurrency), "-t", str(self.shutdown_timeout)]
        if self.tag is not None:
            args += ["-g", self.tag]
        return sidekiq_cmd(self.version, *args, *self.extra_args)

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError("not started")
        return self.proc.pid

    @property
    def work_key(self) -> str:
        """``<identity>:workers`` (6.4.1) or ``<identity>:work`` (7.x)."""
        if self.identity is None:
            raise RuntimeError("identity not known yet")
        return self.identity + self.version.work_key_suffix

    def start(self, timeout: float = 30.0) -> Self:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.command,
                cwd=REPO_ROOT,
                env=ruby_env(self.redis_url, self.extra_env),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, killed whole at cleanup
            )
        try:
            self.identity = wait_for(
                self._find_identity,
                timeout,
                0.1,
                f"Sidekiq {self.version.version} (pid {self.pid}) did not register",
            )
        except BaseException as e:
            self.kill()
            raise RuntimeError(f"{e}; log:\n{self.log_tail()}") from e
        return self

    def _find_identity(self) -> str | None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(
                f"sidekiq exited with {self.proc.returncode}; log:\n{self.log_tail()}"
            )
        try:
            with _resp_for_url(self.redis_url) as r:
                for member in r.execute("SMEMBERS", "processes") or []:
                    # identity = "<hostname>:<pid>:<12 hex>"; the hostname may contain ':'
                    parts = member.rsplit(":", 2)
                    if (
                        len(parts) == 3
                        and parts[1] == str(self.pid)
                        and r.execute("HEXISTS", member, "info")
                    ):
                        return str(member)
        except OSError:
            return None
        return None

    # --- inspection ------------------------------------------------------------------------
    def process_hash(self) -> dict[str, Any]:
        """HGETALL of the process hash ({} once expired)."""
        with _resp_for_url(self.redis_url) as r:
            return hgetall_dict(r.execute("HGETALL", self.identity or ""))

    def info(self) -> dict[str, Any]:
        raw = self.process_hash().get("info")
        return json.loads(raw) if raw else {}

    def work(self) -> dict[str, dict[str, Any]]:
        """The work hash, tid -> decoded entry (``payload`` left as the raw string)."""
        with _resp_for_url(self.redis_url) as r:
            raw = hgetall_dict(r.execute("HGETALL", self.work_key))
        return {tid: json.loads(v) for tid, v in raw.items() if v}

    def log_tail(self, lines: int = 40) -> str:
        return log_file_tail(self.log_path, lines)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # --- signals ---------------------------------------------------------------------------
    def quiet(self) -> None:
        """TSTP: stop fetching new jobs; `quiet` becomes true at the next beat."""
        if self.running:
            assert self.proc is not None
            self.proc.send_signal(signal.SIGTSTP)

    def stop(self, timeout: float | None = None) -> int | None:
        """TERM and wait (shutdown_timeout + margin); SIGKILL if it hangs. Returns exit code."""
        if timeout is None:
            timeout = self.shutdown_timeout + 10
        return stop_process(self.proc, timeout)

    def kill(self) -> None:
        """SIGKILL: simulate a crash (the process stays in `processes` until cleanup)."""
        kill_process(self.proc)

    def cleanup(self) -> None:
        self.stop()
        if self.proc is not None:
            kill_process_group(self.proc.pid)
        shutil.rmtree(self._logdir, ignore_errors=True)

    def _cleanup_after_failed_start(self) -> None:
        with contextlib.suppress(Exception):  # the error from start() is the one to see
            self.cleanup()

    def __repr__(self) -> str:
        pid = self.proc.pid if self.proc else None
        return f"SidekiqProcess({self.version.version}, pid={pid}, identity={self.identity!r})"


def stop_all(processes: Iterable[SidekiqProcess], timeout: float | None = None) -> None:
    """TERM every process at once, then wait for each: shutdowns overlap instead of adding up."""
    procs = [p for p in processes if p.running]
    for p in procs:
        assert p.proc is not None
        p.proc.send_signal(signal.SIGTERM)
    for p in procs:
        assert p.proc is not None
        try:
            p.proc.wait(timeout if timeout is not None else p.shutdown_timeout + 10)
        except subprocess.TimeoutExpired:
            p.kill()
