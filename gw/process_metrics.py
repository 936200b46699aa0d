"""The process's own figures under the names every Prometheus setup expects (prometheus-client's
ProcessCollector and GCCollector use them): memory, CPU, start time, garbage collections.
Read at scrape time from /proc, os.times and gc; nothing is kept between scrapes."""

from __future__ import annotations

import gc
import os
import platform
from functools import cache

from gw.mgmt.metrics import Registry

__all__ = ["register_process_metrics"]


@cache
def _page_size() -> int:
    return os.sysconf("SC_PAGE_SIZE")


@cache
def _start_time() -> float:
    """Seconds since the epoch at which this process started (Linux /proc), else 0."""
    try:
        with open("/proc/self/stat") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/stat") as f:
            boot = next(int(ln.split()[1]) for ln in f if ln.startswith("btime "))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return 0.0


def _memory() -> tuple[float, float]:
    """(resident, virtual) bytes."""
    try:
        with open("/proc/self/statm") as f:
            size, resident = f.read().split()[:2]
    except (OSError, ValueError):
        return 0.0, 0.0
    return float(int(resident) * _page_size()), float(int(size) * _page_size())


def register_process_metrics(reg: Registry) -> None:
    reg.callback(
        "process_resident_memory_bytes", "Resident memory size in bytes.", lambda: _memory()[0]
    )
    reg.callback(
        "process_virtual_memory_bytes", "Virtual memory size in bytes.", lambda: _memory()[1]
    )
    reg.callback(
        "process_cpu_seconds_total",
        "Total user and system CPU time spent in seconds.",
        lambda: (lambda t: t.user + t.system)(os.times()),
        kind="counter",
    )
    reg.callback(
        "process_start_time_seconds",
        "Start time of the process since unix epoch in seconds.",
        _start_time,
    )
    reg.callback(
        "python_gc_collections_total",
        "Number of times this generation was collected.",
        lambda: {str(g): float(s["collections"]) for g, s in enumerate(gc.get_stats())},
        ["generation"],
        kind="counter",
    )
    reg.callback(
        "python_gc_objects_collected_total",
        "Objects collected during gc.",
        lambda: {str(g): float(s["collected"]) for g, s in enumerate(gc.get_stats())},
        ["generation"],
        kind="counter",
    )
    info = (platform.python_implementation(), platform.python_version())
    reg.callback(
        "python_info",
        "Python platform information.",
        lambda: {info: 1.0},
        ["implementation", "version"],
    )
