"""The routing policy (gw.gateway.policy), without sockets: default decisions, the key,
its template, the R-URI rewrite and the Python hook."""

from __future__ import annotations

import pytest

from gw.gateway.policy import (
    ANSWER,
    MSG_TO_MSRP,
    OPTIONS,
    REJECT,
    Decision,
    Policy,
    load_hook,
    split_types,
)
from gw.sip.message import Request, parse_message
from gw.sip.sdp import build_msrp_offer
from tests.gateway import hookmod

ALICE = "sip:alice@a.example.com:5070"
BOB = "sip:bob@b.example.com"

AUDIO_SDP = (
    b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
    b"m=audio 49170 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)


def msrp_sdp() -> bytes:
    return build_msrp_offer(
        address="192.0.2.2",
        port=2855,
        path=["msrp://192.0.2.2:2855/s1;tcp"],
        accept_types=["text/plain"],
    ).to_bytes()


def request(
    method: str,
    ruri: str,
    *,
    frm: str,
    to: str,
    body: bytes = b"",
    content_type: str | None = None,
) -> Request:
    lines = [
        f"{method} {ruri} SIP/2.0",
        "Via: SIP/2.0/UDP 192.0.2.9:5060;branch=z9hG4bKtest1",
        f"From: {frm if '<' in frm else '<' + frm + '>'};tag=ft1",
        f"To: <{to}>",
        "Call-ID: policy-test@192.0.2.9",
        f"CSeq: 1 {method}",
        "Max-Forwards: 70",
    ]
    if content_type is not None:
        lines.append(f"Content-Type: {content_type}")
    lines.append(f"Content-Length: {len(body)}")
    msg = parse_message(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    assert isinstance(msg, Request)
    return msg


def message(frm: str = ALICE, to: str = BOB, ruri: str | None = None) -> Request:
    return request("MESSAGE", ruri or to, frm=frm, to=to, body=b"hi", content_type="text/plain")


def invite(frm: str = BOB, to: str = ALICE, body: bytes | None = None) -> Request:
    sdp = msrp_sdp() if body is None else body
    return request(
        "INVITE", to, frm=frm, to=to, body=sdp, content_type="application/sdp" if sdp else None
    )


@pytest.fixture
def policy() -> Policy:
    return Policy(content_types=["text/plain", "text/html"])


# -- default decisions ----------------------------------------------------------------------------
def test_message_runs_msg_to_msrp(policy: Policy) -> None:
    d = policy.decide(message())
    assert d.action == MSG_TO_MSRP
    assert d.key == "alice@a.example.com-bob@b.example.com"
    assert d.content_types == ["text/plain", "text/html"]
    assert d.ruri == BOB, "no rewrite configured: the MESSAGE's R-URI"
    assert d.code == 0


def test_invite_with_msrp_offer_runs_answer(policy: Policy) -> None:
    d = policy.decide(invite())
    assert d.action == ANSWER
    assert d.key == "alice@a.example.com-bob@b.example.com"
    assert d.content_types == ["text/plain", "text/html"]
    # The MESSAGEs we send for this session: From the MSRP user, To the page-mode user.
    assert (d.from_uri, d.to_uri, d.ruri) == (BOB, ALICE, ALICE)


def test_invite_without_sdp_is_488(policy: Policy) -> None:
    d = policy.decide(invite(body=b""))
    assert (d.action, d.code, d.reason) == (REJECT, 488, "No SDP Offer")


def test_invite_with_audio_only_sdp_is_488_with_warning(policy: Policy) -> None:
    d = policy.decide(invite(body=AUDIO_SDP))
    assert (d.action, d.code, d.reason) == (REJECT, 488, "No MSRP Stream")
    assert [h for h, _ in d.headers] == ["Warning"]
    assert d.headers[0][1].startswith("304 ")


def test_invite_with_broken_sdp_is_400(policy: Policy) -> None:
    d = policy.decide(invite(body=b"this is not sdp\r\n"))
    assert (d.action, d.code) == (REJECT, 400)
    assert d.reason.startswith("Bad SDP")
    assert len(d.reason) <= 120


def test_options_is_answered_by_the_gateway(policy: Policy) -> None:
    d = policy.decide(request("OPTIONS", BOB, frm=ALICE, to=BOB))
    assert d.action == OPTIONS


@pytest.mark.parametrize("method", ["SUBSCRIBE", "NOTIFY", "REFER", "INFO", "PUBLISH", "REGISTER"])
def test_other_methods_are_405(policy: Policy, method: str) -> None:
    d = policy.decide(request(method, BOB, frm=ALICE, to=BOB))
    assert (d.action, d.code) == (REJECT, 405)


def test_message_with_unparsable_from_is_400(policy: Policy) -> None:
    req = message()
    req.set("From", "<not a uri")
    d = policy.decide(req)
    assert (d.action, d.code) == (REJECT, 400)


# -- the key ------------------------------------------------------------------------------------
def test_key_is_the_same_for_both_directions(policy: Policy) -> None:
    """MESSAGE alice->bob and INVITE bob->alice land on one session."""
    a = "sip:alice@host"
    b = "sip:bob@host"
    assert policy.decide(message(frm=a, to=b)).key == "alice@host-bob@host"
    assert policy.decide(invite(frm=b, to=a)).key == "alice@host-bob@host"


def test_key_ignores_port_params_display_name_and_host_case(policy: Policy) -> None:
    req = request(
        "MESSAGE",
        "sip:bob@HOST:5080;transport=tcp",
        frm='"Alice" <sip:alice@Host:5070;transport=udp>',
        to="sip:bob@HOST:5080;transport=tcp",
        body=b"x",
        content_type="text/plain",
    )
    assert policy.decide(req).key == "alice@host-bob@host"
    assert policy.decide(invite(frm="sip:bob@host:1", to="sip:alice@HOST:2")).key == (
        "alice@host-bob@host"
    )


def test_key_of_uri_without_user_is_the_host(policy: Policy) -> None:
    assert policy.decide(message(frm="sip:a.example.com", to=BOB)).key == (
        "a.example.com-bob@b.example.com"
    )


def test_key_template_fields() -> None:
    p = Policy(
        content_types=["text/plain"],
        key_template="{page_user}|{page_host}|{msrp_user}|{msrp_host}|{page_aor}|{msrp_aor}",
    )
    assert p.decide(message()).key == (
        "alice|a.example.com|bob|b.example.com|alice@a.example.com|bob@b.example.com"
    )
    # the INVITE's caller is the MSRP side: same fields, same key
    assert p.decide(invite()).key == p.decide(message()).key


def test_key_template_per_page_user_only() -> None:
    p = Policy(content_types=["text/plain"], key_template="{page_user}")
    assert p.decide(message()).key == "alice"
    assert p.decide(message(to="sip:carol@c.example.com")).key == "alice"


# -- R-URI rewrite ----------------------------------------------------------------------------
def test_ruri_rewrite_user_and_host() -> None:
    p = Policy(content_types=["text/plain"], ruri_rewrite="sip:{user}@msrp.example.net;lr")
    d = p.decide(message(ruri="sip:bob@b.example.com:5062;transport=tcp"))
    assert d.ruri == "sip:bob@msrp.example.net;lr"


def test_ruri_rewrite_uri_field() -> None:
    p = Policy(content_types=["text/plain"], ruri_rewrite="{uri}")
    assert p.decide(message(ruri="sip:bob@b.example.com:5062")).ruri == (
        "sip:bob@b.example.com:5062"
    )
    p = Policy(content_types=["text/plain"], ruri_rewrite="sip:{user}-im@{host}")
    assert p.decide(message()).ruri == "sip:bob-im@b.example.com"


def test_ruri_rewrite_does_not_touch_answer_coordinates() -> None:
    p = Policy(content_types=["text/plain"], ruri_rewrite="sip:{user}@elsewhere")
    d = p.decide(invite())
    assert (d.from_uri, d.to_uri, d.ruri) == (BOB, ALICE, ALICE)


# -- the Python hook ----------------------------------------------------------------------------
def test_load_hook_imports_module_function() -> None:
    hook = load_hook("tests.gateway.hookmod:decide")
    assert hook is hookmod.decide


def test_load_hook_errors() -> None:
    with pytest.raises(ModuleNotFoundError):
        load_hook("tests.gateway.no_such_module:decide")
    with pytest.raises(AttributeError):
        load_hook("tests.gateway.hookmod:missing")
    with pytest.raises(TypeError):
        load_hook("tests.gateway.hookmod:not_callable")


def test_hook_overrides_the_default() -> None:
    p = Policy(content_types=["text/plain"], hook=load_hook("tests.gateway.hookmod:decide"))
    d = p.decide(message(to="sip:blocked@b.example.com"))
    assert (d.action, d.code, d.reason) == (REJECT, 403, "Blocked By Hook")
    d = p.decide(invite(to="sip:blocked@a.example.com"))
    assert (d.action, d.code) == (REJECT, 403)
    d = p.decide(message(to="sip:support@b.example.com"))
    assert d == Decision(
        MSG_TO_MSRP,
        key="support-queue",
        content_types=["text/plain"],
        ruri="sip:agent1@support.example.com",
    )


def test_hook_returning_none_falls_back_to_the_default() -> None:
    hook = load_hook("tests.gateway.hookmod:decide")
    p = Policy(content_types=["text/plain"], hook=hook, ruri_rewrite="sip:{user}@x")
    default = Policy(content_types=["text/plain"], ruri_rewrite="sip:{user}@x")
    before = len(hookmod.calls)
    for req in (message(), invite(), invite(body=b""), request("OPTIONS", BOB, frm=ALICE, to=BOB)):
        assert p.decide(req) == default.decide(req)
    assert len(hookmod.calls) == before + 4, "the hook saw every request first"
    # support INVITEs are not overridden (the hook only takes MESSAGEs for it)
    assert p.decide(invite(to="sip:support@a.example.com")).action == ANSWER


def test_split_types() -> None:
    assert split_types("text/plain, text/html  message/cpim") == [
        "text/plain",
        "text/html",
        "message/cpim",
    ]
    assert split_types(" , ") == []
