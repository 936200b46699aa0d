"""The shipped alert rules (issue 15 §4): valid for Prometheus (`promtool check rules`), the
same in the plain file and the PrometheusRule, about series a node exports, and each one fires
in `promtool test rules` on the input it is written for."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import yaml

from tests.deploy.helpers import REPO, run, tool

RULES = REPO / "deploy" / "prometheus" / "msrp-gw-rules.yml"
OPERATOR = REPO / "deploy" / "prometheus" / "prometheusrule.yaml"


def test_promtool_checks_the_rules() -> None:
    promtool = tool("promtool", "Debian package prometheus")
    done = run([promtool, "check", "rules", str(RULES)])
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 6 rules found" in done.stdout, done.stdout


def test_the_prometheusrule_holds_the_same_groups() -> None:
    plain = yaml.safe_load(RULES.read_text())
    operator = yaml.safe_load(OPERATOR.read_text())
    assert operator["kind"] == "PrometheusRule"
    assert operator["spec"] == plain


def test_the_rules_read_series_a_node_exports() -> None:
    from gw.node_metrics import register_metrics

    exported = set(
        re.findall(r"\"(msrpgw_[a-z_]+)\"", Path(register_metrics.__code__.co_filename).read_text())
    )
    node = (REPO / "gw" / "node.py").read_text()
    exported |= set(re.findall(r"\"(msrpgw_[a-z_]+)\"", node))
    used = set(re.findall(r"(msrpgw_[a-z_]+?)(?:_bucket)?\{", RULES.read_text()))
    assert used and used <= exported, used - exported


def test_each_alert_fires_on_its_input(tmp_path: Path) -> None:
    promtool = tool("promtool", "Debian package prometheus")
    series = {
        'up{job="msrp-gw",instance="gw1"}': "0x5",
        'msrpgw_store_errors_total{job="msrp-gw",instance="gw1"}': "0+60x10",
        'msrpgw_page_replies_total{job="msrp-gw",instance="gw1",code="503"}': "0+60x20",
        'msrpgw_page_replies_total{job="msrp-gw",instance="gw1",code="200"}': "0+60x20",
        'msrpgw_session_setup_failures_total{job="msrp-gw",instance="gw1",code="486"}': "0+30x30",
        'msrpgw_sessions_created_total{job="msrp-gw",instance="gw1",origin="msg_to_msrp"}': (
            "0+60x30"
        ),
        'msrpgw_gc_pause_seconds_bucket{job="msrp-gw",instance="gw1",le="0.25"}': "0+0x30",
        'msrpgw_gc_pause_seconds_bucket{job="msrp-gw",instance="gw1",le="+Inf"}': "0+10x30",
        'msrpgw_fds_near_limit_total{job="msrp-gw",instance="gw1"}': "0+1x10",
    }
    alerts = {
        "MsrpGwNodeDown": "2m",
        "MsrpGwStoreErrors": "8m",
        "MsrpGwOpenFilesNearLimit": "8m",
        "MsrpGw503Rate": "15m",
        "MsrpGwSetupFailures": "25m",
        "MsrpGwGcPauses": "25m",
    }
    lines = ["rule_files:", f"  - {RULES}", "evaluation_interval: 1m", "tests:", "  - interval: 1m"]
    lines.append("    input_series:")
    for name, values in series.items():
        lines.append(f"      - series: '{name}'")
        lines.append(f"        values: '{values}'")
    lines.append("    alert_rule_test:")
    rules = {r["alert"]: r for r in yaml.safe_load(RULES.read_text())["groups"][0]["rules"]}
    assert set(rules) == set(alerts), "every rule has its case here"
    for alert, at in alerts.items():
        rule = rules[alert]
        labels = {"instance": "gw1", **rule["labels"]}
        if "sum by" not in rule["expr"] and "histogram_quantile" not in rule["expr"]:
            labels["job"] = "msrp-gw"  # not aggregated away
        annotations = {
            k: v.replace("{{ $labels.instance }}", "gw1") for k, v in rule["annotations"].items()
        }
        expected = {"exp_labels": labels, "exp_annotations": annotations}
        lines.append(f"      - eval_time: {at}")
        lines.append(f"        alertname: {alert}")
        lines.append(f"        exp_alerts: [{json.dumps(expected)}]")
    spec = tmp_path / "alerts-test.yml"
    spec.write_text("\n".join(lines) + "\n")
    done = run([promtool, "test", "rules", str(spec)])
    assert done.returncode == 0, textwrap.shorten(done.stdout + done.stderr, 4000)
