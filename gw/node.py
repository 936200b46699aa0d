"""One gateway node process: config -> store, SIP, MSRP, gateway, management, signals."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import ssl
from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from gw import __version__
from gw.config import Config, parse_msrp_listen
from gw.gateway.engine import Gateway, GatewaySettings
from gw.gateway.policy import Policy, load_hook, split_types
from gw.mgmt.http import MgmtServer
from gw.mgmt.mi import MiError, MiParams
from gw.msrp.endpoint import MsrpEndpoint
from gw.sip.endpoint import EndpointConfig, SipEndpoint
from gw.sip.message import Limits
from gw.sip.transaction import Address, Timers
from gw.sip.transport import parse_listen
from gw.store.embedded import EmbeddedRedis
from gw.store.events import EventBus
from gw.store.expiry import ExpiryListener
from gw.store.sessions import SessionStore

log = logging.getLogger("gw.node")


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
        )
        self.policy = Policy(
            content_types=split_types(g.content_types),
            key_template=g.key_template,
            ruri_rewrite=g.ruri_rewrite,
            hook=load_hook(g.routing_hook) if g.routing_hook else None,
        )
        self.embedded: EmbeddedRedis | None = None
        self.redis: Redis | None = None
        self.gateway: Gateway | None = None
        self.expiry: ExpiryListener | None = None
        self.mgmt = MgmtServer(cfg.mgmt.listen, cfg.mgmt.token, ready=self._ready)
        self.bound: list[Address] = []
        self.stopping = asyncio.Event()
        self._sweeper: asyncio.Task[None] | None = None

    async def _handle(self, incoming: Any) -> None:
        if self.gateway is None:
            incoming.respond(503, headers=[("Retry-After", "5")])
            return
        await self.gateway.handle(incoming)

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
        self.redis = Redis.from_url(url)
        g = cfg.gateway
        store = SessionStore(
            self.redis,
            session_timeout=g.session_timeout,
            message_timeout=g.message_timeout,
            grace=2 * g.cleanup_interval + 30,
        )
        bus = EventBus(self.redis, node=cfg.node.id)
        await self.msrp.start()
        self.gateway = Gateway(
            GatewaySettings(
                node_id=cfg.node.id,
                content_types=split_types(g.content_types),
                accept_wrapped_types=split_types(g.accept_wrapped_types),
                reply_mode=g.reply_mode,
                delivery_timeout=g.delivery_timeout,
                setup_timeout=g.setup_timeout,
                require_success_report=g.require_success_report,
                max_queued_messages=g.max_queued_messages,
                max_queued_bytes=g.max_queued_bytes,
                max_page_message_size=g.max_page_message_size,
                retry_after=g.retry_after,
                msrp_setup=g.msrp_setup,
                failure_notice=g.failure_notice,
                chunk_size=cfg.msrp.chunk_size,
                msrp_transaction_timeout=cfg.msrp.transaction_timeout,
            ),
            sip=self.sip,
            msrp=self.msrp,
            store=store,
            bus=bus,
            policy=self.policy,
        )
        self.expiry = ExpiryListener(self.redis, self.gateway.on_expired)
        await self.expiry.start()
        self._register_mi()
        specs = [parse_listen(item) for item in cfg.sip.listen]
        self.bound = await self.sip.start(specs)
        self.mgmt_addr = await self.mgmt.start()
        self._sweeper = asyncio.create_task(self._sweep_loop())
        self._write_ready()

    def _register_mi(self) -> None:
        gw = self.gateway
        assert gw is not None

        async def list_sessions(params: MiParams) -> Any:
            try:
                return {"Sessions": await gw.list_sessions()}
            except RedisError as exc:
                raise MiError(500, f"Store unavailable: {exc}") from None

        async def end_session(params: MiParams) -> Any:
            key = params.get("key") if isinstance(params, dict) else None
            if not isinstance(key, str):
                raise MiError(400, "Missing key")
            if not await gw.end_session(key, "mi"):
                raise MiError(404, "Session doesn't exist")
            return "OK"

        self.mgmt.mi.register(
            "msrp_gw_list_sessions", list_sessions, ["msrp_gateway:list_sessions"], params=[()]
        )
        self.mgmt.mi.register(
            "msrp_gw_end_session", end_session, ["msrp_gateway:end_session"], params=[("key",)]
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
            "pid": os.getpid(),
            "sip": sip,
            "msrp": str(self.msrp.uri),
            "mgmt": f"{self.mgmt_addr[0]}:{self.mgmt_addr[1]}",
        }
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
        if self._sweeper is not None:
            self._sweeper.cancel()
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


async def run_node(cfg: Config) -> int:
    node = Node(cfg)
    await node.start()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, node.stopping.set)
    await node.stopping.wait()
    log.info("stopping: draining sessions")
    await node.stop()
    return 0
