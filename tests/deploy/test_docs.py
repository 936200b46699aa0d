"""The new docs hold up: the worked example of docs/coming-from-opensips.md is a valid config
and a working routing hook, and relative links of the deployment docs resolve."""

from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path

import pytest

from gw.config import load_config
from gw.gateway.policy import ANSWER, MSG_TO_MSRP, Policy
from gw.sip.message import Request, parse_message
from tests.deploy.helpers import REPO

DOCS = REPO / "docs"
NEW_DOCS = ("architecture.md", "coming-from-opensips.md", "deployment.md")
SDP = (
    b"v=0\r\no=- 1 1 IN IP4 192.0.2.7\r\ns=-\r\nc=IN IP4 192.0.2.7\r\nt=0 0\r\n"
    b"m=message 2855 TCP/MSRP *\r\na=accept-types:text/plain\r\n"
    b"a=path:msrp://192.0.2.7:2855/s1;tcp\r\n"
)


def blocks(doc: str, language: str) -> list[str]:
    text = (DOCS / doc).read_text()
    return re.findall(rf"^```{language}\n(.*?)^```$", text, re.M | re.S)


def request(method: str, ruri: str, frm: str, to: str, body: bytes, ctype: str) -> Request:
    head = (
        f"{method} {ruri} SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 192.0.2.7:5060;branch=z9hG4bK1\r\n"
        f"From: <{frm}>;tag=a1\r\nTo: <{to}>\r\nCall-ID: c1\r\nCSeq: 1 {method}\r\n"
        f"Max-Forwards: 70\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    msg = parse_message(head.encode() + body)
    assert isinstance(msg, Request)
    return msg


@pytest.fixture
def hook_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    [code] = blocks("coming-from-opensips.md", "python")
    (tmp_path / "mypolicy.py").write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("mypolicy", None)
    importlib.invalidate_caches()
    return "mypolicy:decide"


def test_worked_example_config_loads(tmp_path: Path, hook_module: str) -> None:
    config, hook_part = blocks("coming-from-opensips.md", "toml")
    path = tmp_path / "gw.toml"
    path.write_text(config)
    cfg = load_config(path, env={})
    g = cfg.gateway
    assert (g.hash_size, g.cleanup_interval, g.session_timeout, g.message_timeout) == (
        16,
        60,
        7200,
        3600,
    ), "the admin guide's modparams"
    assert hook_part.strip() == f'[gateway]\nrouting_hook = "{hook_module}"'
    with_hook = load_config(path, env={"MSRPGW_GATEWAY__ROUTING_HOOK": hook_module})
    assert with_hook.gateway.routing_hook == hook_module


def test_worked_example_hook_matches_the_script(hook_module: str) -> None:
    from gw.gateway.policy import load_hook

    hook = load_hook(hook_module)
    default = Policy(content_types=["text/plain"])
    message = request(
        "MESSAGE",
        "sip:bob@opensips.org",
        "sip:alice@opensips.org",
        "sip:bob@opensips.org",
        b"hi",
        "text/plain",
    )
    invite = request(
        "INVITE",
        "sip:alice@10.0.0.10:5060",
        "sip:bob@opensips.org",
        "sip:alice@opensips.org",
        SDP,
        "application/sdp",
    )
    ours = hook(message)
    assert ours is not None and ours.action == MSG_TO_MSRP
    assert ours.key == "alice@opensips.org-bob@opensips.org", "the admin guide's MI example key"
    assert ours.key == default.decide(message).key
    assert ours.ruri == "sip:bob@opensips.org"
    answered = hook(invite)
    assert answered is not None and answered.action == ANSWER
    assert answered.key == ours.key == default.decide(invite).key, "both directions correlate"
    assert (answered.from_uri, answered.to_uri) == (
        "sip:bob@opensips.org",
        "sip:alice@opensips.org",
    )
    assert answered.ruri == "sip:alice@10.0.0.10:5060", "$ru, where the default uses the To URI"
    assert default.decide(invite).ruri == "sip:alice@opensips.org"
    options = request("OPTIONS", "sip:gw@10.0.0.10", "sip:lb@x", "sip:gw@x", b"", "text/plain")
    assert hook(options) is None


def test_relative_links_resolve() -> None:
    for name in NEW_DOCS:
        text = (DOCS / name).read_text()
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
            if "://" in target:
                continue
            assert (DOCS / target).resolve().exists(), f"{name}: broken link {target}"
        for path in re.findall(r"`((?:deploy|k8s|tests|gw)/[\w./-]+)`", text):
            assert (REPO / path).exists(), f"{name}: {path} does not exist"
