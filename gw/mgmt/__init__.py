"""Management layer: MI-compatible JSON-RPC, health probes and Prometheus metrics over HTTP."""

from gw.mgmt.http import MgmtServer, ReadyCheck, Reply, Request
from gw.mgmt.metrics import Counter, Gauge, Histogram, Registry
from gw.mgmt.mi import MiError, MiRegistry, param_str
from gw.mgmt.wire import Limits

__all__ = [
    "Counter",
    "Gauge",
    "Histogram",
    "Limits",
    "MgmtServer",
    "MiError",
    "MiRegistry",
    "ReadyCheck",
    "Registry",
    "Reply",
    "Request",
    "param_str",
]
