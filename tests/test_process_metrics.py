"""The standard process families (issue 15 §4), from prometheus-client's own collectors beside
ours: plausible values, in the exposition format prometheus-client parses."""

from __future__ import annotations

import os
import time

from prometheus_client.parser import text_string_to_metric_families

from gw.mgmt.metrics import Registry


def test_process_families_have_the_standard_names_and_plausible_values() -> None:
    reg = Registry()
    reg.add_standard_collectors()
    families = {f.name: f for f in text_string_to_metric_families(reg.render())}
    value = {name: f.samples[0].value for name, f in families.items() if f.samples}
    assert value["process_resident_memory_bytes"] > 10 * 2**20  # this interpreter, at least
    assert value["process_virtual_memory_bytes"] >= value["process_resident_memory_bytes"]
    cpu = os.times()
    assert 0 < value["process_cpu_seconds"] <= cpu.user + cpu.system + 1  # counter: no _total
    assert time.time() - 86400 < value["process_start_time_seconds"] <= time.time()
    generations = {s.labels["generation"] for s in families["python_gc_collections"].samples}
    assert generations == {"0", "1", "2"}
    assert families["python_info"].samples[0].labels["implementation"] == "CPython"
    assert 0 < value["process_open_fds"] < value["process_max_fds"]
