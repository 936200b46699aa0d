"""Run `msrp-gw run` under cProfile; the stats are written when the node exits (SIGTERM).

Usage: BENCH_CPROFILE_OUT=node.prof python -m bench.cprofile_node run [--config FILE]
SIGUSR2 writes the stats at once and stops profiling (a drain of thousands of sessions can
outlast the caller's patience, and its BYEs are not the load being profiled).
Used by bench.run for call counts per message (cProfile slows the node; the time shares
in docs/benchmarks.md come from py-spy, which samples without slowing it).
"""

from __future__ import annotations

import cProfile
import os
import signal
import sys
from types import FrameType

from gw.cli import main

if __name__ == "__main__":
    profiler = cProfile.Profile()
    out = os.environ.get("BENCH_CPROFILE_OUT", "node.prof")

    def dump_now(_sig: int, _frame: FrameType | None) -> None:
        profiler.disable()
        profiler.dump_stats(out)

    signal.signal(signal.SIGUSR2, dump_now)
    try:
        code = profiler.runcall(main, sys.argv[1:])
    finally:
        profiler.dump_stats(out)
    sys.exit(code)
