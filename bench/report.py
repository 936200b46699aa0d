"""docs/benchmarks.md, the headline figures and the PNG charts, from the results JSON.

`python -m bench.report [DIR]` re-renders DIR/benchmarks.md (default docs/) from
DIR/benchmarks.json without re-running anything. The hand-written analysis lives in
bench/notes.md and is included verbatim.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

NOTES = Path(__file__).resolve().parent / "notes.md"


def _get(d: Any, *path: Any) -> Any:
    for p in path:
        if d is None:
            return None
        if isinstance(d, dict):
            d = d.get(p)
        elif isinstance(d, list) and isinstance(p, int) and -len(d) <= p < len(d):
            d = d[p]
        else:
            return None
    return d


def _best(section: dict[str, Any] | None) -> dict[str, Any]:
    """Sustained step if any, else the closed-loop probe (marked)."""
    if not section:
        return {}
    s = section.get("sustained")
    if s:
        return {**s, "rate": s.get("offered_rate"), "basis": "sustained open loop"}
    p = section.get("probe") or {}
    return {**p, "rate": None, "basis": "no open-loop step passed"}


def headline(doc: dict[str, Any]) -> dict[str, Any]:
    h: dict[str, Any] = {}
    for name in ("msg_to_send", "send_to_msg"):
        for count in sorted((k for k in (doc.get(name) or {}) if k.isdigit()), key=int):
            b = _best(doc[name][count])
            p99_ok = [
                st
                for st in doc[name][count].get("ladder") or []
                if st.get("kept_up")
                and (st.get("p99_ms") or 1e9) < doc["meta"]["targets"]["p99_ms"]
            ]
            h[f"{name}_{count}"] = {
                "sessions": int(count),
                "sustained_rate": b.get("rate"),
                "rate_with_p99_target": max((st["offered_rate"] for st in p99_ok), default=None),
                "closed_loop_throughput": _get(doc, name, count, "probe", "throughput"),
                "p50_ms": b.get("p50_ms"),
                "p99_ms": b.get("p99_ms"),
                "p999_ms": b.get("p999_ms"),
                "node_cpu_us_per_msg": b.get("node_cpu_us_per_msg"),
                "basis": b.get("basis"),
            }
    setup = doc.get("setup") or {}
    if setup:
        b = _best(setup)
        h["setup"] = {
            "sustained_rate": b.get("rate"),
            "closed_loop_throughput": _get(setup, "probe", "throughput"),
            "p50_ms": b.get("p50_ms"),
            "p99_ms": b.get("p99_ms"),
            "node_cpu_us_per_setup": b.get("node_cpu_us_per_msg"),
        }
    pts = _get(doc, "growth_sessions", "points") or []
    if pts:
        last = pts[-1]
        # the marginal growth of the last step (e.g. 1k -> 10k) is the per-session cost;
        # small steps are dominated by noise and start-up allocations
        h["idle"] = {
            "sessions": last["sessions"],
            "from_sessions": pts[-2]["sessions"] if len(pts) > 1 else 0,
            "redis_bytes_per_session": last.get(
                "redis_bytes_per_session_marginal", last["redis_bytes_per_session"]
            ),
            "node_bytes_per_session": last.get(
                "node_bytes_per_session_marginal", last["node_bytes_per_session"]
            ),
            "node_traced_bytes_per_session": _get(doc, "memory", "traced_bytes_per_session"),
            "closed_loop_throughput": last["closed_loop_throughput"],
            "ref_p99_ms": last["ref_p99_ms"],
        }
    rt = _get(doc, "msg_to_send", "redis_round_trips")
    if rt:
        h["redis_client_commands_per_msg"] = rt.get("client_commands_per_msg")
        # commands issued for each message (>= 0.5 per message) vs background traffic
        # (heartbeats, health checks) that only shows up as a small fraction per message
        per_msg = sum(v for v in (rt.get("client_commands") or {}).values() if v >= 0.5)
        h["redis_round_trips_per_msg"] = round(per_msg, 3)
    # many sessions, each quiet: every message may need its own touch (INFO commandstats;
    # scripts count once as evalsha, their inner commands separately)
    many = str(doc["meta"]["plan"]["many"])
    sec = _get(doc, "msg_to_send", many) or {}
    step = sec.get("sustained") or sec.get("probe") or {}
    cmds = step.get("redis_commands_per_msg") or {}
    if cmds:
        scripts = sum(v for k, v in cmds.items() if k in ("evalsha", "eval", "fcall"))
        h["redis_scripts_per_msg_many"] = round(scripts, 3)
    rows = _get(doc, "scale_out", "rows") or []
    if rows:
        h["scale_out"] = {
            str(r["nodes"]): {"throughput": r["throughput"], "ratio": r.get("ratio_vs_one")}
            for r in rows
        }
    return h


def _share_table(rows: list[dict[str, Any]], cpu: float) -> str:
    """Profile rows as function / share of samples / µs per message."""
    return _table(
        ["function", "share", "µs/msg"],
        [[r["function"], f"{r['share'] * 100:.1f} %", r["share"] * cpu] for r in rows],
    )


def _fmt(x: Any, digits: int = 1) -> str:
    if x is None:
        return "-"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, float):
        if abs(x) >= 100:
            return f"{x:,.0f}"
        return f"{x:.{digits}f}"
    if isinstance(x, int):
        return f"{x:,}"
    return str(x)


def _size(n: int) -> str:
    if n >= 1 << 20:
        return f"{n / (1 << 20):g} MiB"
    if n >= 1024:
        return f"{n / 1024:g} KiB"
    return f"{n} B"


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for r in rows:
        out.append("| " + " | ".join(_fmt(c) for c in r) + " |")
    return "\n".join(out) + "\n"


def targets_table(doc: dict[str, Any]) -> str:
    t = doc["meta"]["targets"]
    h = doc.get("headline") or {}
    rows: list[list[Any]] = []

    def rate_row(label: str, key: str, target: float) -> None:
        v = _get(h, key, "sustained_rate")
        probe = _get(h, key, "closed_loop_throughput")
        with_p99 = _get(h, key, "rate_with_p99_target")
        if with_p99 is not None or key != "setup":
            label = f"{label} (p99 < {t['p99_ms']:g} ms at: {_fmt(with_p99)}/s)"
        shown = v if v is not None else probe
        verdict = (
            "-"
            if shown is None
            else ("met" if shown >= target else f"missed: x{target / shown:.1f} short")
        )
        rows.append(
            [label, f">= {target:,.0f}/s", f"{_fmt(v)}/s (closed loop {_fmt(probe)}/s)", verdict]
        )

    def p99_row(label: str, key: str) -> None:
        v = _get(h, key, "p99_ms")
        verdict = (
            "-" if v is None else ("met" if v < t["p99_ms"] else f"missed: {v / t['p99_ms']:.1f}x")
        )
        rows.append(
            [label, f"< {t['p99_ms']:g} ms", f"{_fmt(v, 2)} ms (at the sustained rate)", verdict]
        )

    for key, label in (
        ("msg_to_send_1", "MESSAGE→SEND, 1 session"),
        (
            "msg_to_send_" + str(doc["meta"]["plan"]["many"]),
            f"MESSAGE→SEND, {doc['meta']['plan']['many']:,} sessions",
        ),
    ):
        if key in h:
            rate_row(f"{label}: rate", key, t["msg_to_send_rate"])
            p99_row(f"{label}: p99", key)
    for key, label in (
        ("send_to_msg_1", "SEND→MESSAGE, 1 session"),
        (
            "send_to_msg_" + str(doc["meta"]["plan"]["many"]),
            f"SEND→MESSAGE, {doc['meta']['plan']['many']:,} sessions",
        ),
    ):
        if key in h:
            rate_row(f"{label}: rate", key, t["send_to_msg_rate"])
            p99_row(f"{label}: p99", key)
    if "setup" in h:
        rate_row("Session setup", "setup", t["setup_rate"])
    idle = h.get("idle")
    if idle:
        for key, label, target in (
            (
                "redis_bytes_per_session",
                "Redis memory / idle session",
                t["redis_bytes_per_session"],
            ),
            ("node_bytes_per_session", "Node RSS / idle session", t["node_bytes_per_session"]),
        ):
            v = idle[key]
            verdict = "met" if v <= target else f"missed: x{v / target:.1f}"
            rows.append(
                [
                    f"{label} ({idle['from_sessions']:,} → {idle['sessions']:,})",
                    f"<= {target:,.0f} B",
                    f"{_fmt(v)} B",
                    verdict,
                ]
            )
        n = idle["sessions"]
        rows.append(
            [
                "Sessions per node",
                f"{t['sessions_per_node']:,}",
                f"{n:,} measured",
                "met" if n >= t["sessions_per_node"] else "not reached in the time budget",
            ]
        )
    rt = h.get("redis_round_trips_per_msg")
    many_rt = h.get("redis_scripts_per_msg_many")
    if rt is not None or many_rt is not None:
        everything = h.get("redis_client_commands_per_msg")
        worst = max(x for x in (rt, many_rt) if x is not None)
        rows.append(
            [
                "Redis round trips / translated msg (owned session)",
                "<= 1",
                f"1 busy session: {_fmt(rt, 2)} (MONITOR; with background traffic "
                f"{_fmt(everything, 2)}); {int(doc['meta']['plan']['many']):,} sessions: "
                f"{_fmt(many_rt, 2)} script calls (INFO commandstats)",
                "met" if worst <= t["redis_round_trips"] * 1.05 else f"missed: {worst:.2f}",
            ]
        )
    return _table(["what", "target", "measured", "verdict"], rows)


def _ladder_rows(section: dict[str, Any]) -> list[list[Any]]:
    rows = []
    probe = section.get("probe")
    if probe:
        label = f"closed loop, {probe.get('users') or probe.get('concurrency')} in flight"
        rows.append(_step_row(label, probe))
    for s in section.get("ladder") or []:
        rows.append(_step_row(f"open loop {s['offered_rate']:,.0f}/s", s))
    return rows


def _step_row(label: str, s: dict[str, Any]) -> list[Any]:
    return [
        label,
        s.get("throughput"),
        s.get("error_ratio") if s.get("error_ratio") is None else f"{s['error_ratio'] * 100:.3f} %",
        s.get("p50_ms"),
        s.get("p99_ms"),
        s.get("p999_ms"),
        s.get("max_ms"),
        s.get("node_cpu_us_per_msg"),
        None if s.get("machine_busy") is None else f"{s['machine_busy'] * 100:.0f} %",
        s.get("kept_up", "-") if "kept_up" in s else "-",
    ]


LADDER_HEAD = [
    "load",
    "done/s",
    "errors",
    "p50 ms",
    "p99 ms",
    "p99.9 ms",
    "max ms",
    "node CPU µs/msg",
    "machine busy",
    "kept up",
]


def charts(doc: dict[str, Any], out: Path) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    made: list[str] = []
    prefix = "bench-"

    def save(fig: Any, name: str) -> None:
        fig.tight_layout()
        fig.savefig(out / name, dpi=90)
        plt.close(fig)
        made.append(name)

    # latency vs offered rate (ladders)
    series = []
    for name, label in (("msg_to_send", "MESSAGE→SEND"), ("send_to_msg", "SEND→MESSAGE")):
        for count, sec in (doc.get(name) or {}).items():
            if not count.isdigit():
                continue
            pts = [
                (s["offered_rate"], s["p99_ms"], s["p50_ms"])
                for s in sec.get("ladder") or []
                if s.get("p99_ms") is not None
            ]
            if pts:
                series.append((f"{label}, {int(count):,} sess.", sorted(pts)))
    if series:
        fig, ax = plt.subplots(figsize=(7, 4))
        for label, pts in series:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=f"{label} p99")
        ax.axhline(doc["meta"]["targets"]["p99_ms"], color="red", ls="--", lw=1, label="p99 target")
        ax.set_xlabel("offered rate (msg/s)")
        ax.set_ylabel("latency (ms, log)")
        ax.set_yscale("log")
        ax.set_title("Latency vs offered load (one node)")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
        save(fig, f"{prefix}latency-vs-rate.png")

    pts = (doc.get("growth_sessions") or {}).get("points") or []
    if pts:
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.6))
        xs = [p["sessions"] for p in pts]
        a1.plot(
            xs,
            [p["closed_loop_throughput"] for p in pts],
            marker="o",
            label="max throughput (closed loop)",
        )
        a1.set_xscale("log")
        a1.set_ylim(bottom=0)
        a1.set_xlabel("established sessions")
        a1.set_ylabel("MESSAGE→SEND msg/s")
        a1.grid(alpha=0.3)
        a1b = a1.twinx()
        a1b.plot(
            xs,
            [p["ref_p99_ms"] for p in pts],
            marker="s",
            color="tab:orange",
            label=f"p99 at {pts[0]['ref_rate']:.0f}/s",
        )
        a1b.set_ylabel("p99 ms")
        a1.set_title("Throughput and p99 vs sessions")
        h1, l1 = a1.get_legend_handles_labels()
        h2, l2 = a1b.get_legend_handles_labels()
        a1.legend(h1 + h2, l1 + l2, fontsize=7, loc="lower left")
        for key, label in (
            ("redis_bytes_per_session", "Redis B/session"),
            ("node_bytes_per_session", "node RSS B/session"),
        ):
            ys = [p.get(f"{key}_marginal", p[key]) for p in pts]
            a2.plot(xs, [max(y, 1.0) for y in ys], marker="o", label=f"{label} (marginal)")
        t = doc["meta"]["targets"]
        a2.axhline(t["redis_bytes_per_session"], color="tab:blue", ls="--", lw=1)
        a2.axhline(t["node_bytes_per_session"], color="tab:orange", ls="--", lw=1)
        a2.set_xscale("log")
        a2.set_yscale("log")
        a2.set_xlabel("established sessions")
        a2.set_title("Memory per idle session (dashed: targets)")
        a2.legend(fontsize=7)
        a2.grid(alpha=0.3)
        save(fig, f"{prefix}growth-sessions.png")

    gs = doc.get("growth_size") or {}
    if gs.get("send_to_msg") or gs.get("msg_to_send"):
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.6))
        for key, label in (
            ("send_to_msg", "SEND→MESSAGE (peer both ends)"),
            ("msg_to_send", "MESSAGE→SEND (SIPp TCP)"),
        ):
            rows = [r for r in gs.get(key) or [] if r.get("throughput")]
            if not rows:
                continue
            a1.plot(
                [r["size"] for r in rows], [r["throughput"] for r in rows], marker="o", label=label
            )
            a2.plot([r["size"] for r in rows], [r["p99_ms"] for r in rows], marker="o", label=label)
        for a in (a1, a2):
            a.set_xscale("log")
            a.set_yscale("log")
            a.set_xlabel("message size (bytes)")
            a.grid(alpha=0.3)
            a.legend(fontsize=7)
        a1.set_ylabel("msg/s (closed loop)")
        a2.set_ylabel("p99 ms")
        a1.set_title("Throughput vs message size")
        a2.set_title("p99 latency vs message size")
        save(fig, f"{prefix}growth-size.png")

    rows = (doc.get("scale_out") or {}).get("rows") or []
    if rows:
        fig, ax = plt.subplots(figsize=(5, 3.4))
        ax.bar([str(r["nodes"]) for r in rows], [r["throughput"] or 0 for r in rows])
        for i, r in enumerate(rows):
            ax.text(
                i,
                (r["throughput"] or 0),
                f"x{r.get('ratio_vs_one') or 0:.2f}",
                ha="center",
                va="bottom",
                fontsize=8,
            )
        ax.set_xlabel("nodes (one 2-core machine)")
        ax.set_ylabel("MESSAGE→SEND msg/s")
        ax.set_title("Scale-out on one machine")
        save(fig, f"{prefix}scale-out.png")
    return made


def markdown(doc: dict[str, Any], chart_files: list[str]) -> str:
    m = doc["meta"]
    plan = m["plan"]
    md: list[str] = []
    add = md.append
    quick = " (QUICK smoke run: figures are not meaningful)" if m["quick"] else ""
    add("# Benchmarks\n")
    add(
        f"Generated by `{m['commands'].get('suite', 'python -m bench.run')}` on {m['started']} "
        f"in {m['duration_s']:.0f} s{quick}. "
        "Do not edit by hand: the tables come from `docs/benchmarks.json`, the analysis from "
        "`bench/notes.md` (`python -m bench.report` re-renders this file).\n"
    )
    add("## How to run\n")
    add(
        "```sh\n"
        "apt-get install sip-tester redis-server tcpdump  # SIPp, Redis, on-the-wire latency\n"
        ".venv/bin/pip install -e '.[bench]'              # matplotlib (charts), py-spy\n"
        "#   (or: .venv/bin/pip install matplotlib py-spy)\n"
        ".venv/bin/python -m bench.run                     # full suite, < 15 min, writes docs/\n"
        ".venv/bin/python -m bench.run --quick             # smoke run (CI), writes to a temp dir\n"
        ".venv/bin/python -m bench.run --only m2s,s2m --out /tmp/b   # a subset\n"
        ".venv/bin/python -m bench.run --only growth --max-sessions 100000 --merge\n"
        "#   re-run one scenario and update its section of docs/benchmarks.json\n"
        ".venv/bin/python -m bench.report                  # re-render this file from the JSON\n"
        ".venv/bin/python -m bench.probe m2s --rate 5000 --warm 35   # one node, one scenario,\n"
        "#   seconds: closed/open loop, CPU per message, --spy, --pin, --metrics (see --help)\n"
        ".venv/bin/python -m bench.micro_sip   # also micro_msrp, micro_gateway, micro_redis:\n"
        "#   CPU and memory of one layer at a time\n"
        "```\n"
    )
    add(
        "Everything runs on loopback with OS-picked ports; every load generator is a separate "
        "process from the gateway node; each step is bounded in time. Without tcpdump, latency "
        "falls back to SIPp's response times (4 ms clock); without py-spy the profile is cProfile "
        "only; without matplotlib there are no charts.\n"
    )
    add("## Headline: targets vs measured\n")
    add(
        "**Noise warning:** this 2-core machine was shared with other engineers' test runs while "
        f"the suite ran (load average {m['machine']['loadavg_at_start']} at start, "
        f"{m.get('loadavg_at_end')} at end), and the node, Redis, SIPp and the MSRP load endpoint "
        "all share the same 2 cores: treat figures as ±20 %, and re-run before comparing commits.\n"
    )
    add(targets_table(doc))
    add("")
    add("## Machine and versions\n")
    mach = m["machine"]
    add(
        _table(
            ["", ""],
            [
                ["CPU", f"{mach['cpu']} ({mach['cores']} cores)"],
                ["memory", f"{mach['memory_bytes'] / 2**30:.1f} GiB"],
                ["OS / kernel", f"{mach['os']} / {mach['kernel']}"],
                *[[k, v] for k, v in m["versions"].items()],
                [
                    "node config beyond the defaults",
                    ", ".join(f"{k}={v}" for k, v in (m.get("node_env") or {}).items())
                    or "none (store URL and R-URI rewrite only; see Exact commands)",
                ],
            ],
        )
    )
    add("")

    add("## 1. MESSAGE → SEND on established sessions\n")
    add(
        "SIPp (`bench/sipp/msg_uac.xml`, UDP) sends page-mode MESSAGEs to the node; the node "
        "SENDs them on the established MSRP session to the MSRP load endpoint (`bench/peer.py`), "
        "which answers 200; the node then answers the MESSAGE 200 (reply mode `confirm`). "
        "Latency = MESSAGE sent → 200 received, measured on the wire (tcpdump on the node's SIP "
        "port) when available. Sessions are distinct From users (SIPp injection file), so "
        "1,000 sessions = 1,000 keys, MESSAGEs spread round-robin.\n\n"
        "Two figures per case. **Burst**: closed loop (SIPp `-users`, a fixed number in "
        "flight) for a few seconds on a fresh node. **Steady state**: open loop at a fixed rate "
        f"(SIPp `-r`) for {plan['warm_s']:g} s + {plan['measure_s']:g} s on a fresh node, "
        f"figures from the last {plan['measure_s']:g} s only; the first step at 90 % of the "
        "burst capacity, then up after a step that kept up, down after one that did not "
        "(`bisect_rates` in bench/run.py). The warm-up is longer than Timer J (64·T1 = 32 s), "
        "the life of each UDP MESSAGE server transaction in the node: before it, the node's "
        "transaction table is still growing and the figures are not the steady state (see the "
        "profile). **Sustained rate** = highest steady-state rate with < 0.1 % errors and "
        "≥ 97 % of the offered messages done in the window.\n"
    )
    for count, sec in (doc.get("msg_to_send") or {}).items():
        if not count.isdigit():
            continue
        add(
            f"**{int(count):,} session(s)** "
            f"(latency source: {_get(sec, 'probe', 'latency_source')})\n"
        )
        add(_table(LADDER_HEAD, _ladder_rows(sec)))
        add("")
    add("## 2. SEND → MESSAGE on established sessions\n")
    add(
        "The MSRP load endpoint sets up sessions with the node (INVITE, the `msrp_gw_answer` "
        "direction) and SENDs with `Success-Report: yes`; the node sends a MESSAGE to a SIPp UAS "
        "(`bench/sipp/msg_uas.xml`) and, on its 200, a success REPORT. Latency = SEND queued → "
        "success REPORT received, timed in the load endpoint (perf_counter). Burst = closed "
        "loop; steady state = open loop on a fresh node, "
        f"{plan['warm_s_s2m']:g} s warm-up (> Timer K = T4 = 5 s of the node's MESSAGE client "
        f"transactions) + {plan['measure_s']:g} s measured.\n"
    )
    for count, sec in (doc.get("send_to_msg") or {}).items():
        if not count.isdigit():
            continue
        add(f"**{int(count):,} session(s)** (set up at {_fmt(_get(sec, 'setup', 'rate'))}/s)\n")
        add(_table(LADDER_HEAD, _ladder_rows(sec)))
        add("")
    setup = doc.get("setup")
    if setup:
        add("## 3. Session setup\n")
        add(
            "Each MESSAGE has a new From user, so each one makes the node create the session in "
            "Redis, send an INVITE to the MSRP load endpoint, open/reuse the MSRP connection, "
            "send the empty SEND, then SEND the message; latency = MESSAGE → 200. Burst = "
            f"{plan['setup_batch']:,} set-ups with {plan['probe_users']} in flight; steady state "
            "= open loop on a fresh node and an empty Redis, warm-up and window as in 1.\n"
        )
        add(_table(LADDER_HEAD, _ladder_rows(setup)))
        add("")
    gs = doc.get("growth_sessions")
    if gs:
        add(f"## 4 + 6. Idle sessions and growth ({', '.join(f'{p:,}' for p in plan['growth'])})\n")
        add(
            "A fresh node and an empty Redis; sessions are added (one MESSAGE each, 64 in flight) "
            "up to each step; then Redis `used_memory`, the node's RSS, the closed-loop "
            "MESSAGE→SEND throughput over all sessions and the latency at a fixed "
            f"{gs.get('ref_rate'):.0f} msg/s "
            "(open loop, round-robin over all sessions). Per-session figures are deltas from the "
            f"empty baseline (Redis {gs['baseline']['redis_used_memory']:,} B, node RSS "
            f"{gs['baseline']['node_rss']:,} B).\n"
        )
        rows = [
            [
                p["sessions"],
                p["setup_rate"],
                p["setup_failed"],
                p["redis_keys"],
                p["redis_bytes_per_session"],
                p.get("redis_bytes_per_session_marginal"),
                p["node_bytes_per_session"],
                p.get("node_bytes_per_session_marginal"),
                p["closed_loop_throughput"],
                p["ref_p50_ms"],
                p["ref_p99_ms"],
                p["ref_p999_ms"],
                None if p["ref_error_ratio"] is None else f"{p['ref_error_ratio'] * 100:.2f} %",
            ]
            for p in gs["points"]
        ]
        add(
            _table(
                [
                    "sessions",
                    "setup/s",
                    "setup failed",
                    "Redis keys",
                    "Redis B/sess.",
                    "Redis B/sess. (marginal)",
                    "node RSS B/sess.",
                    "node RSS B/sess. (marginal)",
                    "max msg/s",
                    "p50 ms",
                    "p99 ms",
                    "p99.9 ms",
                    "errors",
                ],
                rows,
            )
        )
        add(
            "\nThe growth node runs with `sip.t1 = 0.05` (Timer J 3.2 s instead of 32 s) and "
            "waits 4 s before each measurement, so that the transactions of the set-up burst "
            "are gone: these rows isolate the cost of the session table. *Marginal* = growth "
            "since the previous row divided by the sessions added. Node RSS includes what "
            "Python's allocator keeps after the burst (high-water mark).\n"
        )
        if gs.get("skipped"):
            add(
                "\nSkipped for the 15-minute budget: "
                f"{', '.join(f'{x:,}' for x in gs['skipped'])} sessions "
                "(`python -m bench.run --only growth --max-sessions 100000 --merge` spends a "
                "whole budget on it and updates this section).\n"
            )
        add("")
        if "bench-growth-sessions.png" in chart_files:
            add("![growth with sessions](bench-growth-sessions.png)\n")
    mem = doc.get("memory")
    if mem:
        add("## 4b. Where the node's memory per idle session goes\n")
        add(
            f"tracemalloc snapshots of a node (`bench/tracemalloc_node.py`, `sip.t1 = 0.05`) "
            f"before and after {mem['sessions']:,} set-ups, 4 s after the last one (its "
            f"transactions ended): **{_fmt(mem['traced_bytes_per_session'])} B of Python heap "
            f"per session** (RSS grew {_fmt(mem['rss_bytes_per_session'])} B per session under "
            "tracemalloc, which adds its own overhead). Top allocation sites "
            "(first frame):\n"
        )
        add(
            _table(
                ["allocation site", "B/session", "objects/session"],
                [
                    [r["site"], r["bytes_per_session"], r["objects_per_session"]]
                    for r in mem["top_lines"][:20]
                ],
            )
        )
        add("\nBy file:\n")
        add(
            _table(
                ["file", "B/session"],
                [[r["file"], r["bytes_per_session"]] for r in mem["top_files"]],
            )
        )
        add("")
    so = doc.get("scale_out")
    if so:
        add("## 5. Scale-out (1, 2, 3 nodes on this machine)\n")
        add(f"Method: {so.get('method', '')}.\n")
        add(
            "With 2 cores shared by the nodes, Redis, Kamailio, SIPp and the MSRP load "
            "endpoint, the ratio shows contention on this machine, not the scaling of the "
            "design: each extra node competes for the same cores.\n"
        )

        def scale_rows(rows: list[dict[str, Any]]) -> list[list[Any]]:
            return [
                [
                    r["nodes"],
                    r["throughput"],
                    r.get("ratio_vs_one"),
                    r["error_ratio"],
                    r["p50_ms"],
                    r["p99_ms"],
                    r.get("owners", "-"),
                    r.get("kamailio_cpu_s", "-"),
                    f"{r['machine_busy'] * 100:.0f} %",
                ]
                for r in rows
            ]

        head = ["nodes", "msg/s", "ratio vs 1", "errors", "p50 ms", "p99 ms"]
        head += ["sessions per node", "Kamailio CPU s", "machine busy"]
        front = so["rows"] and so["rows"][0].get("front")
        if front:
            add("**Behind the Kamailio dispatcher**\n")
        add(_table(head, scale_rows(so["rows"])))
        add("")
        if so.get("direct"):
            add("**Direct** (each node fed by its own SIPp, no proxy)\n")
            add(_table(head, scale_rows(so["direct"])))
            add("")
        if "bench-scale-out.png" in chart_files:
            add("![scale-out](bench-scale-out.png)\n")
    gz = doc.get("growth_size")
    if gz:
        add("## 6. Message size (100 B → 1 MiB)\n")
        add(
            "SEND→MESSAGE: the load endpoint SENDs one message of each size on one session in "
            "2,048-byte chunks (1 MiB = 512 chunks); the node reassembles it and sends one "
            "MESSAGE over TCP to the load endpoint's own SIP UA (SIPp cannot receive SIP messages "
            "over 64 KiB), success REPORT on its 200. The node runs with "
            "`sip.max_message_size` and `gateway.max_page_message_size` raised to 4 MiB. "
            "MESSAGE→SEND: SIPp over TCP, for the sizes its scenario files can hold.\n"
        )
        rows = [
            [
                f"SEND→MESSAGE {_size(r['size'])}",
                r["throughput"],
                r.get("mbit_s"),
                r["p50_ms"],
                r["p99_ms"],
                r["error_ratio"],
                r["node_cpu_us_per_msg"],
            ]
            for r in gz.get("send_to_msg") or []
        ]
        rows += [
            [
                f"MESSAGE→SEND {_size(r['size'])}",
                r["throughput"],
                r.get("mbit_s"),
                r["p50_ms"],
                r["p99_ms"],
                r["error_ratio"],
                r["node_cpu_us_per_msg"],
            ]
            for r in gz.get("msg_to_send") or []
        ]
        add(
            _table(
                ["message", "msg/s", "Mbit/s", "p50 ms", "p99 ms", "errors", "node CPU µs/msg"],
                rows,
            )
        )
        add("")
        if "bench-growth-size.png" in chart_files:
            add("![growth with size](bench-growth-size.png)\n")
    if "bench-latency-vs-rate.png" in chart_files:
        add("## Latency vs load\n")
        add("![latency vs rate](bench-latency-vs-rate.png)\n")
    rt = _get(doc, "msg_to_send", "redis_round_trips")
    if rt:
        add("## Redis commands per translated message\n")
        add(
            "From `MONITOR` during a short 200 msg/s MESSAGE→SEND run on one established "
            "session: commands the node sent (each one is at most one round trip; pipelined "
            "ones share one) and the commands its Lua scripts ran inside Redis. The "
            "`INFO commandstats` deltas of every step are in the JSON (`redis_commands_per_msg`). "
            "One busy session touches its deadline at most once a second, so most messages make "
            "no Redis call; with many quiet sessions each message makes one (see the headline).\n"
        )
        add(
            _table(
                ["", "per message"],
                [
                    [
                        "commands from the node (round trips, upper bound)",
                        f"{rt['client_commands_per_msg']:.3f}",
                    ],
                    *[[f"node: {k}", f"{v:.3f}"] for k, v in rt["client_commands"].items()],
                    *[[f"inside Lua: {k}", f"{v:.3f}"] for k, v in rt["lua_commands"].items()],
                ],
            )
        )
        s2m_cmds = _get(doc, "send_to_msg", "1", "probe", "redis_commands_per_msg")
        if s2m_cmds:
            add(
                "\nSEND→MESSAGE (`INFO commandstats`, scripts' inner commands included): "
                + ", ".join(f"{k} {v}" for k, v in s2m_cmds.items())
                + " per message.\n"
            )
        add("")
    prof = doc.get("profile")
    if prof:
        add("## Profile: where the time goes per message\n")
        add(
            "py-spy samples the node's Python stacks. Under uvloop the event loop is C code: "
            "time spent inside it (polling, callbacks, socket writes) shows up as self time "
            "of `Runner.run` / `run_loop`, in the *asyncio* area.\n"
        )
        for direction, label in (
            ("msg_to_send", "MESSAGE→SEND, fresh node (first seconds of load)"),
            ("msg_to_send_steady", "MESSAGE→SEND, steady state (after Timer J)"),
            ("send_to_msg", "SEND→MESSAGE"),
        ):
            p = prof.get(direction)
            if not p or "self_by_area" not in p:
                continue
            cpu = p.get("node_cpu_us_per_msg") or 0
            add(f"### {label}\n")
            add(
                f"At {p['rate']:.0f} msg/s offered, {p['samples']:,} py-spy samples, node CPU "
                f"{_fmt(cpu)} µs per message. "
                "Self time by area (µs/msg = share x CPU per message):\n"
            )
            add(
                _table(
                    ["area", "share", "µs/msg"],
                    [[k, f"{v * 100:.1f} %", v * cpu] for k, v in p["self_by_area"].items()],
                )
            )
            add("\nTop functions, self time:\n")
            add(_share_table(p["self_top"][:15], cpu))
            add("\nTop gw functions, inclusive time:\n")
            add(_share_table(p["inclusive_gw_top"][:20], cpu))
            add("")
        cp = prof.get("cprofile_msg_to_send")
        if cp and "top_by_tottime" in cp:
            add("### cProfile: calls per message\n")
            add(
                f"MESSAGE→SEND, fresh node, {cp['messages']:,} messages (cProfile slows the node "
                "about 2x: use the call counts, and the times only relative to each other):\n"
            )
            add(
                _table(
                    ["function", "calls/msg", "self µs/msg", "cumulative µs/msg"],
                    [
                        [
                            r["function"],
                            r["calls_per_msg"],
                            r["tottime_us_per_msg"],
                            r["cumtime_us_per_msg"],
                        ]
                        for r in cp["top_by_tottime"][:25]
                    ],
                )
            )
            add("")
    if NOTES.exists():
        add(NOTES.read_text())
        add("")
    errors = doc.get("errors")
    if errors:
        add("## Errors during the run\n")
        for k, v in errors.items():
            add(f"- {k}: `{v}`")
        add("")
    add("## Exact commands\n")
    add("```")
    for k, v in m["commands"].items():
        add(f"# {k}\n{v}")
    add("```\n")
    if m.get("notes"):
        add("Notes: " + "; ".join(m["notes"]) + "\n")
    return "\n".join(md) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    out = Path(args[0]) if args else Path(__file__).resolve().parent.parent / "docs"
    doc = json.loads((out / "benchmarks.json").read_text())
    doc["headline"] = headline(doc)
    files = charts(doc, out)
    (out / "benchmarks.md").write_text(markdown(doc, files))
    print(f"wrote {out / 'benchmarks.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
