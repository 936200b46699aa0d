"""Tests for gw.sip.sdp: SDP parsing, the MSRP view, MIME negotiation and offer/answer."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gw.sip.sdp import (
    Connection,
    MediaDescription,
    MsrpMedia,
    Origin,
    SdpError,
    SessionDescription,
    answer_setup,
    build_msrp_answer,
    build_msrp_offer,
    find_msrp_media,
    mime_matches,
    msrp_media,
    negotiate_types,
    parse_sdp,
    we_connect,
)


def sdp(*lines: str, eol: str = "\r\n") -> bytes:
    return (eol.join(lines) + eol).encode()


HEAD = ("v=0", "o=- 1 1 IN IP4 192.0.2.1", "s=-", "c=IN IP4 192.0.2.1", "t=0 0")

# Shaped like the RFC 4975 §10 basic-session example.
RFC4975_OFFER = sdp(
    "v=0",
    "o=alice 2890844526 2890844527 IN IP4 alice.example.com",
    "s= -",
    "c=IN IP4 alice.example.com",
    "t=0 0",
    "m=message 7654 TCP/MSRP *",
    "a=accept-types:text/plain",
    "a=path:msrp://alice.example.com:7654/jshA7weztas;tcp",
)

# Shaped like OpenSIPS' MSRP reference offer: nothing beyond m=, accept-types, path.
OPENSIPS_OFFER = sdp(
    "v=0",
    "o=- 3781452650 3781452650 IN IP4 10.0.0.5",
    "s=-",
    "c=IN IP4 10.0.0.5",
    "t=0 0",
    "m=message 2855 TCP/MSRP *",
    "a=accept-types:text/plain",
    "a=path:msrp://10.0.0.5:2855/s3ss10n;tcp",
)

AUDIO_AND_MESSAGE = sdp(
    *HEAD,
    "m=audio 49170 RTP/AVP 0 8",
    "a=rtpmap:0 PCMU/8000",
    "m=message 9000 TCP/MSRP *",
    "a=accept-types:message/cpim text/plain",
    "a=accept-wrapped-types:text/plain image/*",
    "a=max-size:65536",
    "a=path:msrp://192.0.2.1:9000/abc;tcp",
)

TLS_OFFER = sdp(
    *HEAD,
    "m=message 2856 TCP/TLS/MSRP *",
    "a=accept-types:*",
    "a=path:msrps://192.0.2.1:2856/t1s;tcp",
    "a=setup:actpass",
    "a=msrp-cema",
    "a=sendonly",
)

IPV6_OFFER = sdp(
    "v=0",
    "o=bob 7 7 IN IP6 2001:db8::1",
    "s=-",
    "c=IN IP6 2001:db8::1",
    "t=0 0",
    "m=message 2855 TCP/MSRP *",
    "a=accept-types:text/plain",
    "a=path:msrp://[2001:db8::1]:2855/v6;tcp",
)

RELAY_OFFER = sdp(
    *HEAD,
    "m=message 2855 TCP/TLS/MSRP *",
    "a=accept-types:text/plain",
    "a=path:msrps://relay.example.net:2855/r1;tcp msrps://alice.example.com:9/a1;tcp",
)


# --- parsing -----------------------------------------------------------------------------


def test_parse_rfc4975_offer() -> None:
    d = parse_sdp(RFC4975_OFFER)
    assert d.version == 0
    assert d.origin == Origin("alice", "2890844526", "2890844527", "IN", "IP4", "alice.example.com")
    assert d.session_name == " -"
    assert d.connection == Connection("IN", "IP4", "alice.example.com")
    assert d.timing == [(0, 0)]
    [m] = d.media
    assert (m.media, m.port, m.proto, m.fmts) == ("message", 7654, "TCP/MSRP", ["*"])
    assert m.attributes == [
        ("accept-types", "text/plain"),
        ("path", "msrp://alice.example.com:7654/jshA7weztas;tcp"),
    ]
    assert find_msrp_media(d) == MsrpMedia(
        index=0,
        port=7654,
        tls=False,
        path=["msrp://alice.example.com:7654/jshA7weztas;tcp"],
        accept_types=["text/plain"],
        connection_address="alice.example.com",
    )


def test_parse_opensips_minimal_offer() -> None:
    media = find_msrp_media(parse_sdp(OPENSIPS_OFFER))
    assert media is not None
    assert media.path == ["msrp://10.0.0.5:2855/s3ss10n;tcp"]
    assert media.accept_types == ["text/plain"]
    assert (media.setup, media.cema, media.max_size, media.direction) == (
        None,
        False,
        None,
        "sendrecv",
    )


def test_parse_audio_and_message() -> None:
    d = parse_sdp(AUDIO_AND_MESSAGE)
    assert [m.media for m in d.media] == ["audio", "message"]
    assert d.media[0].fmts == ["0", "8"]
    media = find_msrp_media(d)
    assert media is not None
    assert media.index == 1
    assert media.accept_types == ["message/cpim", "text/plain"]
    assert media.accept_wrapped_types == ["text/plain", "image/*"]
    assert media.max_size == 65536


def test_parse_tls_offer() -> None:
    media = find_msrp_media(parse_sdp(TLS_OFFER))
    assert media is not None
    assert media.tls and media.cema
    assert (media.setup, media.direction, media.accept_types) == ("actpass", "sendonly", ["*"])


def test_parse_ipv6() -> None:
    d = parse_sdp(IPV6_OFFER)
    assert d.connection == Connection("IN", "IP6", "2001:db8::1")
    media = find_msrp_media(d)
    assert media is not None and media.connection_address == "2001:db8::1"


def test_parse_relay_path_keeps_order() -> None:
    media = find_msrp_media(parse_sdp(RELAY_OFFER))
    assert media is not None
    assert media.path == [
        "msrps://relay.example.net:2855/r1;tcp",
        "msrps://alice.example.com:9/a1;tcp",
    ]


def test_lf_only_equals_crlf_and_blank_lines_ignored() -> None:
    lf = RFC4975_OFFER.replace(b"\r\n", b"\n") + b"\n\n"
    assert parse_sdp(lf) == parse_sdp(RFC4975_OFFER)
    assert parse_sdp(RFC4975_OFFER.decode()) == parse_sdp(RFC4975_OFFER)


def test_unknown_and_unmodelled_lines_are_kept() -> None:
    raw = sdp(
        "v=0",
        "o=- 1 1 IN IP4 192.0.2.1",
        "s=-",
        "i=info",
        "c=IN IP4 192.0.2.1",
        "b=AS:64",
        "t=0 0",
        "x=vendor thing",
        "a=tool:gw",
        "m=message 1 TCP/MSRP *",
        "i=chat",
        "c=IN IP4 192.0.2.9/127",
        "b=AS:1",
        "y=other",
        "a=path:msrp://h:1/s;tcp",
    )
    d = parse_sdp(raw)
    assert d.extra == [("i", "info"), ("b", "AS:64"), ("x", "vendor thing")]
    assert d.media[0].extra == [("i", "chat"), ("b", "AS:1"), ("y", "other")]
    assert d.to_bytes() == raw  # canonical input survives byte-for-byte
    media = find_msrp_media(d)
    assert media is not None and media.connection_address == "192.0.2.9"


def test_port_count_and_flag_vs_empty_attribute() -> None:
    d = parse_sdp(sdp(*HEAD, "m=audio 5004/2 RTP/AVP 0", "a=flag", "a=empty:", "a=k:v:w"))
    m = d.media[0]
    assert (m.port, m.port_count) == (5004, 2)
    assert m.attributes == [("flag", None), ("empty", ""), ("k", "v:w")]
    assert parse_sdp(d.to_bytes()) == d


def test_non_utf8_bytes_round_trip() -> None:
    raw = sdp(*HEAD[:2], "s=caf\xe9", *HEAD[3:]).replace(b"caf\xc3\xa9", b"caf\xe9")
    d = parse_sdp(raw)
    assert d.to_bytes() == raw


def test_serialize_uses_crlf_and_rfc_order() -> None:
    d = SessionDescription(
        origin=Origin("u", "1", "2", "IN", "IP4", "h"),
        connection=Connection("IN", "IP4", "h"),
        attributes=[("a1", None)],
        extra=[("k", "clear:x"), ("i", "first")],
        media=[MediaDescription("message", 9, "TCP/MSRP", ["*"], extra=[("b", "AS:1")])],
    )
    assert d.to_bytes() == sdp(
        "v=0",
        "o=u 1 2 IN IP4 h",
        "s=-",
        "i=first",
        "c=IN IP4 h",
        "t=0 0",
        "k=clear:x",
        "a=a1",
        "m=message 9 TCP/MSRP *",
        "b=AS:1",
    )


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\r\n\r\n",
        b"o=- 1 1 IN IP4 h\r\nv=0\r\n",
        b"v=x\r\no=- 1 1 IN IP4 h\r\n",
        b"v=0\r\ns=-\r\n",
        b"v=0\r\no=- 1 IN IP4 h\r\n",
        b"v=0\r\no=- 1 1 IN IP4 h\r\no=- 1 1 IN IP4 h\r\n",
        b"v=0\r\no=- 1 1 IN IP4 h\r\ns=a\r\ns=b\r\n",
        b"v=0\r\no=- 1 1 IN IP4 h\r\nv=0\r\n",
        b"v=0\r\no=- 1 1 IN IP4 h\r\nc=IN IP4\r\n",
        b"v=0\r\no=- 1 1 IN IP4 h\r\nc=IN IP4 h\r\nc=IN IP4 h\r\n",
        b"v=0\r\no=- 1 1 IN IP4 h\r\nt=0\r\n",
        b"v=0\r\no=- 1 1 IN IP4 h\r\nt=now later\r\n",
        b"v=0\r\no=- 1 1 IN IP4 h\r\ngarbage\r\n",
        b"v=0\r\no=- 1 1 IN IP4 h\r\n a=x\r\n",
        b"v=0\r\no=- 1 1 IN IP4 h\r\nm=message\r\n",
        b"v=0\r\no=- 1 1 IN IP4 h\r\nm=message 12 TCP/MSRP\r\nc=IN IP4 h\r\nc=IN IP4 h\r\n",
        b"v=0\r\no=- 1 1 IN IP4 h\r\nm=message 2855 TCP/MSRP\r\nv=0\r\n",
        b"v=0\r\no=- 1 1 IN IP4 h\r\nm=message port TCP/MSRP *\r\n",
        b"v=0\r\no=- 1 1 IN IP4 h\r\nm=message -1 TCP/MSRP *\r\n",
        b"v=0\r\no=- 1 1 IN IP4 h\r\nm=message 70000 TCP/MSRP *\r\n",
        b"v=0\r\no=- 1 1 IN IP4 h\r\nm=message 1/ TCP/MSRP *\r\n",
        b"v=0\r\no=- 1 1 IN IP4 h\r\nm=message \xd9\xa3 TCP/MSRP *\r\n",
        b"v=0\r\no=- 1 1 IN IP4 h\r\nt=" + b"9" * 5000 + b" 0\r\n",
    ],
)
def test_broken_sdp_raises_sdp_error(raw: bytes) -> None:
    with pytest.raises(SdpError):
        parse_sdp(raw)


def test_sdp_error_is_value_error() -> None:
    assert issubclass(SdpError, ValueError)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: setattr(d, "session_name", "a\r\nm=audio 1 RTP/AVP 0"),
        lambda d: setattr(d.origin, "username", "two words"),
        lambda d: setattr(d.origin, "address", ""),
        lambda d: d.attributes.append(("na:me", "v")),
        lambda d: d.attributes.append(("x", "v\nw")),
        lambda d: d.extra.append(("m", "audio 1 RTP/AVP 0")),
        lambda d: d.extra.append(("ab", "x")),
        lambda d: d.media.append(MediaDescription("message", 1, "TCP MSRP", [])),
        lambda d: d.media.append(MediaDescription("a", 1, "b", [], extra=[("c", "x")])),
        lambda d: setattr(d, "session_name", "\ud800"),
    ],
)
def test_serialize_refuses_line_smuggling(mutate: Callable[[SessionDescription], object]) -> None:
    d = parse_sdp(OPENSIPS_OFFER)
    mutate(d)
    with pytest.raises(SdpError):
        d.to_bytes()


def test_round_trip_samples() -> None:
    for raw in (RFC4975_OFFER, OPENSIPS_OFFER, AUDIO_AND_MESSAGE, TLS_OFFER, IPV6_OFFER):
        d = parse_sdp(raw)
        assert d.to_bytes() == raw
        assert parse_sdp(d.to_bytes()) == d


# --- MSRP view ---------------------------------------------------------------------------


def test_find_skips_port_zero_and_non_msrp_message_streams() -> None:
    d = parse_sdp(
        sdp(
            *HEAD,
            "m=audio 4000 RTP/AVP 0",
            "m=message 0 TCP/MSRP *",
            "a=path:msrp://h:1/rejected;tcp",
            "m=message 5060 SIP/TCP null",
            "m=message 4001 TCP/WSS/MSRP *",
            "a=path:msrps://h:1/ws;ws",
            "m=Message 4002 tcp/tls/msrp *",
            "a=PATH:msrps://h:4002/chosen;tcp",
            "m=message 4003 TCP/MSRP *",
            "a=path:msrp://h:4003/later;tcp",
        )
    )
    media = find_msrp_media(d)
    assert media is not None
    assert (media.index, media.tls, media.path) == (4, True, ["msrps://h:4002/chosen;tcp"])


@pytest.mark.parametrize(
    "section",
    [
        ("m=audio 4000 RTP/AVP 0",),
        ("m=message 0 TCP/MSRP *", "a=path:msrp://h:1/s;tcp"),
        ("m=message 4000 TCP/MSRP *", "a=accept-types:text/plain"),
        ("m=message 4000 TCP/MSRP *", "a=path"),
        ("m=message 4000 TCP/MSRP *", "a=path:msrp://h:1/s;tcp", "a=max-size:big"),
        ("m=message 4000 TCP/MSRP *", "a=path:msrp://h:1/s;tcp", "a=max-size"),
        ("m=message 4000 TCP/MSRP *", "a=path:msrp://h:1/s;tcp", "a=setup:sideways"),
    ],
)
def test_find_returns_none_when_nothing_usable(section: tuple[str, ...]) -> None:
    d = parse_sdp(sdp(*HEAD, *section))
    assert find_msrp_media(d) is None
    with pytest.raises(SdpError):
        msrp_media(d, 0)


def test_find_on_empty_sdp_and_bad_index() -> None:
    d = parse_sdp(sdp(*HEAD))
    assert find_msrp_media(d) is None
    with pytest.raises(SdpError):
        msrp_media(d, 0)
    with pytest.raises(SdpError):
        msrp_media(parse_sdp(OPENSIPS_OFFER), -1)


def test_session_level_fallbacks_and_media_overrides() -> None:
    d = parse_sdp(
        sdp(
            *HEAD,
            "a=setup:Passive",
            "a=recvonly",
            "m=message 4000 TCP/MSRP *",
            "a=path:msrp://h:4000/s;tcp  msrp://h:4000/t;tcp",
            "a=accept-types: text/plain  text/html ",
        )
    )
    media = find_msrp_media(d)
    assert media is not None
    assert media.setup == "passive"
    assert media.direction == "recvonly"
    assert media.connection_address == "192.0.2.1"
    assert media.path == ["msrp://h:4000/s;tcp", "msrp://h:4000/t;tcp"]
    assert media.accept_types == ["text/plain", "text/html"]

    d.media[0].attributes += [("setup", "active"), ("inactive", None)]
    d.media[0].connection = Connection("IN", "IP4", "198.51.100.7")
    media = find_msrp_media(d)
    assert media is not None
    assert (media.setup, media.direction, media.connection_address) == (
        "active",
        "inactive",
        "198.51.100.7",
    )


def test_no_connection_line_anywhere() -> None:
    d = parse_sdp(sdp("v=0", "o=- 1 1 IN IP4 h", "s=-", "m=message 1 TCP/MSRP *", "a=path:p"))
    media = find_msrp_media(d)
    assert media is not None and media.connection_address is None


# --- MIME --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "patterns", "expected"),
    [
        ("text/plain", ["text/plain"], True),
        ("Text/Plain", ["text/PLAIN"], True),
        ("text/plain;charset=UTF-8", ["text/plain"], True),
        ("text/plain ; charset=UTF-8", ["text/*"], True),
        ("text/html", ["text/*"], True),
        ("image/png", ["*"], True),
        ("image/png", ["*/*"], True),
        ("image/png", ["text/*", "message/cpim"], False),
        ("text/plain", [], False),
        ("text/plainer", ["text/plain"], False),
        ("textual/plain", ["text/*"], False),
        ("text/*", ["text/plain"], False),
        ("text/*", ["text/*"], True),
        ("", ["*"], False),
        ("garbage", ["*"], False),
        ("text/plain", ["garbage", "/"], False),
        ("text/plain", ["text/plain;charset=utf-8"], True),
    ],
)
def test_mime_matches(content_type: str, patterns: list[str], expected: bool) -> None:
    assert mime_matches(content_type, patterns) is expected


@pytest.mark.parametrize(
    ("offered", "ours", "expected"),
    [
        (["*"], ["text/plain", "message/cpim"], ["text/plain", "message/cpim"]),
        (["text/*"], ["text/plain", "image/png"], ["text/plain"]),
        (["text/plain", "image/png"], ["*"], ["text/plain", "image/png"]),
        (["text/plain", "text/html", "image/png"], ["text/*"], ["text/plain", "text/html"]),
        (["*"], ["text/*"], ["text/*"]),
        (["text/*"], ["*"], ["text/*"]),
        (["image/png"], ["text/plain"], []),
        ([], ["text/plain"], []),
        (["text/plain"], [], []),
        (["Text/Plain"], ["text/plain", "TEXT/plain"], ["text/plain"]),
        (["text/plain", "text/*"], ["text/*"], ["text/plain", "text/*"]),
        (["bogus", "text/plain"], ["bogus", "text/plain"], ["text/plain"]),
        (["message/cpim", "text/x"], ["text/x", "message/cpim"], ["text/x", "message/cpim"]),
    ],
)
def test_negotiate_types(offered: list[str], ours: list[str], expected: list[str]) -> None:
    assert negotiate_types(offered, ours) == expected


# --- connection roles --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("offer", "prefer", "expected"),
    [
        (None, "passive", "passive"),
        (None, "active", "passive"),  # legacy offerer connects regardless
        ("active", "active", "passive"),
        ("passive", "passive", "active"),
        ("actpass", "passive", "passive"),
        ("actpass", "active", "active"),
        ("ACTPASS", "active", "active"),
        ("holdconn", "passive", "holdconn"),
    ],
)
def test_answer_setup(offer: str | None, prefer: str, expected: str) -> None:
    assert answer_setup(offer, prefer) == expected


def test_answer_setup_errors() -> None:
    with pytest.raises(SdpError):
        answer_setup("sideways")
    with pytest.raises(SdpError):
        answer_setup("actpass", prefer="actpass")


# (offer a=setup, answer a=setup, who connects) per RFC 4145 with RFC 4975 defaults.
ROLE_TABLE = [
    (None, None, "offerer"),
    (None, "passive", "offerer"),
    ("active", None, "offerer"),
    ("active", "passive", "offerer"),
    ("actpass", None, "offerer"),
    ("actpass", "passive", "offerer"),
    ("actpass", "active", "answerer"),
    ("passive", "active", "answerer"),
    ("active", "holdconn", None),
    ("passive", "holdconn", None),
    ("actpass", "holdconn", None),
    ("holdconn", "holdconn", None),
]


@pytest.mark.parametrize(("offer", "answer", "connector"), ROLE_TABLE)
def test_we_connect_table(offer: str | None, answer: str | None, connector: str | None) -> None:
    assert we_connect(we_offered=True, offer=offer, answer=answer) is (connector == "offerer")
    assert we_connect(we_offered=False, offer=offer, answer=answer) is (connector == "answerer")


@pytest.mark.parametrize(
    ("offer", "answer"),
    [
        ("active", "active"),
        (None, "active"),
        ("passive", "passive"),
        ("passive", None),  # legacy answerer would wait too: deadlock
        ("actpass", "actpass"),
        ("holdconn", "active"),
        ("active", "bogus"),
    ],
)
def test_we_connect_rejects_impossible_combinations(offer: str | None, answer: str) -> None:
    with pytest.raises(SdpError):
        we_connect(we_offered=True, offer=offer, answer=answer)


@pytest.mark.parametrize("offer", [None, "active", "passive", "actpass", "holdconn"])
@pytest.mark.parametrize("prefer", ["active", "passive"])
def test_answer_setup_is_always_consistent(offer: str | None, prefer: str) -> None:
    answer = answer_setup(offer, prefer)
    we_connect(we_offered=False, offer=offer, answer=answer)  # must not raise


# --- building ----------------------------------------------------------------------------


def test_build_offer_defaults_and_round_trip() -> None:
    offer = build_msrp_offer(
        address="192.0.2.10",
        port=2855,
        path=["msrp://192.0.2.10:2855/gw1;tcp"],
        accept_types=["message/cpim", "text/plain"],
        accept_wrapped_types=["text/plain"],
        max_size=1024,
        session_id=42,
    )
    assert offer.to_bytes() == sdp(
        "v=0",
        "o=msrp-gw 42 42 IN IP4 192.0.2.10",
        "s=-",
        "c=IN IP4 192.0.2.10",
        "t=0 0",
        "m=message 2855 TCP/MSRP *",
        "a=accept-types:message/cpim text/plain",
        "a=accept-wrapped-types:text/plain",
        "a=max-size:1024",
        "a=path:msrp://192.0.2.10:2855/gw1;tcp",
        "a=setup:actpass",
    )
    assert parse_sdp(offer.to_bytes()) == offer
    media = find_msrp_media(parse_sdp(offer.to_bytes()))
    assert media is not None and media.setup == "actpass" and media.max_size == 1024


def test_build_offer_options() -> None:
    offer = build_msrp_offer(
        address="2001:db8::5",
        port=2856,
        path=["msrps://[2001:db8::5]:2856/x;tcp"],
        accept_types=["*"],
        setup=None,
        tls=True,
        cema=True,
        session_id=1,
        session_version=9,
        username="gw",
    )
    assert offer.origin == Origin("gw", "1", "9", "IN", "IP6", "2001:db8::5")
    assert offer.connection == Connection("IN", "IP6", "2001:db8::5")
    media = find_msrp_media(offer)
    assert media is not None
    assert (media.tls, media.cema, media.setup) == (True, True, None)


def test_build_offer_generates_ids() -> None:
    a = build_msrp_offer(address="h", port=1, path=["p"], accept_types=["*"])
    b = build_msrp_offer(address="h", port=1, path=["p"], accept_types=["*"])
    assert a.origin.session_id.isdigit() and a.origin.session_id != b.origin.session_id
    assert a.origin.session_version == a.origin.session_id


@pytest.mark.parametrize(
    "kwargs",
    [
        {"port": 0},
        {"port": 70000},
        {"path": []},
        {"path": ["msrp://h:1/a;tcp msrp://h:1/b;tcp"]},
        {"accept_types": []},
        {"accept_types": ["text/plain text/html"]},
        {"max_size": -1},
        {"setup": "holdconn"},
        {"setup": "bogus"},
    ],
)
def test_build_offer_rejects_bad_arguments(kwargs: dict[str, object]) -> None:
    args: dict[str, object] = {
        "address": "h",
        "port": 1,
        "path": ["msrp://h:1/a;tcp"],
        "accept_types": ["text/plain"],
    }
    with pytest.raises(SdpError):
        build_msrp_offer(**{**args, **kwargs})  # type: ignore[arg-type]


def _answer_for(raw: bytes, **kwargs: object) -> tuple[SessionDescription, MsrpMedia]:
    offer_sdp = parse_sdp(raw)
    offer = find_msrp_media(offer_sdp)
    assert offer is not None
    args: dict[str, object] = {
        "address": "203.0.113.1",
        "port": 2855,
        "path": ["msrp://203.0.113.1:2855/ans;tcp"],
        "accept_types": negotiate_types(offer.accept_types, ["text/plain", "message/cpim"]),
        "session_id": 5,
        "offer_sdp": offer_sdp,
    }
    answer = build_msrp_answer(offer, **{**args, **kwargs})  # type: ignore[arg-type]
    media = find_msrp_media(parse_sdp(answer.to_bytes()))
    assert media is not None
    return answer, media


def test_answer_to_legacy_offer_omits_setup() -> None:
    answer, media = _answer_for(OPENSIPS_OFFER, offer_sdp=None)
    assert media.setup is None and media.accept_types == ["text/plain"]
    assert we_connect(we_offered=False, offer=None, answer=media.setup) is False
    assert answer.to_bytes() == sdp(
        "v=0",
        "o=msrp-gw 5 5 IN IP4 203.0.113.1",
        "s=-",
        "c=IN IP4 203.0.113.1",
        "t=0 0",
        "m=message 2855 TCP/MSRP *",
        "a=accept-types:text/plain",
        "a=path:msrp://203.0.113.1:2855/ans;tcp",
    )


def test_answer_mirrors_tls_direction_and_cema() -> None:
    _, media = _answer_for(TLS_OFFER, cema=True, path=["msrps://203.0.113.1:2855/a;tcp"])
    assert media.tls and media.cema
    assert media.direction == "recvonly"
    assert media.setup == "passive"
    assert media.accept_types == ["text/plain", "message/cpim"]
    _, media = _answer_for(TLS_OFFER, setup="active")
    assert media.setup == "active" and not media.cema  # we did not opt in to CEMA
    _, media = _answer_for(RFC4975_OFFER, cema=True)
    assert not media.cema  # offer did not support CEMA


def test_answer_rejects_other_streams_in_place() -> None:
    answer, media = _answer_for(AUDIO_AND_MESSAGE, max_size=4096)
    assert [(m.media, m.port, m.proto, m.fmts) for m in answer.media] == [
        ("audio", 0, "RTP/AVP", ["0", "8"]),
        ("message", 2855, "TCP/MSRP", ["*"]),
    ]
    assert media.index == 1 and media.max_size == 4096


@pytest.mark.parametrize(
    "kwargs",
    [
        {"offer_sdp": None},  # offer index 1 needs the full offer
        {"tls": True},  # offer is TCP/MSRP
        {"setup": "actpass"},
        {"setup": "active"},  # no a=setup in offer: offerer is active already
        {"accept_types": []},
    ],
)
def test_answer_rejects_bad_arguments(kwargs: dict[str, object]) -> None:
    with pytest.raises(SdpError):
        _answer_for(AUDIO_AND_MESSAGE, **kwargs)


def test_answer_offer_index_out_of_range() -> None:
    offer = find_msrp_media(parse_sdp(AUDIO_AND_MESSAGE))
    assert offer is not None
    with pytest.raises(SdpError):
        build_msrp_answer(
            offer,
            address="h",
            port=1,
            path=["p"],
            accept_types=["*"],
            offer_sdp=parse_sdp(OPENSIPS_OFFER),
        )


def test_offer_answer_roles_end_to_end() -> None:
    offer = build_msrp_offer(address="h", port=1, path=["msrp://h:1/o;tcp"], accept_types=["*"])
    theirs = find_msrp_media(parse_sdp(offer.to_bytes()))
    assert theirs is not None
    answer = build_msrp_answer(
        theirs, address="p", port=2, path=["msrp://p:2/a;tcp"], accept_types=["*"], setup="active"
    )
    got = find_msrp_media(parse_sdp(answer.to_bytes()))
    assert got is not None
    assert we_connect(we_offered=True, offer="actpass", answer=got.setup) is False
    assert we_connect(we_offered=False, offer="actpass", answer=got.setup) is True


# --- property tests ----------------------------------------------------------------------

_TOKEN = st.text(
    st.characters(exclude_categories=["Cs", "Cc", "Zs", "Zl", "Zp"]), min_size=1, max_size=12
).filter(lambda s: not any(c.isspace() for c in s))
_TEXT = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\r\n"))
_INT = st.integers(0, 10**20 - 1)
_ATTR = st.tuples(_TOKEN.filter(lambda s: ":" not in s), st.none() | _TEXT)
_CONN = st.builds(Connection, _TOKEN, _TOKEN, _TOKEN)


def _extras(kinds: str) -> st.SearchStrategy[list[tuple[str, str]]]:
    # Serialization places extras in RFC 4566 order, so generate them already sorted.
    return st.lists(st.tuples(st.sampled_from(kinds), _TEXT)).map(
        lambda xs: sorted(xs, key=lambda kv: kinds.index(kv[0]))
    )


_MEDIA = st.builds(
    MediaDescription,
    media=_TOKEN,
    port=st.integers(0, 65535),
    proto=_TOKEN,
    fmts=st.lists(_TOKEN, max_size=4),
    port_count=st.none() | st.integers(0, 1000),
    connection=st.none() | _CONN,
    attributes=st.lists(_ATTR, max_size=5),
    extra=_extras("ibkxo"),
)
_SESSION = st.builds(
    SessionDescription,
    version=st.integers(0, 9),
    origin=st.builds(Origin, _TOKEN, _TOKEN, _TOKEN, _TOKEN, _TOKEN, _TOKEN),
    session_name=_TEXT,
    connection=st.none() | _CONN,
    timing=st.lists(st.tuples(_INT, _INT), max_size=3),
    attributes=st.lists(_ATTR, max_size=5),
    media=st.lists(_MEDIA, max_size=3),
    extra=_extras("iuepbrzkx"),
)


@given(_SESSION)
def test_round_trip_generated(desc: SessionDescription) -> None:
    raw = desc.to_bytes()
    assert parse_sdp(raw) == desc
    assert parse_sdp(raw.replace(b"\r\n", b"\n")) == desc
    find_msrp_media(desc)  # never raises


_LINES = st.sampled_from(
    [
        "v=0",
        "o=- 1 1 IN IP4 h",
        "s=-",
        "c=IN IP4 h",
        "t=0 0",
        "m=message 2855 TCP/MSRP *",
        "m=message 0 TCP/TLS/MSRP *",
        "m=audio 1/x RTP/AVP",
        "a=path:msrp://h:1/s;tcp",
        "a=accept-types:text/*",
        "a=max-size:",
        "a=setup:",
        "a=setup:holdconn",
        "a=msrp-cema",
        "a=sendonly",
        "x=?",
        "=",
        "",
    ]
)


@given(st.lists(_LINES | _TEXT, max_size=12), st.sampled_from(["\r\n", "\n"]))
def test_parse_only_raises_sdp_error(lines: list[str], eol: str) -> None:
    try:
        d = parse_sdp(eol.join(lines).encode("utf-8", "surrogateescape"))
    except SdpError:
        return
    find_msrp_media(d)
    once = d.to_bytes()  # serialization canonicalises line order, then is a fixed point
    assert parse_sdp(once).to_bytes() == once


@given(st.binary(max_size=300))
def test_parse_arbitrary_bytes(data: bytes) -> None:
    with contextlib.suppress(SdpError):
        parse_sdp(b"v=0\no=- 1 1 IN IP4 h\n" + data)
