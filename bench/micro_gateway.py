"""Micro-benchmark of gw.gateway in one process: asyncio tasks per message, heap per session.

    .venv/bin/python -m bench.micro_gateway [--sessions N] [--messages N] [--loop asyncio|uvloop]
        [--save FILE] [--compare FILE]   # --compare: a before (FILE) / after table

A real node (`gw.node.Node`, as `msrp-gw run` builds it) runs on this process's event loop
against a private redis-server on a free port (tests/support/redis_server.py). The peers
stay out of the figures:
- the session-mode side is `bench.peer` in a child process (it answers the node's INVITEs,
  calls the node, sends SENDs and answers the node's MESSAGEs with 200);
- the page-mode UA (a gw.sip endpoint sending MESSAGEs) runs on its own event loop in a
  thread, so the task factory (per loop) counts only the node's tasks.

(a) Tasks per translated message: a counting task factory on the node's loop, over M
    MESSAGE -> SEND messages (one in flight, one established session) and over the SEND ->
    MESSAGE messages of a 2 s closed loop (one in flight); divided by the node's own counters
    (page_messages_in, msrp_to_page_delivered), with the tasks listed by coroutine. Also the
    CPU time of the node's thread per message (time.thread_time: the page UA has its own
    thread, the peer and Redis their own processes; the task factory is on).
(b) Heap per idle established session (tracemalloc, after a gc.collect()): N sessions
    set up by MESSAGEs from N page-mode users (msg_to_msrp), then N sessions set up by the
    peer's INVITEs (msrp_gw_answer), each measured once its transactions have ended (the
    node's T1 is 100 ms here, so Timer J is 6.4 s). Each allocation is charged to the
    innermost frame of the node's code (gw/...) in its traceback; "gateway" is gw/gateway
    + gw/node.py.
(c) GC: objects the collector tracks per session, and the time of one full collection
    with the 2N sessions, before and after the node's periodic gc.freeze() (what the node's
    GC loop does, `Node.gc_tuner.tick()`, when the node has one).

Figures vary with the shared machine; compare runs made close together. Reference, 500
sessions per direction, asyncio loop, 2026-11-26, gw.sip/gw.msrp as of b01f0e7 plus their
work in progress, gw.gateway before -> after the change that added this script: MESSAGE ->
SEND 3.0 -> 1.0 tasks per message (the one left is gw.sip's response send), SEND ->
MESSAGE 2.0 -> 2.0; heap per idle msg_to_msrp session 17.6 -> 13.5 KB (gateway share
2.9 -> 0.9 KB), per answered session 13.1 -> 12.0 KB (1.85 -> 0.75 KB); GC-tracked
objects 218 -> 163 / 325 -> 269 per session; a full collection after the periodic freeze
20 -> 0.1 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from collections import Counter
from collections.abc import Coroutine, Generator
from pathlib import Path
from typing import Any, TypeVar

from gw.config import Config
from gw.gateway.stats import Direction
from gw.node import Node
from gw.sip.endpoint import EndpointConfig, SipEndpoint
from gw.sip.transaction import Address, Timers
from gw.sip.transport import ListenSpec
from tests.support.redis_server import RedisServer

T = TypeVar("T")
ROOT = Path(__file__).resolve().parent.parent
GW = str(ROOT / "gw") + os.sep
T1 = 0.1  # the node's: Timer J (64*T1) of the last MESSAGE bounds the wait for quiet
QUIET = 64 * T1 + 1.0


# -- task counting ----------------------------------------------------------------------
class TaskCounter:
    """Task factory that counts the tasks created on one loop, by coroutine."""

    def __init__(self) -> None:
        self.by_coro: Counter[str] = Counter()

    def __call__(
        self, loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any
    ) -> asyncio.Future[Any]:
        name = getattr(coro, "__qualname__", None) or type(coro).__name__
        self.by_coro[name] += 1
        return asyncio.Task(coro, loop=loop, **kwargs)

    @property
    def total(self) -> int:
        return sum(self.by_coro.values())

    def reset(self) -> None:
        self.by_coro.clear()


# -- the page-mode UA, on its own loop ---------------------------------------------------------
class PageUa:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.sip: SipEndpoint | None = None

    async def call(self, coro: Coroutine[Any, Any, T]) -> T:
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))

    async def _start(self) -> None:
        self.sip = SipEndpoint(EndpointConfig(timers=Timers(t1=0.5, t2=4.0, t4=0.5)))
        await self.sip.start([ListenSpec("UDP", "127.0.0.1", 0)])

    async def start(self) -> None:
        await self.call(self._start())

    async def _send(
        self, node: Address, users: list[str], concurrency: int, body: bytes
    ) -> dict[int, int]:
        sip = self.sip
        assert sip is not None
        sem = asyncio.Semaphore(concurrency)
        statuses: Counter[int] = Counter()

        async def one(user: str) -> None:
            async with sem:
                req = sip.new_request(
                    "MESSAGE",
                    f"sip:bob@{node.host}:{node.port}",
                    from_=f"<sip:{user}@127.0.0.1>",
                    to="<sip:bob@127.0.0.1>",
                    body=body,
                    content_type="text/plain",
                )
                statuses[(await sip.request(req, node)).status] += 1

        if concurrency == 1:
            for user in users:
                await one(user)
        else:
            await asyncio.gather(*(one(u) for u in users))
        return dict(statuses)

    async def send(
        self, node: Address, users: list[str], concurrency: int = 1, body: bytes = b"hello\r\n"
    ) -> dict[int, int]:
        return await self.call(self._send(node, users, concurrency, body))

    async def _close(self) -> None:
        if self.sip is not None:
            await self.sip.close()

    async def close(self) -> None:
        await self.call(self._close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


# -- the session-mode peer, a child process (bench.peer) ---------------------------------------
class PeerProcess:
    def __init__(self) -> None:
        self.proc: asyncio.subprocess.Process | None = None
        self.info: dict[str, Any] = {}

    async def start(self) -> dict[str, Any]:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.peer",
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=str(ROOT),
        )
        self.info = await self._read()
        return self.info

    async def _read(self) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), 600)
        if not line:
            raise RuntimeError("bench.peer exited")
        reply: dict[str, Any] = json.loads(line)
        return reply

    async def cmd(self, cmd: str, **params: Any) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write((json.dumps({"cmd": cmd, **params}) + "\n").encode())
        await self.proc.stdin.drain()
        reply = await self._read()
        if "error" in reply:
            raise RuntimeError(f"bench.peer {cmd}: {reply['error']}")
        return reply

    async def close(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.cmd("quit"), 10)
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        await self.proc.wait()


# -- heap attribution -----------------------------------------------------------------------------
def _site(tb: tracemalloc.Traceback) -> tuple[str, str]:
    """(area, line) of an allocation: the innermost frame in gw/, else the innermost one."""
    frames = list(tb)  # oldest first
    for frame in reversed(frames):
        if frame.filename.startswith(GW):
            rel = os.path.relpath(frame.filename, ROOT)
            parts = rel.split(os.sep)
            area = "/".join(parts[:2]) if len(parts) > 2 else rel
            return area, f"{rel}:{frame.lineno}"
    inner = frames[-1] if frames else None
    if inner is None:
        return "?", "?"
    name = inner.filename
    for marker, area in (("asyncio", "asyncio"), ("redis", "redis"), ("uvloop", "uvloop")):
        if f"{os.sep}{marker}{os.sep}" in name:
            return f"({area})", f"{os.path.basename(name)}:{inner.lineno}"
    return "(other)", f"{os.path.basename(name)}:{inner.lineno}"


def _by_site(snapshot: tracemalloc.Snapshot) -> tuple[Counter[str], Counter[str]]:
    areas: Counter[str] = Counter()
    lines: Counter[str] = Counter()
    for stat in snapshot.statistics("traceback"):
        area, line = _site(stat.traceback)
        areas[area] += stat.size
        lines[line] += stat.size
    return areas, lines


def _snapshot() -> tracemalloc.Snapshot:
    gc.collect()
    return tracemalloc.take_snapshot().filter_traces(
        [
            tracemalloc.Filter(False, tracemalloc.__file__),
            tracemalloc.Filter(False, "<frozen importlib._bootstrap>"),
            tracemalloc.Filter(False, "<frozen importlib._bootstrap_external>"),
        ]
    )


def heap_delta(before: tracemalloc.Snapshot, after: tracemalloc.Snapshot, n: int) -> dict[str, Any]:
    a0, l0 = _by_site(before)
    a1, l1 = _by_site(after)
    areas = {k: (a1[k] - a0[k]) / n for k in set(a0) | set(a1)}
    lines = {k: (l1[k] - l0[k]) / n for k in set(l0) | set(l1)}
    total = sum(areas.values())
    gateway = sum(v for k, v in areas.items() if k in ("gw/gateway", "gw/node.py"))
    return {
        "per_session": round(total),
        "gateway": round(gateway),
        "areas": {
            k: round(v) for k, v in sorted(areas.items(), key=lambda x: -x[1]) if abs(v) >= 8
        },
        "top_lines": {
            k: round(v) for k, v in sorted(lines.items(), key=lambda x: -x[1])[:20] if v >= 8
        },
    }


# -- the node -----------------------------------------------------------------------------------
def node_config(redis_url: str, state_dir: str, peer_sip_port: int) -> Config:
    cfg = Config()
    cfg.node.id = "bench-gw"
    cfg.node.state_dir = state_dir
    cfg.store.url = redis_url
    cfg.sip.listen = ["udp:127.0.0.1:0"]
    cfg.sip.t1, cfg.sip.t2, cfg.sip.t4 = T1, 1.0, 0.5
    cfg.msrp.listen = "msrp://127.0.0.1:0;tcp"
    cfg.mgmt.listen = "127.0.0.1:0"
    cfg.gateway.ruri_rewrite = f"sip:{{user}}@127.0.0.1:{peer_sip_port}"
    cfg.gateway.cleanup_interval = 3600  # no sweep during the run: the bench drives it
    cfg.validate()
    return cfg


@contextlib.contextmanager
def _quiet_logs() -> Generator[None, None, None]:
    import logging

    root = logging.getLogger()
    old = root.level
    root.setLevel(logging.WARNING)
    try:
        yield
    finally:
        root.setLevel(old)


async def wait_quiet(node: Node, seconds: float = QUIET) -> None:
    """Let the node's transactions end (Timer J/K) so that only session state remains."""
    await asyncio.sleep(seconds)
    for _ in range(50):
        if not node.sip.layer.next_deadline():
            break
        await asyncio.sleep(0.2)


def _freeze_like_the_node(node: Node) -> str:
    """What the node's sweep loop does about GC, if this version of the node does anything."""
    tuner = getattr(node, "gc_tuner", None)
    if tuner is None:
        return "none (this node freezes only once, after start)"
    tuner.tick(force=True)
    return type(tuner).__name__ + ".tick()"


_T0 = time.perf_counter()


def progress(what: str) -> None:
    print(f"[{time.perf_counter() - _T0:7.1f} s] {what}", file=sys.stderr, flush=True)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    counter = TaskCounter()
    loop = asyncio.get_running_loop()
    out: dict[str, Any] = {"sessions": args.sessions, "messages": args.messages}
    with contextlib.ExitStack() as stack:
        redis = stack.enter_context(RedisServer())
        peer = PeerProcess()
        page = PageUa()
        info = await peer.start()
        peer_port = int(info["sip_port"])
        state = stack.enter_context(tempfile.TemporaryDirectory(prefix="micro-gw-"))
        node = Node(node_config(redis.url, state, peer_port))
        try:
            await node.start()
            # as run_node does after start
            gc.collect()
            gc.freeze()
            gc.set_threshold(20000, 50, 100)
            await page.start()
            gw_addr = next(a for a in node.bound if a.transport == "UDP")
            gw = node.gateway
            assert gw is not None
            stats = gw.stats

            # warm-up: one session each way, a few messages each way
            assert await page.send(gw_addr, ["warm"] * 20) == {200: 20}
            r = await peer.cmd(
                "call",
                gateway=[gw_addr.host, gw_addr.port],
                count=1,
                to=f"page{{i}}@127.0.0.1:{peer_port}",
                **{"from": "warm{i}"},
            )
            assert r["ok"] == 1, r
            await peer.cmd("send", rate=0, concurrency=1, duration=0.5, success_report=True)

            # (a) tasks per message
            progress("(a) tasks per message")
            loop.set_task_factory(counter)
            n0 = stats.page_messages_in
            t0, c0 = time.perf_counter(), time.thread_time()
            statuses = await page.send(gw_addr, ["warm"] * args.messages)
            dt, cpu = time.perf_counter() - t0, time.thread_time() - c0
            n = stats.page_messages_in - n0
            m2s = dict(counter.by_coro)
            out["m2s"] = {
                "messages": n,
                "statuses": statuses,
                "tasks_per_message": round(counter.total / max(n, 1), 2),
                "tasks": {k: round(v / max(n, 1), 2) for k, v in m2s.items()},
                "wall_ms_per_message": round(dt / max(n, 1) * 1000, 3),
                "node_cpu_us_per_message": round(cpu / max(n, 1) * 1e6, 1),
            }
            counter.reset()
            n0 = stats.delivered[Direction.MSRP_TO_PAGE]
            c0 = time.thread_time()
            r = await peer.cmd("send", rate=0, concurrency=1, duration=2.0, success_report=True)
            cpu = time.thread_time() - c0
            n = stats.delivered[Direction.MSRP_TO_PAGE] - n0
            s2m = dict(counter.by_coro)
            out["s2m"] = {
                "messages": n,
                "peer_delivered": r["delivered"],
                "tasks_per_message": round(counter.total / max(n, 1), 2),
                "tasks": {k: round(v / max(n, 1), 2) for k, v in s2m.items()},
                "wall_ms_per_message": round(2000 / max(n, 1), 3),
                "node_cpu_us_per_message": round(cpu / max(n, 1) * 1e6, 1),
            }
            loop.set_task_factory(None)

            # (b) heap per idle established session
            progress("(b) heap: waiting for quiet")
            await wait_quiet(node)
            tracemalloc.start(args.frames)
            objs0 = len(gc.get_objects())
            snap0 = _snapshot()
            users = [f"u{i}" for i in range(args.sessions)]
            progress("(b) msg_to_msrp sessions")
            statuses = await page.send(gw_addr, users, concurrency=10)
            assert statuses == {200: args.sessions}, statuses
            progress("(b) msg_to_msrp sessions up")
            await wait_quiet(node)
            progress("(b) snapshot")
            snap1 = _snapshot()
            objs1 = len(gc.get_objects())
            out["heap_msg_to_msrp"] = heap_delta(snap0, snap1, args.sessions)
            progress("(b) answered sessions")
            r = await peer.cmd(
                "call",
                gateway=[gw_addr.host, gw_addr.port],
                count=args.sessions,
                concurrency=10,
                to=f"page{{i}}@127.0.0.1:{peer_port}",
                **{"from": "m{i}"},
            )
            assert r["ok"] == args.sessions, r
            await wait_quiet(node)
            snap2 = _snapshot()
            objs2 = len(gc.get_objects())
            out["heap_answer"] = heap_delta(snap1, snap2, args.sessions)
            tracemalloc.stop()
            del snap0, snap1, snap2

            # (c) GC
            progress("(c) gc")
            sessions = len(gw.sessions)
            t0 = time.perf_counter()
            gc.collect()
            unfrozen_ms = (time.perf_counter() - t0) * 1000
            t0 = time.perf_counter()
            how = _freeze_like_the_node(node)
            freeze_ms = (time.perf_counter() - t0) * 1000
            t0 = time.perf_counter()
            gc.collect()
            frozen_ms = (time.perf_counter() - t0) * 1000
            out["gc"] = {
                "live_sessions": sessions,
                "tracked_objects_per_session_msg_to_msrp": round(
                    (objs1 - objs0) / args.sessions, 1
                ),
                "tracked_objects_per_session_answer": round((objs2 - objs1) / args.sessions, 1),
                "full_collection_ms_unfrozen": round(unfrozen_ms, 1),
                "periodic_freeze": how,
                "periodic_freeze_ms": round(freeze_ms, 1),
                "full_collection_ms_after": round(frozen_ms, 1),
            }
        finally:
            loop.set_task_factory(None)
            with _quiet_logs():
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(node.stop(), 60)
                await page.close()
                await peer.close()
    return out


def report(out: dict[str, Any]) -> str:
    lines = [f"gw.gateway micro-benchmark ({out['sessions']} sessions per direction)", ""]
    for key, title in (("m2s", "MESSAGE -> SEND"), ("s2m", "SEND -> MESSAGE")):
        d = out[key]
        lines.append(
            f"{title}: {d['tasks_per_message']} tasks per message over {d['messages']} "
            f"messages (one in flight: {d['wall_ms_per_message']} ms each, node CPU "
            f"{d.get('node_cpu_us_per_message')} us)"
        )
        for name, per in sorted(d["tasks"].items(), key=lambda x: -x[1]):
            lines.append(f"    {per:6.2f}  {name}")
    lines.append("")
    for key, title in (("heap_msg_to_msrp", "msg_to_msrp"), ("heap_answer", "msrp_gw_answer")):
        d = out[key]
        lines.append(
            f"heap per idle {title} session: {d['per_session']} B "
            f"(gw/gateway + gw/node.py: {d['gateway']} B)"
        )
        for area, b in d["areas"].items():
            lines.append(f"    {b:7d}  {area}")
        lines.append("  top lines:")
        for line, b in d["top_lines"].items():
            lines.append(f"    {b:7d}  {line}")
    lines.append("")
    g = out["gc"]
    lines.append(
        f"GC: {g['tracked_objects_per_session_msg_to_msrp']} / "
        f"{g['tracked_objects_per_session_answer']} tracked objects per msg_to_msrp / answer "
        f"session; full collection with {g['live_sessions']} sessions: "
        f"{g['full_collection_ms_unfrozen']} ms; after the periodic freeze "
        f"[{g['periodic_freeze']}, {g.get('periodic_freeze_ms')} ms]: "
        f"{g['full_collection_ms_after']} ms"
    )
    return "\n".join(lines)


SUMMARY = (
    ("MESSAGE -> SEND tasks per message", ("m2s", "tasks_per_message")),
    ("MESSAGE -> SEND node CPU us per message", ("m2s", "node_cpu_us_per_message")),
    ("SEND -> MESSAGE tasks per message", ("s2m", "tasks_per_message")),
    ("SEND -> MESSAGE node CPU us per message", ("s2m", "node_cpu_us_per_message")),
    ("heap B per idle msg_to_msrp session", ("heap_msg_to_msrp", "per_session")),
    ("  of which gw/gateway + gw/node.py", ("heap_msg_to_msrp", "gateway")),
    ("heap B per idle msrp_gw_answer session", ("heap_answer", "per_session")),
    ("  of which gw/gateway + gw/node.py", ("heap_answer", "gateway")),
    ("GC-tracked objects per msg_to_msrp", ("gc", "tracked_objects_per_session_msg_to_msrp")),
    ("GC-tracked objects per answer", ("gc", "tracked_objects_per_session_answer")),
    ("full collection ms, all sessions unfrozen", ("gc", "full_collection_ms_unfrozen")),
    ("full collection ms after the node's GC policy", ("gc", "full_collection_ms_after")),
)


def compare(before: dict[str, Any], after: dict[str, Any]) -> str:
    """A before/after table of the headline figures of two runs (--save / --compare)."""

    def get(d: dict[str, Any], path: tuple[str, str]) -> Any:
        return d.get(path[0], {}).get(path[1])

    width = max(len(name) for name, _ in SUMMARY)
    lines = [f"{'':{width}}  {'before':>10}  {'after':>10}"]
    for name, path in SUMMARY:
        b, a = get(before, path), get(after, path)
        lines.append(f"{name:{width}}  {b!s:>10}  {a!s:>10}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--sessions", type=int, default=500, help="idle sessions per direction")
    ap.add_argument("--messages", type=int, default=500, help="MESSAGE -> SEND messages")
    ap.add_argument("--frames", type=int, default=6, help="tracemalloc traceback depth")
    ap.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    ap.add_argument("--save", metavar="FILE", help="also write the figures to FILE (JSON)")
    ap.add_argument(
        "--compare", metavar="FILE", help="print a before (FILE, from --save) / after table"
    )
    args = ap.parse_args(argv)
    if args.loop == "uvloop":
        import uvloop

        out = uvloop.run(run(args))
    else:
        out = asyncio.run(run(args))
    print(json.dumps(out, indent=2) if args.json else report(out))
    if args.save:
        Path(args.save).write_text(json.dumps(out, indent=2))
    if args.compare:
        print()
        print(compare(json.loads(Path(args.compare).read_text()), out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
