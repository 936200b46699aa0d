"""Deployment files, validated offline: yamllint, the Compose spec, Kubernetes schemas, and
their consistency with the gateway's own configuration rules (gw.config)."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from gw.config import ConfigError, load_config
from tests.deploy.helpers import (
    COMPOSE,
    DEPLOY,
    K8S,
    REPO,
    compose_interpolate,
    k8s_manifests,
    kustomizations,
    load_all,
    run,
    tool,
)
from tests.support.node import GatewayProcess

GATEWAYS = ("gw1", "gw2", "gw3")


def yaml_files() -> list[Path]:
    return [COMPOSE, *sorted(K8S.rglob("*.yaml"))]


# -- linters and schemas ------------------------------------------------------------------


def test_yamllint() -> None:
    yamllint = tool("yamllint", "yamllint (pip)")
    config = Path(__file__).with_name("yamllint.yaml")
    result = run(
        [yamllint, "--strict", "-f", "parsable", "-c", str(config), *map(str, yaml_files())]
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_file_matches_the_compose_spec() -> None:
    checker = tool("check-jsonschema", "check-jsonschema (pip)")
    result = run([checker, "--builtin-schema", "vendor.compose-spec", str(COMPOSE)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_kubernetes_manifests_and_rendered_kustomizations_validate(tmp_path: Path) -> None:
    """Every object file under k8s/ and the output of each kustomization, with
    kubernetes-validate --strict (bundled schemas, no cluster), in one process."""
    validator = tool("kubernetes-validate", "kubernetes-validate (pip)")
    kubectl = tool("kubectl", "kubectl (Debian/Google apt repository), for `kubectl kustomize`")
    files = [str(p) for p in k8s_manifests()]
    for kustomization in kustomizations():
        directory = kustomization.parent
        rendered = run([kubectl, "kustomize", str(directory)], timeout=60)
        assert rendered.returncode == 0, f"kubectl kustomize {directory}:\n{rendered.stderr}"
        out = tmp_path / (str(directory.relative_to(K8S)).replace("/", "-") + ".yaml")
        out.write_text(rendered.stdout)
        files.append(str(out))
    result = run([validator, "--strict", "--quiet", *files], timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "failed" not in result.stdout.lower(), result.stdout


def test_kubernetes_validate_strict_rejects_unknown_fields(tmp_path: Path) -> None:
    """The check above means something: a misspelt field fails."""
    validator = tool("kubernetes-validate", "kubernetes-validate (pip)")
    doc = load_all(K8S / "base" / "poddisruptionbudget.yaml")[0]
    doc["spec"]["maxUnavailabel"] = 1
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(doc))
    result = run([validator, "--strict", "--quiet", str(bad)])
    assert result.returncode != 0, result.stdout


def test_kustomizations_reference_existing_files() -> None:
    for kustomization in kustomizations():
        spec = yaml.safe_load(kustomization.read_text())
        assert spec["kind"] == "Kustomization"
        listed: set[Path] = set()
        for entry in spec.get("resources", []):
            target = (kustomization.parent / entry).resolve()
            assert target.exists(), f"{kustomization}: resource {entry} does not exist"
            if target.is_dir():
                assert (target / "kustomization.yaml").exists(), f"{entry} has no kustomization"
            else:
                listed.add(target)
        # every object file in the directory is used (no forgotten manifest)
        here = {p.resolve() for p in kustomization.parent.glob("*.yaml")} - {kustomization}
        assert here == listed, f"{kustomization}: not listed: {sorted(map(str, here - listed))}"


# -- Kubernetes: what the gateway needs ----------------------------------------------------


def objects() -> dict[tuple[str, str], dict[str, Any]]:
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for path in k8s_manifests():
        for doc in load_all(path):
            found[doc["kind"], doc["metadata"]["name"]] = doc
    return found


def gateway_container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    return next(c for c in containers if c["name"] == "gateway")


def test_deployment_environment_and_configmap_are_a_valid_gateway_config(tmp_path: Path) -> None:
    """The ConfigMap's gw.toml plus the Deployment's environment (downward API and Secret
    values filled in as Kubernetes would) pass the gateway's own validation."""
    objs = objects()
    deployment = objs["Deployment", "msrp-gw"]
    container = gateway_container(deployment)
    secret = objs["Secret", "msrp-gw"]["stringData"]
    fields = {"metadata.name": "msrp-gw-5d9c7b-abcde", "status.podIP": "10.244.1.17"}
    env: dict[str, str] = {}
    for item in container["env"]:
        source = item.get("valueFrom", {})
        if "fieldRef" in source:
            env[item["name"]] = fields[source["fieldRef"]["fieldPath"]]
        elif "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            assert ref["name"] == "msrp-gw"
            env[item["name"]] = secret[ref["key"]]
        else:
            env[item["name"]] = re.sub(r"\$\((\w+)\)", lambda m: env[m[1]], item["value"])
    assert env["MSRPGW_NODE__ID"] == fields["metadata.name"], "node id from the pod name"
    assert env["MSRPGW_SIP__ADVERTISED_HOST"] == fields["status.podIP"], "advertise the pod IP"

    config_map = objs["ConfigMap", "msrp-gw-config"]["data"]["gw.toml"]
    args = container["args"]
    config_path = args[args.index("--config") + 1]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert config_path == f"{mounts['config']}/gw.toml"
    path = tmp_path / "gw.toml"
    path.write_text(config_map)
    gw_env = {k: v for k, v in env.items() if k.startswith("MSRPGW_")}
    cfg = load_config(path, env=gw_env)
    assert cfg.node.id == fields["metadata.name"]
    assert cfg.sip.advertised_host == fields["status.podIP"]
    assert cfg.mgmt.token and cfg.store.url
    assert mounts["state"] == cfg.node.state_dir, "state_dir is the writable emptyDir"

    ports = {p["name"]: (p["containerPort"], p["protocol"]) for p in container["ports"]}
    assert ports["sip-udp"] == (5060, "UDP") and ports["sip-tcp"] == (5060, "TCP")
    assert cfg.sip.listen == ["udp:0.0.0.0:5060", "tcp:0.0.0.0:5060"]
    assert ports["msrp"] == (int(cfg.msrp.listen.split(":")[2].split(";")[0]), "TCP")
    assert ports["mgmt"] == (int(cfg.mgmt.listen.rsplit(":", 1)[1]), "TCP")

    # probes on the management port, graceful termination long enough to drain
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "mgmt"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "mgmt"}
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    pause = int(pre_stop[-1]) if pre_stop[0] == "sleep" else 0
    drain_bound = 10  # gw.node.Node.stop waits at most 10 s for the drain
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace >= pause + cfg.gateway.delivery_timeout + drain_bound
    assert container["resources"]["requests"]["cpu"] and container["resources"]["limits"]["memory"]
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


def test_services_pdb_hpa_and_network_policy_select_the_gateway_pods() -> None:
    objs = objects()
    deployment = objs["Deployment", "msrp-gw"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()

    def selects(selector: dict[str, str]) -> bool:
        return bool(selector) and selector.items() <= labels.items()

    sip = objs["Service", "msrp-gw-sip"]["spec"]
    assert selects(sip["selector"])
    assert {(p["port"], p["protocol"]) for p in sip["ports"]} == {(5060, "UDP"), (5060, "TCP")}
    pods = objs["Service", "msrp-gw-pods"]["spec"]
    assert pods["clusterIP"] == "None" and selects(pods["selector"])
    assert (2855, "TCP") in {(p["port"], p["protocol"]) for p in pods["ports"]}
    assert selects(objs["PodDisruptionBudget", "msrp-gw"]["spec"]["selector"]["matchLabels"])
    hpa = objs["HorizontalPodAutoscaler", "msrp-gw"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"]["name"] == "msrp-gw"

    policy = objs["NetworkPolicy", "msrp-gw"]["spec"]
    assert selects(policy["podSelector"]["matchLabels"])
    for rule in policy["ingress"]:
        ports = {p["port"] for p in rule["ports"]}
        if 8080 in ports:
            assert rule.get("from"), "the management port is open only to named peers"
        else:
            assert ports <= {5060, 2855}


def test_demo_redis_has_expiry_events_persistence_and_the_shared_config() -> None:
    objs = objects()
    conf = objs["ConfigMap", "msrp-gw-redis-config"]["data"]["redis.conf"]
    assert conf == (DEPLOY / "redis" / "redis.conf").read_text(), "same as deploy/redis/redis.conf"
    assert re.search(r"^notify-keyspace-events\s+Ex\s*$", conf, re.M)
    assert re.search(r"^appendonly\s+yes\s*$", conf, re.M)
    sts = objs["StatefulSet", "msrp-gw-redis"]
    assert sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    demo = yaml.safe_load((K8S / "overlays" / "demo" / "kustomization.yaml").read_text())
    store_urls = [
        op["value"]["store-url"]
        for patch in demo["patches"]
        for op in yaml.safe_load(patch["patch"])
        if isinstance(op.get("value"), dict) and "store-url" in op["value"]
    ]
    service = objs["Service", "msrp-gw-redis"]["metadata"]["name"]
    assert store_urls and all(service in url for url in store_urls)


# -- docker compose ------------------------------------------------------------------------


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_gateways_are_valid_distinct_nodes(tmp_path: Path) -> None:
    """Each gateway service's environment over the image's config file (deploy/gw.toml)
    passes gw.config validation; node ids and advertised hosts are the service names."""
    services = compose()["services"]
    ids = set()
    for name in GATEWAYS:
        service = services[name]
        env = {k: compose_interpolate(str(v)) for k, v in service["environment"].items()}
        cfg = load_config(DEPLOY / "gw.toml", env=env)
        assert cfg.node.id == name and cfg.sip.advertised_host == name
        assert cfg.store.url == "redis://redis:6379/0"
        assert cfg.sip.outbound_proxy.startswith("sip:kamailio:5060"), "out through the proxy"
        ids.add(cfg.node.id)
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"
        assert "/usr/local/bin/msrp-gw-healthcheck" in service["healthcheck"]["test"]
        assert service["image"] == services["gw1"]["image"]
    assert len(ids) == len(GATEWAYS)


def test_compose_redis_and_kamailio() -> None:
    services = compose()["services"]
    redis = services["redis"]
    assert redis["healthcheck"]["test"][-1] == "ping"
    mounted = {v.split(":")[0]: v.split(":")[1] for v in redis["volumes"] if v.startswith("./")}
    conf = mounted["./deploy/redis/redis.conf"]
    assert conf in redis["command"]
    kamailio = services["kamailio"]
    for name in GATEWAYS:
        assert kamailio["depends_on"][name]["condition"] == "service_healthy"
    ports = set(kamailio["ports"])
    assert {"5060:5060/udp", "5060:5060/tcp"} <= ports
    for volume in kamailio["volumes"]:
        source = volume.split(":")[0]
        assert (REPO / source).exists(), source
    listed = (DEPLOY / "kamailio" / "dispatcher.list").read_text()
    destinations = re.findall(r"^1\s+sip:([\w.-]+):5060\b", listed, re.M)
    assert destinations == list(GATEWAYS), "Kamailio dispatches over the three gateways"
    assert (REPO / kamailio["build"]["context"] / "Dockerfile").exists()


def test_compose_try_service_runs_messages_through_a_node(tmp_path: Path) -> None:
    """The `try` service's own command, with the compose names swapped for loopback ones
    (kamailio:5060 -> a node's SIP port, `try` -> 127.0.0.3): a message both ways, again
    and again, until stopped."""
    service = compose()["services"]["try"]
    assert service["image"] == compose()["services"]["gw1"]["image"]
    assert service["depends_on"]["kamailio"]["condition"] == "service_healthy"
    argv = list(service["command"])
    assert argv[:2] == ["msrp-gw", "try"]
    node = GatewayProcess()
    node.start()
    try:
        _, port = node.sip("udp")
        swap = {"kamailio:5060": f"localhost:{port}", "try": "127.0.0.3", "5": "0.2"}
        args = [swap.get(a, a) for a in argv[2:]]
        trying = subprocess.Popen(
            [sys.executable, "-m", "gw.cli", "try", *args],
            stdout=subprocess.PIPE,
            text=True,
            env=node.env,
            cwd=tmp_path,
        )
        assert trying.stdout is not None
        lines: list[str] = []
        for line in trying.stdout:
            lines.append(line.rstrip("\n"))
            if lines.count("both ways: OK") == 2:
                break
        out = "\n".join(lines)
        assert lines.count("both ways: OK") == 2, out + node.output()[-2000:]
        assert "sip:bob@127.0.0.3:" in out
        trying.send_signal(signal.SIGINT)
        assert trying.wait(30) == 0
    finally:
        assert node.stop() == 0, node.output()


def test_image_config_file_needs_a_token_off_loopback() -> None:
    """deploy/gw.toml binds the management server to every interface: without a token the
    node refuses to start (and says why); with one it is valid."""
    with pytest.raises(ConfigError, match=r"mgmt\.token"):
        load_config(DEPLOY / "gw.toml", env={})
    # and its SIP listeners are not loopback: where requests may go is a required choice
    # its listeners bind the wildcard: the advertised address is a required choice
    with pytest.raises(ConfigError, match=r"sip\.advertised_host"):
        load_config(DEPLOY / "gw.toml", env={"MSRPGW_MGMT__TOKEN": "t"})
    # and they are not loopback: where requests may go is a required choice too
    placed = {"MSRPGW_MGMT__TOKEN": "t", "MSRPGW_SIP__ADVERTISED_HOST": "192.0.2.7"}
    with pytest.raises(ConfigError, match=r"gateway\.allowed_destinations"):
        load_config(DEPLOY / "gw.toml", env=placed)
    chosen = {**placed, "MSRPGW_SIP__OUTBOUND_PROXY": "sip:proxy:5060;lr"}
    cfg = load_config(DEPLOY / "gw.toml", env=chosen)
    data = tomllib.loads((DEPLOY / "gw.toml").read_text())
    assert cfg.node.state_dir == data["node"]["state_dir"] == "/var/lib/msrp-gw"
