"""Run `msrp-gw run` under cProfile; the stats are written when the node exits (SIGTERM).

Usage: BENCH_CPROFILE_OUT=node.prof python -m bench.cprofile_node run [--config FILE]
Used by bench.run for call counts per message (cProfile slows the node; the time shares
in docs/benchmarks.md come from py-spy, which samples without slowing it).
"""

from __future__ import annotations

import cProfile
import os
import sys

from gw.cli import main

if __name__ == "__main__":
    profiler = cProfile.Profile()
    try:
        code = profiler.runcall(main, sys.argv[1:])
    finally:
        profiler.dump_stats(os.environ.get("BENCH_CPROFILE_OUT", "node.prof"))
    sys.exit(code)
