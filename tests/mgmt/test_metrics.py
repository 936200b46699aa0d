"""Our Prometheus registry, checked by parsing its output with prometheus_client's parser."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from gw.mgmt.metrics import DEFAULT_BUCKETS, CounterChild, Registry


def parse(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def samples(family: Any) -> list[tuple[str, dict[str, str], float]]:
    return [(s.name, s.labels, s.value) for s in family.samples]


def test_counter_gauge_values_and_labels() -> None:
    reg = Registry()
    sent = reg.counter("gw_msrp_sends_total", "MSRP SENDs out.", ["result"])
    sessions = reg.gauge("gw_sessions", "Sessions held by this node.")
    ok = sent.labels(result="ok")
    ok.inc()
    ok.inc(2)
    sent.labels("error").inc(0.5)
    sessions.set(7)
    sessions.dec(2)
    sessions.inc(0.25)
    fams = parse(reg.render())
    assert fams["gw_msrp_sends"].type == "counter"
    assert fams["gw_msrp_sends"].documentation == "MSRP SENDs out."
    assert samples(fams["gw_msrp_sends"]) == [
        ("gw_msrp_sends_total", {"result": "ok"}, 3.0),
        ("gw_msrp_sends_total", {"result": "error"}, 0.5),
    ]
    assert fams["gw_sessions"].type == "gauge"
    assert samples(fams["gw_sessions"]) == [("gw_sessions", {}, 5.25)]


def test_render_text_format() -> None:
    reg = Registry()
    reg.counter("a_total", "Help with \\ and\nnewline.", ["k"]).labels(k='q"uo\\te\nnl').inc(2)
    reg.gauge("b", "B.").set(1.5)
    assert reg.render() == (
        "# HELP a_total Help with \\\\ and\\nnewline.\n"
        "# TYPE a_total counter\n"
        'a_total{k="q\\"uo\\\\te\\nnl"} 2.0\n'
        "# HELP b B.\n"
        "# TYPE b gauge\n"
        "b 1.5\n"
    )
    fams = parse(reg.render())
    assert fams["a"].documentation == "Help with \\ and\nnewline."
    assert samples(fams["a"])[0][1] == {"k": 'q"uo\\te\nnl'}


def test_histogram_buckets_cumulative() -> None:
    reg = Registry()
    lat = reg.histogram("gw_delivery_seconds", "Delivery latency.", ["path"])
    child = lat.labels(path="sip-to-msrp")
    for value in (0.0001, 0.0005, 0.003, 0.003, 0.2, 7.0, 60.0):
        child.observe(value)
    fam = parse(reg.render())["gw_delivery_seconds"]
    assert fam.type == "histogram"
    buckets = [(s.labels["le"], s.value) for s in fam.samples if s.name.endswith("_bucket")]
    expected_les = [repr(b) for b in DEFAULT_BUCKETS] + ["+Inf"]
    assert [le for le, _ in buckets] == expected_les
    counts = dict(buckets)
    assert counts["0.0005"] == 2  # le is inclusive: 0.0005 lands in the 0.0005 bucket
    assert counts["0.001"] == 2
    assert counts["0.005"] == 4
    assert counts["0.25"] == 5
    assert counts["10.0"] == 6
    assert counts["+Inf"] == 7
    values = [v for _, v in buckets]
    assert values == sorted(values)  # cumulative
    by_name = {s.name: s for s in fam.samples if not s.name.endswith("_bucket")}
    assert by_name["gw_delivery_seconds_count"].value == 7
    assert by_name["gw_delivery_seconds_sum"].value == pytest.approx(67.2066)
    assert by_name["gw_delivery_seconds_count"].labels == {"path": "sip-to-msrp"}


def test_default_buckets_suit_messaging() -> None:
    assert DEFAULT_BUCKETS[0] == 0.0005 and DEFAULT_BUCKETS[-1] == 10.0
    assert list(DEFAULT_BUCKETS) == sorted(set(DEFAULT_BUCKETS))


def test_unlabelled_histogram_custom_buckets() -> None:
    reg = Registry()
    h = reg.histogram("h_seconds", "H.", buckets=[1, 2, math.inf])
    h.observe(1.5)
    h.observe(3)
    assert samples(parse(reg.render())["h_seconds"]) == [
        ("h_seconds_bucket", {"le": "1.0"}, 0.0),
        ("h_seconds_bucket", {"le": "2.0"}, 1.0),
        ("h_seconds_bucket", {"le": "+Inf"}, 2.0),
        ("h_seconds_count", {}, 2.0),
        ("h_seconds_sum", {}, 4.5),
    ]


def test_callbacks_computed_at_scrape_time() -> None:
    reg = Registry()
    queue: list[int] = []
    reg.gauge("q_len", "Queue length.").set_function(lambda: len(queue))
    states: dict[object, float] = {("established",): 3.0, "pending": 1.0}
    reg.callback("gw_sessions_by_state", "Sessions by state.", lambda: states, ["state"])
    reg.callback("gw_store_ops_total", "Store ops.", lambda: 12, kind="counter")
    queue.extend([1, 2])
    fams = parse(reg.render())
    assert samples(fams["q_len"]) == [("q_len", {}, 2.0)]
    assert samples(fams["gw_sessions_by_state"]) == [
        ("gw_sessions_by_state", {"state": "established"}, 3.0),
        ("gw_sessions_by_state", {"state": "pending"}, 1.0),
    ]
    assert fams["gw_store_ops"].type == "counter"
    states[("closed",)] = 2.0
    assert len(parse(reg.render())["gw_sessions_by_state"].samples) == 3


def test_failing_callback_leaves_other_metrics_intact() -> None:
    reg = Registry()

    def broken() -> float:
        raise RuntimeError("store down")

    reg.callback("broken_gauge", "Broken.", broken)
    reg.callback("bad_labels", "Bad.", lambda: {("a", "b"): 1.0}, ["only_one"])
    reg.gauge("fine", "Fine.").set(1)
    fams = parse(reg.render())
    assert fams["broken_gauge"].samples == []
    assert fams["bad_labels"].samples == []
    assert samples(fams["fine"]) == [("fine", {}, 1.0)]


def test_special_values() -> None:
    reg = Registry()
    reg.gauge("pos", "P.").set(math.inf)
    reg.gauge("neg", "N.").set(-math.inf)
    reg.gauge("nan", "N.").set(math.nan)
    reg.gauge("big", "B.").set(1e300)
    reg.gauge("tiny", "T.").set(-1e-9)
    fams = parse(reg.render())
    assert fams["pos"].samples[0].value == math.inf
    assert fams["neg"].samples[0].value == -math.inf
    assert math.isnan(fams["nan"].samples[0].value)
    assert fams["big"].samples[0].value == 1e300
    assert fams["tiny"].samples[0].value == -1e-9


def test_labelled_metric_without_children_renders_header_only() -> None:
    reg = Registry()
    reg.counter("c_total", "C.", ["x"])
    assert reg.render() == "# HELP c_total C.\n# TYPE c_total counter\n"
    assert Registry().render() == ""


def test_remove_child() -> None:
    reg = Registry()
    g = reg.gauge("peers", "Peers.", ["peer"])
    g.labels(peer="a").set(1)
    g.labels(peer="b").set(1)
    g.remove(peer="a")
    g.remove("zzz")  # absent: no error
    assert [s.labels for s in parse(reg.render())["peers"].samples] == [{"peer": "b"}]


def test_labels_returns_same_child() -> None:
    c = Registry().counter("c_total", "C.", ["a", "b"])
    assert c.labels(a="1", b="2") is c.labels("1", "2")
    assert c.labels(a=1, b=2) is c.labels("1", "2")  # values are stringified


def test_hot_path_child_is_slotted() -> None:
    child = Registry().counter("c_total", "C.", ["a"]).labels(a="x")
    assert isinstance(child, CounterChild)
    assert not hasattr(child, "__dict__")


@pytest.mark.parametrize("name", ["", "1abc", "a-b", "a b", "é", "a.b"])
def test_invalid_metric_names(name: str) -> None:
    with pytest.raises(ValueError):
        Registry().counter(name, "x")


@pytest.mark.parametrize("label", ["", "1a", "a-b", "__reserved", "a:b"])
def test_invalid_label_names(label: str) -> None:
    with pytest.raises(ValueError):
        Registry().gauge("g", "x", [label])


def test_valid_names() -> None:
    reg = Registry()
    reg.counter("ns:sub_metric_total", "x", ["_private", "Camel9"])
    reg.gauge("_g", "x")


def test_registration_collisions() -> None:
    reg = Registry()
    reg.histogram("lat", "x")
    with pytest.raises(ValueError):
        reg.counter("lat", "x")
    with pytest.raises(ValueError):
        reg.gauge("lat_count", "x")
    with pytest.raises(ValueError):
        reg.gauge("g", "x", ["a", "a"])
    with pytest.raises(ValueError):
        reg.histogram("h", "x", ["le"])
    reg.unregister("lat")
    reg.gauge("lat_count", "x")


@pytest.mark.parametrize("buckets", [[], [2, 1], [1, 1], [math.nan], [1, -math.inf]])
def test_invalid_buckets(buckets: list[float]) -> None:
    with pytest.raises(ValueError):
        Registry().histogram("h", "x", buckets=buckets)


def test_misuse_errors() -> None:
    reg = Registry()
    labelled = reg.counter("l_total", "x", ["a"])
    plain = reg.counter("p_total", "x")
    with pytest.raises(ValueError):
        labelled.inc()
    with pytest.raises(ValueError):
        plain.labels(a="1")
    with pytest.raises(ValueError):
        labelled.labels(b="1")
    with pytest.raises(ValueError):
        labelled.labels("1", "2")
    with pytest.raises(ValueError):
        labelled.labels("1", a="1")
    with pytest.raises(ValueError):
        plain.inc(-1)
    with pytest.raises(ValueError):
        reg.callback("cb", "x", lambda: 1.0, kind="histogram")


@given(st.text(), st.floats(allow_nan=False, allow_infinity=False, width=64))
def test_any_label_value_round_trips(value: str, number: float) -> None:
    reg = Registry()
    reg.gauge("g", "x", ["v"]).labels(v=value).set(number)
    ((_name, labels, parsed),) = samples(parse(reg.render())["g"])
    assert labels == {"v": value}
    assert parsed == number
