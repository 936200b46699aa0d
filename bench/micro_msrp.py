"""Micro-benchmark of gw.msrp: CPU per message, heap per idle session, sans-I/O parse cost.

    .venv/bin/python -m bench.micro_msrp [--loop uvloop|asyncio] [--messages N] [--sessions N]

(a) CPU (process time, both endpoints: they share this process) per SEND + 200 round
    trip between two `MsrpEndpoint`s over loopback TCP, 100-byte text/plain, used the
    way gw.gateway uses the API: `create_session(..., on_event=...)`, the active side
    `connect`s, `send_nowait` + `outcome` (page.py, MESSAGE -> SEND) and incoming
    `MessageReceived` events (answer.py, SEND -> MESSAGE). "serial": one message in
    flight; "window 32": up to 32 in flight (a busy session).
(b) Python heap (tracemalloc) per idle established session: N sessions between the two
    endpoints over one connection pair; the delta covers both ends of each session, so
    "per end" (half) is the node's share. Measured idle right after set-up, and again
    after one message each way. Bounded module caches (parsed paths) are emptied before
    each reading and their size at N sessions reported apart: they are per process,
    not per session.
(c) Sans-I/O costs, no sockets: parse one SEND and match it to one of 1,000 sessions;
    the whole receive path (SEND bytes in, 200 bytes out, event out); the whole send
    path (message queued, SEND bytes out, 200 bytes in, outcome out).

Figures are medians of a few repeats; the machine is shared, so compare runs made
close together.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import time
import tracemalloc
from collections.abc import Callable, Coroutine
from typing import Any

from gw.msrp import uri as msrp_uri
from gw.msrp.connection import MsrpConnection, SessionTable
from gw.msrp.endpoint import MsrpEndpoint, Session
from gw.msrp.events import MessageReceived, SessionEvent
from gw.msrp.frame import Frame, FrameParser, FrameReceived, serialize
from gw.msrp.session import MsrpSession
from gw.msrp.uri import MsrpUri, new_session_id, parse_msrp_uri

BODY = b"x" * 100
CTYPE = "text/plain"
WINDOW = 32


def _ignore(event: SessionEvent) -> None:
    pass


class _Counter:
    """on_event callback counting received messages (the gateway spawns _to_page here)."""

    def __init__(self) -> None:
        self.received = 0

    def __call__(self, event: SessionEvent) -> None:
        if isinstance(event, MessageReceived):
            self.received += 1


async def _pair() -> tuple[MsrpEndpoint, MsrpEndpoint]:
    gw, peer = MsrpEndpoint(), MsrpEndpoint()
    await gw.start()
    await peer.start()
    return gw, peer


async def _establish(
    gw: MsrpEndpoint,
    peer: MsrpEndpoint,
    gw_event: Callable[[SessionEvent], None],
    peer_event: Callable[[SessionEvent], None],
) -> tuple[Session, Session]:
    """The gateway offers and is active (page.py); the peer answers and is passive and,
    like answer.py's passive side, never calls `connect`: the first SEND binds it."""
    lg, lp = gw.new_local_uri(), peer.new_local_uri()
    sp = peer.create_session([lg], local_uri=lp, role="passive", on_event=peer_event)
    sg = gw.create_session([lp], local_uri=lg, role="active", on_event=gw_event)
    await sg.connect(10.0)
    while sp.link is None:  # bound by the empty SEND, whose 200 sg.connect awaited
        await asyncio.sleep(0)
    return sg, sp


# -- (a) CPU per round trip --------------------------------------------------------------
async def _run(sender: Session, n: int, window: int) -> None:
    if window == 1:
        for _ in range(n):
            await sender.outcome(sender.send_nowait(BODY, CTYPE))
        return
    inflight: set[asyncio.Future[Any]] = set()
    for _ in range(n):
        if len(inflight) >= window:
            _, inflight = await asyncio.wait(inflight, return_when=asyncio.FIRST_COMPLETED)
        inflight.add(asyncio.ensure_future(sender.outcome(sender.send_nowait(BODY, CTYPE))))
    await asyncio.wait(inflight)


async def bench_roundtrips(n: int, repeats: int) -> dict[str, float]:
    gw, peer = await _pair()
    gw_count, peer_count = _Counter(), _Counter()
    sg, sp = await _establish(gw, peer, gw_count, peer_count)
    results: dict[str, float] = {}
    cases = [
        ("MESSAGE->SEND (gw sends), serial", sg, 1),
        ("SEND->MESSAGE (gw receives), serial", sp, 1),
        ("MESSAGE->SEND (gw sends), window 32", sg, WINDOW),
        ("SEND->MESSAGE (gw receives), window 32", sp, WINDOW),
    ]
    for name, sender, window in cases:
        await _run(sender, 200, window)  # warm-up
        samples, walls = [], []
        for _ in range(repeats):
            gc.collect()
            w0, t0 = time.perf_counter(), time.process_time()
            await _run(sender, n, window)
            samples.append((time.process_time() - t0) / n * 1e6)
            walls.append((time.perf_counter() - w0) / n * 1e6)
        results[name] = statistics.median(samples)
        if window == 1:  # one in flight: wall time per message is the round-trip latency
            results[name.replace("serial", "serial, wall time")] = statistics.median(walls)
    expected = (200 + n * repeats) * 2
    assert peer_count.received == expected and gw_count.received == expected, (
        peer_count.received,
        gw_count.received,
        expected,
    )
    await gw.close()
    await peer.close()
    return results


# -- (b) heap per idle session ----------------------------------------------------------
def _clear_caches() -> int:
    """Empty gw.msrp's bounded module caches (parsed paths, host keys), if it has any,
    so that their fill (a per-node constant) is not counted per session; returns the
    bytes that freed."""
    gc.collect()
    before = tracemalloc.get_traced_memory()[0]
    for name in ("parse_path", "_host_key"):
        clear = getattr(getattr(msrp_uri, name, None), "cache_clear", None)
        if clear is not None:
            clear()
    gc.collect()
    return before - tracemalloc.get_traced_memory()[0]


async def _settle() -> int:
    await asyncio.sleep(0.05)  # let the last responses and timers settle
    return _clear_caches()


async def bench_memory(n: int) -> dict[str, float]:
    gw, peer = await _pair()
    await _establish(gw, peer, _ignore, _ignore)  # the connection pair exists before
    tracemalloc.start(1)
    await _settle()
    base = tracemalloc.get_traced_memory()[0]
    snap0 = tracemalloc.take_snapshot()
    pairs = [await _establish(gw, peer, _ignore, _ignore) for _ in range(n)]
    cache = await _settle()
    idle = tracemalloc.get_traced_memory()[0]
    snap1 = tracemalloc.take_snapshot()
    for sg, sp in pairs:
        await sg.outcome(sg.send_nowait(BODY, CTYPE))
        await sp.outcome(sp.send_nowait(BODY, CTYPE))
    await _settle()
    used = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    top = snap1.compare_to(snap0, "lineno")[:15]
    print(f"\n  top allocation sites for {n} idle sessions (both ends):")
    for stat in top:
        frame = stat.traceback[0]
        where = f"{frame.filename.rsplit('/gw/', 1)[-1]}:{frame.lineno}"
        print(f"    {stat.size_diff / n:8.0f} B/session  {stat.count_diff / n:5.1f} obj  {where}")
    del pairs
    await gw.close()
    await peer.close()
    return {
        "bounded caches, whole process (not above)": cache,
        "idle, established (both ends)": (idle - base) / n,
        "idle, established, per end": (idle - base) / n / 2,
        "idle after 1 msg each way (both ends)": (used - base) / n,
        "idle after 1 msg each way, per end": (used - base) / n / 2,
    }


# -- (c) sans-I/O ----------------------------------------------------------------------
def _best(fn: Callable[[], None], loops: int, repeats: int = 7) -> float:
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(loops):
            fn()
        samples.append((time.perf_counter() - t0) / loops * 1e6)
    return statistics.median(samples)


def bench_sans_io(loops: int) -> dict[str, float]:
    ours = parse_msrp_uri("msrp://10.0.0.1:2855/x;tcp")
    table = SessionTable()
    sessions = []
    for _ in range(1000):
        local = ours.with_session(new_session_id())
        peer = MsrpUri(host="10.0.0.2", port=40000, session_id=new_session_id())
        core = MsrpSession(local, [peer])
        table.add(core)
        sessions.append(core)
    target = sessions[500]
    send = Frame.request(
        "SEND",
        [target.local_uri],
        [target.peer_uri],
        tid="a1b2c3d4e5f60718",
        headers=[("Message-ID", "m0123456789abcde"), ("Byte-Range", "1-100/100")],
        body=BODY,
        content_type=CTYPE,
    )
    wire = serialize(send)
    results: dict[str, float] = {}

    parser = FrameParser()

    def parse_and_match() -> None:
        (event,) = parser.feed(wire)
        assert isinstance(event, FrameReceived)
        assert table.match(event.frame) is target

    results["parse SEND + match session (1,000 sessions)"] = _best(parse_and_match, loops)

    # Receive path: SEND in, 200 out, MessageReceived out; a fresh Message-ID each time
    # (the session remembers ids). Frames are prebuilt so only the core is timed.
    conn = MsrpConnection(table, now=0.0, outbound=False)
    frames = [
        serialize(
            Frame.request(
                "SEND",
                [target.local_uri],
                [target.peer_uri],
                tid=f"t{i:015d}",
                headers=[("Message-ID", f"m{i:015d}"), ("Byte-Range", "1-100/100")],
                body=BODY,
                content_type=CTYPE,
            )
        )
        for i in range(loops * 8)
    ]
    it = iter(frames)

    def receive() -> None:
        conn.receive_data(next(it), 1.0)
        out = conn.data_to_send(1.0)
        assert out.startswith(b"MSRP t")
        conn.touched()
        conn.events()
        (event,) = target.events()
        assert isinstance(event, MessageReceived)

    results["receive path: SEND in -> 200 out + event"] = _best(receive, loops)

    # Send path: queue a message, SEND bytes out, the peer's 200 in, outcome out.
    out_table = SessionTable()
    sender = MsrpSession(ours.with_session(new_session_id()), [target.local_uri])
    out_table.add(sender)
    oconn = MsrpConnection(out_table, now=0.0, outbound=True)
    oconn.attach(sender, 0.0)
    first = oconn.data_to_send(0.0)  # the empty SEND: answer it once
    ok_prefix = b" 200 OK\r\nTo-Path: " + str(sender.local_uri).encode()
    ok_middle = b"\r\nFrom-Path: " + str(target.local_uri).encode() + b"\r\n-------"

    def ok(data: bytes) -> bytes:
        tid = data[5 : data.index(b" ", 5)]
        return b"MSRP " + tid + ok_prefix + ok_middle + tid + b"$\r\n"

    oconn.receive_data(ok(first), 0.0)
    sender.events()

    def send_path() -> None:
        sender.send_message(BODY, CTYPE, now=1.0)
        oconn.wake(sender)  # what the endpoint's Session handle does after an API call
        data = oconn.data_to_send(1.0)
        oconn.receive_data(ok(data), 1.0)
        oconn.touched()
        (event,) = sender.events()
        assert type(event).__name__ == "MessageDelivered", event

    results["send path: SEND out -> 200 in + outcome"] = _best(send_path, loops)
    return results


# -- main ----------------------------------------------------------------------------
def _run_loop(main: Coroutine[Any, Any, Any], loop: str) -> Any:
    if loop == "uvloop":
        import uvloop

        return uvloop.run(main)
    return asyncio.run(main)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    ap.add_argument("--messages", type=int, default=2000, help="round trips per repeat")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sessions", type=int, default=1000, help="idle sessions for (b)")
    ap.add_argument("--loops", type=int, default=2000, help="iterations per repeat for (c)")
    ap.add_argument("--only", choices=("cpu", "mem", "parse"), action="append")
    args = ap.parse_args(argv)
    only = set(args.only or ("cpu", "mem", "parse"))
    print(f"gw.msrp micro-benchmark, loop={args.loop}")
    if "cpu" in only:
        cpu = _run_loop(bench_roundtrips(args.messages, args.repeats), args.loop)
        print("\n(a) CPU per SEND + 200 round trip, both endpoints, 100 B text/plain:")
        for name, value in cpu.items():
            print(f"  {name:52s} {value:8.1f} us")
    if "mem" in only:
        mem = _run_loop(bench_memory(args.sessions), args.loop)
        print(f"\n(b) Python heap per idle established session (N={args.sessions}):")
        for name, value in mem.items():
            print(f"  {name:52s} {value:8.0f} B")
    if "parse" in only:
        sans = bench_sans_io(args.loops)
        print("\n(c) sans-I/O, per frame:")
        for name, value in sans.items():
            print(f"  {name:52s} {value:8.1f} us")


if __name__ == "__main__":
    main()
