"""Stopping third-party peers the tests start in their own process group."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess


def stop_group(proc: subprocess.Popen[bytes] | None, timeout: float = 5.0) -> None:
    """SIGTERM the peer; if it hangs, SIGKILL its process group while the main process is
    unreaped (so the group is still its own), then reap it."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
