"""One gateway node process: config -> store, SIP, MSRP, gateway, management, signals."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import os
import signal
import ssl
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, cast

from redis.exceptions import RedisError
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    wait_exponential,
    wait_random,
)

from gw import __version__
from gw.cluster.messages import serving
from gw.cluster.registry import NodeRegistry
from gw.cluster.rpc import Rpc
from gw.config import Config, parse_msrp_listen
from gw.fds import NEAR, FdWatch, raise_limit
from gw.gateway.engine import Gateway, GatewaySettings
from gw.gateway.policy import Policy, load_hook, split_types
from gw.gateway.session import retry_after_header
from gw.gateway.settings import ReplyMode, SetupMode
from gw.gateway.shedding import Shedder
from gw.mgmt.http import MgmtServer
from gw.mgmt.mi import MiError, MiParams, param_str
from gw.msrp.endpoint import MsrpEndpoint
from gw.msrp.relay import RelayAuthError
from gw.msrp.uri import MsrpUri, parse_msrp_uri
from gw.node_metrics import CountingCluster, CountingRedis, register_metrics
from gw.sip.endpoint import EndpointConfig, SipEndpoint
from gw.sip.message import Limits
from gw.sip.transaction import Address, Timers
from gw.sip.transport import StreamLimits, parse_listen
from gw.store.client import StoreClient, connect
from gw.store.deployment import deployment_id
from gw.store.embedded import EmbeddedRedis
from gw.store.events import EventBus
from gw.store.expiry import ExpiryListener
from gw.store.sessions import SessionStore, scan_batch

log = logging.getLogger("gw.node")

# How long start() waits for the first relay AUTH before declaring the node ready anyway
# (sessions get 503 until the relay is up; the keeper keeps trying in the background).
RELAY_START_WAIT = 5.0


def tls_contexts(cfg: Config) -> tuple[ssl.SSLContext | None, ssl.SSLContext]:
    server: ssl.SSLContext | None = None
    if cfg.tls.cert_file and cfg.tls.key_file:
        server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server.load_cert_chain(cfg.tls.cert_file, cfg.tls.key_file)
    client = ssl.create_default_context(cafile=cfg.tls.ca_file or None)
    if not cfg.tls.verify_peer:
        client.check_hostname = False
        client.verify_mode = ssl.CERT_NONE
    return server, client


class GcTuner:
    """Keeps long-lived session state out of the cyclic garbage collector's way.

    Why: a full (generation 2) collection walks every container object the collector
    tracks, and each idle session is a few hundred of them (its dialog, parsed URIs, MSRP
    session, record...). With 10,000 sessions, full collections took hundreds of
    milliseconds: the p99 latency spikes of bench/notes.md §2. `gc.freeze()` moves every
    object alive at that moment to a permanent generation that collections never walk;
    run once after start it leaves out every session set up later. So:

    - after start: collect, freeze, and raise the generation-0 threshold from 700 to
      20,000 allocations (a young collection every few messages is wasted work when most
      objects die young, as a message's do);
    - `tick()` (every second, from the node's GC loop): once `batch` sessions were created
      since the last freeze, collect the young generations (bounded by the thresholds) and
      freeze again, so sessions spend at most one batch in the collector's view and a full
      collection never walks more than that. No full collection here: what is older is
      mostly live sessions, and walking them to find little garbage is the very pause to
      avoid;
    - frozen objects are still freed by reference counting when their session ends (the
      gateway breaks its session <-> MSRP handle cycle for that reason), but garbage in
      reference cycles among frozen objects stays until `gc.unfreeze()`: once as many
      sessions ended as are alive (and at least `batch`), unfreeze, collect everything and
      freeze again: one full pause per turnover of the whole table, instead of one every
      few thousand set-ups.
    """

    def __init__(
        self,
        counts: Callable[[], tuple[int, int, int]],
        *,
        batch: int = 1000,
        slow_pause: float = 0.05,
    ) -> None:
        self.counts = counts  # (sessions created, sessions ended, live sessions), totals
        self.batch = batch
        self.freezes = 0
        self.reclaims = 0
        self._created_at_freeze = 0
        self._ended_at_reclaim = 0
        # Every collection's pause, by generation: a pause is latency for every message
        # in flight, and a long one overflows UDP receive buffers (bench/notes.md).
        self.slow_pause = slow_pause
        self.observe: Callable[[int, float], None] | None = None  # (generation, seconds)
        self._pause_started = 0.0

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._pause_started = time.perf_counter()
            return
        seconds = time.perf_counter() - self._pause_started
        generation = info.get("generation", 2)
        if self.observe is not None:
            self.observe(generation, seconds)
        if seconds >= self.slow_pause:
            log.warning(
                "gc: generation %d collection paused the node %.1f ms (%d objects collected)",
                generation,
                seconds * 1000,
                info.get("collected", 0),
            )

    def start(self) -> None:
        gc.collect()
        gc.freeze()
        gc.set_threshold(20000, 50, 100)
        if self._on_gc not in gc.callbacks:
            gc.callbacks.append(self._on_gc)

    def stop(self) -> None:
        with contextlib.suppress(ValueError):
            gc.callbacks.remove(self._on_gc)
        created, ended, _ = self.counts()
        self._created_at_freeze, self._ended_at_reclaim = created, ended

    def tick(self, *, force: bool = False) -> None:
        """Freeze again after a batch of new sessions (`force`: now); reclaim when due."""
        created, ended, live = self.counts()
        reclaim = ended - self._ended_at_reclaim >= max(self.batch, live)
        if not (force or reclaim or created - self._created_at_freeze >= self.batch):
            return
        started = time.perf_counter()
        if reclaim:
            gc.unfreeze()
            gc.collect()
            self.reclaims += 1
            self._ended_at_reclaim = ended
        else:
            gc.collect(1)
        gc.freeze()
        self.freezes += 1
        self._created_at_freeze = created
        log.debug(
            "gc: froze %d objects in %.1f ms",
            gc.get_freeze_count(),
            (time.perf_counter() - started) * 1000,
        )


class RelayKeeper:
    """Keeps an `MsrpEndpoint` AUTHed at its RFC 4976 relay (`msrp.relay`).

    `start` begins the first AUTH; after a failure (refused, no answer, no connection)
    the next attempt waits with exponential backoff and jitter (tenacity: `initial`,
    doubling, at most `max_backoff` seconds), forever. When the relay connection is
    lost, or a refresh fails (the endpoint then closes it and ends the sessions on
    it), the keeper waits `initial` seconds and starts over. Until the relay is up
    again, relayed sessions fail with 503 (`MsrpEndpoint.relay_required`).
    `counts`: `auth_ok`, `auth_failed`, `lost`; `up` is set while the relay is up.
    """

    def __init__(
        self,
        endpoint: MsrpEndpoint,
        relay: MsrpUri,
        user: str,
        password: str,
        expires: int | None = None,
        *,
        initial: float = 0.5,
        max_backoff: float = 30.0,
        timeout: float = 10.0,
    ) -> None:
        self.endpoint = endpoint
        self.relay = relay
        self.user = user
        self._password = password
        self.expires = expires
        self.initial = initial
        self.max_backoff = max_backoff
        self.timeout = timeout
        self.counts: Counter[str] = Counter()
        self.up = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        endpoint.relay_required = True

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="msrp-relay-keeper")

    async def wait_up(self, timeout: float) -> bool:
        """Whether the relay is up within `timeout` seconds."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.up.wait(), timeout)
        return self.up.is_set()

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.up.clear()

    async def _run(self) -> None:
        while True:
            await self._authenticate()
            link = self.endpoint.relay_link
            self.up.set()
            if link is not None:
                await asyncio.wait({link.lost})  # not the future itself: others await it too
            self.up.clear()
            self.counts["lost"] += 1
            state = self.endpoint.relay.state.value if self.endpoint.relay else "none"
            log.warning(
                "msrp relay %s lost (%s): sessions through it ended; AUTH again in %.1f s",
                self.relay,
                state,
                self.initial,
            )
            await asyncio.sleep(self.initial)

    async def _authenticate(self) -> None:
        retrying = AsyncRetrying(
            wait=wait_exponential(multiplier=self.initial, max=self.max_backoff)
            + wait_random(0, self.initial),
            retry=retry_if_exception_type((RelayAuthError, OSError, TimeoutError)),
            before_sleep=self._before_retry,
        )
        async for attempt in retrying:
            with attempt:
                try:
                    use_path = await self.endpoint.use_relay(
                        self.relay, self.user, self._password, self.expires, timeout=self.timeout
                    )
                except (RelayAuthError, OSError, TimeoutError):
                    self.counts["auth_failed"] += 1
                    raise
        self.counts["auth_ok"] += 1
        client = self.endpoint.relay
        log.info(
            "msrp relay %s: authenticated as %s, Use-Path %s, expires %s",
            self.relay,
            self.user,
            " ".join(map(str, use_path)),
            client.expires if client is not None else None,
        )

    def _before_retry(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        log.warning(
            "msrp relay %s: AUTH failed (attempt %d): %s; next attempt in %.1f s",
            self.relay,
            state.attempt_number,
            exc or "unknown error",
            state.upcoming_sleep,
        )


class Node:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.tls_server, self.tls_client = tls_contexts(cfg)
        g = cfg.gateway
        self.sip = SipEndpoint(
            EndpointConfig(
                advertised_host=cfg.sip.advertised_host,
                outbound_proxy=cfg.sip.outbound_proxy,
                timers=Timers(t1=cfg.sip.t1, t2=cfg.sip.t2, t4=cfg.sip.t4),
                limits=Limits(
                    max_message_size=cfg.sip.max_message_size,
                    max_headers=cfg.sip.max_headers,
                    max_header_length=cfg.sip.max_header_length,
                    max_body_size=cfg.sip.max_message_size,
                ),
                user_agent=f"{cfg.sip.user_agent}/{__version__}",
                udp_buffer=cfg.sip.udp_buffer,
                streams=StreamLimits(
                    max_connections=cfg.sip.tcp_max_connections,
                    max_per_ip=cfg.sip.tcp_max_connections_per_ip,
                    idle_timeout=cfg.sip.tcp_connection_lifetime,
                    read_timeout=cfg.sip.tcp_msg_read_timeout,
                ),
                tls_server=self.tls_server,
                tls_client=self.tls_client,
            ),
            self._handle,
        )
        scheme, host, port = parse_msrp_listen(cfg.msrp.listen)
        self.msrp = MsrpEndpoint(
            host,
            port,
            advertised_host=cfg.sip.advertised_host or host,
            ssl_server=self.tls_server if scheme == "msrps" else None,
            ssl_client=self.tls_client,
            max_chunk_size=cfg.msrp.max_chunk_size,
            max_reassembly_bytes=cfg.msrp.max_reassembly_bytes,
        )
        self.relay: RelayKeeper | None = None
        if cfg.msrp.relay:
            self.relay = RelayKeeper(
                self.msrp,
                parse_msrp_uri(cfg.msrp.relay.strip()),
                cfg.msrp.relay_user,
                cfg.msrp.relay_password,
                cfg.msrp.relay_expires or None,
            )
        self.policy = Policy(
            content_types=split_types(g.content_types),
            key_template=g.key_template,
            ruri_rewrite=g.ruri_rewrite,
            hook=load_hook(g.routing_hook) if g.routing_hook else None,
        )
        self.embedded: EmbeddedRedis | None = None
        self.store_url = ""
        self.deployment = ""
        self.redis: StoreClient | None = None
        self.gateway: Gateway | None = None
        self.expiry: ExpiryListener | None = None
        self.registry: NodeRegistry | None = None
        self.rpc: Rpc | None = None
        self.mgmt = MgmtServer(cfg.mgmt.listen, cfg.mgmt.token, ready=self._ready)
        self.bound: list[Address] = []
        self.stopping = asyncio.Event()
        self._sweeper: asyncio.Task[None] | None = None
        self.gc_tuner = GcTuner(self._session_counts)
        self._gc_ticker: asyncio.Task[None] | None = None
        self.fds: FdWatch | None = None  # set by run_node (a process-wide concern)
        self._fd_ticker: asyncio.Task[None] | None = None

    def _session_counts(self) -> tuple[int, int, int]:
        """(sessions created, sessions ended, live sessions) for the GcTuner."""
        gw = self.gateway
        if gw is None:
            return 0, 0, 0
        return gw.stats.created_total, gw.stats.ended_total, len(gw.sessions)

    def tune_gc(self, interval: float = 1.0) -> None:
        """The process-wide GC policy (GcTuner): freeze now, then check every `interval`
        seconds whether a batch of new sessions is due to be frozen (run_node calls this;
        a node embedded in another program leaves the process's GC alone)."""
        self.gc_tuner.start()
        self._gc_ticker = asyncio.create_task(self._gc_loop(interval))

    def watch_fds(self, soft_limit: int, interval: float = 1.0) -> None:
        """Count open descriptors every `interval` seconds; warn near `soft_limit`."""
        watch = self.fds = FdWatch(soft_limit)
        metrics = self.mgmt.metrics  # process_open_fds/max_fds: the standard collector's
        metrics.callback(
            "msrpgw_fds_near_limit_total",
            f"Checks (one a second) that found open files at {NEAR:.0%} of the limit or more.",
            lambda: watch.near_limit,
            kind="counter",
        )
        watch.check()

        async def loop() -> None:
            while True:
                await asyncio.sleep(interval)
                watch.check()

        self._fd_ticker = asyncio.create_task(loop())

    async def _gc_loop(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                self.gc_tuner.tick()
            except Exception:  # never let GC tuning stop the node
                log.exception("gc tuning failed")

    def _handle(self, incoming: Any) -> Awaitable[None] | None:
        """The SIP request handler: synchronous where the gateway needs no await (a MESSAGE
        on an established session), so that the endpoint starts no task for it."""
        if self.gateway is None:
            incoming.respond(503, headers=[retry_after_header(self.cfg.gateway.retry_after)])
            return None
        self.gateway.handle(incoming)
        return None

    def _ready(self) -> bool | str:
        if self.gateway is None:
            return "starting"
        if self.gateway.draining:
            return "draining"
        return True

    async def start(self) -> None:
        cfg = self.cfg
        url = cfg.store.url
        if not url:
            self.embedded = EmbeddedRedis(Path(cfg.node.state_dir))
            url = await asyncio.to_thread(self.embedded.start)
            log.info("embedded store started at %s", url)
        self.store_url = url
        self.redis = connect(url, redis_class=CountingRedis, cluster_class=CountingCluster)
        g = cfg.gateway
        store = SessionStore(
            self.redis,
            session_timeout=g.session_timeout,
            message_timeout=g.message_timeout,
            grace=2 * g.cleanup_interval + 30,
        )
        bus = EventBus(self.redis, node=cfg.node.id)
        self.deployment = cfg.node.deployment or await deployment_id(self.redis, "msrpgw")
        await self.msrp.start()
        if self.relay is not None:
            self.relay.start()
        self.registry = NodeRegistry(
            self.redis,
            cfg.node.id,
            ttl=cfg.cluster.heartbeat_ttl,
            info={"msrp": str(self.msrp.uri)},
        )
        self.gateway = Gateway(
            GatewaySettings(
                node_id=cfg.node.id,
                deployment=self.deployment,
                content_types=split_types(g.content_types),
                accept_wrapped_types=split_types(g.accept_wrapped_types),
                allowed_destinations=split_types(g.allowed_destinations),
                reply_mode=cast(ReplyMode, g.reply_mode),  # checked by Config.validate
                delivery_timeout=g.delivery_timeout,
                setup_timeout=g.setup_timeout,
                require_success_report=g.require_success_report,
                max_queued_messages=g.max_queued_messages,
                max_pending_setups=g.max_pending_setups,
                max_unbound_per_source=g.max_unbound_per_source,
                bind_timeout=g.bind_timeout,
                max_pending_messages=g.max_pending_messages,
                max_queued_bytes=g.max_queued_bytes,
                max_page_message_size=g.max_page_message_size,
                retry_after=g.retry_after,
                msrp_setup=cast(SetupMode, g.msrp_setup),
                failure_notice=g.failure_notice,
                chunk_size=cfg.msrp.chunk_size,
                msrp_transaction_timeout=cfg.msrp.transaction_timeout,
            ),
            sip=self.sip,
            msrp=self.msrp,
            store=store,
            bus=bus,
            policy=self.policy,
            registry=self.registry,
            forward_timeout=cfg.cluster.forward_timeout,
        )
        self.gateway.scan_count = scan_batch(g.hash_size)
        self.rpc = Rpc(self.redis, cfg.node.id, serving(self.gateway.on_rpc))
        self.gateway.rpc = self.rpc
        await self.rpc.start()
        await self.registry.start()
        self.expiry = ExpiryListener(self.redis, self.gateway.on_expired)
        await self.expiry.start()
        self._register_mi()
        self._register_metrics()
        specs = [parse_listen(item) for item in cfg.sip.listen]
        self.bound = await self.sip.start(specs)
        transports = self.sip.transports  # at set-up capacity, refusals skip the parser
        agent = self.sip.config.user_agent
        shedder = Shedder(self.gateway.core, self.policy, transports.send_udp, agent)
        transports.udp_screen = shedder.screen
        self.mgmt_addr = await self.mgmt.start()
        self._sweeper = asyncio.create_task(self._sweep_loop())
        if self.relay is not None and not await self.relay.wait_up(RELAY_START_WAIT):
            log.warning("msrp relay %s not up yet: MSRP sessions get 503", self.relay.relay)
        self._write_ready()

    def _register_mi(self) -> None:
        gw = self.gateway
        assert gw is not None

        async def list_sessions(params: MiParams) -> Any:
            try:
                # A bare array of session objects, as OpenSIPS's msrp_gw_list_sessions.
                return await gw.list_sessions()
            except (RedisError, OSError) as exc:
                raise MiError(500, "Store unavailable", str(exc)) from None

        async def end_session(params: MiParams) -> Any:
            key = param_str(params, "key")
            try:
                ended = await gw.end_session(key, "mi")
            except (RedisError, OSError) as exc:
                raise MiError(500, "Store unavailable", str(exc)) from None
            if not ended:
                raise MiError(404, "Session doesn't exist")
            return "OK"

        self.mgmt.mi.register(
            "msrp_gw_list_sessions", list_sessions, ["msrp_gateway:list_sessions"], params=[()]
        )
        self.mgmt.mi.register(
            "msrp_gw_end_session", end_session, ["msrp_gateway:end_session"], params=[("key",)]
        )

        async def trace(params: MiParams) -> Any:
            key = param_str(params, "key")
            mode = param_str(params, "mode").lower() if "mode" in params else "on"
            if mode not in ("on", "off"):
                raise MiError(400, "mode must be on or off")
            gw.set_trace(key, mode == "on")
            return {"key": key, "trace": mode, "traced": sorted(gw.traced)}

        self.mgmt.mi.register("msrp_gw_trace", trace, params=[("key",), ("key", "mode")])
        for key in self.cfg.gateway.trace_keys:
            gw.set_trace(key, True)
        self._install_tracers()

    def _install_tracers(self) -> None:
        """Log every SIP and MSRP frame of traced sessions (cheap no-ops while none is)."""
        gw = self.gateway
        assert gw is not None
        trace_log = logging.getLogger("gw.trace")

        def sip_tracer(direction: str, message: Any, peer: Address) -> None:
            if gw.traced and gw.traces_sip(message):
                trace_log.info(
                    "sip %s %s:%s:%d\n%s",
                    direction,
                    peer.transport.lower(),
                    peer.host,
                    peer.port,
                    message.to_bytes().decode("utf-8", "replace"),
                    extra={"call_id": message.get("Call-ID") or ""},
                )

        def msrp_tracer(direction: str, data: bytes, peer: Any) -> None:
            if not gw.traced:
                return
            ids = gw.traced_msrp_ids()
            if any(sid in data for sid in ids):
                trace_log.info("msrp %s %s\n%s", direction, peer, data.decode("utf-8", "replace"))

        self.sip.transports.tracer = sip_tracer
        self.msrp.tracer = msrp_tracer

    def _register_metrics(self) -> None:
        assert self.gateway is not None
        register_metrics(
            self.mgmt.metrics, self.gateway, self.sip, self.msrp, self.redis, self.registry,
            self.cfg.node.id,
        )  # fmt: skip
        pauses = self.mgmt.metrics.histogram(
            "msrpgw_gc_pause_seconds",
            "Pauses of the cyclic garbage collector, by generation (0-2).",
            ["generation"],
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
        )
        by_gen = [pauses.labels(str(g)) for g in range(3)]
        self.gc_tuner.observe = lambda gen, seconds: by_gen[min(gen, 2)].observe(seconds)
        relay = self.relay
        if relay is not None:
            metrics = self.mgmt.metrics
            metrics.callback(
                "msrpgw_msrp_relay_up",
                "1 while this node is authenticated at its MSRP relay (msrp.relay), else 0.",
                lambda: 1.0 if relay.up.is_set() else 0.0,
            )
            metrics.callback(
                "msrpgw_msrp_relay_auth_total",
                "AUTH attempts at the MSRP relay (first ones and after a loss), by result.",
                lambda: {r: float(relay.counts[f"auth_{r}"]) for r in ("ok", "failed")},
                ["result"],
                kind="counter",
            )
            metrics.callback(
                "msrpgw_msrp_relay_lost_total",
                "Times the MSRP relay connection or its grant was lost (relayed sessions ended).",
                lambda: float(relay.counts["lost"]),
                kind="counter",
            )

    async def _sweep_loop(self) -> None:
        assert self.gateway is not None
        while True:
            await asyncio.sleep(self.cfg.gateway.cleanup_interval)
            await self.gateway.sweep()

    def _write_ready(self) -> None:
        state = Path(self.cfg.node.state_dir)
        state.mkdir(parents=True, exist_ok=True)
        sip = [f"{a.transport.lower()}:{a.host}:{a.port}" for a in self.bound]
        info = {
            "node": self.cfg.node.id,
            "deployment": self.deployment,
            "pid": os.getpid(),
            "sip": sip,
            "msrp": str(self.msrp.uri),
            "mgmt": f"{self.mgmt_addr[0]}:{self.mgmt_addr[1]}",
        }
        if self.msrp.use_path:  # the relay's Use-Path when the node became ready
            info["msrp_relay"] = " ".join(map(str, self.msrp.use_path))
        if self.embedded is not None:  # for `msrp-gw events` (a configured URL is in config)
            info["store"] = self.store_url
        tmp = state / "ready.json.tmp"
        tmp.write_text(json.dumps(info))
        tmp.replace(state / "ready.json")
        log.info(
            "node ready", extra={"sip": ",".join(sip), "msrp": info["msrp"], "mgmt": info["mgmt"]}
        )

    async def stop(self) -> None:
        if self.gateway is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.gateway.drain(), 10)
            await self.gateway.close()
        if self.relay is not None:
            await self.relay.stop()  # before the endpoint closes its link: no new AUTH
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._gc_ticker is not None:
            self._gc_ticker.cancel()
            self.gc_tuner.stop()
        if self._fd_ticker is not None:
            self._fd_ticker.cancel()
        if self.registry is not None:
            with contextlib.suppress(Exception):
                await self.registry.stop()
        if self.rpc is not None:
            with contextlib.suppress(Exception):
                await self.rpc.stop()
        if self.expiry is not None:
            with contextlib.suppress(Exception):
                await self.expiry.stop()
        await self.mgmt.close()
        await self.sip.close()
        await self.msrp.close()
        if self.redis is not None:
            with contextlib.suppress(Exception):
                await self.redis.aclose()
        if self.embedded is not None:
            await asyncio.to_thread(self.embedded.stop)
        with contextlib.suppress(FileNotFoundError):
            (Path(self.cfg.node.state_dir) / "ready.json").unlink()


START_FAILURE_STOP = 15.0  # seconds to undo a failed start


def run_loop(main: Coroutine[Any, Any, int], loop: str = "auto") -> int:
    """Run on uvloop when installed (or asked for), else asyncio's default loop."""
    if loop in ("auto", "uvloop"):
        try:
            import uvloop
        except ImportError:
            if loop == "uvloop":
                raise
        else:
            return int(uvloop.run(main))
    result: int = asyncio.run(main)
    return result


async def run_node(cfg: Config) -> int:
    limit = raise_limit()  # before any listener: the whole budget for connections
    node = Node(cfg)
    # Handlers first: a SIGTERM between ready.json and here used to kill the node
    # undrained (exit -15, no BYE, ready.json left behind). Now it drains once started.
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, node.stopping.set)
    try:
        await node.start()
    except BaseException:
        # Stop what started (the embedded store, the store's listener tasks) before the
        # error goes up: asyncio.run cancels leftover tasks only once, and a listener whose
        # redis-py read swallows that cancellation kept a failed start running for good.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(node.stop(), START_FAILURE_STOP)
        raise
    # Long-lived objects (sessions, dialogs, listeners) out of the collector's way: full
    # collections walking every session cost hundreds of ms at 10k sessions (GcTuner).
    node.tune_gc()
    if limit is not None:
        node.watch_fds(limit.soft)
    await node.stopping.wait()
    log.info("stopping: draining sessions")
    await node.stop()
    return 0
