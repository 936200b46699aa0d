"""Cached parse results: typed views on a message, shared URIs and name-addrs, header names.

The views (`from_`, `vias`, ...) are parsed once per message and must follow every
change made through the message API; the parse caches and fast paths in gw/sip/uri.py
must return exactly what the general parser returns.
"""

from __future__ import annotations

import pytest

from gw.sip import uri as uri_mod
from gw.sip.message import (
    Headers,
    Request,
    SipParseError,
    canonical_name,
    parse_message,
)
from gw.sip.transaction import Address, stamp_via
from gw.sip.uri import parse_name_addr, parse_uri, parse_via

MESSAGE = (
    b"MESSAGE sip:bob@example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bK-1;rport\r\n"
    b"Via: SIP/2.0/TCP proxy.example.com;branch=z9hG4bK-2\r\n"
    b"From: Alice <sip:alice@example.com>;tag=a1\r\n"
    b"To: <sip:bob@example.com>\r\n"
    b"Call-ID: c1@192.0.2.1\r\n"
    b"CSeq: 7 MESSAGE\r\n"
    b"Contact: <sip:alice@192.0.2.1:5070>\r\n"
    b"Content-Type: text/plain\r\n"
    b"Content-Length: 2\r\n"
    b"\r\n"
    b"hi"
)


def parsed() -> Request:
    msg = parse_message(MESSAGE)
    assert isinstance(msg, Request)
    return msg


# -- views on a message --------------------------------------------------------------


def test_views_are_parsed_once() -> None:
    msg = parsed()
    assert msg.from_ is msg.from_
    assert msg.to is msg.to
    assert msg.top_via is msg.top_via
    assert msg.top_via is msg.vias[0]
    assert msg.cseq is msg.cseq
    assert msg.contacts[0] is msg.contacts[0]


def test_list_views_are_copies() -> None:
    msg = parsed()
    msg.vias.clear()
    msg.contacts.append(msg.from_)
    assert len(msg.vias) == 2
    assert len(msg.contacts) == 1


def test_set_add_remove_update_the_views() -> None:
    msg = parsed()
    assert msg.from_.tag == "a1"
    msg.set("From", "<sip:carol@example.com>;tag=c3")
    assert (msg.from_.uri.user, msg.from_.tag) == ("carol", "c3")
    msg.set("f", "<sip:dave@example.com>;tag=d4")  # compact form
    assert msg.from_.tag == "d4"

    assert msg.to.tag is None
    msg.remove("To")
    with pytest.raises(ValueError, match="missing To"):
        _ = msg.to
    msg.add("To", "<sip:bob@example.com>;tag=b2")
    assert msg.to.tag == "b2"

    assert msg.call_id == "c1@192.0.2.1"
    msg.set("Call-ID", "other")
    assert msg.call_id == "other"
    msg.set("CSeq", "8 MESSAGE")
    assert msg.cseq == (8, "MESSAGE")

    assert msg.routes == []
    msg.add("Route", "<sip:p1.example.com;lr>")
    msg.add("Route", "<sip:p2.example.com;lr>", first=True)
    assert [r.uri.host for r in msg.routes] == ["p2.example.com", "p1.example.com"]
    assert msg.record_routes == []
    msg.add("Record-Route", "<sip:rr.example.com;lr>")
    assert [r.uri.host for r in msg.record_routes] == ["rr.example.com"]


def test_via_changes_update_the_views() -> None:
    msg = parsed()
    assert msg.top_via.host == "192.0.2.1"
    msg.remove_first_via()
    assert msg.top_via.host == "proxy.example.com"
    assert [v.host for v in msg.vias] == ["proxy.example.com"]
    msg.add("Via", "SIP/2.0/UDP gw.example.com;branch=z9hG4bK-3", first=True)
    assert [v.host for v in msg.vias] == ["gw.example.com", "proxy.example.com"]
    msg.remove("Via")
    assert msg.vias == []
    with pytest.raises(ValueError, match="no Via"):
        _ = msg.top_via


def test_replacing_the_header_list_drops_the_views() -> None:
    msg = parsed()
    assert msg.from_.tag == "a1"
    msg.headers = [(k, v.replace("tag=a1", "tag=z9")) for k, v in msg.headers]
    assert isinstance(msg.headers, Headers)
    assert msg.from_.tag == "z9"


def test_the_header_list_can_only_change_through_methods_that_drop_the_views() -> None:
    """No call to remember after an edit: Headers has no in-place list operations."""
    msg = parsed()
    assert msg.call_id == "c1@192.0.2.1"
    headers = msg.headers
    for operation in ("append", "insert", "extend", "pop", "clear", "sort", "__setitem__"):
        assert not hasattr(headers, operation), operation
    with pytest.raises(TypeError):
        headers[0] = ("Call-ID", "edited")  # type: ignore[index]
    headers.set("Call-ID", "edited")  # the type's own method, as msg.set
    assert msg.call_id == "edited"
    headers.add("Route", "<sip:p.example.com;lr>")
    assert [r.uri.host for r in msg.routes] == ["p.example.com"]
    headers.remove("Route")
    assert msg.routes == []


def test_messages_sharing_headers_share_their_views() -> None:
    """The views are a function of the header fields, so they live with them."""
    msg = parsed()
    twin = Request(headers=msg.headers, method=msg.method, uri=msg.uri)
    assert twin.from_ is msg.from_
    twin.set("From", "<sip:carol@example.com>;tag=c3")
    assert msg.from_.tag == "c3"


def test_headers_read_as_a_list_of_pairs() -> None:
    msg = parsed()
    headers = msg.headers
    assert headers == list(headers)
    assert headers[0][0] == "Via" and headers[-1][0] == "Content-Length"
    assert headers[:2] == [("Via", v) for v in msg.get_all("Via")]
    assert ("CSeq", "7 MESSAGE") in headers and len(headers) == 9
    assert headers.get("i") == msg.call_id and headers.get_all("v") == msg.get_all("Via")
    assert Headers(headers) == headers and Headers(headers) is not headers


def test_replace_top_via_keeps_the_other_vias() -> None:
    msg = parsed()
    _ = msg.vias  # cached before the change
    stamped = msg.top_via.with_params(received="198.51.100.7", rport="4000")
    msg.replace_top_via(stamped)
    assert msg.get_all("Via")[0] == (
        "SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bK-1;rport=4000;received=198.51.100.7"
    )
    assert msg.top_via is stamped
    assert msg.vias[0] is stamped
    assert msg.vias[1].host == "proxy.example.com"
    # What the cache says is what a fresh parse of the headers says.
    fresh = Request(headers=list(msg.headers), method=msg.method, uri=msg.uri)
    assert [(v.host, v.params) for v in fresh.vias] == [(v.host, v.params) for v in msg.vias]


def test_replace_top_via_with_several_values_in_one_header() -> None:
    msg = Request(headers=[("Via", "SIP/2.0/UDP a;branch=z9hG4bK-1, SIP/2.0/UDP b")])
    msg.replace_top_via(parse_via("SIP/2.0/UDP a;branch=z9hG4bK-1;received=10.0.0.1"))
    assert msg.headers == [
        ("Via", "SIP/2.0/UDP a;branch=z9hG4bK-1;received=10.0.0.1, SIP/2.0/UDP b")
    ]
    assert [v.host for v in msg.vias] == ["a", "b"]


def test_stamp_via_updates_header_and_views() -> None:
    msg = parsed()
    via = stamp_via(msg, Address("UDP", "198.51.100.7", 4000))
    assert (via.received, via.rport) == ("198.51.100.7", 4000)
    assert msg.top_via is via
    assert "rport=4000;received=198.51.100.7" in (msg.get("Via") or "")


def test_views_of_a_partial_message_after_a_parse_error() -> None:
    bad_from = MESSAGE.replace(b"From: Alice <sip:alice@example.com>;tag=a1", b"From: <bad")
    with pytest.raises(SipParseError) as info:
        parse_message(bad_from)
    partial = info.value.partial
    assert partial is not None
    assert partial.top_via.branch == "z9hG4bK-1"  # parsed before From failed
    with pytest.raises(ValueError):
        _ = partial.from_
    assert partial.to.uri.user == "bob"


def test_to_bytes_checks_every_header_for_cr_lf() -> None:
    msg = parsed()
    assert msg.to_bytes().endswith(b"Content-Length: 2\r\n\r\nhi")
    msg.set("Content-Length", "2\r\nX-Injected: 1")  # left out of the output, still refused
    with pytest.raises(ValueError, match="CR/LF"):
        msg.to_bytes()
    msg.remove("Content-Length")
    msg.add("Subject", "a\nb")
    with pytest.raises(ValueError, match="CR/LF"):
        msg.to_bytes()


# -- header names -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "canonical"),
    [
        ("call-id", "Call-ID"),
        ("CALL-ID", "Call-ID"),
        ("i", "Call-ID"),
        ("I", "Call-ID"),
        ("v", "Via"),
        ("x-custom-HEADER", "X-Custom-Header"),
        ("WWW-authenticate", "WWW-Authenticate"),
    ],
)
def test_canonical_names_stay_the_same_when_cached(name: str, canonical: str) -> None:
    assert canonical_name(name) == canonical
    assert canonical_name(name) == canonical  # from the cache


def test_looking_up_an_invalid_name_does_not_make_it_valid() -> None:
    msg = parsed()
    assert msg.get("Bad Name") is None  # canonical_name() of a non-token
    with pytest.raises(SipParseError) as info:
        parse_message(MESSAGE.replace(b"Content-Type:", b"Bad Name: x\r\nContent-Type:"))
    assert info.value.code == 400
    assert info.value.reason.startswith("Malformed Header Line")


# -- shared parse results and fast paths ---------------------------------------------------


def test_parse_results_are_shared_by_text() -> None:
    assert parse_uri("sip:shared@example.com;lr") is parse_uri("sip:shared@example.com;lr")
    untagged = parse_name_addr("<sip:shared@example.com>")
    assert parse_name_addr("<sip:shared@example.com>") is untagged
    # Tagged values are new on every message: not kept, but their URI is shared.
    tagged = parse_name_addr("<sip:shared@example.com>;tag=1")
    assert parse_name_addr("<sip:shared@example.com>;tag=1") is not tagged
    assert tagged.uri is untagged.uri


def test_shared_values_are_not_changed_by_with_methods() -> None:
    uri = parse_uri("sip:keep@example.com")
    assert uri.with_params(transport="tcp").params == {"transport": "tcp"}
    assert parse_uri("sip:keep@example.com").params == {}
    addr = parse_name_addr("<sip:keep@example.com>")
    assert addr.with_tag("t").tag == "t"
    assert parse_name_addr("<sip:keep@example.com>").tag is None


def test_parse_caches_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(uri_mod, "CACHE_MAX", 8)
    for i in range(50):
        parse_uri(f"sip:u{i}@example.com")
        parse_name_addr(f"<sip:n{i}@example.com>")
    uris, name_addrs = uri_mod.cache_sizes()
    assert uris <= 8 and name_addrs <= 8
    assert parse_uri("sip:u49@example.com").user == "u49"


def test_str_is_formatted_once_and_stays_right() -> None:
    uri = parse_uri("SIP:Alice@Example.COM:5060;Transport=TCP")
    assert str(uri) == "sip:Alice@Example.COM:5060;transport=TCP"
    assert str(uri) is str(uri)
    addr = parse_name_addr('"Smith, Alice" <sip:alice@example.com>;TAG=x')
    assert str(addr) == '"Smith, Alice" <sip:alice@example.com>;tag=x'
    assert str(addr.with_tag("y")) == '"Smith, Alice" <sip:alice@example.com>;tag=y'


FAST_PATH_SAMPLES = {
    "uri": [
        "sip:alice@example.com",
        "sips:alice@example.com:5061;transport=tcp;lr",
        "sip:127.0.0.1:5060",
        "sip:+1-212-555-0101@gw.example.com;user=phone",
        "sip:a@h:065535",
        "sip:a@h:65536",
        "sip:a@h;A=B;c=d=e;maddr=[::1]",
        "sip:a@h;x=",
        "sip:a@h;",
    ],
    "name_addr": [
        "<sip:alice@example.com>;tag=1",
        "Alice <sip:alice@example.com>",
        "Alice Smith<sip:alice@example.com:5070;lr>;TAG=X;expires=30",
        '"Alice \\"A\\"" <sip:alice@example.com>',
        '"" <sip:alice@example.com>',
        "<sip:alice@example.com>;tag=",
        "<sip:alice@example.com:99999>",
        "<sip:alice@example.com> ;tag=1",
    ],
    "via": [
        "SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bK-1;rport",
        "sip/2.0/udp host;branch=z9hG4bK-1;received=::1;RPORT=5",
        "SIP/2.0/TCP host:70000;branch=z9hG4bK-1",
        "SIP/2.0/UDP host;branch=",
        "SIP / 2.0 / UDP host : 5060 ; branch = z9hG4bK-1",
    ],
}


def _outcome(parse: object, text: str) -> object:
    try:
        value = parse(text)  # type: ignore[operator]
    except ValueError as exc:
        return ("error", str(exc))
    fields = value.__dataclass_fields__
    return {name: repr(getattr(value, name)) for name in fields}


@pytest.mark.parametrize("text", FAST_PATH_SAMPLES["uri"])
def test_uri_fast_path_matches_the_general_parser(text: str) -> None:
    assert _outcome(parse_uri, text) == _outcome(uri_mod.parse_uri_general, text)


@pytest.mark.parametrize("text", FAST_PATH_SAMPLES["name_addr"])
def test_name_addr_fast_path_matches_the_general_parser(text: str) -> None:
    assert _outcome(parse_name_addr, text) == _outcome(uri_mod.parse_name_addr_general, text)


@pytest.mark.parametrize("text", FAST_PATH_SAMPLES["via"])
def test_via_fast_path_matches_the_general_parser(text: str) -> None:
    assert _outcome(parse_via, text) == _outcome(uri_mod.parse_via_general, text)


def test_equality_and_hash_ignore_the_formatted_text() -> None:
    text = "sip:eq@example.com;lr"
    formatted = parse_uri(text)
    str(formatted)
    fresh = uri_mod.parse_uri_general(text)
    assert formatted == fresh and hash(formatted) == hash(fresh)
    assert repr(formatted) == repr(fresh)
