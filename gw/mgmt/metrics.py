"""Prometheus metrics: our own children on the hot path, prometheus-client at scrape time.

A labelled sample is a small child object holding a float, so the hot path on a pre-bound
child (`child.inc()`) is one attribute add (prometheus-client's own metrics take a lock and
cost ~1.2 µs an update); label lookups happen once, in `labels()`. At scrape time the
`Registry` is a prometheus-client Collector: it turns children and callbacks into metric
families, and prometheus-client writes the exposition format (escaping, float formatting),
beside its standard process, GC and platform collectors (`add_collector`).
Not thread-safe: update metrics from the event loop's thread.
"""

from __future__ import annotations

import logging
import math
import re
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from itertools import pairwise
from typing import Any, Generic, Protocol, TypeVar

from prometheus_client.exposition import generate_latest
from prometheus_client.gc_collector import GCCollector
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString

# What generate_latest writes (prometheus-client >= 0.22 names it 1.0.0; the text is the same).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Messaging latencies: sub-millisecond in-process hops up to multi-second SIP transactions.
DEFAULT_BUCKETS: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip

_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_log = logging.getLogger("gw.mgmt.metrics")


class CounterChild:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        if amount < 0:
            raise ValueError("a counter only goes up")
        self.value += amount


class GaugeChild:
    __slots__ = ("_fn", "value")

    def __init__(self) -> None:
        self.value = 0.0
        self._fn: Callable[[], float] | None = None

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount

    def dec(self, amount: float = 1.0) -> None:
        self.value -= amount

    def set(self, value: float) -> None:
        self.value = value

    def set_function(self, fn: Callable[[], float] | None) -> None:
        """Compute the value at scrape time (e.g. a queue length) instead of storing it."""
        self._fn = fn

    def get(self) -> float:
        return self.value if self._fn is None else float(self._fn())


class HistogramChild:
    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # per bucket, not cumulative; last is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value


C = TypeVar("C", CounterChild, GaugeChild, HistogramChild)


class _Metric(Generic[C]):
    kind = ""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str]) -> None:
        _validate(name, labelnames)
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._children: dict[tuple[str, ...], C] = {}
        if not self.labelnames:
            self._children[()] = self._new()

    def _new(self) -> C:
        raise NotImplementedError

    def labels(self, *values: object, **kv: object) -> C:
        """The child for these label values (created on first use); keep it for the hot path."""
        key = self._key(values, kv)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self._new()
        return child

    def remove(self, *values: object, **kv: object) -> None:
        """Forget one label set (e.g. a peer that went away) so series don't pile up."""
        self._children.pop(self._key(values, kv), None)

    def _key(self, values: tuple[object, ...], kv: Mapping[str, object]) -> tuple[str, ...]:
        if not self.labelnames:
            raise ValueError(f"{self.name} has no labels")
        if values and kv:
            raise ValueError("pass label values by position or by name, not both")
        if kv:
            if kv.keys() != set(self.labelnames):
                raise ValueError(f"{self.name} takes labels {self.labelnames}, got {tuple(kv)}")
            return tuple(str(kv[n]) for n in self.labelnames)
        if len(values) != len(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}")
        return tuple(str(v) for v in values)

    def _only(self) -> C:
        if self.labelnames:
            raise ValueError(f"{self.name} has labels {self.labelnames}: use labels()")
        return self._children[()]

    def sample_names(self) -> tuple[str, ...]:
        return (self.name,)

    def family(self) -> Metric:
        raise NotImplementedError


class Counter(_Metric[CounterChild]):
    kind = "counter"

    def _new(self) -> CounterChild:
        return CounterChild()

    def inc(self, amount: float = 1.0) -> None:
        self._only().inc(amount)

    def family(self) -> Metric:
        out = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for key, child in list(self._children.items()):
            out.add_metric(key, child.value)
        return out


class Gauge(_Metric[GaugeChild]):
    kind = "gauge"

    def _new(self) -> GaugeChild:
        return GaugeChild()

    def inc(self, amount: float = 1.0) -> None:
        self._only().inc(amount)

    def dec(self, amount: float = 1.0) -> None:
        self._only().dec(amount)

    def set(self, value: float) -> None:
        self._only().set(value)

    def set_function(self, fn: Callable[[], float] | None) -> None:
        self._only().set_function(fn)

    def family(self) -> Metric:
        out = GaugeMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for key, child in list(self._children.items()):
            out.add_metric(key, child.get())
        return out


class Histogram(_Metric[HistogramChild]):
    kind = "histogram"

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        buckets: Iterable[float] = DEFAULT_BUCKETS,
    ) -> None:
        bounds = [float(b) for b in buckets]
        if bounds and bounds[-1] == math.inf:
            bounds.pop()
        if not bounds or any(math.isnan(b) or math.isinf(b) for b in bounds):
            raise ValueError("histogram buckets must be finite numbers")
        if any(a >= b for a, b in pairwise(bounds)):
            raise ValueError("histogram buckets must be strictly increasing")
        if "le" in labelnames:
            raise ValueError("'le' is reserved in histograms")
        self.bounds = tuple(bounds)
        self._les = (*(floatToGoString(b) for b in bounds), "+Inf")  # type: ignore[no-untyped-call]
        super().__init__(name, documentation, labelnames)

    def _new(self) -> HistogramChild:
        return HistogramChild(self.bounds)

    def observe(self, value: float) -> None:
        self._only().observe(value)

    def sample_names(self) -> tuple[str, ...]:
        return tuple(self.name + s for s in ("_bucket", "_sum", "_count"))

    def family(self) -> Metric:
        out = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for key, child in list(self._children.items()):
            cumulative, buckets = 0, []
            for le, count in zip(self._les, child.counts, strict=True):
                cumulative += count
                buckets.append((le, float(cumulative)))
            out.add_metric(key, buckets, child.sum)
        return out


# A value, or with labels {label values: value}; a one-label key may be a bare value.
CallbackResult = float | Mapping[Any, float]


class _Callback:
    """A metric whose samples are computed at scrape time (e.g. sessions in the store)."""

    def __init__(
        self,
        kind: str,
        name: str,
        documentation: str,
        fn: Callable[[], CallbackResult],
        labelnames: Sequence[str],
    ) -> None:
        self.kind = kind
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self.fn = fn
        _validate(name, labelnames)

    def sample_names(self) -> tuple[str, ...]:
        return (self.name,)

    def family(self) -> Metric:
        kind = CounterMetricFamily if self.kind == "counter" else GaugeMetricFamily
        out = kind(self.name, self.documentation, labels=self.labelnames)
        try:
            result = self.fn()
        except Exception:
            _log.exception("metrics callback %s failed; its samples are left out", self.name)
            return out
        if isinstance(result, Mapping):
            for raw, value in result.items():
                key = raw if isinstance(raw, tuple) else (raw,)
                if len(key) != len(self.labelnames):
                    _log.warning("metrics callback %s: bad label values %r", self.name, key)
                    continue
                out.add_metric([str(k) for k in key], float(value))
        elif not self.labelnames:
            out.add_metric((), float(result))
        else:
            _log.warning("metrics callback %s has labels but returned one value", self.name)
        return out


class _Family(Protocol):
    name: str
    kind: str
    documentation: str

    def sample_names(self) -> tuple[str, ...]: ...

    def family(self) -> Metric: ...


M = TypeVar("M", Counter, Gauge, Histogram, _Callback)


class Registry:
    """The set of metrics one `/metrics` endpoint exposes, in registration order, then the
    samples of the collectors added with `add_collector`."""

    def __init__(self) -> None:
        self._metrics: dict[str, _Family] = {}
        self._sample_names: set[str] = set()
        self._exposed = CollectorRegistry(auto_describe=False)
        self._exposed.register(self)

    def add_collector(self, collector: Collector) -> None:
        """Expose a prometheus-client collector's families too (e.g. its ProcessCollector)."""
        self._exposed.register(collector)

    def add_standard_collectors(self) -> None:
        """The families every Prometheus setup expects, from prometheus-client itself:
        process_* (memory, CPU, start time, open and max file descriptors), python_gc_*,
        python_info."""
        ProcessCollector(registry=self._exposed)  # each registers itself there
        GCCollector(registry=self._exposed)
        PlatformCollector(registry=self._exposed)

    def collect(self) -> Iterator[Metric]:
        """The Collector protocol: our families, computed now."""
        for metric in list(self._metrics.values()):
            yield metric.family()

    def counter(self, name: str, documentation: str, labelnames: Sequence[str] = ()) -> Counter:
        return self._add(Counter(name, documentation, labelnames))

    def gauge(self, name: str, documentation: str, labelnames: Sequence[str] = ()) -> Gauge:
        return self._add(Gauge(name, documentation, labelnames))

    def histogram(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        buckets: Iterable[float] = DEFAULT_BUCKETS,
    ) -> Histogram:
        return self._add(Histogram(name, documentation, labelnames, buckets))

    def callback(
        self,
        name: str,
        documentation: str,
        fn: Callable[[], CallbackResult],
        labelnames: Sequence[str] = (),
        kind: str = "gauge",
    ) -> None:
        """A gauge (or counter) read at scrape time: `fn` returns a value, or with labels a
        mapping {label values tuple (or one value): value}."""
        if kind not in ("gauge", "counter"):
            raise ValueError("callback kind must be 'gauge' or 'counter'")
        self._add(_Callback(kind, name, documentation, fn, labelnames))

    def unregister(self, name: str) -> None:
        metric = self._metrics.pop(name)
        self._sample_names.difference_update(metric.sample_names())

    def _add(self, metric: M) -> M:
        names = metric.sample_names()
        if metric.name in self._metrics or self._sample_names.intersection(names):
            raise ValueError(f"metric {metric.name} collides with one already registered")
        self._metrics[metric.name] = metric
        self._sample_names.update(names)
        return metric

    def render(self) -> str:
        """All metrics in the Prometheus text exposition format 0.0.4."""
        return generate_latest(self._exposed).decode()


def _validate(name: str, labelnames: Sequence[str]) -> None:
    if not _METRIC_NAME.fullmatch(name):
        raise ValueError(f"invalid metric name {name!r}")
    for label in labelnames:
        if not _LABEL_NAME.fullmatch(label) or label.startswith("__"):
            raise ValueError(f"invalid label name {label!r}")
    if len(set(labelnames)) != len(labelnames):
        raise ValueError(f"duplicate label names in {name}")
