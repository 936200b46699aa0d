"""Run `msrp-gw run` with tracemalloc; SIGUSR1 writes a snapshot to $BENCH_TRACEMALLOC_DIR.

Used by bench.run (scenario `memory`) to attribute the node's memory per idle session to
allocation sites: snapshot, set up N sessions, snapshot, compare. tracemalloc slows the
node down; only the memory figures of that scenario come from it.
"""

from __future__ import annotations

import itertools
import os
import signal
import sys
import tracemalloc
from pathlib import Path
from types import FrameType

from gw.cli import main

_seq = itertools.count()


def _dump(signum: int, frame: FrameType | None) -> None:
    out = Path(os.environ.get("BENCH_TRACEMALLOC_DIR", "."))
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"snap-{next(_seq)}.tmp"
    tracemalloc.take_snapshot().dump(str(path))
    path.rename(path.with_suffix(".snap"))


if __name__ == "__main__":
    tracemalloc.start(int(os.environ.get("BENCH_TRACEMALLOC_FRAMES", "1")))
    signal.signal(signal.SIGUSR1, _dump)
    sys.exit(main(sys.argv[1:]))
