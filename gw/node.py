"""One gateway node process: wires config, SIP endpoint and (later) the gateway together."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import ssl
from pathlib import Path

from gw import __version__
from gw.config import Config
from gw.sip.endpoint import EndpointConfig, IncomingRequest, SipEndpoint
from gw.sip.message import Limits
from gw.sip.transaction import Address, Timers
from gw.sip.transport import parse_listen

log = logging.getLogger("gw.node")

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, MESSAGE"


def tls_contexts(cfg: Config) -> tuple[ssl.SSLContext | None, ssl.SSLContext | None]:
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
        server_ctx, client_ctx = tls_contexts(cfg)
        self.endpoint = SipEndpoint(
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
                tls_server=server_ctx,
                tls_client=client_ctx,
            ),
            self.handle,
        )
        self.bound: list[Address] = []
        self.stopping = asyncio.Event()

    async def handle(self, incoming: IncomingRequest) -> None:
        method = incoming.request.method
        if method == "ACK":
            return
        if method == "OPTIONS":
            incoming.respond(
                200,
                headers=[("Allow", ALLOW), ("Accept", "text/plain, message/cpim, */*")],
            )
            return
        incoming.respond(405, headers=[("Allow", "OPTIONS")])

    async def start(self) -> None:
        specs = [parse_listen(item) for item in self.cfg.sip.listen]
        self.bound = await self.endpoint.start(specs)
        self._write_ready()

    def _write_ready(self) -> None:
        state = Path(self.cfg.node.state_dir)
        state.mkdir(parents=True, exist_ok=True)
        sip = [f"{a.transport.lower()}:{a.host}:{a.port}" for a in self.bound]
        info = {"node": self.cfg.node.id, "pid": os.getpid(), "sip": sip}
        tmp = state / "ready.json.tmp"
        tmp.write_text(json.dumps(info))
        tmp.replace(state / "ready.json")
        log.info("node ready", extra={"sip": ",".join(sip)})

    async def stop(self) -> None:
        await self.endpoint.close()


async def run_node(cfg: Config) -> int:
    node = Node(cfg)
    await node.start()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, node.stopping.set)
    await node.stopping.wait()
    log.info("stopping")
    await node.stop()
    return 0
