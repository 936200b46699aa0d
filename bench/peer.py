"""The MSRP load endpoint: a session-mode user population in its own process.

It plays every MSRP user the gateway talks to, on one SIP UA (gw.sip) and one MSRP
endpoint (gw.msrp):

- sink: answers the gateway's INVITEs (msg_to_msrp direction, a=setup passive, so the
  gateway connects and reuses one TCP connection for all sessions) and counts SENDs;
- source: calls the gateway (msrp_gw_answer direction) to set up N sessions, then sends
  at a fixed rate (open loop) or with a fixed number in flight (closed loop), timing each
  SEND from the moment it is queued to its outcome (the success REPORT the gateway sends
  once the page-mode side answered 200, or the MSRP 200 when no report is asked for).

Control: one JSON object per line on stdin, one JSON reply per line on stdout. The first
line printed is `{"ready": ..., "sip_port": ..., "msrp_port": ...}`. Commands:
  {"cmd": "stats"} | {"cmd": "reset"} | {"cmd": "quit"}
  {"cmd": "call", "gateway": [host, port], "count": N, "start": 0, "concurrency": 50,
   "to": "page{i}@127.0.0.1:5999", "from": "m{i}"}
  {"cmd": "send", "rate": 1000 (0: closed loop), "concurrency": 64, "duration": 5,
   "size": 100, "sessions": N (first N established; default all), "success_report": true,
   "drain": 5}
  {"cmd": "hangup"}
Run: python -m bench.peer   (bench.run starts it; nothing here binds a fixed port).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import socket
import sys
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from gw.msrp.endpoint import MsrpEndpoint
from gw.msrp.endpoint import Session as MsrpHandle
from gw.msrp.events import (
    MessageDelivered,
    MessageFailed,
    MessageReceived,
    SessionClosed,
    SessionEvent,
)
from gw.node import GcTuner
from gw.sip.dialog import Dialog
from gw.sip.endpoint import EndpointConfig, IncomingRequest, SipEndpoint
from gw.sip.message import Limits
from gw.sip.sdp import build_msrp_answer, build_msrp_offer, find_msrp_media, parse_sdp, we_connect
from gw.sip.transaction import Address, Timers
from gw.sip.transport import ListenSpec

ACCEPT = ["text/plain"]


def rss_bytes(pid: int | str = "self") -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def summarize(latencies: list[float]) -> dict[str, float | None]:
    """Latency percentiles in milliseconds (nearest-rank)."""
    if not latencies:
        return {"p50_ms": None, "p90_ms": None, "p99_ms": None, "p999_ms": None, "max_ms": None}
    xs = sorted(latencies)
    n = len(xs)

    def q(p: float) -> float:
        return round(xs[min(n - 1, max(0, int(p * n + 0.999999) - 1))] * 1000, 3)

    return {
        "p50_ms": q(0.5),
        "p90_ms": q(0.9),
        "p99_ms": q(0.99),
        "p999_ms": q(0.999),
        "max_ms": round(xs[-1] * 1000, 3),
        "mean_ms": round(sum(xs) / n * 1000, 3),
    }


class Peer:
    def __init__(self) -> None:
        big = 4 << 20
        limits = Limits(max_message_size=big, max_body_size=big)
        self.sip = SipEndpoint(EndpointConfig(timers=Timers(), limits=limits), self._handle)
        self.msrp = MsrpEndpoint("127.0.0.1", 0, idle_timeout=3600.0)
        self.received = 0
        self.sessions_created = 0  # for the GC policy (GcTuner, as in the node)
        self.sessions_ended = 0
        self.received_bytes = 0
        self.invites = 0
        self.byes = 0
        self.page_messages = 0  # MESSAGEs the gateway sent us as a page-mode user
        self.page_bytes = 0
        self.inbound: dict[str, MsrpHandle] = {}  # call-id -> session the gateway set up
        self.outbound: list[tuple[MsrpHandle, Dialog]] = []  # sessions we set up
        # message-id -> start time of our SENDs in flight
        self.inflight: dict[str, float] = {}
        self.on_outcome: Callable[[str, bool, float], None] | None = None  # (id, ok, start)
        self.failure_codes: Counter[str] = Counter()

    async def start(self) -> dict[str, Any]:
        # one port number for UDP and TCP: large MESSAGEs come back over TCP to the same port
        for _ in range(50):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.bind(("127.0.0.1", 0))
                port = int(s.getsockname()[1])
            try:
                await self.sip.start(
                    [ListenSpec("UDP", "127.0.0.1", port), ListenSpec("TCP", "127.0.0.1", port)]
                )
                break
            except OSError:
                await self.sip.transports.close()
                self.sip = SipEndpoint(self.sip.config, self._handle)
        else:
            raise RuntimeError("no port free for both UDP and TCP")
        await self.msrp.start()
        return {
            "ready": True,
            "pid": os.getpid(),
            "sip_port": self.sip.local("UDP").port,
            "msrp_port": self.msrp.uri.port,
        }

    # -- sink: the gateway calls us -------------------------------------------------
    def _sink_event(self, event: SessionEvent) -> None:
        if isinstance(event, MessageReceived):
            self.received += 1
            self.received_bytes += len(event.body)

    async def _handle(self, incoming: IncomingRequest) -> None:
        req = incoming.request
        if req.method == "ACK":
            return
        if req.method == "BYE":
            self.byes += 1
            incoming.respond(200)
            handle = self.inbound.pop(req.call_id, None)
            if handle is not None:
                self.sessions_ended += 1
                handle.close("bye")
            return
        if req.method == "MESSAGE":
            # page-mode sink for message sizes SIPp cannot carry (> 64 KiB)
            self.page_messages += 1
            self.page_bytes += len(req.body)
            incoming.respond(200)
            return
        if req.method != "INVITE":
            incoming.respond(405)
            return
        self.invites += 1
        offer = parse_sdp(req.body)
        media = find_msrp_media(offer)
        if media is None:
            incoming.respond(488)
            return
        local = self.msrp.new_local_uri()
        answer = build_msrp_answer(
            media,
            address="127.0.0.1",
            port=self.msrp.uri.port or 0,
            path=[str(local)],
            accept_types=ACCEPT,
            setup="passive" if media.setup else None,
            offer_sdp=offer,
        )
        call_id = req.call_id

        def on_event(event: SessionEvent) -> None:
            self._sink_event(event)
            if isinstance(event, SessionClosed) and self.inbound.pop(call_id, None):
                self.sessions_ended += 1

        handle = self.msrp.create_session(
            media.path,
            local_uri=local,
            role="passive",
            accept_types=ACCEPT,
            on_event=on_event,
            peer_accept_types=media.accept_types,
            max_message_size=4 << 20,
        )
        self.inbound[req.call_id] = handle
        self.sessions_created += 1
        incoming.respond(200, body=answer.to_bytes(), content_type="application/sdp")

    # -- source: we call the gateway -------------------------------------------------
    def _source_event(self, event: SessionEvent) -> None:
        if isinstance(event, MessageDelivered | MessageFailed):
            start = self.inflight.pop(event.message_id, None)
            if start is not None and self.on_outcome is not None:
                ok = isinstance(event, MessageDelivered)
                if isinstance(event, MessageFailed):
                    self.failure_codes[f"{event.code} {event.reason}"] += 1
                self.on_outcome(event.message_id, ok, start)
        elif isinstance(event, MessageReceived):
            self._sink_event(event)

    async def _call_one(self, gateway: Address, to: str, from_user: str) -> float | None:
        local = self.msrp.new_local_uri()
        offer = build_msrp_offer(
            address="127.0.0.1",
            port=self.msrp.uri.port or 0,
            path=[str(local)],
            accept_types=ACCEPT,
            setup="actpass",
        )
        to_user = to.split("@", 1)[0]
        t0 = time.perf_counter()
        req = self.sip.new_request(
            "INVITE",
            f"sip:{to_user}@{gateway.host}:{gateway.port}",
            from_=f"<sip:{from_user}@127.0.0.1>",
            to=f"<sip:{to}>",
            body=offer.to_bytes(),
            content_type="application/sdp",
            headers=[("Contact", f"<{self.sip.contact_uri('UDP')}>")],
        )
        response, dialog = await self.sip.invite(req, gateway)
        if dialog is None:
            return None
        media = find_msrp_media(parse_sdp(response.body))
        if media is None:
            return None
        active = we_connect(we_offered=True, offer="actpass", answer=media.setup)
        handle = self.msrp.create_session(
            media.path,
            local_uri=local,
            role="active" if active else "passive",
            accept_types=ACCEPT,
            on_event=self._source_event,
            peer_accept_types=media.accept_types,
            chunk_size=2048,
        )
        await handle.connect(timeout=10)
        self.outbound.append((handle, dialog))
        self.sessions_created += 1
        return time.perf_counter() - t0

    async def call(self, p: dict[str, Any]) -> dict[str, Any]:
        host, port = p["gateway"]
        gateway = Address("UDP", host, int(port))
        count, start = int(p["count"]), int(p.get("start", 0))
        sem = asyncio.Semaphore(int(p.get("concurrency", 50)))
        lat: list[float] = []
        failed = 0

        async def one(i: int) -> None:
            nonlocal failed
            async with sem:
                try:
                    d = await self._call_one(
                        gateway, p["to"].format(i=i), p.get("from", "m{i}").format(i=i)
                    )
                except Exception:
                    d = None
                if d is None:
                    failed += 1
                else:
                    lat.append(d)

        t0 = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(start, start + count)))
        elapsed = time.perf_counter() - t0
        return {
            "ok": len(lat),
            "failed": failed,
            "elapsed_s": round(elapsed, 3),
            "rate": round(len(lat) / elapsed, 1) if elapsed else None,
            **summarize(lat),
        }

    async def send(self, p: dict[str, Any]) -> dict[str, Any]:
        """Drive SENDs on our sessions; latency = queued -> outcome event."""
        sessions = [h for h, _ in self.outbound if not h.closed]
        if p.get("sessions"):
            sessions = sessions[: int(p["sessions"])]
        if not sessions:
            return {"error": "no sessions"}
        rate = float(p.get("rate", 0))
        concurrency = int(p.get("concurrency", 64))
        duration = float(p.get("duration", 5))
        size = int(p.get("size", 100))
        report = bool(p.get("success_report", True))
        drain = float(p.get("drain", 5))
        warmup = float(p.get("warmup", 0))
        body = (b"x" * (size - 2)) + b"\r\n" if size >= 2 else b"x"
        lat: list[float] = []
        failed = 0
        sent = 0
        sent_in_window = 0
        t_meas = 0.0
        idle = asyncio.Event()
        closed_loop = rate <= 0
        self.failure_codes.clear()
        t_end = 0.0
        last_done = 0.0

        def fire() -> None:
            nonlocal sent, failed, sent_in_window
            handle = sessions[sent % len(sessions)]
            sent += 1
            if time.perf_counter() >= t_meas:
                sent_in_window += 1
            try:
                msg = handle.send_nowait(
                    body, "text/plain", success_report=True if report else None
                )
            except Exception:
                failed += 1
                return
            self.inflight[msg.message_id] = time.perf_counter()

        def done(_mid: str, ok: bool, start: float) -> None:
            nonlocal failed, last_done
            last_done = time.perf_counter()
            if start >= t_meas:
                if ok:
                    lat.append(last_done - start)
                else:
                    failed += 1
            if closed_loop and last_done < t_end:
                fire()
            if not self.inflight:
                idle.set()

        self.on_outcome = done
        gc.collect()
        t0 = time.perf_counter()
        t_end = t0 + duration
        t_meas = t0 + warmup
        if closed_loop:
            for _ in range(concurrency):
                fire()
            await asyncio.sleep(duration)
        else:
            while True:
                now = time.perf_counter()
                if now >= t_end:
                    break
                due = int((now - t0) * rate) - sent
                for _ in range(min(due, 2000)):
                    fire()
                await asyncio.sleep(0.0005)
        offered_s = time.perf_counter() - t0
        if self.inflight:
            idle.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(idle.wait(), drain)
        timeouts = sum(1 for start in self.inflight.values() if start >= t_meas)
        self.inflight.clear()
        self.on_outcome = None
        ok = len(lat)
        span = max(offered_s, (last_done - t0) if last_done else offered_s) - warmup
        return {
            "mode": "closed" if closed_loop else "open",
            "offered_rate": None if closed_loop else rate,
            "concurrency": concurrency if closed_loop else None,
            "sessions": len(sessions),
            "size": size,
            "sent": sent_in_window,
            "warmup_s": warmup,
            "delivered": ok,
            "failed": failed,
            "timeouts": timeouts,
            "duration_s": round(span, 3),
            "throughput": round(ok / span, 1) if span else None,
            "failure_codes": dict(self.failure_codes),
            "error_ratio": round((failed + timeouts) / sent_in_window, 6)
            if sent_in_window
            else None,
            **summarize(lat),
        }

    async def hangup(self) -> dict[str, Any]:
        n = 0
        for handle, dialog in self.outbound:
            handle.close("hangup")
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.sip.bye(dialog), 5)
            n += 1
        self.sessions_ended += len(self.outbound)
        self.outbound.clear()
        return {"hung_up": n}

    def stats(self) -> dict[str, Any]:
        return {
            "received": self.received,
            "received_bytes": self.received_bytes,
            "invites": self.invites,
            "page_messages": self.page_messages,
            "page_bytes": self.page_bytes,
            "byes": self.byes,
            "inbound_sessions": len(self.inbound),
            "outbound_sessions": len(self.outbound),
            "rss": rss_bytes(),
        }

    async def close(self) -> None:
        await self.msrp.close()
        await self.sip.close()


async def main() -> None:
    peer = Peer()
    info = await peer.start()
    # The node's GC policy for the load endpoint too: with 100,000 sessions its full
    # collections paused it for hundreds of milliseconds, and set-ups waited on it.
    tuner = GcTuner(
        lambda: (
            peer.sessions_created,
            peer.sessions_ended,
            len(peer.inbound) + len(peer.outbound),
        )
    )
    tuner.start()

    async def tune() -> None:
        while True:
            await asyncio.sleep(1.0)
            tuner.tick()

    ticker = asyncio.ensure_future(tune())
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    def reply(obj: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    reply(info)
    while True:
        line = await reader.readline()
        if not line:
            break
        try:
            p = json.loads(line)
        except ValueError:
            reply({"error": "bad json"})
            continue
        cmd = p.get("cmd")
        try:
            if cmd == "stats":
                reply(peer.stats())
            elif cmd == "reset":
                peer.received = peer.received_bytes = 0
                peer.page_messages = peer.page_bytes = 0
                reply({"ok": True})
            elif cmd == "call":
                reply(await peer.call(p))
            elif cmd == "send":
                reply(await peer.send(p))
            elif cmd == "hangup":
                reply(await peer.hangup())
            elif cmd == "quit":
                reply({"ok": True})
                break
            else:
                reply({"error": f"unknown command {cmd!r}"})
        except Exception as exc:  # report, keep serving
            reply({"error": f"{type(exc).__name__}: {exc}"})
    ticker.cancel()
    await peer.close()


if __name__ == "__main__":
    # uvloop when installed, like the node: less load-generator CPU on a shared machine
    try:
        import uvloop
    except ImportError:
        asyncio.run(main())
    else:
        uvloop.run(main())
