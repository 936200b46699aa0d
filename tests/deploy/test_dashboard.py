"""The Grafana dashboard (deploy/grafana) is built on the metric names a real node exports:
its /metrics page, parsed with prometheus_client's parser, has every series the dashboard
queries, and the dashboard shows every metric family the node exports."""

from __future__ import annotations

import json
import re
import urllib.request
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.deploy.helpers import DEPLOY
from tests.support.node import GatewayProcess

DASHBOARD = DEPLOY / "grafana" / "msrp-gw-dashboard.json"
SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count"),
    "summary": ("", "_sum", "_count"),
}


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def panels(dash: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for panel in dash["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def queried_series(dash: dict[str, Any]) -> set[str]:
    exprs = [t["expr"] for p in panels(dash) for t in p.get("targets", [])]
    variables = [v["definition"] for v in dash["templating"]["list"] if v.get("definition")]
    pattern = r"\b(?:msrpgw|process|python)_\w+"  # ours, and the standard process families
    return {name for text in exprs + variables for name in re.findall(pattern, text)}


def test_dashboard_structure() -> None:
    dash = dashboard()
    assert dash["uid"] and dash["title"] and dash["schemaVersion"] >= 36
    ids = [p["id"] for p in panels(dash)]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    names = {v["name"] for v in dash["templating"]["list"]}
    assert {"datasource", "instance"} <= names
    for panel in panels(dash):
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        for target in panel["targets"]:
            expr = target["expr"]
            assert expr.count("(") == expr.count(")"), expr
            # every selector honours the node picker
            for selector in re.findall(r"\bmsrpgw_\w+(\{[^}]*\})?", expr):
                assert selector == '{instance=~"$instance"}', expr


def test_dashboard_uses_the_metrics_a_node_exports() -> None:
    node = GatewayProcess()
    node.start()
    try:
        url = f"http://{node.ready['mgmt']}/metrics"
        text = urllib.request.urlopen(url, timeout=5).read().decode()
    finally:
        assert node.stop() == 0
    families = {f.name: f.type for f in text_string_to_metric_families(text)}
    assert families, text
    exported = {name + suffix: name for name, kind in families.items() for suffix in SUFFIXES[kind]}
    queried = queried_series(dashboard())
    unknown = sorted(queried - exported.keys())
    assert not unknown, f"the dashboard queries series no node exports: {unknown}"
    shown = {exported[name] for name in queried}
    assert shown == set(families), f"not on the dashboard: {sorted(set(families) - shown)}"
