"""The benchmark suite of issue 7: one command, figures in docs/.

    .venv/bin/python -m bench.run            # full suite (< 15 min on 2 cores), writes docs/
    .venv/bin/python -m bench.run --quick    # smoke run (CI), writes to a temp dir

Load generators run in their own processes: SIPp (page-mode side: MESSAGE UAC / UAS) and
bench/peer.py (session-mode side, built on gw.sip + gw.msrp). The gateway runs as real
`msrp-gw run` processes against a private redis-server, all on loopback, OS-picked ports.
See docs/benchmarks.md for what each scenario measures.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import procs, wire
from bench.peer import summarize
from bench.procs import NodeProc, PeerProc, RedisProc, SippUas, run_sipp_uac, write_inf
from gw.store.keys import KeySpace

ROOT = procs.ROOT
TARGETS = {
    "msg_to_send_rate": 5000.0,
    "send_to_msg_rate": 5000.0,
    "p99_ms": 10.0,
    "setup_rate": 500.0,
    "redis_bytes_per_session": 1024.0,
    "node_bytes_per_session": 4096.0,
    "sessions_per_node": 100_000,
    "redis_round_trips": 1.0,
}
BUDGET_S = 14 * 60  # the whole suite must end within 15 minutes


@dataclass
class Plan:
    quick: bool
    step_s: float = 6.0  # one closed-loop measurement (growth, sizes, scale-out)
    probe_s: float = 6.0  # closed-loop capacity probe
    probe_users: int = 32
    warm_s: float = 33.0  # open-loop steps: > Timer J (64*T1 = 32 s) before measuring
    warm_s_s2m: float = 6.0  # > Timer K (T4 = 5 s) for the node's MESSAGE transactions
    measure_s: float = 6.0
    size_s: float = 4.0  # one closed-loop measurement per message size
    bisect_steps: int = 3
    bisect_steps_many: int = 2  # the 1,000-session case starts at the 1-session result
    bisect_steps_setup: int = 3
    many: int = 1000  # "1,000 sessions"
    setup_batch: int = 2000
    growth: tuple[int, ...] = (10, 1000, 10_000, 100_000)
    memory_sessions: int = 2000
    sizes_peer: tuple[int, ...] = (100, 1024, 10_240, 65_536, 262_144, 1_048_576)
    sizes_sipp: tuple[int, ...] = (100, 1024, 10_240)
    nodes: tuple[int, ...] = (1, 2, 3)
    profile: bool = True
    budget_s: float = BUDGET_S

    @classmethod
    def make(cls, quick: bool, profile: bool | None, max_sessions: int | None) -> Plan:
        if quick:
            plan = cls(
                quick=True,
                step_s=1.0,
                probe_s=1.0,
                probe_users=8,
                warm_s=0.0,
                warm_s_s2m=0.0,
                measure_s=1.5,
                size_s=1.0,
                bisect_steps=1,
                bisect_steps_many=1,
                bisect_steps_setup=1,
                many=20,
                setup_batch=40,
                growth=(10, 40),
                memory_sessions=50,
                sizes_peer=(100, 65_536),
                sizes_sipp=(100,),
                nodes=(1, 2),
                profile=False,
                budget_s=240,
            )
        else:
            plan = cls(quick=False)
        if profile is not None:
            plan.profile = profile
        if max_sessions is not None:
            plan.growth = tuple(n for n in plan.growth if n <= max_sessions)
        return plan


@dataclass
class Ctx:
    plan: Plan
    work: Path
    out: Path
    redis: RedisProc
    peer: PeerProc
    t_start: float
    results: dict[str, Any] = field(default_factory=dict)
    commands: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    node_seq: int = 0
    previous: dict[str, Any] = field(default_factory=dict)  # --merge: the JSON being updated
    extra_env: dict[str, str] = field(default_factory=dict)  # --node-env, every node
    node_wrap: list[str] = field(default_factory=list)  # e.g. taskset -c 0 (--pin)

    def section(self, name: str) -> dict[str, Any]:
        """Results of a scenario from this run, else from the JSON being merged into."""
        found = self.results.get(name) or self.previous.get(name) or {}
        return found if isinstance(found, dict) else {}

    def left(self) -> float:
        return self.plan.budget_s - (time.monotonic() - self.t_start)

    def log(self, msg: str) -> None:
        elapsed = time.monotonic() - self.t_start
        print(f"[{elapsed:6.1f}s] {msg}", file=sys.stderr, flush=True)

    def node_env(self, **extra: str) -> dict[str, str]:
        return {
            "MSRPGW_STORE__URL": self.redis.url,
            "MSRPGW_GATEWAY__RURI_REWRITE": f"sip:{{user}}@127.0.0.1:{self.peer.sip_port}",
            **self.extra_env,
            **extra,
        }

    @contextlib.contextmanager
    def node(self, module: str = "gw.cli", **extra: str) -> Iterator[NodeProc]:
        self.node_seq += 1
        n = NodeProc(
            self.work, f"gw{self.node_seq}", self.node_env(**extra), self.node_wrap, module
        )
        n.start()
        self.commands.setdefault("node", n.command())
        try:
            yield n
        finally:
            n.stop()

    @contextlib.contextmanager
    def nodes(self, count: int, **extra: str) -> Iterator[list[NodeProc]]:
        started: list[NodeProc] = []
        try:
            for _ in range(count):
                self.node_seq += 1
                n = NodeProc(self.work, f"gw{self.node_seq}", self.node_env(**extra))
                n.start()
                started.append(n)
            yield started
        finally:
            for n in started:
                n.stop()


# -- measurements ----------------------------------------------------------------------


class Meter:
    """Node CPU, machine CPU and Redis command counts across one measurement; with `skip`,
    counted from `skip` seconds after `mark_after_warmup` is called (steady state)."""

    def __init__(self, ctx: Ctx, nodes: list[NodeProc], skip: float = 0.0) -> None:
        self.ctx = ctx
        self.nodes = nodes
        self.skip = skip

    def _snap(self) -> None:
        self.cpu0 = sum(procs.cpu_seconds(n.pid) for n in self.nodes)
        self.busy0 = procs.machine_busy()
        self.cmd0 = commandstats(self.ctx.redis)
        self.t0 = time.perf_counter()

    def __enter__(self) -> Meter:
        self._snap()
        return self

    def mark_after_warmup(self) -> None:
        if self.skip > 0:
            time.sleep(self.skip)
            self._snap()

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.t0
        self.cpu = sum(procs.cpu_seconds(n.pid) for n in self.nodes) - self.cpu0
        b1 = procs.machine_busy()
        total = b1[1] - self.busy0[1]
        self.machine_busy = (b1[0] - self.busy0[0]) / total if total else 0.0
        c1 = commandstats(self.ctx.redis)
        cmds = {k: c1.get(k, 0) - self.cmd0.get(k, 0) for k in c1}
        self.redis_cmds = {k: v for k, v in cmds.items() if v > 0 and k != "info"}

    def figures(self, messages: int) -> dict[str, Any]:
        per = (
            {k: round(v / messages, 3) for k, v in sorted(self.redis_cmds.items())}
            if messages
            else {}
        )
        return {
            "node_cpu_s": round(self.cpu, 3),
            "node_cpu_us_per_msg": round(self.cpu / messages * 1e6, 1) if messages else None,
            "machine_busy": round(self.machine_busy, 3),
            "redis_commands_per_msg": per,
        }


def commandstats(redis: RedisProc) -> dict[str, int]:
    raw = redis.client().info("commandstats")
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in raw.items()}


def m2s(
    ctx: Ctx,
    nodes: list[NodeProc],
    infs: list[Path],
    *,
    rate: float | None = None,
    users: int | None = None,
    duration: float,
    warmup: float = 0.0,
    size: int = 100,
    transport: str = "u1",
    calls: int | None = None,
    capture: bool = True,
    front: tuple[str, int] | None = None,
) -> dict[str, Any]:
    """MESSAGE -> SEND: one SIPp UAC per node (in parallel), figures merged; or, with
    `front` (a SIP proxy such as the Kamailio dispatcher), one SIPp UAC sending to it. With
    `warmup`, figures cover only the last `duration - warmup` seconds (steady state)."""
    body = ("x" * (size - 2)) if size > 2 else "x"
    kind = "tcp" if transport.startswith("t") else "udp"
    targets = [front] if front else [n.sip(kind) for n in nodes]
    if front:
        infs = infs[:1]
    runs: list[procs.SippRun | None] = [None] * len(targets)
    caps: list[wire.Capture | None] = []
    use_wire = capture and transport == "u1" and wire.tcpdump_binary() is not None
    for i, target in enumerate(targets):
        path = ctx.work / f"cap-{time.monotonic_ns()}-{i}.pcap"
        caps.append(wire.Capture(path, target[1]) if use_wire else None)

    def go(i: int) -> None:
        per_node_rate = None if rate is None else rate / len(targets)
        count = calls or (int(per_node_rate * duration) if per_node_rate else 10_000_000)
        runs[i] = run_sipp_uac(
            ctx.work,
            targets[i],
            infs[i],
            calls=count,
            rate=per_node_rate,
            users=users,
            body=body,
            transport=transport,
            duration=duration if users and not calls else None,
            warmup=warmup,
            # open-loop steady-state steps: stop SIPp soon after the window instead of
            # waiting for the retransmissions of an overloaded step (figures are windowed)
            max_seconds=duration + 6 if warmup else duration * 3 + 30,
        )

    with Meter(ctx, nodes, skip=warmup) as meter:
        threads = [threading.Thread(target=go, args=(i,)) for i in range(len(targets))]
        for t in threads:
            t.start()
        meter.mark_after_warmup()
        for t in threads:
            t.join()
    rtts: list[float] = []
    wire_rtts: list[float] = []
    for i, cap in enumerate(caps):
        if cap is not None:
            cap.stop()
            wire_rtts += wire.response_times(cap.path, targets[i][1], warmup=warmup)
            with contextlib.suppress(OSError):
                cap.path.unlink()
    ok = failed = retrans = unfinished = 0
    elapsed = 0.0
    for r in runs:
        assert r is not None
        if warmup and r.window:
            ok += int(r.window["ok"])
            # still unanswered when SIPp stopped, 6 s after the window: failed too
            failed += int(r.window["failed"]) + r.unfinished
            elapsed = max(elapsed, r.window["span_s"])
        else:
            ok += r.successful
            failed += r.failed
            elapsed = max(elapsed, r.elapsed_s)
        retrans += r.retransmissions
        unfinished += r.unfinished
        rtts += r.rtts_ms
    ctx.commands.setdefault("sipp_uac", " ".join(runs[0].argv) if runs[0] else "")
    total = ok + failed
    lat = summarize([x / 1000 for x in (wire_rtts or rtts)])
    sipp_lat = summarize([x / 1000 for x in rtts])
    res: dict[str, Any] = {
        "mode": "closed" if users else "open",
        "offered_rate": rate,
        "users": users,
        "nodes": len(nodes),
        "front": "kamailio dispatcher" if front else None,
        "size": size,
        "transport": transport,
        "warmup_s": warmup,
        "sent": total,
        "delivered": ok,
        "failed": failed,
        "unfinished": unfinished,
        "retransmissions": retrans,
        "duration_s": round(elapsed, 3),
        "throughput": round(ok / elapsed, 1) if elapsed else None,
        "error_ratio": round(failed / total, 6) if total else None,
        "latency_source": "wire (tcpdump)" if wire_rtts else "sipp rtd (4 ms clock)",
        **lat,
        "sipp_p50_ms": sipp_lat["p50_ms"],
        "sipp_p99_ms": sipp_lat["p99_ms"],
        **meter.figures(ok),
    }
    if rate:
        window = duration - warmup
        res["kept_up"] = bool(
            ok >= 0.97 * rate * window and (res["error_ratio"] or 0) < 0.001 and lat["p99_ms"]
        )
    return res


def s2m(ctx: Ctx, nodes: list[NodeProc], **params: Any) -> dict[str, Any]:
    """SEND -> MESSAGE: the peer sends on its outbound sessions, latency SEND -> REPORT."""
    duration = float(params.get("duration", 5))
    warmup = float(params.get("warmup", 0))
    with Meter(ctx, nodes, skip=warmup) as meter:
        done: list[dict[str, Any]] = []
        t = threading.Thread(
            target=lambda: done.append(
                ctx.peer.cmd(timeout=duration * 3 + 60, cmd="send", **params)
            )
        )
        t.start()
        meter.mark_after_warmup()
        t.join()
    res = done[0] if done else {"error": "no reply", "delivered": 0}
    res.update(meter.figures(int(res.get("delivered") or 0)))
    if res.get("offered_rate"):
        window = duration - warmup
        res["kept_up"] = bool(
            res["delivered"] >= 0.97 * res["offered_rate"] * window
            and (res["error_ratio"] or 0) < 0.001
            and res["p99_ms"]
        )
    return res


def sustained(steps: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The highest offered rate that kept up with < 0.1 % errors."""
    good = [s for s in steps if s.get("kept_up")]
    return max(good, key=lambda s: s["offered_rate"]) if good else None


def bisect_rates(
    ctx: Ctx,
    capacity: float,
    steps: int,
    run: Any,
    label: str,
    first: float | None = None,
) -> list[dict[str, Any]]:
    """Open-loop steps searching for the highest rate that keeps up, near the closed-loop
    (burst) `capacity`: the first at `first` (default 90 % of it), then up halfway (in
    ratio) to 110 % of it after a step that kept up, or down by 30 % (halfway to the best
    so far, once one kept up) after one that did not. Returns the steps run."""
    out: list[dict[str, Any]] = []
    low, high = 0.0, capacity * 1.1
    target = first or capacity * 0.9
    for _ in range(steps):
        rate = max(10.0, round(target / 25) * 25)
        if any(s["offered_rate"] == rate for s in out):
            break
        step = run(rate)
        out.append(step)
        ctx.log(
            f"  {label} {rate:.0f}/s: {step['throughput']}/s err {step['error_ratio']} "
            f"p50 {step['p50_ms']} p99 {step['p99_ms']} ms kept_up {step['kept_up']}"
        )
        if step["kept_up"]:
            low = rate
        else:
            high = rate
        target = (low * high) ** 0.5 if low else high * 0.7
    return out


def keys(prefix: str, count: int, msrp_user: str = "bob") -> list[tuple[str, str]]:
    return [(f"{prefix}{i}", msrp_user) for i in range(count)]


def establish(ctx: Ctx, node: NodeProc, inf: Path, count: int, users: int = 32) -> dict[str, Any]:
    """Set up `count` sessions (one MESSAGE per new key), as fast as the node allows."""
    return m2s(
        ctx,
        [node],
        [inf],
        users=min(users, count),
        calls=count,
        duration=count / 50 + 30,
        capture=False,
    )


# -- scenarios ---------------------------------------------------------------------------


def scenario_msg_to_send(ctx: Ctx) -> None:
    """1: MESSAGE -> SEND on established sessions (1 and `many`). A closed-loop probe on a
    fresh node gives the burst capacity; open-loop steps (each on a fresh node, run
    `warm_s` + `measure_s`, measured over the last `measure_s`) find the sustained rate:
    the node keeps each UDP server transaction for Timer J = 64*T1 = 32 s, so a step
    shorter than that never sees the steady state."""
    plan = ctx.plan
    out: dict[str, Any] = {}
    for count in (1, plan.many):
        ctx.log(f"MESSAGE->SEND, {count} session(s)")
        inf = write_inf(ctx.work / f"m2s-{count}.csv", keys(f"a{count}x", count))
        with ctx.node() as node:
            setup = establish(ctx, node, inf, count)
            probe = m2s(ctx, [node], [inf], users=plan.probe_users, duration=plan.probe_s)
            ctx.log(f"  burst (closed loop): {probe['throughput']}/s p99 {probe['p99_ms']} ms")
            if count == 1:
                out["redis_round_trips"] = monitor_round_trips(ctx, node, inf)

        def step(rate: float, inf: Path = inf, count: int = count) -> dict[str, Any]:
            with ctx.node() as node:
                establish(ctx, node, inf, count)
                return m2s(
                    ctx,
                    [node],
                    [inf],
                    rate=rate,
                    duration=plan.warm_s + plan.measure_s,
                    warmup=plan.warm_s,
                )

        one = (out.get("1") or {}).get("sustained") or {}
        steps = bisect_rates(
            ctx,
            probe["throughput"] or 100,
            plan.bisect_steps if count == 1 else plan.bisect_steps_many,
            step,
            "steady",
            first=one.get("offered_rate") if count != 1 else None,
        )
        out[str(count)] = {
            "sessions": count,
            "setup": {k: setup[k] for k in ("delivered", "failed", "throughput")},
            "probe": probe,
            "ladder": steps,
            "sustained": sustained(steps),
        }
    ctx.results["msg_to_send"] = out


def monitor_round_trips(ctx: Ctx, node: NodeProc, inf: Path) -> dict[str, Any]:
    """Commands the node sends to Redis per translated message (MONITOR on a short run):
    commands from the node's connections vs those run inside Lua scripts."""
    client = ctx.redis.client()
    counts: Counter[str] = Counter()
    stop = threading.Event()
    started = threading.Event()

    def watch() -> None:
        with client.monitor() as m:
            started.set()
            conn = m.connection
            assert conn is not None
            while not stop.is_set():
                try:
                    if not conn.can_read(timeout=0.2):
                        continue
                    cmd = m.next_command()
                except Exception:
                    break
                kind = "lua" if cmd.get("client_type") == "lua" else "client"
                name = str(cmd.get("command", "")).split(" ", 1)[0].strip('"').lower()
                counts[f"{kind}:{name}"] += 1

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    started.wait(5)
    time.sleep(0.3)
    n = 600 if not ctx.plan.quick else 50
    res = m2s(ctx, [node], [inf], rate=200, duration=n / 200, capture=False)
    time.sleep(0.5)
    stop.set()
    t.join(5)
    msgs = res["delivered"] or 1
    client_cmds = {k.split(":", 1)[1]: v for k, v in counts.items() if k.startswith("client:")}
    lua_cmds = {k.split(":", 1)[1]: v for k, v in counts.items() if k.startswith("lua:")}
    return {
        "messages": res["delivered"],
        "client_commands_per_msg": round(sum(client_cmds.values()) / msgs, 3),
        "client_commands": {k: round(v / msgs, 3) for k, v in sorted(client_cmds.items())},
        "lua_commands": {k: round(v / msgs, 3) for k, v in sorted(lua_cmds.items())},
        "method": "MONITOR during a 200 msg/s run on one established session; "
        "MULTI/pipelining would show as several client commands in one round trip",
    }


def scenario_send_to_msg(ctx: Ctx) -> None:
    """2: SEND -> MESSAGE on established sessions; SIPp UAS answers the MESSAGEs. The node's
    MESSAGE client transactions live Timer K = T4 = 5 s, so steps warm up `warm_s_s2m`."""
    plan = ctx.plan
    out: dict[str, Any] = {}
    uas = SippUas(ctx.work)
    ctx.commands["sipp_uas"] = " ".join(uas.argv)
    try:
        for count in (1, plan.many):
            ctx.log(f"SEND->MESSAGE, {count} session(s)")

            def call(node: NodeProc, count: int = count) -> dict[str, Any]:
                return ctx.peer.cmd(
                    timeout=600,
                    cmd="call",
                    gateway=list(node.sip()),
                    count=count,
                    start=0,
                    concurrency=32,
                    to=f"page{{i}}@127.0.0.1:{uas.port}",
                    **{"from": "m{i}"},
                )

            base = {"sessions": count, "success_report": True}
            with ctx.node() as node:
                setup = call(node)
                probe = s2m(
                    ctx, [node], rate=0, concurrency=plan.probe_users, duration=plan.probe_s, **base
                )
                ctx.peer.cmd(timeout=300, cmd="hangup")
            ctx.log(f"  burst (closed loop): {probe['throughput']}/s p99 {probe['p99_ms']} ms")

            def step(rate: float, call: Any = call, base: dict[str, Any] = base) -> dict[str, Any]:
                with ctx.node() as node:
                    call(node)
                    try:
                        return s2m(
                            ctx,
                            [node],
                            rate=rate,
                            duration=plan.warm_s_s2m + plan.measure_s,
                            warmup=plan.warm_s_s2m,
                            **base,
                        )
                    finally:
                        ctx.peer.cmd(timeout=300, cmd="hangup")

            steps = bisect_rates(ctx, probe["throughput"] or 100, plan.bisect_steps, step, "steady")
            out[str(count)] = {
                "sessions": count,
                "setup": setup,
                "probe": probe,
                "ladder": steps,
                "sustained": sustained(steps),
            }
        out["sipp_uas"] = uas.counts()
    finally:
        uas.stop()
    ctx.results["send_to_msg"] = out


def scenario_setup(ctx: Ctx) -> None:
    """3: session setup: MESSAGEs with new keys (INVITE + MSRP connect + first SEND)."""
    plan = ctx.plan
    ctx.log("session setup")
    with ctx.node() as node:
        n = plan.setup_batch
        inf = write_inf(ctx.work / "setup-probe.csv", keys("sp", n))
        probe = m2s(ctx, [node], [inf], users=plan.probe_users, calls=n, duration=n / 50 + 30)
        node.kill()
    ctx.redis.client().flushall()
    ctx.log(f"  burst (closed loop, {n} setups): {probe['throughput']}/s p99 {probe['p99_ms']} ms")
    seq = iter(range(1000))

    def step(rate: float) -> dict[str, Any]:
        i = next(seq)
        d = plan.warm_s + plan.measure_s
        inf = write_inf(ctx.work / f"setup-{i}.csv", keys(f"s{i}x", int(rate * d) + 10))
        with ctx.node() as node:
            try:
                return m2s(ctx, [node], [inf], rate=rate, duration=d, warmup=plan.warm_s)
            finally:
                node.kill()
                ctx.redis.client().flushall()

    steps = bisect_rates(ctx, probe["throughput"] or 50, plan.bisect_steps_setup, step, "steady")
    ctx.results["setup"] = {"probe": probe, "ladder": steps, "sustained": sustained(steps)}


def scenario_growth_sessions(ctx: Ctx) -> None:
    """4 + 6: idle sessions 10 -> 10k (-> 100k): memory per session, and whether the
    MESSAGE -> SEND figures hold as the table grows."""
    plan = ctx.plan
    ctx.log("session growth / idle memory")
    ctx.redis.client().flushall()
    points: list[dict[str, Any]] = []
    skipped: list[int] = []
    # a fixed rate well inside the burst capacity (the growth node has short timers)
    burst = _get_num(ctx.section("msg_to_send"), "1", "probe", "throughput") or 500.0
    ref_rate = max(50.0, round(burst * 0.3 / 50) * 50)
    # sip.t1 = 0.05: Timer J (64*T1) is 3.2 s instead of 32 s, so the transactions of the
    # set-up burst are gone before each measurement: this isolates the cost of the session
    # table from the transaction-table cost that scenario 1 measures at the default T1.
    with ctx.node(MSRPGW_SIP__T1="0.05") as node:
        time.sleep(1.0)
        base_redis = redis_memory(ctx.redis)
        base_rss = procs.rss_bytes(node.pid)
        have = 0
        setup_rate = None
        all_keys: list[tuple[str, str]] = []
        for target in plan.growth:
            add = target - have
            # Time the next batch needs at the setup rate seen so far, plus the probes.
            need = (add / setup_rate if setup_rate else add / 100) + plan.probe_s + plan.step_s
            need += 20
            if need > ctx.left() - reserve(ctx):
                skipped.append(target)
                ctx.log(f"  skip {target} sessions: needs ~{need:.0f}s, {ctx.left():.0f}s left")
                continue
            new = keys(f"g{have}x", add)
            inf = write_inf(ctx.work / f"grow-{target}.csv", new)
            t0 = time.perf_counter()
            est = establish(ctx, node, inf, add, users=64)
            took = time.perf_counter() - t0
            setup_rate = add / took if took else None
            all_keys += new
            have = target
            time.sleep(4.0 if not plan.quick else 0.5)  # > Timer J at t1 = 0.05
            redis_mem = redis_memory(ctx.redis)
            rss = procs.rss_bytes(node.pid)
            dbsize = int(ctx.redis.client().dbsize())
            inf_all = write_inf(ctx.work / f"grow-all-{target}.csv", all_keys)
            probe = m2s(ctx, [node], [inf_all], users=plan.probe_users, duration=plan.probe_s)
            time.sleep(4.0 if not plan.quick else 0.5)
            fixed = m2s(ctx, [node], [inf_all], rate=ref_rate, duration=plan.step_s)
            point = {
                "sessions": target,
                "setup_failed": est["failed"],
                "setup_rate": round(setup_rate or 0, 1),
                "redis_used_memory": redis_mem,
                "redis_keys": dbsize,
                "node_rss": rss,
                "redis_bytes_per_session": round((redis_mem - base_redis) / target, 1),
                "node_bytes_per_session": round((rss - base_rss) / target, 1),
                "closed_loop_throughput": probe["throughput"],
                "closed_loop_p99_ms": probe["p99_ms"],
                "closed_loop_failed": probe["failed"],
                "closed_loop_retransmissions": probe["retransmissions"],
                "ref_rate": ref_rate,
                "ref_p50_ms": fixed["p50_ms"],
                "ref_p99_ms": fixed["p99_ms"],
                "ref_p999_ms": fixed["p999_ms"],
                "ref_error_ratio": fixed["error_ratio"],
                "ref_kept_up": fixed["kept_up"],
            }
            points.append(point)
            ctx.log(
                f"  {target} sessions: redis {point['redis_bytes_per_session']} B/s, "
                f"node {point['node_bytes_per_session']} B/s, {probe['throughput']}/s, "
                f"ref p99 {fixed['p99_ms']} ms"
            )
        node.kill()
    prev = {"sessions": 0, "redis_used_memory": base_redis, "node_rss": base_rss}
    for point in points:
        dn = point["sessions"] - prev["sessions"]
        point["redis_bytes_per_session_marginal"] = round(
            (point["redis_used_memory"] - prev["redis_used_memory"]) / dn, 1
        )
        point["node_bytes_per_session_marginal"] = round(
            (point["node_rss"] - prev["node_rss"]) / dn, 1
        )
        prev = point
    ctx.results["growth_sessions"] = {
        "baseline": {"redis_used_memory": base_redis, "node_rss": base_rss},
        "points": points,
        "skipped": skipped,
        "ref_rate": ref_rate,
    }
    ctx.redis.client().flushall()


def scenario_memory(ctx: Ctx) -> None:
    """4: where the node's memory per idle session goes: tracemalloc snapshots before and
    after `memory_sessions` set-ups (sip.t1 = 0.05, and 4 s for the transactions to end)."""
    import tracemalloc

    plan = ctx.plan
    n = plan.memory_sessions
    ctx.log(f"memory per idle session (tracemalloc, {n} sessions)")
    snaps = ctx.work / "snaps"
    settle = 4.0 if not plan.quick else 1.0

    def snap(node: NodeProc, i: int) -> Path:
        path = snaps / f"snap-{i}.snap"
        os.kill(node.pid, signal.SIGUSR1)
        deadline = time.monotonic() + 60
        while not path.exists():
            if time.monotonic() > deadline:
                raise TimeoutError("no tracemalloc snapshot")
            time.sleep(0.1)
        return path

    with ctx.node(
        module="bench.tracemalloc_node",
        MSRPGW_SIP__T1="0.05",
        BENCH_TRACEMALLOC_DIR=str(snaps),
    ) as node:
        establish(ctx, node, write_inf(ctx.work / "mem-0.csv", keys("mw", 1)), 1)
        time.sleep(settle)
        rss0 = procs.rss_bytes(node.pid)
        s0 = snap(node, 0)
        est = establish(ctx, node, write_inf(ctx.work / "mem-1.csv", keys("mm", n)), n)
        time.sleep(settle)
        rss1 = procs.rss_bytes(node.pid)
        s1 = snap(node, 1)
        node.kill()
    ctx.redis.client().flushall()
    ignore = (tracemalloc.Filter(False, tracemalloc.__file__),)
    before = tracemalloc.Snapshot.load(str(s0)).filter_traces(ignore)
    after = tracemalloc.Snapshot.load(str(s1)).filter_traces(ignore)

    def short(tb: Any) -> str:
        frame = tb[0]
        path = frame.filename.split("site-packages/")[-1].split("python3.11/")[-1]
        return f"{path.split('main/')[-1]}:{frame.lineno}"

    by_line = after.compare_to(before, "lineno")
    by_file = after.compare_to(before, "filename")
    total = sum(st.size_diff for st in by_line)
    ctx.results["memory"] = {
        "sessions": n,
        "setup_failed": est["failed"],
        "traced_bytes_per_session": round(total / n, 1),
        "rss_bytes_per_session": round((rss1 - rss0) / n, 1),
        "top_lines": [
            {
                "site": short(st.traceback),
                "bytes_per_session": round(st.size_diff / n, 1),
                "objects_per_session": round(st.count_diff / n, 2),
            }
            for st in sorted(by_line, key=lambda st: -st.size_diff)[:25]
        ],
        "top_files": [
            {
                "file": short(st.traceback).rsplit(":", 1)[0],
                "bytes_per_session": round(st.size_diff / n, 1),
            }
            for st in sorted(by_file, key=lambda st: -st.size_diff)[:12]
        ],
    }
    ctx.log(f"  traced {total / n:.0f} B/session, RSS {(rss1 - rss0) / n:.0f} B/session")


def _get_num(d: Any, *path: str) -> float | None:
    for p in path:
        d = d.get(p) if isinstance(d, dict) else None
    return float(d) if isinstance(d, int | float) else None


def redis_memory(redis: RedisProc) -> int:
    return int(redis.client().info("memory")["used_memory"])


def reserve(ctx: Ctx) -> float:
    """Seconds the scenarios after growth need (memory, SEND->MESSAGE, set-up, sizes,
    scale-out, profile, report), from the durations seen on the 2-core machine."""
    p = ctx.plan
    s2m = 2 * (p.probe_s + 4 + p.bisect_steps * (p.warm_s_s2m + p.measure_s + 1)) + 20
    setup = p.probe_s + 5 + p.bisect_steps_setup * (p.warm_s + p.measure_s + 5)
    sizes = (len(p.sizes_peer) + len(p.sizes_sipp)) * (p.size_s + 0.5)
    scale = len(p.nodes) * (p.probe_s + 2.5)
    profile = 0.0
    if p.profile:
        profile = (p.measure_s + 3) + (p.warm_s + p.measure_s + 1)
        profile += (p.warm_s_s2m + p.measure_s + 2) + 13
    return 30 + s2m + setup + sizes + scale + profile + 10


def scenario_sizes(ctx: Ctx) -> None:
    """6: message size 100 B -> 1 MiB. SEND -> MESSAGE with the peer as both ends (SIPp
    cannot receive SIP messages over 64 KiB); MESSAGE -> SEND with SIPp over TCP for the
    sizes SIPp can send."""
    plan = ctx.plan
    ctx.log("message sizes")
    big = str(4 << 20)
    peer_rows: list[dict[str, Any]] = []
    sipp_rows: list[dict[str, Any]] = []
    with ctx.node(
        MSRPGW_SIP__MAX_MESSAGE_SIZE=big,
        MSRPGW_GATEWAY__MAX_PAGE_MESSAGE_SIZE=big,
        MSRPGW_GATEWAY__MAX_QUEUED_BYTES=str(64 << 20),
    ) as node:
        ctx.peer.cmd(
            timeout=60,
            cmd="call",
            gateway=list(node.sip()),
            count=1,
            start=0,
            to=f"size{{i}}@127.0.0.1:{ctx.peer.sip_port};transport=tcp",
            **{"from": "z{i}"},
        )
        for size in plan.sizes_peer:
            conc = 8 if size <= 65_536 else 2
            r = s2m(
                ctx,
                [node],
                rate=0,
                concurrency=conc,
                duration=plan.size_s,
                size=size,
                sessions=1,
                success_report=True,
                drain=30,
            )
            r["mbit_s"] = round((r["throughput"] or 0) * size * 8 / 1e6, 1)
            peer_rows.append(r)
            ctx.log(f"  SEND->MESSAGE {size} B: {r['throughput']}/s p99 {r['p99_ms']} ms")
        ctx.peer.cmd(timeout=60, cmd="hangup")
        inf = write_inf(ctx.work / "sizes.csv", keys("sz", 1))
        establish(ctx, node, inf, 1)
        for size in plan.sizes_sipp:
            r = m2s(
                ctx,
                [node],
                [inf],
                users=8,
                duration=plan.size_s,
                size=size,
                transport="t1",
            )
            r["mbit_s"] = round((r["throughput"] or 0) * size * 8 / 1e6, 1)
            sipp_rows.append(r)
            ctx.log(f"  MESSAGE->SEND {size} B: {r['throughput']}/s p99 {r['p99_ms']} ms")
    ctx.results["growth_size"] = {"send_to_msg": peer_rows, "msg_to_send": sipp_rows}


def scenario_scale_out(ctx: Ctx) -> None:
    """5: 1/2/3 nodes on one Redis behind the Kamailio dispatcher (deploy/kamailio, the
    compose entry point), one SIPp sending to it; and, for comparison, the same nodes each
    fed directly by its own SIPp (what the nodes do without the proxy's cost)."""
    plan = ctx.plan
    rows: list[dict[str, Any]] = []
    direct: list[dict[str, Any]] = []
    kam_ok = shutil.which("kamailio") or os.path.exists("/usr/sbin/kamailio")
    if not kam_ok:
        ctx.notes.append("kamailio not installed: scale-out without the dispatcher only")
    for count in plan.nodes:
        if ctx.left() < 2 * plan.probe_s + 30:
            ctx.log(f"  skip {count} nodes: out of time")
            continue
        ctx.log(f"scale-out: {count} node(s)")
        if kam_ok:
            with dispatcher_front(ctx, count) as (front, nodes, kam_pid):
                inf = write_inf(ctx.work / f"scale-d{count}.csv", keys(f"d{count}x", 10 * count))
                m2s(ctx, nodes, [inf], users=min(32, 10 * count), calls=10 * count,
                    duration=30, capture=False, front=front)  # fmt: skip
                c0 = procs.session_cpu_seconds(kam_pid)
                r = m2s(ctx, nodes, [inf], users=plan.probe_users * count,
                        duration=plan.probe_s, front=front)  # fmt: skip
                r["kamailio_cpu_s"] = round(procs.session_cpu_seconds(kam_pid) - c0, 3)
                r["owners"] = owners(ctx, nodes)
                rows.append(r)
                ctx.log(f"  {count} node(s) behind kamailio: {r['throughput']}/s p99 "
                        f"{r['p99_ms']} ms, sessions per node {r['owners']}")  # fmt: skip
        with ctx.nodes(count) as nodes:
            infs = []
            for i, n in enumerate(nodes):
                inf = write_inf(ctx.work / f"scale-{count}-{i}.csv", keys(f"n{count}x{i}x", 10))
                establish(ctx, n, inf, 10)
                infs.append(inf)
            r = m2s(ctx, nodes, infs, users=plan.probe_users, duration=plan.probe_s)
            direct.append(r)
            ctx.log(f"  {count} node(s) direct: {r['throughput']}/s p99 {r['p99_ms']} ms")
    for group in (rows, direct):
        one = group[0]["throughput"] if group and group[0]["throughput"] else None
        for r in group:
            r["ratio_vs_one"] = round(r["throughput"] / one, 2) if one and r["throughput"] else None
    ctx.results["scale_out"] = {
        "rows": rows or direct,
        "direct": direct if rows else [],
        "method": (
            f"closed loop (SIPp -users, {plan.probe_users} in flight per node) into Kamailio "
            "running deploy/kamailio/msrpgw-dispatch.cfg (dispatcher algorithm 7: hash of "
            "From/To, so each conversation sticks to one node), 10 sessions per node set up "
            "through it; 'direct' rows: each node fed by its own SIPp, no proxy"
            if rows
            else "closed loop (SIPp -users) per node, 10 sessions per node, each node fed "
            "directly by its own SIPp (kamailio not installed)"
        ),
    }


def owners(ctx: Ctx, nodes: list[NodeProc]) -> list[int]:
    """Sessions per node, from the store (the dispatcher's spread, as the nodes saw it)."""
    counts = Counter[str]()
    r = ctx.redis.client()
    for key in r.scan_iter(match=KeySpace().session_pattern(), count=1000):
        owner = r.hget(key, "owner")
        if isinstance(owner, bytes):
            counts[owner.decode()] += 1
    return [counts.get(n.name, 0) for n in nodes]


@contextlib.contextmanager
def dispatcher_front(ctx: Ctx, count: int) -> Iterator[tuple[tuple[str, int], list[NodeProc], int]]:
    """Kamailio from deploy/kamailio (loopback template + the compose routing file) with a
    dispatcher list naming `count` nodes on 127.0.0.2.. (free ports), and the nodes."""
    from tests.support.kamailio import Kamailio

    deploy = ROOT / "deploy" / "kamailio"
    hosts = [f"127.0.0.{i + 2}" for i in range(count)]
    addrs = [(h, procs.free_port(socket.SOCK_DGRAM, h)) for h in hosts]
    ds_list = ctx.work / f"dispatcher-{count}.list"
    ds_list.write_text("".join(f"1 sip:{h}:{p} 0 0 duid=n{i}\n" for i, (h, p) in enumerate(addrs)))
    kam = Kamailio(
        deploy / "kamailio-loopback.cfg.in",
        {"DS_LIST": str(ds_list), "DISPATCH_CFG": str(deploy / "msrpgw-dispatch.cfg")},
        udp_ports=("SIP_PORT",),
        tcp_ports=("SIP_PORT",),
        shm_mb=512,
    )  # fmt: skip
    kam.values["CTL_SOCKET"] = f"unix:{kam.workdir / 'ctl'}"
    started: list[NodeProc] = []
    try:
        kam.start()
        ctx.commands.setdefault("kamailio", f"kamailio -f {kam.config} (from {kam.template})")
        for h, p in addrs:
            ctx.node_seq += 1
            n = NodeProc(
                ctx.work,
                f"gw{ctx.node_seq}",
                ctx.node_env(
                    MSRPGW_SIP__LISTEN=f"udp:{h}:{p},tcp:{h}:{p}",
                    MSRPGW_MSRP__LISTEN=f"msrp://{h}:0;tcp",
                ),
            )
            n.start()
            started.append(n)
        assert kam.proc is not None
        yield ("127.0.0.1", kam.port("SIP_PORT")), started, kam.proc.pid
    finally:
        for n in started:
            n.stop()
        with contextlib.suppress(OSError):
            shutil.copy(kam.log, ctx.work / f"kamailio-{count}.log")
        kam.close()


def scenario_profile(ctx: Ctx) -> None:
    """Where the node's time goes per message: py-spy (sampling, no slowdown) on a fresh node
    and in steady state (after Timer J), and cProfile for call counts per message."""
    plan = ctx.plan
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    out: dict[str, Any] = {}
    m1 = ctx.section("msg_to_send").get("1", {})
    s1 = ctx.section("send_to_msg").get("1", {})

    def rate_of(r: dict[str, Any], default: float) -> float:
        best = r.get("sustained") or {}
        return max(50.0, round(float(best.get("offered_rate") or default) * 0.8 / 25) * 25)

    def sample(node: NodeProc, seconds: float, raw: Path) -> subprocess.Popen[bytes]:
        argv = [spy, "record", "--pid", str(node.pid), "--rate", "200"]
        argv += ["--duration", str(int(seconds)), "--format", "raw", "-o", str(raw)]
        ctx.commands["py-spy"] = " ".join(argv)
        return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def measured_cpu(node: NodeProc, seconds: float, messages_per_s: float) -> float:
        c0 = procs.cpu_seconds(node.pid)
        time.sleep(seconds)
        return (procs.cpu_seconds(node.pid) - c0) / max(1.0, seconds * messages_per_s) * 1e6

    if os.path.exists(spy):
        inf = write_inf(ctx.work / "prof.csv", keys("pf", 1))
        fresh_rate = max(50.0, round((_get_num(m1, "probe", "throughput") or 500) * 0.6 / 50) * 50)
        ctx.log(f"profile (py-spy) MESSAGE->SEND, fresh node, {fresh_rate:.0f}/s")
        fresh_raw, steady_raw = ctx.work / "pyspy-fresh.txt", ctx.work / "pyspy-steady.txt"
        with ctx.node() as node:
            establish(ctx, node, inf, 1)
            load = threading.Thread(
                target=lambda: m2s(
                    ctx, [node], [inf], rate=fresh_rate, duration=plan.measure_s + 2, capture=False
                )
            )
            load.start()
            time.sleep(1.0)
            sampler = sample(node, plan.measure_s, fresh_raw)
            fresh_cpu = measured_cpu(node, plan.measure_s, fresh_rate)
            sampler.wait(60)
            load.join()
        out["msg_to_send"] = {
            "rate": fresh_rate,
            "node_cpu_us_per_msg": round(fresh_cpu, 1),
            **analyse_pyspy(fresh_raw),
        }
        rate = rate_of(m1, 200)
        ctx.log(f"profile (py-spy) MESSAGE->SEND, steady state, {rate:.0f}/s")
        with ctx.node() as node:
            establish(ctx, node, inf, 1)
            total = plan.warm_s + plan.measure_s
            res: dict[str, Any] = {}
            load = threading.Thread(
                target=lambda: res.update(
                    m2s(ctx, [node], [inf], rate=rate, duration=total, warmup=plan.warm_s)
                )
            )
            load.start()
            time.sleep(plan.warm_s)
            sampler = sample(node, plan.measure_s - 1, steady_raw)
            steady_cpu = measured_cpu(node, plan.measure_s - 1, rate)
            sampler.wait(60)
            load.join()
        out["msg_to_send_steady"] = {
            "rate": rate,
            "node_cpu_us_per_msg": round(steady_cpu, 1),
            "step": {k: res.get(k) for k in ("throughput", "error_ratio", "p50_ms", "p99_ms")},
            **analyse_pyspy(steady_raw),
        }
        rate = rate_of(s1, 200)
        ctx.log(f"profile (py-spy) SEND->MESSAGE at {rate:.0f}/s")
        uas = SippUas(ctx.work)
        raw = ctx.work / "pyspy-s2m.txt"
        try:
            with ctx.node() as node:
                ctx.peer.cmd(
                    timeout=60,
                    cmd="call",
                    gateway=list(node.sip()),
                    count=1,
                    start=0,
                    to=f"pp{{i}}@127.0.0.1:{uas.port}",
                    **{"from": "q{i}"},
                )
                res = {}
                load = threading.Thread(
                    target=lambda: res.update(
                        ctx.peer.cmd(
                            timeout=120,
                            cmd="send",
                            rate=rate,
                            duration=plan.warm_s_s2m + plan.measure_s,
                            sessions=1,
                        )
                    )
                )
                load.start()
                time.sleep(plan.warm_s_s2m)
                sampler = sample(node, plan.measure_s - 1, raw)
                cpu = measured_cpu(node, plan.measure_s - 1, rate)
                sampler.wait(60)
                load.join()
                ctx.peer.cmd(timeout=60, cmd="hangup")
        finally:
            uas.stop()
        out["send_to_msg"] = {
            "rate": rate,
            "node_cpu_us_per_msg": round(cpu, 1),
            **analyse_pyspy(raw),
        }
    else:
        ctx.notes.append("py-spy not installed: no sampling profile")
    ctx.log("profile (cProfile) MESSAGE->SEND")
    prof = ctx.work / "node.prof"
    with ctx.node(module="bench.cprofile_node", BENCH_CPROFILE_OUT=str(prof)) as node:
        inf = write_inf(ctx.work / "cprof.csv", keys("cp", 1))
        establish(ctx, node, inf, 1)
        n = 3000
        r = m2s(ctx, [node], [inf], rate=300, duration=n / 300, capture=False)
    out["cprofile_msg_to_send"] = analyse_cprofile(prof, r["delivered"] or 1)
    ctx.results["profile"] = out


def _frame_name(frame: str) -> tuple[str, str]:
    """'func (path/file.py:123)' -> ('func', 'path/file.py')."""
    name, _, where = frame.rpartition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    return name, path


def _area(path: str) -> str:
    for prefix, label in (
        ("gw/sip/", "gw.sip"),
        ("gw/msrp/", "gw.msrp"),
        ("gw/gateway/", "gw.gateway"),
        ("gw/store/", "gw.store"),
        ("gw/", "gw (other)"),
        ("redis/", "redis-py"),
        ("asyncio/", "asyncio"),
        ("logging/", "logging"),
        ("msgpack", "msgpack"),
    ):
        if prefix in path:
            return label
    return "other stdlib"


def analyse_pyspy(raw: Path) -> dict[str, Any]:
    """Self time by function and by area, inclusive time of gw functions, from collapsed stacks."""
    if not raw.exists():
        return {"error": "no py-spy output"}
    self_t: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    area: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        total += n
        leaf_name, leaf_path = _frame_name(frames[-1])
        short = leaf_path.split("site-packages/")[-1].split("python3.11/")[-1]
        self_t[f"{leaf_name} ({short})"] += n
        # attribute the sample to the innermost gw frame's area, else the leaf's area
        area[_area(short)] += n
        seen = set()
        for fr in frames:
            name, path = _frame_name(fr)
            if "gw/" in path or "bench/" in path:
                key = f"{name} ({path.split('main/')[-1]})"
                if key not in seen:
                    seen.add(key)
                    incl[key] += n
    if not total:
        return {"error": "no samples"}
    return {
        "samples": total,
        "self_top": [
            {"function": k, "share": round(v / total, 4)} for k, v in self_t.most_common(25)
        ],
        "inclusive_gw_top": [
            {"function": k, "share": round(v / total, 4)} for k, v in incl.most_common(30)
        ],
        "self_by_area": {k: round(v / total, 4) for k, v in area.most_common()},
    }


def analyse_cprofile(prof: Path, messages: int) -> dict[str, Any]:
    import pstats

    if not prof.exists():
        return {"error": "no cProfile output"}
    st = pstats.Stats(str(prof))
    rows = []
    for (path, line, name), (_cc, nc, tt, ct, _callers) in st.stats.items():  # type: ignore[attr-defined]
        short = path.split("site-packages/")[-1].split("python3.11/")[-1].split("main/")[-1]
        if "epoll" in name:  # waiting for I/O, not work
            continue
        rows.append((tt, ct, nc, f"{name} ({short}:{line})"))
    rows.sort(reverse=True)
    top = [
        {
            "function": f,
            "calls_per_msg": round(nc / messages, 2),
            "tottime_us_per_msg": round(tt / messages * 1e6, 1),
            "cumtime_us_per_msg": round(ct / messages * 1e6, 1),
        }
        for tt, ct, nc, f in rows[:30]
    ]
    return {"messages": messages, "top_by_tottime": top}


# -- report ----------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu = "?"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = 0
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        mem = int(f.readline().split()[1]) * 1024
    os_name = "?"
    with contextlib.suppress(OSError), open("/etc/os-release") as f:
        for line in f:
            if line.startswith("PRETTY_NAME="):
                os_name = line.split("=", 1)[1].strip().strip('"')
    load = os.getloadavg()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_bytes": mem,
        "os": os_name,
        "kernel": platform.release(),
        "loadavg_at_start": [round(x, 2) for x in load],
    }


def versions(redis: RedisProc) -> dict[str, str]:
    from importlib import metadata

    def v(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "-"

    rev = "?"
    with contextlib.suppress(Exception):
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        # the node runs the working tree: say when gw/ differs from the commit
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "gw"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        if dirty:
            rev += f" + {len(dirty.splitlines())} uncommitted file(s) in gw/"
    tcpdump = wire.tcpdump_binary()
    tver = "-"
    if tcpdump:
        out = subprocess.run([tcpdump, "--version"], capture_output=True, text=True, check=False)
        tver = (out.stdout + out.stderr).split("\n")[0].split()[-1]
    return {
        "msrp-gw": v("msrp-gw"),
        "git": rev,
        "python": platform.python_version(),
        "redis-server": redis.version(),
        "sipp": procs.sipp_version(),
        "redis-py": v("redis"),
        "hiredis": v("hiredis"),
        "uvloop": v("uvloop"),
        "tcpdump": tver,
        "py-spy": v("py-spy"),
        "matplotlib": v("matplotlib"),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run (seconds), for CI")
    ap.add_argument(
        "--out",
        help="where benchmarks.md/.json and charts go (default: docs/, or a temp dir with --quick)",
    )
    ap.add_argument(
        "--only", help="comma-separated scenarios: m2s,s2m,setup,growth,memory,sizes,scale,profile"
    )
    ap.add_argument(
        "--max-sessions",
        type=int,
        help="cap of the session growth (default 100000, reached only if the time budget allows)",
    )
    ap.add_argument("--profile", dest="profile", action="store_true", default=None)
    ap.add_argument("--no-profile", dest="profile", action="store_false")
    ap.add_argument("--keep", action="store_true", help="keep the work dir (logs, captures)")
    ap.add_argument(
        "--node-env",
        action="append",
        default=[],
        metavar="MSRPGW_SECTION__KEY=VALUE",
        help="extra config for every node (repeatable), e.g. MSRPGW_NODE__LOOP=asyncio",
    )
    ap.add_argument(
        "--merge",
        action="store_true",
        help="with --only: update those sections of the existing OUT/benchmarks.json",
    )
    args = ap.parse_args(argv)

    node_env: dict[str, str] = {}
    for item in args.node_env:
        key, sep, value = item.partition("=")
        if not sep or not key.startswith("MSRPGW_"):
            ap.error(f"--node-env wants MSRPGW_SECTION__KEY=VALUE, got {item!r}")
        node_env[key] = value
    plan = Plan.make(args.quick, args.profile, args.max_sessions)
    out = (
        Path(args.out)
        if args.out
        else (Path(tempfile.mkdtemp(prefix="msrpgw-bench-quick-")) if args.quick else ROOT / "docs")
    )
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="msrpgw-bench-"))
    only = set(args.only.split(",")) if args.only else None
    t_start = time.monotonic()
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    redis = RedisProc(work)
    redis.start()
    peer = PeerProc(work)
    ctx = Ctx(plan=plan, work=work, out=out, redis=redis, peer=peer, t_start=t_start)
    ctx.extra_env = node_env
    if args.merge and (out / "benchmarks.json").exists():
        ctx.previous = json.loads((out / "benchmarks.json").read_text())
    ctx.commands["suite"] = "python -m bench.run" + (
        " " + " ".join(sys.argv[1:]) if sys.argv[1:] else ""
    )
    ctx.commands["redis"] = (
        f"{redis.binary} --bind 127.0.0.1 --port PORT --save '' --appendonly no "
        "--notify-keyspace-events Ex"
    )
    ctx.commands["peer"] = f"{sys.executable} -m bench.peer"
    meta = {
        "started": started,
        "quick": plan.quick,
        "machine": machine(),
        "versions": versions(redis),
        "targets": TARGETS,
        "plan": {k: v for k, v in plan.__dict__.items()},
        "node_env": ctx.extra_env,
    }
    ok = True
    scenarios = [
        ("m2s", scenario_msg_to_send),
        ("growth", scenario_growth_sessions),
        ("memory", scenario_memory),
        ("s2m", scenario_send_to_msg),
        ("setup", scenario_setup),
        ("sizes", scenario_sizes),
        ("scale", scenario_scale_out),
        ("profile", scenario_profile),
    ]
    try:
        for name, fn in scenarios:
            if only is not None and name not in only:
                continue
            if name == "profile" and not plan.profile:
                continue
            try:
                fn(ctx)
            except Exception as exc:
                ok = False
                ctx.log(f"scenario {name} failed: {exc!r}")
                ctx.results.setdefault("errors", {})[name] = repr(exc)
    finally:
        peer.stop()
        redis.stop()
    meta["duration_s"] = round(time.monotonic() - t_start, 1)
    meta["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    meta["commands"] = ctx.commands
    meta["notes"] = ctx.notes
    doc: dict[str, Any] = {"meta": meta, **ctx.results}
    old_path = out / "benchmarks.json"
    if args.merge and only is not None and old_path.exists():
        old = json.loads(old_path.read_text())
        old.pop("errors", None)
        reruns = old["meta"].setdefault("reruns", [])
        reruns.append(
            {
                "started": started,
                "command": ctx.commands["suite"],
                "sections": sorted(ctx.results),
                "duration_s": meta["duration_s"],
                "loadavg": meta["loadavg_at_end"],
                "versions": meta["versions"],
            }
        )
        for k, v in ctx.commands.items():
            old["meta"]["commands"].setdefault(k, v)
        doc = {**old, **ctx.results}
    from bench import report

    doc["headline"] = report.headline(doc)
    (out / "benchmarks.json").write_text(json.dumps(doc, indent=1, sort_keys=False) + "\n")
    charts = report.charts(doc, out)
    (out / "benchmarks.md").write_text(report.markdown(doc, charts))
    ctx.log(f"wrote {out}/benchmarks.md, benchmarks.json, {len(charts)} chart(s)")
    if args.keep or not ok:
        ctx.log(f"work dir kept: {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
