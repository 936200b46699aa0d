"""The node's MSRP relay wiring (msrp.relay*) and msrps offers, without a relay process:

- the `msrp.relay*` keys: defaults, what `load_config` / `msrp-gw check-config` refuse
  (one line naming the key);
- `RelayKeeper`: the first AUTH with exponential backoff on failure, AUTH again after a
  loss, counters (against a scripted endpoint);
- offers: `build_msrp_offer` says TCP/TLS/MSRP when the path has an msrps: URI, and a
  gateway node listening on msrps: offers TCP/TLS/MSRP (in process, private Redis).

Through a real relay (Kamailio over TLS and TCP): tests/gateway/test_relay_e2e.py.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from gw.config import Config, ConfigError, load_config
from gw.msrp.endpoint import MsrpEndpoint, MsrpSessionError
from gw.msrp.relay import AuthFailed, RelayAuthError
from gw.msrp.uri import MsrpUri, parse_msrp_uri
from gw.node import Node, RelayKeeper
from gw.sip.sdp import build_msrp_offer, find_msrp_media, parse_sdp
from tests.support.msrp_user import MsrpUser
from tests.support.page_user import PageUser
from tests.support.redis_server import RedisServer

RELAY = "msrps://relay.example.net:2855;tcp"


def refused(env: dict[str, str]) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(env=env)
    text = str(info.value)
    assert text and "\n" not in text, text
    return text


# -- config ---------------------------------------------------------------------------------
def test_relay_keys_default_to_no_relay() -> None:
    cfg = load_config(env={})
    m = cfg.msrp
    assert (m.relay, m.relay_user, m.relay_password, m.relay_expires) == ("", "", "", 0)
    assert Node(cfg).relay is None


def test_relay_keys_from_the_environment() -> None:
    cfg = load_config(
        env={
            "MSRPGW_MSRP__RELAY": RELAY,
            "MSRPGW_MSRP__RELAY_USER": "gw1",
            "MSRPGW_MSRP__RELAY_PASSWORD": "s3cret:with;odd=chars",
            "MSRPGW_MSRP__RELAY_EXPIRES": "300",
        }
    )
    assert cfg.msrp.relay == RELAY and cfg.msrp.relay_expires == 300
    node = Node(cfg)
    assert node.relay is not None
    assert node.relay.relay == parse_msrp_uri(RELAY) and node.relay.expires == 300
    assert node.msrp.relay_required, "relayed sessions get 503 until the first AUTH"
    cfg.msrp.relay_expires = 0
    keeper = Node(cfg).relay
    assert keeper is not None and keeper.expires is None, "0: no Expires in AUTH"


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"MSRPGW_MSRP__RELAY": "relay.example.net:2855"}, "msrp.relay"),
        ({"MSRPGW_MSRP__RELAY": "msrps://relay.example.net:2855"}, "msrp.relay"),
        ({"MSRPGW_MSRP__RELAY": "https://relay.example.net;tcp"}, "msrp.relay"),
        ({"MSRPGW_MSRP__RELAY": "msrps://relay.example.net:99999;tcp"}, "msrp.relay"),
        ({"MSRPGW_MSRP__RELAY": "msrps://relay.example.net:2855;ws"}, "msrp.relay"),
        ({"MSRPGW_MSRP__RELAY": "msrps://relay.example.net:2855/sess;tcp"}, "msrp.relay"),
        ({"MSRPGW_MSRP__RELAY": RELAY}, "msrp.relay_user"),
        ({"MSRPGW_MSRP__RELAY_USER": "gw1"}, "msrp.relay_user"),
        ({"MSRPGW_MSRP__RELAY_PASSWORD": "x"}, "msrp.relay_user/relay_password"),
        (
            {"MSRPGW_MSRP__RELAY": RELAY, "MSRPGW_MSRP__RELAY_USER": "gw1\r\nX: y"},
            "msrp.relay_user",
        ),
        (
            {
                "MSRPGW_MSRP__RELAY": RELAY,
                "MSRPGW_MSRP__RELAY_USER": "gw1",
                "MSRPGW_MSRP__RELAY_EXPIRES": "-1",
            },
            "msrp.relay_expires",
        ),
        (
            {
                "MSRPGW_MSRP__RELAY": RELAY,
                "MSRPGW_MSRP__RELAY_USER": "gw1",
                "MSRPGW_MSRP__RELAY_EXPIRES": "soon",
            },
            "msrp.relay_expires must be an integer",
        ),
    ],
)
def test_bad_relay_settings_are_refused_naming_the_key(env: dict[str, str], names: str) -> None:
    assert names in refused(env)


def test_check_config_names_the_relay_key_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "gw.toml"
    path.write_text('[msrp]\nrelay = "msrps://relay.example.net:2855"\nrelay_user = "gw1"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("MSRPGW_")}
    out = subprocess.run(
        [sys.executable, "-m", "gw.cli", "check-config", "--config", str(path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )
    assert out.returncode == 2, out
    assert out.stderr.count("\n") == 1 and "msrp.relay" in out.stderr, out.stderr
    assert "relay_password" not in out.stderr
    path.write_text(f'[msrp]\nrelay = "{RELAY}"\nrelay_user = "gw1"\nrelay_password = "pw"\n')
    ok = subprocess.run(
        [sys.executable, "-m", "gw.cli", "check-config", "--config", str(path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )
    assert ok.returncode == 0 and "config ok" in ok.stdout, ok


# -- RelayKeeper ----------------------------------------------------------------------------
class ScriptedEndpoint:
    """What RelayKeeper uses of an MsrpEndpoint; `use_relay` follows `script`: an exception
    to raise, or "ok" (a grant on a fresh link whose `lost` the test resolves)."""

    def __init__(self, script: list[Any]) -> None:
        self.script = script
        self.calls: list[tuple[MsrpUri, str, str, int | None, float]] = []
        self.times: list[float] = []
        self.relay_required = False
        self.relay = None
        self.relay_link: Any = None

    async def use_relay(
        self, uri: MsrpUri, user: str, password: str, expires: int | None, *, timeout: float
    ) -> list[MsrpUri]:
        self.calls.append((uri, user, password, expires, timeout))
        self.times.append(asyncio.get_running_loop().time())
        step = self.script.pop(0)
        if isinstance(step, BaseException):
            raise step
        link = type("Link", (), {})()
        link.lost = asyncio.get_running_loop().create_future()
        self.relay_link = link
        return [parse_msrp_uri(f"msrps://relay.test:2855/s{len(self.calls)};tcp")]


async def test_keeper_backs_off_on_failures_and_authenticates_again_after_a_loss() -> None:
    refused_403 = RelayAuthError(AuthFailed(403, "Forbidden"))
    ep = ScriptedEndpoint(
        [OSError("refused"), TimeoutError(), refused_403, "ok", OSError("refused"), "ok"]
    )
    keeper = RelayKeeper(
        ep,  # type: ignore[arg-type]
        parse_msrp_uri(RELAY),
        "gw1",
        "pw",
        60,
        initial=0.02,
        max_backoff=0.05,
        timeout=3.0,
    )
    assert ep.relay_required
    keeper.start()
    try:
        assert await keeper.wait_up(5)
        assert keeper.counts == {"auth_failed": 3, "auth_ok": 1}
        assert ep.calls[0] == (parse_msrp_uri(RELAY), "gw1", "pw", 60, 3.0)
        gaps = [b - a for a, b in zip(ep.times, ep.times[1:], strict=False)]
        # exponential from `initial` (0.02, 0.04, then capped at 0.05) plus up to `initial`
        assert 0.02 <= gaps[0] < 0.05 and gaps[1] >= 0.04 and gaps[2] >= 0.05 - 0.001

        ep.relay_link.lost.set_result(None)  # the relay connection drops
        async with asyncio.timeout(1):  # down for at least `initial` + one backoff
            while keeper.up.is_set():
                await asyncio.sleep(0)
        assert await keeper.wait_up(5)
        assert keeper.counts == {"auth_failed": 4, "auth_ok": 2, "lost": 1}
        assert len(ep.calls) == 6
    finally:
        await keeper.stop()
    assert not keeper.up.is_set()


async def test_keeper_stops_while_retrying() -> None:
    ep = ScriptedEndpoint([OSError("refused")] * 100)
    keeper = RelayKeeper(ep, parse_msrp_uri(RELAY), "gw1", "pw", initial=0.01)  # type: ignore[arg-type]
    keeper.start()
    await asyncio.sleep(0.1)
    await keeper.stop()
    calls = len(ep.calls)
    await asyncio.sleep(0.1)
    assert calls >= 2 and len(ep.calls) == calls and not keeper.up.is_set()


async def test_relayed_session_before_the_first_auth_is_503() -> None:
    endpoint = MsrpEndpoint("127.0.0.1", 0)
    await endpoint.start()
    try:
        endpoint.relay_required = True
        local = endpoint.new_local_uri()
        peer = parse_msrp_uri("msrp://peer.example:2855/p;tcp")
        for attempt in (
            lambda: endpoint.local_path(local, via_relay=True),
            lambda: endpoint.create_session([peer], via_relay=True),
            lambda: endpoint.create_session([peer]),  # the default follows relay_required
        ):
            with pytest.raises(MsrpSessionError) as info:
                attempt()
            assert info.value.code == 503
        assert endpoint.create_session([peer], via_relay=False).local_path[0].port
    finally:
        await endpoint.close()


# -- msrps offers ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("path", "tls"),
    [
        (["msrp://gw.example:2855/a;tcp"], False),
        (["msrps://gw.example:2855/a;tcp"], True),
        (["msrps://relay.example:2855/r;tcp", "msrp://gw.example:2855/a;tcp"], True),
        (["MSRPS://relay.example:2855/r;tcp", "msrps://gw.example:2855/a;tcp"], True),
    ],
)
def test_offer_with_an_msrps_path_says_tcp_tls_msrp(path: list[str], tls: bool) -> None:
    offer = build_msrp_offer(address="192.0.2.1", port=2855, path=path, accept_types=["*"])
    assert (" TCP/TLS/MSRP *" in offer.to_bytes().decode()) is tls
    media = find_msrp_media(parse_sdp(offer.to_bytes()))
    assert media is not None and media.tls is tls and media.path == path
    forced = build_msrp_offer(
        address="192.0.2.1", port=2855, path=path, accept_types=["*"], tls=not tls
    )
    assert find_msrp_media(forced).tls is (not tls), "an explicit tls= wins"  # type: ignore[union-attr]


@pytest.fixture(scope="module")
def certs() -> Iterator[dict[str, str]]:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    with tempfile.TemporaryDirectory(prefix="gw-msrps-") as where:
        paths = {name: str(Path(where) / name) for name in ("gw.pem", "gw.key", "ca.pem")}
        cert.cert_chain_pems[0].write_to_path(paths["gw.pem"])
        cert.private_key_pem.write_to_path(paths["gw.key"])
        ca.cert_pem.write_to_path(paths["ca.pem"])
        yield paths


@pytest.fixture
async def msrps_node(
    redis_server: RedisServer, msrp_user: MsrpUser, certs: dict[str, str]
) -> AsyncIterator[Node]:
    cfg = Config()
    with tempfile.TemporaryDirectory(prefix="gw-msrps-state-") as state:
        cfg.node.id = "gw-msrps"
        cfg.node.state_dir = state
        cfg.store.url = redis_server.url
        cfg.sip.listen = ["udp:127.0.0.1:0"]
        cfg.sip.t1, cfg.sip.t2 = 0.1, 0.4
        cfg.msrp.listen = "msrps://127.0.0.1:0;tcp"
        cfg.tls.cert_file, cfg.tls.key_file, cfg.tls.ca_file = (
            certs["gw.pem"],
            certs["gw.key"],
            certs["ca.pem"],
        )
        cfg.mgmt.listen = "127.0.0.1:0"
        cfg.gateway.ruri_rewrite = f"sip:{{user}}@127.0.0.1:{msrp_user.sip_port}"
        cfg.gateway.delivery_timeout = 5
        cfg.validate()
        node = Node(cfg)
        await node.start()
        try:
            yield node
        finally:
            await node.stop()


class _Target:
    def __init__(self, node: Node) -> None:
        self.node = node

    def sip(self, transport: str) -> tuple[str, int]:
        [addr] = [a for a in self.node.bound if a.transport == transport.upper()]
        return addr.host, addr.port


async def test_gateway_on_msrps_offers_tcp_tls_msrp(
    msrps_node: Node, msrp_user: MsrpUser, page: PageUser
) -> None:
    """The msg_to_msrp offer of a node whose MSRP URI is msrps: says TCP/TLS/MSRP, and its
    a=path is that msrps: URI (RFC 4975 §8.1); before the fix it said TCP/MSRP."""
    response = await page.message(_Target(msrps_node), msrp_user.uri("bob"), b"over tls")
    assert response.status == 200
    [invite] = msrp_user.invites
    sdp = invite.request.body.decode()
    assert "m=message " in sdp and " TCP/TLS/MSRP *" in sdp, sdp
    media = find_msrp_media(parse_sdp(invite.request.body))
    assert media is not None and media.tls
    [ours] = media.path
    assert ours.startswith(f"{msrps_node.msrp.uri}".removesuffix(";tcp") + "/"), ours
    assert ours.startswith("msrps://")
    assert [r.body for r in await msrp_user.wait_for(1)] == [b"over tls"]
