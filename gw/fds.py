"""Open files: every SIP and MSRP connection is a descriptor, and at the limit a node stops
accepting without a word (issue 16: TCP OPTIONS unanswered, /healthz reset, nothing logged).

`raise_limit` takes the soft RLIMIT_NOFILE up to the hard one at start (as nginx's
`worker_rlimit_nofile` and systemd's `LimitNOFILE` habits expect); `FdWatch` counts the
descriptors in use, and logs and counts when they come near the limit.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from gw.logs import Throttle

try:
    import resource
except ImportError:  # not on this platform: nothing to raise
    resource = None  # type: ignore[assignment]

__all__ = ["NEAR", "FdWatch", "Limit", "open_count", "raise_limit"]

log = logging.getLogger("gw.fds")

NEAR = 0.9  # share of the soft limit at which the node warns


@dataclass(frozen=True)
class Limit:
    before: int  # the soft limit the node was started with
    soft: int  # the soft limit now
    hard: int


def raise_limit() -> Limit | None:
    """Soft RLIMIT_NOFILE up to the hard limit; logs what it got. None where there is none."""
    if resource is None:
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-files limit from %d to %d: %s", soft, target, exc)
            return Limit(soft, soft, hard)
    now, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    log.info("open files limit: %d (was %d, hard limit %d)", now, soft, hard)
    return Limit(soft, now, hard)


def open_count() -> int | None:
    """Descriptors open in this process (Linux /proc; None elsewhere)."""
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return None


class FdWatch:
    """Called every second or so: a warning (at most one a minute) and a count each time the
    descriptors in use pass NEAR of the soft limit."""

    def __init__(self, soft: int) -> None:
        self.soft = soft
        self.in_use = 0
        self.near_limit = 0  # checks that found the node near its limit
        self._log = Throttle(60.0)

    def check(self) -> None:
        count = open_count()
        if count is None:
            return
        self.in_use = count
        if count >= NEAR * self.soft:
            self.near_limit += 1
            if self._log.ready() is not None:
                log.warning(
                    "open files near the limit: %d of %d in use; new connections will fail "
                    "at the limit (raise the hard limit: ulimit -Hn, LimitNOFILE, k8s)",
                    count,
                    self.soft,
                )
