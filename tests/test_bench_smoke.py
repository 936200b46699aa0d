"""CI smoke run of the benchmark harness (bench/): `python -m bench.run --quick` end to end.

It starts a real node, Redis, SIPp and the MSRP load endpoint for about half a minute and
checks that every scenario produced figures, so the harness cannot rot. The figures
themselves are not asserted against targets: a smoke run is far too short for that.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.redis_server import no_server

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.interop


def _need(binary: str, package: str) -> None:
    if shutil.which(binary) is None:
        no_server(f"{binary} not found: apt-get install {package}")


@pytest.mark.timeout(300)
def test_quick_benchmark_produces_figures(tmp_path: Path) -> None:
    _need("sipp", "sip-tester")
    _need("redis-server", "redis-server")
    _need("kamailio", "kamailio")
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.run", "--quick", "--out", str(out)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    doc = json.loads((out / "benchmarks.json").read_text())
    assert not doc.get("errors"), doc.get("errors")

    meta = doc["meta"]
    assert meta["quick"] is True
    assert meta["machine"]["cores"] >= 1
    assert meta["versions"]["sipp"] not in ("", "?")
    assert meta["commands"]["node"] and meta["commands"]["sipp_uac"]

    for direction in ("msg_to_send", "send_to_msg"):
        for count in ("1", str(meta["plan"]["many"])):
            section = doc[direction][count]
            probe = section["probe"]
            assert probe["delivered"] > 0, (direction, count, probe)
            assert probe["throughput"] > 0
            assert probe["p50_ms"] is not None and probe["p99_ms"] >= probe["p50_ms"]
            assert probe["node_cpu_us_per_msg"] > 0
            assert section["ladder"], (direction, count)
    # one translated MESSAGE on an established session costs Redis commands we can count
    rt = doc["msg_to_send"]["redis_round_trips"]
    assert rt["messages"] > 0 and rt["client_commands_per_msg"] > 0

    assert doc["setup"]["probe"]["delivered"] > 0
    points = doc["growth_sessions"]["points"]
    assert [p["sessions"] for p in points] == list(meta["plan"]["growth"])
    # a hash and a deadline key per session; byte deltas over a few sessions are noise
    assert all(p["redis_keys"] >= 2 * p["sessions"] for p in points), points
    assert all(p["node_rss"] > 0 and p["closed_loop_throughput"] > 0 for p in points)
    assert doc["memory"]["traced_bytes_per_session"] > 0
    assert doc["memory"]["top_lines"]
    sizes = doc["growth_size"]["send_to_msg"]
    assert [r["size"] for r in sizes] == list(meta["plan"]["sizes_peer"])
    assert all(r["delivered"] > 0 and r["error_ratio"] == 0 for r in sizes), sizes
    scale = doc["scale_out"]
    assert [r["nodes"] for r in scale["rows"]] == list(meta["plan"]["nodes"])
    # behind the Kamailio dispatcher: every node got sessions, all MESSAGEs answered
    assert all(r["front"] == "kamailio dispatcher" for r in scale["rows"]), scale["rows"]
    assert all(min(r["owners"]) > 0 and r["error_ratio"] == 0 for r in scale["rows"])
    assert [r["nodes"] for r in scale["direct"]] == list(meta["plan"]["nodes"])

    headline = doc["headline"]
    assert headline["msg_to_send_1"]["closed_loop_throughput"] > 0
    assert headline["idle"]["sessions"] == points[-1]["sessions"]

    md = (out / "benchmarks.md").read_text()
    assert "## Headline: targets vs measured" in md
    assert "MESSAGE → SEND" in md and "## Exact commands" in md
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return
    assert (out / "bench-growth-sessions.png").stat().st_size > 1000
