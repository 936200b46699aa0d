"""The node's Prometheus views: scrape-time callbacks over the counters the gateway, SIP and
MSRP layers keep anyway, so the hot path pays nothing for metrics (docs/operations.md lists
every series)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError, RedisError

from gw import __version__
from gw.cluster.registry import NodeRegistry
from gw.gateway.engine import Gateway
from gw.gateway.stats import Direction
from gw.mgmt.metrics import Registry
from gw.msrp.endpoint import MsrpEndpoint
from gw.sip.endpoint import SipEndpoint
from gw.store.client import StoreClient, StoreCluster


@dataclass
class CommandStats:
    """Failed commands and command latency of one store client, whatever its kind.

    Pipelines and pub/sub connections bypass `execute_command` and are not counted.
    """

    errors: int = 0
    observe: Callable[[float], None] | None = None  # command latency, seconds

    async def timed(self, command: Awaitable[Any]) -> Any:
        started = time.perf_counter()
        try:
            result = await command
        except NoScriptError:
            raise  # EVALSHA before the script is cached: the script helper loads it and retries
        except (RedisError, OSError):
            self.errors += 1
            raise
        if self.observe is not None:
            self.observe(time.perf_counter() - started)
        return result


class CountingRedis(Redis):
    """The node's client of a single server or a Sentinel master."""

    @cached_property
    def stats(self) -> CommandStats:
        return CommandStats()

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        command = super().execute_command(*args, **options)  # type: ignore[no-untyped-call]
        return await self.stats.timed(command)


class CountingCluster(StoreCluster):
    """The node's Redis Cluster client: the same counts (they read 0 on a cluster before)."""

    @cached_property
    def stats(self) -> CommandStats:
        return CommandStats()

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        return await self.stats.timed(super().execute_command(*args, **kwargs))


def command_stats(client: StoreClient | None) -> CommandStats | None:
    """The counts of a node's client (None for a client made elsewhere, e.g. in a test)."""
    if isinstance(client, CountingRedis | CountingCluster):
        return client.stats
    return None


# Request methods we label by name; anything else from the wire is "other" (bounded series).
_SIP_METHODS = frozenset(
    {
        *("INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "MESSAGE", "REGISTER", "INFO"),
        *("UPDATE", "PRACK", "SUBSCRIBE", "NOTIFY", "REFER", "PUBLISH"),
    }
)


def _by_prefix(counts: Mapping[str, int], prefix: str) -> dict[str, float]:
    """{suffix: count} for the counter names `prefix<suffix>` (e.g. setup_failed_486)."""
    n = len(prefix)
    return {k[n:]: float(v) for k, v in counts.items() if k.startswith(prefix) and k[n:]}


# Plain counters of the gateway: (series, help, counter name).
_GATEWAY_COUNTERS = (
    ("msrpgw_forwarded_to_owner_total", "MESSAGEs this node forwarded to the session's owner node.",
     "forwarded_to_owner"),
    ("msrpgw_sessions_taken_over_total", "Sessions of dead nodes this node took over.",
     "sessions_taken_over"),
    ("msrpgw_page_messages_received_total", "Page-mode MESSAGEs accepted for translation to MSRP.",
     "page_messages_in"),
    ("msrpgw_msrp_messages_received_total",
     "Complete MSRP messages received for translation to page mode.", "msrp_messages_in"),
    ("msrpgw_destinations_refused_total",
     "Requests refused 403 because the host they would make us send to is not in "
     "gateway.allowed_destinations.", "destinations_refused"),
    ("msrpgw_unbound_refused_total",
     "INVITEs refused 503 because their source had gateway.max_unbound_per_source answered "
     "sessions whose MSRP leg was not connected yet.", "unbound_refused"),
    ("msrpgw_setups_refused_total",
     "New sessions refused with 503 because gateway.max_pending_setups set-ups were in progress.",
     "setups_refused"),
    ("msrpgw_msrp_input_pauses_total",
     "Times MSRP input was paused because gateway.max_pending_messages MESSAGEs were unanswered.",
     "msrp_input_paused"),
)  # fmt: skip

# Labelled gateway counters: (series, help, label, GatewayStats Counter attribute).
_GATEWAY_LABELLED = (
    ("msrpgw_sessions_ended_total",
     "Sessions ended, by reason (bye, mi, expired, shutdown, setup_failed, ...).",
     "reason", "sessions_ended"),
    ("msrpgw_session_setup_failures_total",
     "msg_to_msrp session setups that failed, by the SIP code the MESSAGEs got.",
     "code", "setup_failed"),
    ("msrpgw_page_replies_total",
     "Final responses to page-mode MESSAGEs after delivery was attempted (confirm mode), "
     "by SIP code.", "code", "page_answers"),
    ("msrpgw_requests_rejected_total",
     "Requests the gateway refused before translating (bad input, policy, loops, overload), "
     "by SIP code.", "code", "rejected"),
)  # fmt: skip

# SIP endpoint statistics: (series, help, attribute of SipEndpoint.stats).
_SIP_COUNTERS = (
    ("msrpgw_sip_parse_errors_total", "SIP messages that could not be parsed.", "parse_errors"),
    ("msrpgw_sip_transaction_timeouts_total", "SIP client transactions that timed out.",
     "timeouts"),
    ("msrpgw_sip_transport_errors_total", "SIP messages that could not be sent.",
     "transport_errors"),
)  # fmt: skip


def register_metrics(
    reg: Registry,
    gw: Gateway,
    sip: SipEndpoint,
    msrp: MsrpEndpoint,
    redis: StoreClient | None,
    registry: NodeRegistry | None,
    node_id: str,
) -> None:
    """Register every series of the node on `reg` and hook the latency histograms."""
    stats = gw.stats
    latency = reg.histogram(
        "msrpgw_delivery_latency_seconds",
        "Time from receiving a message to knowing its outcome on the other side, by direction.",
        ["direction"],
    )
    to_msrp, to_page = latency.labels("page_to_msrp"), latency.labels("msrp_to_page")
    gw.on_latency = lambda direction, seconds: (
        to_msrp if direction == "page_to_msrp" else to_page
    ).observe(seconds)
    redis_latency = reg.histogram(
        "msrpgw_redis_command_seconds", "Latency of single Redis commands (not pipelines)."
    )
    counts = command_stats(redis)
    if counts is not None:
        counts.observe = redis_latency.observe
    if registry is not None:
        reg.callback(
            "msrpgw_heartbeat_age_seconds",
            "Seconds since this node last refreshed its heartbeat in Redis.",
            lambda: min(registry.heartbeat_age, 1e9),
        )

    def counter(name: str) -> Callable[[], float]:
        return lambda: float(getattr(stats, name))

    def labelled(attr: str) -> Callable[[], dict[str, float]]:
        def read() -> dict[str, float]:
            table: Mapping[object, int] = getattr(stats, attr)
            return {str(k): float(v) for k, v in list(table.items())}

        return read

    def sip_stat(attr: str) -> Callable[[], float]:
        return lambda: float(getattr(sip.stats, attr))

    for name, doc, key in _GATEWAY_COUNTERS:
        reg.callback(name, doc, counter(key), kind="counter")
    for name, doc, label, attr in _GATEWAY_LABELLED:
        reg.callback(name, doc, labelled(attr), [label], kind="counter")
    for name, doc, attr in _SIP_COUNTERS:
        reg.callback(name, doc, sip_stat(attr), kind="counter")
    budget = msrp.reassembly
    reg.callback(
        "msrpgw_msrp_reassembly_bytes",
        "Bytes of incomplete incoming MSRP messages held, all sessions together.",
        lambda: float(budget.held),
    )
    reg.callback(
        "msrpgw_msrp_reassembly_refused_total",
        "MSRP chunks answered 413 because msrp.max_reassembly_bytes was reached.",
        lambda: float(budget.refused),
        kind="counter",
    )
    reg.add_standard_collectors()
    reg.callback(
        "msrpgw_msrp_connections",
        "Open MSRP connections (inbound, outbound, and to the relay).",
        lambda: float(len(msrp.connections)),
    )
    streams = sip.transports
    reg.callback(
        "msrpgw_sip_connections",
        "Open SIP TCP/TLS connections (inbound and outbound).",
        lambda: float(streams.open_streams),
    )
    reg.callback(
        "msrpgw_sip_connections_refused_total",
        "Inbound SIP TCP/TLS connections refused, by limit (sip.tcp_max_connections, "
        "sip.tcp_max_connections_per_ip).",
        lambda: {k: float(v) for k, v in streams.stats.connections_refused.items()},
        ["reason"],
        kind="counter",
    )
    reg.callback(
        "msrpgw_sip_connections_closed_total",
        "SIP TCP/TLS connections the node closed, by limit: idle (sip.tcp_connection_lifetime) "
        "or read_timeout (sip.tcp_msg_read_timeout).",
        lambda: {k: float(v) for k, v in streams.stats.connections_closed.items()},
        ["reason"],
        kind="counter",
    )

    def sessions_by_state() -> dict[str, float]:
        out = dict.fromkeys(("setup", "active", "ending"), 0.0)
        for session in list(gw.sessions.values()):
            state = session.state.record_state
            out[state] = out.get(state, 0.0) + 1
        return out

    def translated() -> dict[tuple[str, str], float]:
        out: dict[tuple[str, str], float] = {}
        for direction in Direction:
            out[direction.value, "delivered"] = float(stats.delivered[direction])
            out[direction.value, "failed"] = float(sum(stats.failed[direction].values()))
        return out

    def failures() -> dict[tuple[str, str], float]:
        return {
            (direction.value, str(code)): float(value)
            for direction in Direction
            for code, value in list(stats.failed[direction].items())
        }

    def sip_methods() -> dict[str, float]:
        out: dict[str, float] = {}
        for method, value in list(sip.stats.requests_in.items()):
            label = method if method in _SIP_METHODS else "other"
            out[label] = out.get(label, 0.0) + value
        return out

    def msrp_refused() -> dict[str, float]:
        # Refused outside a session (the endpoint's stats) plus inside one (the gateway's).
        out = _by_prefix(msrp.stats, "rejected_")
        for code, value in list(stats.msrp_rejected.items()):
            out[str(code)] = out.get(str(code), 0.0) + value
        return out

    def codes(attr: str) -> Callable[[], dict[str, float]]:
        def read() -> dict[str, float]:
            table: Mapping[int, int] = getattr(sip.stats, attr)
            return {str(k): float(v) for k, v in list(table.items())}

        return read

    reg.callback(
        "msrpgw_info",
        "Constant 1, labelled with the version and the node id.",
        lambda: {(__version__, node_id): 1.0},
        ["version", "node"],
    )
    reg.callback("msrpgw_sessions", "Sessions this node owns, by state.", sessions_by_state,
                 ["state"])  # fmt: skip
    reg.callback(
        "msrpgw_queued_messages",
        "Page-mode messages waiting for the MSRP side, on this node.",
        lambda: float(sum(s.queued for s in list(gw.sessions.values()))),
    )
    reg.callback(
        "msrpgw_sessions_created_total",
        "Sessions created, by origin (msg_to_msrp: a MESSAGE; answer: an INVITE).",
        lambda: {
            origin: float(stats.sessions_created[origin]) for origin in ("msg_to_msrp", "answer")
        },
        ["origin"],
        kind="counter",
    )
    reg.callback(
        "msrpgw_messages_translated_total",
        "Messages handed to the other side, by direction and outcome on that side.",
        translated,
        ["direction", "outcome"],
        kind="counter",
    )
    reg.callback(
        "msrpgw_message_failures_total",
        "Messages the other side refused, by direction and status code (MSRP code for "
        "page_to_msrp, SIP code for msrp_to_page).",
        failures,
        ["direction", "code"],
        kind="counter",
    )
    reg.callback("msrpgw_sip_requests_received_total", "SIP requests received, by method.",
                 sip_methods, ["method"], kind="counter")  # fmt: skip
    reg.callback("msrpgw_sip_responses_sent_total", "SIP responses sent, by status code.",
                 codes("responses_out"), ["code"], kind="counter")  # fmt: skip
    reg.callback("msrpgw_sip_responses_received_total", "SIP responses received, by status code.",
                 codes("responses_in"), ["code"], kind="counter")  # fmt: skip
    reg.callback(
        "msrpgw_msrp_requests_refused_total",
        "MSRP requests we refused (no such session, bad From-Path, too big, ...), by MSRP "
        "status code.",
        msrp_refused,
        ["code"],
        kind="counter",
    )
    reg.callback(
        "msrpgw_msrp_unmatched_responses_total",
        "MSRP responses that matched no request of ours.",
        lambda: float(msrp.stats["unmatched_responses"]),
        kind="counter",
    )
    reg.callback(
        "msrpgw_msrp_alternate_connections_total",
        "MSRP sessions whose requests also arrived on a second connection from their peer "
        "(accepted: the whole From-Path matched), once per session and connection.",
        lambda: float(msrp.stats["alternate_connections"]),
        kind="counter",
    )
    reg.callback(
        "msrpgw_msrp_sessions_moved_total",
        "MSRP sessions moved to their alternate connection when their bound one was lost.",
        lambda: float(msrp.stats["sessions_moved"]),
        kind="counter",
    )
    reg.callback(
        "msrpgw_store_errors_total",
        "Store (Redis) commands that failed.",
        lambda: float(counts.errors if counts is not None else 0),
        kind="counter",
    )
