"""A quick closed-loop probe for the hot-path work: one node, one scenario, seconds not minutes.

It prints throughput, latency and the node's CPU per message, the figure each optimisation
should move; `--spy` also samples the node with py-spy and prints the top frames. The full
suite (`python -m bench.run`) remains the reference for the published tables.

Usage: python -m bench.probe [m2s|s2m|setup] [--seconds 8] [--users 16] [--spy]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from bench import run
from bench.procs import PeerProc, RedisProc, SippUas, write_inf


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.probe")
    ap.add_argument("scenario", choices=("m2s", "s2m", "setup"), nargs="?", default="m2s")
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--users", type=int, default=16, help="messages in flight")
    ap.add_argument("--sessions", type=int, default=1)
    ap.add_argument("--rate", type=float, help="open loop at this rate (m2s, s2m), not closed")
    ap.add_argument("--warm", type=float, default=0.0, help="open loop: seconds before the window")
    ap.add_argument("--module", default="gw.cli", help="the node's entry module")
    ap.add_argument("--log", type=int, default=0, help="print the last N bytes of the node log")
    ap.add_argument("--pin", action="store_true", help="node on CPU 0, all else on CPU 1")
    ap.add_argument("--metrics", help="print the node's /metrics lines containing this")
    ap.add_argument("--spy", action="store_true", help="py-spy the node during the run")
    args = ap.parse_args(argv)

    if args.pin:
        os.sched_setaffinity(0, {1})  # this process and its children: Redis, peer, SIPp
    work = Path(tempfile.mkdtemp(prefix="msrpgw-probe-"))
    redis = RedisProc(work)
    redis.start()
    peer = PeerProc(work)
    plan = run.Plan.make(quick=False, profile=False, max_sessions=None)
    ctx = run.Ctx(plan=plan, work=work, out=work, redis=redis, peer=peer, t_start=time.monotonic())
    if args.pin:
        ctx.node_wrap = ["taskset", "-c", "0"]
    spy: subprocess.Popen[bytes] | None = None
    uas = SippUas(work) if args.scenario == "s2m" else None
    raw = work / "spy.txt"
    try:
        with ctx.node(module=args.module) as node:
            if args.scenario == "m2s":
                inf = write_inf(work / "m2s.csv", run.keys("p", args.sessions))
                run.establish(ctx, node, inf, args.sessions)
            elif args.scenario == "s2m":
                assert uas is not None
                peer.cmd(
                    cmd="call",
                    gateway=list(node.sip("udp")),
                    count=args.sessions,
                    start=0,
                    concurrency=32,
                    to=f"page{{i}}@127.0.0.1:{uas.port}",
                    **{"from": "m{i}"},
                )
            if args.spy:
                exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
                spy = subprocess.Popen(
                    [
                        exe,
                        "record",
                        "--pid",
                        str(node.pid),
                        "--duration",
                        str(int(args.seconds)),
                        "--rate",
                        "250",
                        "--format",
                        "raw",
                        "--output",
                        str(raw),
                        "--nonblocking",
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            if args.scenario == "m2s":
                res = (
                    run.m2s(
                        ctx,
                        [node],
                        [inf],
                        rate=args.rate,
                        duration=args.warm + args.seconds,
                        warmup=args.warm,
                    )
                    if args.rate
                    else run.m2s(ctx, [node], [inf], users=args.users, duration=args.seconds)
                )
            elif args.scenario == "s2m":
                res = run.s2m(
                    ctx,
                    [node],
                    rate=args.rate or 0,
                    concurrency=args.users,
                    duration=args.warm + args.seconds,
                    warmup=args.warm,
                    sessions=args.sessions,
                    success_report=True,
                )
            else:
                d = args.warm + args.seconds
                n = int((args.rate or 400) * d) + 10
                inf = write_inf(work / "setup.csv", run.keys("s", n))
                res = (
                    run.m2s(ctx, [node], [inf], rate=args.rate, duration=d, warmup=args.warm)
                    if args.rate
                    else run.m2s(
                        ctx, [node], [inf], users=args.users, calls=n, duration=n / 50 + 30
                    )
                )
            if spy is not None:
                spy.wait(60)
            if args.metrics:
                url = f"http://{node.ready['mgmt']}/metrics"
                text = urllib.request.urlopen(url, timeout=5).read().decode()
                print("\n".join(ln for ln in text.splitlines() if args.metrics in ln))
            if args.module == "bench.cprofile_node":
                os.kill(node.pid, signal.SIGUSR2)  # write the stats before the SIGKILL
                time.sleep(3)
            node.kill()
            if args.log:
                print(node.log.read_text()[-args.log :])
        keys = (
            "throughput",
            "p50_ms",
            "p99_ms",
            "p999_ms",
            "failed",
            "retransmissions",
            "node_cpu_us_per_msg",
            "machine_busy",
        )
        print(" ".join(f"{k}={res.get(k)}" for k in keys))
        if spy is not None:
            found = run.analyse_pyspy(raw)
            for title in ("self_top", "inclusive_gw_top"):
                print(f"-- {title}")
                for row in found.get(title, []):
                    print(f"  {row['share'] * 100:5.1f}%  {row['function']}")
            print("-- self by area:", found.get("self_by_area") or found.get("error"))
    finally:
        if uas is not None:
            uas.stop()
        peer.stop()
        redis.stop()
        if args.spy:
            shutil.copy(raw, Path(tempfile.gettempdir()) / "probe-spy.txt")
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
