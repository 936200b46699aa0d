"""One retry policy for the node's long-lived loops (the RPC inbox, the expiry listener): delays
that grow exponentially with jitter up to a cap, and one warning when an outage starts and one
line when it ends, not one per try (a 10 s Redis outage used to log 12 warnings per loop).

tenacity retries one operation a bounded number of times (the store's deployment id, a
subscription attempt); these loops run for the node's life, so the outage is their state.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable

__all__ = ["Outage"]


class Outage:
    def __init__(
        self,
        what: str,
        log: logging.Logger,
        *,
        first: float = 0.1,
        cap: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.what = what
        self.log = log
        self.first = first
        self.cap = cap
        self.clock = clock
        self.failures = 0  # in the current outage
        self.started = 0.0
        self.outages = 0  # since start

    def failed(self, error: BaseException) -> float:
        """A try failed: the delay before the next one (warned once per outage)."""
        self.failures += 1
        if self.failures == 1:
            self.started = self.clock()
            self.outages += 1
            self.log.warning(
                "%s lost (%s); retrying with backoff up to %.0f s", self.what, error, self.cap
            )
        else:
            self.log.debug("%s still down (try %d): %s", self.what, self.failures, error)
        delay = min(self.cap, self.first * 2.0 ** (self.failures - 1))
        return delay * random.uniform(0.75, 1.25)

    def recovered(self) -> None:
        """A try succeeded: the end of the outage, if there was one."""
        if self.failures:
            self.log.info(
                "%s back after %.1f s (%d tries)",
                self.what,
                self.clock() - self.started,
                self.failures,
            )
        self.failures = 0
