"""The SIP entry point of the compose stack, proven without Docker: Debian's Kamailio checks
every config in deploy/kamailio, boots the compose config on loopback, and runs its routing
logic (msrpgw-dispatch.cfg) in front of two real `msrp-gw run` nodes sharing one Redis."""

from __future__ import annotations

import asyncio
import re
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from gw.sip.endpoint import SipEndpoint
from gw.sip.transaction import Address
from tests.deploy.helpers import DEPLOY, run
from tests.support.kamailio import Kamailio, kamailio_binary, require_kamailio
from tests.support.msrp_user import MsrpUser
from tests.support.node import GatewayProcess
from tests.support.ports import free_port
from tests.support.redis_server import RedisServer, find_binary, no_server

pytestmark = pytest.mark.interop

KAMAILIO_DIR = DEPLOY / "kamailio"
COMPOSE_CFG = KAMAILIO_DIR / "kamailio.cfg"
DISPATCH_CFG = KAMAILIO_DIR / "msrpgw-dispatch.cfg"
LOOPBACK_TEMPLATE = KAMAILIO_DIR / "kamailio-loopback.cfg.in"
GATEWAY_HOSTS = ("127.0.0.2", "127.0.0.3")  # nodes on their own loopback addresses


def kamcmd(ctl: Path, *args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("kamcmd") or "/usr/sbin/kamcmd"
    return run([binary, "-s", f"unix:{ctl}", *args], timeout=10)


def loopback(values: dict[str, str], ds_list: Path) -> Kamailio:
    kam = Kamailio(
        LOOPBACK_TEMPLATE,
        {"DS_LIST": str(ds_list), "DISPATCH_CFG": str(DISPATCH_CFG), **values},
        udp_ports=("SIP_PORT",),
        tcp_ports=("SIP_PORT",),
    )
    kam.values["CTL_SOCKET"] = f"unix:{kam.workdir / 'ctl'}"
    return kam


# -- kamailio -c ------------------------------------------------------------------------------


def test_every_kamailio_config_is_covered() -> None:
    """The top-level configs in deploy/kamailio are the two checked below, and both run the
    one routing file: what the loopback test proves is what compose runs."""
    top = {p.name for p in KAMAILIO_DIR.iterdir() if p.read_text().startswith("#!KAMAILIO")}
    assert top == {COMPOSE_CFG.name, LOOPBACK_TEMPLATE.name}
    for name in top:
        includes = re.findall(r'^include_file\s+"([^"]+)"', (KAMAILIO_DIR / name).read_text(), re.M)
        assert len(includes) == 1 and includes[0].endswith(
            ("msrpgw-dispatch.cfg", "@DISPATCH_CFG@")
        )


def test_compose_config_checks() -> None:
    """`kamailio -c` on the compose config as shipped: it names gw1..gw3, but -c does not
    load the dispatcher list, so no substitution is needed (the boot test below does)."""
    require_kamailio()
    result = run([kamailio_binary(), "-c", "-f", str(COMPOSE_CFG)], timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "config file ok" in result.stdout + result.stderr


def test_loopback_template_checks(tmp_path: Path) -> None:
    require_kamailio()
    ds_list = tmp_path / "dispatcher.list"
    ds_list.write_text("1 sip:127.0.0.2:5060\n")
    kam = loopback({}, ds_list)
    try:
        result = kam.check()
        assert result.returncode == 0, result.stdout + result.stderr
    finally:
        kam.close()


def test_compose_config_boots_with_its_dispatcher_list(tmp_path: Path) -> None:
    """The compose config, started for real: listeners moved from 0.0.0.0:5060 to a free
    loopback port, the service names of dispatcher.list replaced by loopback addresses (no
    Docker DNS here), the control socket put in a temporary directory. Kamailio loads the
    list and answers `kamcmd core.uptime`, the compose health check."""
    require_kamailio()
    listed = (KAMAILIO_DIR / "dispatcher.list").read_text()
    names = re.findall(r"^\d+\s+sip:([A-Za-z][\w-]*):", listed, re.M)
    assert names == ["gw1", "gw2", "gw3"]
    for n, name in enumerate(names):
        listed = re.sub(rf"sip:{name}:", f"sip:127.0.0.{n + 2}:", listed)
    ds_list = tmp_path / "dispatcher.list"
    ds_list.write_text(listed)
    text = COMPOSE_CFG.read_text()
    text, count = re.subn(
        r"^listen=(udp|tcp):0\.0\.0\.0:5060$", r"listen=\1:@HOST@:@SIP_PORT@", text, flags=re.M
    )
    assert count == 2
    text = text.replace('"/etc/kamailio/dispatcher.list"', f'"{ds_list}"')
    text = text.replace(
        'include_file "msrpgw-dispatch.cfg"',
        f'#!define CTL_SOCKET "unix:@CTL@"\ninclude_file "{DISPATCH_CFG}"',
    )
    template = tmp_path / "kamailio.cfg"
    template.write_text(text)
    kam = Kamailio(template, udp_ports=("SIP_PORT",), tcp_ports=("SIP_PORT",))
    ctl = kam.workdir / "ctl"
    kam.values["CTL"] = str(ctl)
    try:
        kam.start()
        uptime = kamcmd(ctl, "core.uptime")
        assert uptime.returncode == 0, uptime.stderr
        destinations = kamcmd(ctl, "dispatcher.list")
        assert destinations.returncode == 0, destinations.stderr
        for n in range(3):
            assert f"sip:127.0.0.{n + 2}:5060" in destinations.stdout, destinations.stdout
    finally:
        kam.close()


def test_compose_redis_config_boots(tmp_path: Path) -> None:
    """deploy/redis/redis.conf with Debian's redis-server: expiry events and AOF are on."""
    binary = find_binary("redis-server")
    if binary is None or "valkey" in Path(binary).name:
        no_server("redis-server is needed to check deploy/redis/redis.conf")
    sock = tmp_path / "redis.sock"
    proc = subprocess.Popen(
        [binary, str(DEPLOY / "redis" / "redis.conf"), "--port", "0", "--unixsocket", str(sock)],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        client = redis.Redis(unix_socket_path=str(sock), decode_responses=True)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                assert proc.poll() is None, "redis-server refused deploy/redis/redis.conf"
                assert time.monotonic() < deadline
                time.sleep(0.05)
        flags = client.config_get("notify-keyspace-events")["notify-keyspace-events"]
        assert set(flags) == {"E", "x"}
        assert client.config_get("appendonly")["appendonly"] == "yes"
        assert client.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"
        client.close()
    finally:
        proc.terminate()
        proc.wait(10)


# -- Kamailio + dispatcher in front of two nodes ---------------------------------------------


@pytest.fixture
def front(tmp_path: Path) -> Iterator[tuple[Kamailio, list[tuple[str, int]]]]:
    """Kamailio (loopback copy of the compose entry point) and the SIP addresses of the two
    gateway nodes its dispatcher list names; the nodes start later, with its port."""
    require_kamailio()
    for host in GATEWAY_HOSTS:
        try:
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM).bind((host, 0))
        except OSError:
            no_server(f"cannot bind {host}: loopback range unavailable")
    gateways = [(host, free_port(socket.SOCK_DGRAM, host)) for host in GATEWAY_HOSTS]
    ds_list = tmp_path / "dispatcher.list"
    ds_list.write_text(
        "".join(f"1 sip:{h}:{p} 0 0 duid=gw{n + 1}\n" for n, (h, p) in enumerate(gateways))
    )
    kam = loopback({}, ds_list)
    kam.start()
    try:
        yield kam, gateways
    finally:
        kam.close()


def scrape(node: GatewayProcess) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """The node's /metrics, parsed with prometheus_client's parser: sample -> labels -> value."""
    text = urllib.request.urlopen(f"http://{node.ready['mgmt']}/metrics", timeout=5).read()
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def total(
    metrics: dict[str, dict[tuple[tuple[str, str], ...], float]], name: str, **labels: str
) -> float:
    want = set(labels.items())
    return sum(v for k, v in metrics.get(name, {}).items() if want <= set(k))


async def send_message(ua: SipEndpoint, proxy: tuple[str, int], user: str, body: str) -> int:
    req = ua.new_request(
        "MESSAGE",
        f"sip:bob@{proxy[0]}:{proxy[1]}",
        from_=f"<sip:{user}@example.com>",
        to="<sip:bob@example.net>",
        body=body.encode(),
        content_type="text/plain",
    )
    response = await ua.request(req, Address("UDP", *proxy))
    return response.status


async def test_dispatcher_spreads_messages_over_two_nodes_and_they_are_delivered(
    front: tuple[Kamailio, list[tuple[str, int]]],
    redis_server: RedisServer,
    msrp_user: MsrpUser,
    page_ua: SipEndpoint,
) -> None:
    """MESSAGEs of eight conversations sent to Kamailio reach both nodes, each conversation
    always the same node (the dispatcher hashes the From/To pair, so no forwarding between
    nodes), and all are delivered over MSRP. The nodes' INVITEs go out through Kamailio
    (sip.outbound_proxy, as in docker-compose.yml), which relays them to the MSRP user by
    Request-URI and never dispatches them back to a gateway."""
    kam, gateways = front
    proxy = ("127.0.0.1", kam.port("SIP_PORT"))
    nodes = []
    for n, (host, port) in enumerate(gateways):
        node = GatewayProcess(
            env={
                "MSRPGW_NODE__ID": f"gw{n + 1}",
                "MSRPGW_STORE__URL": redis_server.url,
                "MSRPGW_SIP__LISTEN": f"udp:{host}:{port},tcp:{host}:{port}",
                "MSRPGW_MSRP__LISTEN": f"msrp://{host}:0;tcp",
                "MSRPGW_SIP__OUTBOUND_PROXY": f"sip:{proxy[0]}:{proxy[1]};lr",
                "MSRPGW_GATEWAY__RURI_REWRITE": f"sip:{{user}}@127.0.0.1:{msrp_user.sip_port}",
                "MSRPGW_GATEWAY__SETUP_TIMEOUT": "5",
                "MSRPGW_GATEWAY__DELIVERY_TIMEOUT": "5",
                "MSRPGW_SIP__T1": "0.1",
                "MSRPGW_SIP__T2": "0.4",
            }
        )
        nodes.append(node)
    try:
        for node in nodes:
            await asyncio.to_thread(node.start)
        users = [f"alice{i}" for i in range(8)]
        first = await asyncio.gather(*(send_message(page_ua, proxy, u, f"{u} 1") for u in users))
        logs = [kam.log_text()[-3000:], *(n.output()[-2000:] for n in nodes)]
        assert first == [200] * len(users), logs
        second = await asyncio.gather(*(send_message(page_ua, proxy, u, f"{u} 2") for u in users))
        assert second == [200] * len(users)

        received = await msrp_user.wait_for(2 * len(users))
        bodies = sorted(r.body.decode() for r in received)
        assert bodies == sorted(f"{u} {i}" for u in users for i in (1, 2))
        assert len(msrp_user.invites) == len(users), "one MSRP session per conversation"

        # spread over both nodes, each conversation on one node
        metrics = [scrape(node) for node in nodes]
        per_node = [total(m, "msrpgw_page_messages_received_total") for m in metrics]
        assert all(count > 0 for count in per_node), f"not spread: {per_node}"
        assert sum(per_node) == 2 * len(users)
        assert [total(m, "msrpgw_forwarded_to_owner_total") for m in metrics] == [0, 0]
        redis = Redis.from_url(redis_server.url, decode_responses=True)
        try:
            owners = {
                u: await redis.hget(f"msrpgw:sess:{{{u}@example.com-bob@example.net}}", "owner")
                for u in users
            }
        finally:
            await redis.aclose()
        assert set(owners.values()) == {"gw1", "gw2"}, owners
        for n, m in enumerate(metrics):
            mine = sum(1 for owner in owners.values() if owner == f"gw{n + 1}")
            assert total(m, "msrpgw_sessions_created_total", origin="msg_to_msrp") == mine

        # the INVITEs crossed Kamailio and no gateway ever received one (no loop)
        for incoming in msrp_user.invites:
            vias = incoming.request.vias
            assert vias[0].sent_by == f"{proxy[0]}:{proxy[1]}", "relayed by Kamailio"
            assert vias[1].sent_by.split(":")[0] in GATEWAY_HOSTS
            assert incoming.request.get("Record-Route"), "Kamailio stays in the dialog"
        for m in metrics:
            assert total(m, "msrpgw_sip_requests_received_total", method="INVITE") == 0
            assert total(m, "msrpgw_sessions_created_total", origin="answer") == 0
            assert total(m, "msrpgw_requests_rejected_total", code="482") == 0
    finally:
        for node in nodes:
            if node.proc is not None and node.proc.poll() is None:
                assert await asyncio.to_thread(node.stop) == 0, node.output()[-3000:]
    # draining nodes end their sessions with BYE, routed through Kamailio (Record-Route)
    for _ in range(50):
        if msrp_user.byes == len(msrp_user.invites):
            break
        await asyncio.sleep(0.1)
    assert msrp_user.byes == len(msrp_user.invites)
