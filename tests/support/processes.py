"""What the subprocess helpers (redis-server, Sentinel, Sidekiq, the exporter) share.

Every wait here is bounded: a process that ignores SIGTERM gets SIGKILL, and a killed process
is reaped within `KILL_WAIT_SECONDS`. Servers and Sidekiq processes start in a session (and
process group) of their own, so `kill_process_group` can end anything they left behind.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from pathlib import Path
from types import TracebackType
from typing import Self

KILL_WAIT_SECONDS = 5.0  # how long to wait for a SIGKILLed process to be reaped


def kill_process(proc: subprocess.Popen[bytes] | None) -> None:
    """SIGKILL and reap `proc`; a no-op when there is none or it has already exited."""
    if proc is not None and proc.poll() is None:
        proc.kill()
        proc.wait(KILL_WAIT_SECONDS)


def stop_process(proc: subprocess.Popen[bytes] | None, timeout: float) -> int | None:
    """SIGTERM and wait up to `timeout`; SIGKILL if it hangs. The exit code (None: no process)."""
    if proc is None:
        return None
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            kill_process(proc)
    return proc.returncode


def kill_process_group(pgid: int | None) -> None:
    """SIGKILL what is left of process group `pgid` (started with ``start_new_session``)."""
    if pgid is not None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)


def log_file_tail(path: Path, lines: int) -> str:
    """The last `lines` lines of the log file at `path`, or "(no log)" before there is one."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


class StartCleanupContext:
    """Mixin: `with helper:` is `helper.start()`, and `helper.cleanup()` on the way out.

    `cleanup()` also runs when `start()` itself fails, so a half-started process or its temp
    directory is never left behind.
    """

    def start(self) -> Self:
        raise NotImplementedError

    def cleanup(self) -> None:
        raise NotImplementedError

    def _cleanup_after_failed_start(self) -> None:
        self.cleanup()

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self._cleanup_after_failed_start()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()
