"""Micro-benchmark of the per-MESSAGE SIP work (gw.sip), in-process, without sockets.

    .venv/bin/python -m bench.micro_sip                 # µs per MESSAGE
    .venv/bin/python -m bench.micro_sip --profile       # plus a cProfile of the same work
    .venv/bin/python -m bench.micro_sip --save a.json   # keep the figures ...
    .venv/bin/python -m bench.micro_sip --baseline a.json   # ... and compare a later run

Two paths, each timed per MESSAGE:

core (sans-I/O): what the node does for a page-mode MESSAGE from SIPp, straight on the
  cores: `parse_message`, `TransactionLayer.receive_request`, the header reads the
  gateway makes (To tag, loop checks on the Vias, From/To/Request-URI for the session key,
  Content-Type, Call-ID), `build_response` of the 200 with a To tag and Server header,
  `TransactionLayer.respond` and `to_bytes`; then the other direction: a MESSAGE built as
  gw.gateway.answer builds it (`parse_name_addr` of the stored coordinates,
  `SipEndpoint.new_request`), a Via, `send_request`, `to_bytes`, and the parse and
  `receive_response` of SIPp's 200. Timers fire as they fall due (transactions end).

endpoint: the same traffic through a real `SipEndpoint`: the UDP protocol's
  `datagram_received`, `_on_message`, `IncomingRequest.respond`, and `await
  SipEndpoint.request(...)` with its routing, MTU check, Via and waiter. Sockets are
  replaced by a fake datagram transport whose peer answers synchronously; send tasks are
  run inline (they complete without suspending), so asyncio scheduling is not counted.
  The peer's own work (cutting SIPp's 200 out of the request) is timed and subtracted.

Timers are shrunk (T1 = 5 ms) and the clock advances 0.2 ms per MESSAGE (5,000/s), so
transactions reach their end (Timer J/K) within a run and their removal is counted.

Figures: µs per MESSAGE, best 250-MESSAGE chunk of 3 runs, on the 2-core shared dev
machine under other load (Python 3.11; runs of the old and new code alternated):

    sessions  path      before: in / out / total    after: in / out / total   speed-up
    1,000     core      304.0 / 225.9 / 530.0        86.2 /  87.5 / 173.7      x3.1
    1,000     endpoint  326.4 / 291.5 / 617.9       100.7 / 126.0 / 226.7      x2.7
    100,000   core      313.1 / 236.5 / 549.6        86.8 / 110.0 / 196.8      x2.8
    100,000   endpoint  343.4 / 296.1 / 639.6       105.0 / 155.9 / 260.9      x2.5

"before" is gw/sip at commit af48948, "after" the hot-path changes that came with this script
(typed views cached on the message, fast paths and shared parse results in gw/sip/uri.py,
one-pass validation). With 100,000 sessions the From/To/Request-URI texts miss the parse
caches (4,096 entries), so that row shows the cost without them. Calls per MESSAGE pair
(endpoint path, 1,000 sessions): parse_uri 17 -> 2, parse_name_addr 15 -> 6,
canonical_name 78 -> 11, regex fullmatch 128 -> 11, parse_via 6 -> 3.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import json
import pstats
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from gw.sip.dialog import new_tag
from gw.sip.endpoint import EndpointConfig, IncomingRequest, SipEndpoint
from gw.sip.message import Request, Response, parse_message
from gw.sip.responses import build_response, new_branch
from gw.sip.transaction import (
    Address,
    RequestReceived,
    ResponseReceived,
    Send,
    Timers,
    TransactionLayer,
)
from gw.sip.transport import _Datagram
from gw.sip.uri import NameAddr, parse_name_addr

LOOP_HEADER = "X-Msrp-Gw"  # gw.gateway.base.LOOP_HEADER (not imported: keep gw.gateway out)
USER_AGENT = "msrp-gw"
TIMERS = Timers(t1=0.005, t2=0.04, t4=0.05, td=0.32)
STEP = 0.0002  # seconds of fake clock per MESSAGE: 5,000/s
SIPP = Address("UDP", "127.0.0.1", 5070)
LOCAL_UDP = Address("UDP", "127.0.0.1", 5060)
LOCAL_TCP = Address("TCP", "127.0.0.1", 5060)

BODY = (
    b"Hello from SIPp: this is a page-mode MESSAGE of about one hundred bytes, "
    b"as the benchmark sends it.."
)


def sipp_message(i: int, session: int = 7) -> bytes:
    """A MESSAGE as SIPp's bench/sipp/msg_uac.xml sends it, plus rport and Contact."""
    head = (
        f"MESSAGE sip:msrp{session}@127.0.0.1:5060 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-4242-{i}-0;rport\r\n"
        f"From: <sip:page{session}@127.0.0.1>;tag=4242SIPpTag00{i}\r\n"
        f"To: <sip:msrp{session}@127.0.0.1>\r\n"
        f"Call-ID: {i}-4242@127.0.0.1\r\n"
        "CSeq: 1 MESSAGE\r\n"
        "Max-Forwards: 70\r\n"
        f"Contact: <sip:page{session}@127.0.0.1:5070>\r\n"
        "Content-Type: text/plain\r\n"
        f"Content-Length: {len(BODY)}\r\n"
        "\r\n"
    )
    return head.encode() + BODY


def sipp_200(request: bytes) -> bytes:
    """SIPp's bench/sipp/msg_uas.xml answer: the request's Via/From/To/Call-ID/CSeq lines."""
    head = request[: request.index(b"\r\n\r\n")]
    out = [b"SIP/2.0 200 OK"]
    for line in head.split(b"\r\n")[1:]:
        name = line[: line.find(b":")].lower()
        if name in (b"via", b"from", b"call-id", b"cseq"):
            out.append(line)
        elif name == b"to":
            out.append(line + b";tag=4242u1")
    out.append(b"Content-Length: 0")
    return b"\r\n".join(out) + b"\r\n\r\n"


def gateway_message(ep: SipEndpoint, session: int) -> Request:
    """The MESSAGE the gateway sends for a SEND (as gw.gateway.answer builds it)."""
    return ep.new_request(
        "MESSAGE",
        f"sip:page{session}@127.0.0.1:5070",
        from_=parse_name_addr(f"<sip:msrp{session}@127.0.0.1>"),
        to=parse_name_addr(f"<sip:page{session}@127.0.0.1>"),
        body=BODY,
        content_type="text/plain",
        headers=[(LOOP_HEADER, "node-1")],
    )


def tu_reads(request: Request) -> None:
    """The header reads the endpoint and the gateway make for a page-mode MESSAGE.

    IncomingRequest and SipEndpoint._on_request (To tag), Gateway.handle (To tag, loop
    header, Vias below the top), Policy.default (From, To, Request-URI) and
    PageSide.msg_to_msrp (Content-Type, Call-ID, From/To without parameters).
    """
    _ = request.to.tag
    _ = request.get(LOOP_HEADER)
    for via in request.vias[1:]:
        _ = via.sent_by, via.branch
    frm, to = request.from_, request.to
    _ = frm.uri.aor, to.uri.aor, str(request.uri)
    _ = request.content_type, request.call_id
    _ = str(NameAddr(uri=request.from_.uri, display=request.from_.display))
    _ = str(NameAddr(uri=request.to.uri, display=request.to.display))


# -- core (sans-I/O) -------------------------------------------------------------------
class Core:
    """The transaction layer driven by hand, as SipEndpoint drives it."""

    def __init__(self) -> None:
        self.layer = TransactionLayer(TIMERS)
        self.now = 0.0
        self.sent = 0
        self.peer = 0.0  # seconds spent in the fake peer, subtracted
        self.ep = SipEndpoint(EndpointConfig(timers=TIMERS))  # new_request only

    def tick(self) -> None:
        self.now += STEP
        deadline = self.layer.next_deadline()
        if deadline is not None and deadline <= self.now:
            self.layer.on_timer(self.now)

    def incoming(self, raw: bytes) -> None:
        msg = parse_message(raw)
        assert isinstance(msg, Request)
        for event in self.layer.receive_request(msg, SIPP, self.now):
            if isinstance(event, RequestReceived):
                request = event.request
                to_tag = request.to.tag or None  # IncomingRequest.__init__
                tu_reads(request)
                response = build_response(request, 200, "OK", to_tag=to_tag or new_tag())
                response.add("Server", USER_AGENT)
                for out in self.layer.respond(event.key, response, self.now):
                    if isinstance(out, Send):
                        self.sent += len(out.message.to_bytes())
        self.tick()

    def outgoing(self, i: int, session: int = 7) -> None:
        req = gateway_message(self.ep, session)
        req.add("User-Agent", USER_AGENT)
        req.add("Via", f"SIP/2.0/UDP 127.0.0.1:5060;branch={new_branch()};rport", first=True)
        _, events = self.layer.send_request(req, SIPP, self.now)
        data = b""
        for event in events:
            if isinstance(event, Send):
                data = event.message.to_bytes()
        started = time.perf_counter()
        answer = sipp_200(data)
        self.peer += time.perf_counter() - started
        response = parse_message(answer)
        assert isinstance(response, Response)
        for event in self.layer.receive_response(response, self.now):
            if isinstance(event, ResponseReceived):
                _ = event.response.status, event.response.reason, req.call_id
        self.tick()


# -- endpoint (SipEndpoint without sockets) ----------------------------------------------
class _Handle:
    def cancel(self) -> None:
        pass


class _Clock:
    """Stands in for the loop in SipEndpoint: a fake clock and timers fired by hand."""

    def __init__(self) -> None:
        self.now = 0.0
        self._futures = asyncio.new_event_loop()

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[[], None]) -> _Handle:
        return _Handle()

    def create_future(self) -> asyncio.Future[Any]:
        # Never awaited, only resolved: any loop will do, one for the whole run.
        return self._futures.create_future()


def run_inline(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine that never suspends; fail loudly if it does."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    coro.close()
    raise RuntimeError("coroutine suspended: the benchmark expects inline completion")


class _FakeUdp:
    """The datagram transport: SIPp answers MESSAGEs at once; other datagrams are counted."""

    def __init__(self, owner: Endpoint) -> None:
        self.owner = owner

    def sendto(self, data: bytes, addr: tuple[str, int]) -> None:
        self.owner.sent += len(data)
        if data.startswith(b"MESSAGE "):
            started = time.perf_counter()
            answer = sipp_200(data)
            self.owner.peer += time.perf_counter() - started
            self.owner.proto.datagram_received(answer, addr)


class BenchEndpoint(SipEndpoint):
    def _spawn(self, coro: Any) -> None:
        run_inline(coro)


class Endpoint:
    def __init__(self) -> None:
        self.sent = 0
        self.peer = 0.0
        self.clock = _Clock()
        self.ep = BenchEndpoint(EndpointConfig(timers=TIMERS), self.handle)
        self.ep._loop = self.clock  # type: ignore[assignment]
        transports = self.ep.transports
        transports.local = {"UDP": LOCAL_UDP, "TCP": LOCAL_TCP}
        self.proto = _Datagram(transports)
        self.proto.transport = _FakeUdp(self)  # type: ignore[assignment]
        transports._udp = self.proto

    def handle(self, incoming: IncomingRequest) -> None:
        if incoming.request.method == "MESSAGE":
            tu_reads(incoming.request)
            incoming.respond(200, "OK")

    def tick(self) -> None:
        self.clock.now += STEP
        if self.ep._timer is not None and self.ep._timer_at <= self.clock.now:
            self.ep._fire()

    def incoming(self, raw: bytes) -> None:
        self.proto.datagram_received(raw, ("127.0.0.1", 5070))
        self.tick()

    def outgoing(self, i: int, session: int = 7) -> None:
        req = gateway_message(self.ep, session)
        response = run_inline(self.ep.request(req))
        assert response.status == 200, response
        _ = response.reason, req.call_id
        self.tick()


# -- measurement ----------------------------------------------------------------------------
def measure(path: str, n: int, repeat: int, sessions: int, chunk: int = 250) -> dict[str, float]:
    """µs per MESSAGE for the incoming and outgoing halves of `path`.

    Each run times chunks of `chunk` MESSAGEs with perf_counter; the figure is the best
    chunk over all runs, which keeps out the time the process spent descheduled on a busy
    machine (timer expiries and GC are spread evenly over the chunks). MESSAGE i belongs
    to session i % `sessions` (its From/To/Request-URI users).
    """
    best = {"incoming": float("inf"), "outgoing": float("inf")}
    for r in range(repeat):
        bench: Core | Endpoint = Core() if path == "core" else Endpoint()
        raws = [sipp_message(r * n + i, i % sessions) for i in range(n)]
        for i in range(500):  # warm-up, and transactions start to end
            bench.incoming(sipp_message(10**9 + i, i % sessions))
            bench.outgoing(i, i % sessions)
        gc.collect()
        for lo in range(0, n - chunk + 1, chunk):
            started = time.perf_counter()
            for raw in raws[lo : lo + chunk]:
                bench.incoming(raw)
            elapsed = time.perf_counter() - started
            best["incoming"] = min(best["incoming"], elapsed / chunk * 1e6)
        for lo in range(0, n - chunk + 1, chunk):
            bench.peer = 0.0
            started = time.perf_counter()
            for i in range(lo, lo + chunk):
                bench.outgoing(i, i % sessions)
            elapsed = time.perf_counter() - started - bench.peer
            best["outgoing"] = min(best["outgoing"], elapsed / chunk * 1e6)
    return best


def profile(path: str, n: int, sessions: int, top: int) -> None:
    bench: Core | Endpoint = Core() if path == "core" else Endpoint()
    raws = [sipp_message(i, i % sessions) for i in range(n)]
    profiler = cProfile.Profile()
    profiler.enable()
    for i, raw in enumerate(raws):
        bench.incoming(raw)
        bench.outgoing(i, i % sessions)
    profiler.disable()
    print(f"\ncProfile, {path} path, {n} MESSAGEs each way (tottime; ncalls are totals):")
    stats = pstats.Stats(profiler, stream=sys.stdout)
    stats.sort_stats("tottime").print_stats(top)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=4000, help="MESSAGEs per run and direction")
    parser.add_argument("--repeat", type=int, default=3, help="runs (fresh state each)")
    parser.add_argument("--path", choices=("core", "endpoint", "both"), default="both")
    parser.add_argument(
        "--sessions",
        type=int,
        default=1000,
        help="distinct From/To/Request-URI users (parse caches hold 4,096 entries)",
    )
    parser.add_argument("--profile", action="store_true", help="also run cProfile")
    parser.add_argument("--top", type=int, default=30, help="functions shown by --profile")
    parser.add_argument("--save", type=Path, help="write the figures to this JSON file")
    parser.add_argument("--baseline", type=Path, help="compare with figures saved earlier")
    args = parser.parse_args(argv)

    paths = ["core", "endpoint"] if args.path == "both" else [args.path]
    # Run inside a loop: SipEndpoint.request creates its future on the running loop.
    results = asyncio.run(_measure_all(paths, args.n, args.repeat, args.sessions))
    base: dict[str, dict[str, float]] = (
        json.loads(args.baseline.read_text()) if args.baseline else {}
    )
    print(
        f"µs per MESSAGE (best chunk of {args.repeat} runs of {args.n}, {args.sessions} sessions),"
        f" Python {sys.version.split()[0]}"
    )
    for path, figures in results.items():
        total = figures["incoming"] + figures["outgoing"]
        line = (
            f"  {path:<9} incoming {figures['incoming']:6.1f}  outgoing {figures['outgoing']:6.1f}"
            f"  total {total:6.1f}"
        )
        old = base.get(path)
        if old:
            old_total = old["incoming"] + old["outgoing"]
            line += (
                f"   (baseline {old['incoming']:.1f} / {old['outgoing']:.1f} / {old_total:.1f}:"
                f" x{old_total / total:.2f})"
            )
        print(line)
    if args.save:
        args.save.write_text(json.dumps(results, indent=2) + "\n")
    if args.profile:
        for path in paths:
            asyncio.run(_profile(path, min(args.n, 5000), args.sessions, args.top))
    return 0


async def _measure_all(
    paths: list[str], n: int, repeat: int, sessions: int
) -> dict[str, dict[str, float]]:
    return {path: measure(path, n, repeat, sessions) for path in paths}


async def _profile(path: str, n: int, sessions: int, top: int) -> None:
    profile(path, n, sessions, top)


if __name__ == "__main__":
    sys.exit(main())
