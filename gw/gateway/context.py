"""What every part of the gateway core shares: settings, outbox, counters, sessions, clock.

The parts (gw.gateway.to_msrp, to_page, setup, routing, answering, lifecycle) are small
objects that each take this context and the parts they call, explicitly: composition,
where a tower of mixins used to share one `self`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from gw.gateway.commands import Effect, Outbox, Publish, Respond, ServerTxn
from gw.gateway.destinations import Destinations
from gw.gateway.legs import Legs
from gw.gateway.loops import Hops, Onward, onward
from gw.gateway.rules import Refusal
from gw.gateway.session import busy
from gw.gateway.settings import GatewaySettings
from gw.gateway.stats import GatewayStats
from gw.gateway.table import LocalSessions
from gw.logs import Throttle
from gw.sip.message import Request
from gw.sip.uri import NameAddr, SipUri
from gw.store.records import SessionRecord

__all__ = ["Clock", "Context", "SipRequests", "SystemClock", "log"]

log = logging.getLogger("gw.gateway")


class Clock(Protocol):
    """The core's only source of time (tests pass a fake one)."""

    def time(self) -> float:
        """Wall-clock seconds: the store's deadlines are wall-clock."""

    def perf(self) -> float:
        """A monotonic counter, for latencies and log-rate limits."""


class SystemClock:
    # the builtins themselves: no Python frame per reading (perf first: `time` is shadowed)
    perf = staticmethod(time.perf_counter)
    time = staticmethod(time.time)


class SipRequests(Protocol):
    """How the core builds the SIP requests it sends (the endpoint's factory: no I/O)."""

    def new_request(
        self,
        method: str,
        uri: SipUri | str,
        *,
        from_: NameAddr | str,
        to: NameAddr | str,
        body: bytes = b"",
        content_type: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
        max_forwards: int = 70,
    ) -> Request: ...

    def contact(self) -> str:
        """Our Contact URI for the dialogs we set up."""

    def own_sent_by(self) -> frozenset[str]:
        """host:port of our listeners, as our Via sent-by says them (loop detection)."""


@dataclass
class Context:
    settings: GatewaySettings
    sip: SipRequests
    legs: Legs
    clock: Clock = field(default_factory=SystemClock)
    outbox: Outbox = field(default_factory=Outbox)
    stats: GatewayStats = field(default_factory=GatewayStats)
    table: LocalSessions = field(default_factory=LocalSessions)
    clustered: bool = False  # peer nodes may own keys (a registry and an RPC inbox exist)
    draining: bool = False
    # observes a translation's latency ("page_to_msrp" | "msrp_to_page", seconds): metrics
    on_latency: Callable[[str, float], None] | None = None
    out: Callable[[Effect], None] = field(init=False)  # appends to `outbox`
    destinations: Destinations = field(init=False)
    _refused_log: Throttle = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.out = self.outbox.emit
        self.destinations = Destinations(self.settings.allowed_destinations)
        self._refused_log = Throttle()

    def destination_refused(self, ruri: str, key: str) -> bool:
        """Whether a request to `ruri` may not go out (gateway.allowed_destinations);
        counted, and logged once a second at most."""
        if self.destinations.allows(ruri):
            return False
        self.stats.destinations_refused += 1
        left_out = self._refused_log.ready()
        if left_out is not None:
            log.warning(
                "refused: %s is not in gateway.allowed_destinations (%d refused so far)",
                ruri[:200],
                self.stats.destinations_refused,
                extra={"key": key},
            )
        return True

    @property
    def me(self) -> str:
        return self.settings.node_id

    @property
    def deployment(self) -> str:
        return self.settings.deployment or self.settings.node_id

    def onward(self, rec: SessionRecord) -> Onward:
        """Marks and Max-Forwards of what we send for the session `rec` (gw.gateway.loops)."""
        return onward(Hops(tuple(rec.marks), rec.max_forwards), self.deployment)

    def publish(self, name: str, data: dict[str, Any]) -> None:
        self.out(Publish(name, data))

    def reject(
        self,
        txn: ServerTxn,
        code: int,
        reason: str,
        why: str,
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        """Refuse a request: the answer, a counter and a log line saying why."""
        self.stats.rejected[code] += 1
        log.info(
            "rejected %s with %d %s (%s)",
            txn.request.method,
            code,
            reason,
            why,
            extra={"call_id": txn.request.get("Call-ID") or ""},
        )
        self.out(Respond(txn, code, reason, headers or []))

    def refuse(self, txn: ServerTxn, refusal: Refusal) -> None:
        o = refusal.outcome
        self.reject(txn, o.status, o.reason, refusal.why, o.headers)

    def unavailable(self, txn: ServerTxn, why: str) -> None:
        o = busy("Service Unavailable", self.settings.retry_after)
        self.reject(txn, o.status, o.reason, why, o.headers)
