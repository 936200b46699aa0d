"""SIP URIs, name-addr values, Via values and parameters (gw/sip/uri.py)."""

from __future__ import annotations

import pytest

from gw.sip.uri import (
    SipSyntaxError,
    SipUri,
    format_params,
    parse_name_addr,
    parse_params,
    parse_uint,
    parse_uri,
    parse_via,
    split_commas,
)

# -- URIs --------------------------------------------------------------------------


def test_plain_sip_uri() -> None:
    uri = parse_uri("sip:alice@example.com")
    assert (uri.scheme, uri.user, uri.password, uri.host, uri.port) == (
        "sip",
        "alice",
        None,
        "example.com",
        None,
    )
    assert uri.is_sip
    assert uri.params == {} and uri.headers is None
    assert str(uri) == "sip:alice@example.com"
    assert uri.aor == "sip:alice@example.com"


def test_uri_with_everything() -> None:
    uri = parse_uri("SIPS:alice:secret@Example.COM:5061;transport=TCP;lr;maddr=[::1]?subject=x&h=y")
    assert uri.scheme == "sips"
    assert (uri.user, uri.password) == ("alice", "secret")
    assert (uri.host, uri.port) == ("Example.COM", 5061)
    assert uri.params == {"transport": "TCP", "lr": None, "maddr": "[::1]"}
    assert uri.transport == "tcp"
    assert uri.headers == "subject=x&h=y"
    assert (
        str(uri) == "sips:alice:secret@Example.COM:5061;transport=TCP;lr;maddr=[::1]?subject=x&h=y"
    )
    assert uri.hostport == "Example.COM:5061"


def test_uri_without_user() -> None:
    uri = parse_uri("sip:example.com;lr")
    assert uri.user is None and uri.host == "example.com" and uri.params == {"lr": None}
    assert uri.aor == "sip:example.com"


def test_empty_password_is_kept_apart_from_no_password() -> None:
    assert parse_uri("sip:bob:@h").password == ""
    assert parse_uri("sip:bob@h").password is None


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [
        ("sip:[2001:db8::1]", "2001:db8::1", None),
        ("sip:bob@[2001:db8::1]:5070", "2001:db8::1", 5070),
        ("sip:[::ffff:192.0.2.1]:5060;transport=tcp", "::ffff:192.0.2.1", 5060),
        ("sip:192.0.2.1:5060", "192.0.2.1", 5060),
        ("sip:h:065535", "h", 65535),
    ],
)
def test_hosts_and_ports(text: str, host: str, port: int | None) -> None:
    uri = parse_uri(text)
    assert (uri.host, uri.port) == (host, port)


def test_ipv6_round_trips_with_brackets() -> None:
    uri = parse_uri("sip:bob@[2001:db8::1]:5070;transport=udp")
    assert uri.host_text == "[2001:db8::1]"
    assert str(uri) == "sip:bob@[2001:db8::1]:5070;transport=udp"
    assert parse_uri(str(uri)) == uri


def test_user_part_may_hold_user_unreserved_characters() -> None:
    uri = parse_uri("sip:a;b=c?d/e,f@h.example.com;p=1?x=y")
    assert uri.user == "a;b=c?d/e,f"
    assert uri.params == {"p": "1"}
    assert uri.headers == "x=y"


def test_telephone_user() -> None:
    uri = parse_uri("sip:+1-212-555-0101@gw.example.com;user=phone")
    assert uri.user == "+1-212-555-0101" and uri.params == {"user": "phone"}


@pytest.mark.parametrize(
    ("text", "scheme", "opaque"),
    [
        ("tel:+1-212-555-0101", "tel", "+1-212-555-0101"),
        ("im:alice@example.com", "im", "alice@example.com"),
        ("Unksm:whatever/it?is", "unksm", "whatever/it?is"),
        ("soap.beep://192.0.2.103:3002", "soap.beep", "//192.0.2.103:3002"),
    ],
)
def test_other_schemes_stay_opaque(text: str, scheme: str, opaque: str) -> None:
    uri = parse_uri(text)
    assert not uri.is_sip
    assert (uri.scheme, uri.opaque) == (scheme, opaque)
    assert str(uri) == f"{scheme}:{opaque}"
    assert uri.aor == str(uri)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "sip:",
        "alice@example.com",  # no scheme
        "1sip:a@b",
        "<sip:a@b>",
        "sip:a b@c",
        "sip:a@b c",
        "sip:a@b;x=y z",
        "sip:@h",  # empty user
        'sip:a"b@h',
        "sip:a<b@h",
        "sip:al%zzce@h",  # bad escape
        "sip:a:pa:ss@h",  # ":" not allowed in a password
        "sip:a@",
        "sip:a@h:",
        "sip:a@h:port",
        "sip:a@h:65536",
        "sip:a@h:\u00b2",  # a Unicode digit is not a port
        "sip:a@h:1" + "0" * 5000,
        "sip:a@2001:db8::1",  # bare IPv6
        "sip:a@[2001:db8::1",
        "sip:a@[]",
        "sip:a@[zz::1]",
        "sip:a@[2001:db8::1]x",
        "sip:a@h;",  # empty parameter
        "sip:a@h;;lr",
        "sip:a@h;p=",
        "sip:a@h;p=a,b",
        "sip:a@ex,ample.com",
        "sip:\u00e4@h",  # non-ASCII must be escaped
        "sip:a@h\x00",
        "tel:<123>",
    ],
)
def test_bad_uris(text: str) -> None:
    with pytest.raises(SipSyntaxError):
        parse_uri(text)


def test_uri_equivalence_follows_rfc3261() -> None:
    a = parse_uri("sip:%61lice@EXAMPLE.com;transport=TCP")
    assert a.equivalent(parse_uri("sip:alice@example.com;transport=tcp"))
    assert not a.equivalent(parse_uri("sip:alice@example.com"))  # transport differs
    assert not a.equivalent(parse_uri("sips:alice@example.com;transport=tcp"))
    assert not parse_uri("sip:ALICE@h").equivalent(
        parse_uri("sip:alice@h")
    )  # user is case-sensitive
    assert parse_uri("sip:h:5060").equivalent(parse_uri("sip:h:5060;foo=bar"))
    assert not parse_uri("sip:h").equivalent(parse_uri("sip:h:5060"))


def test_with_params_copies() -> None:
    uri = parse_uri("sip:a@h;lr")
    other = uri.with_params(transport="tls")
    assert other.params == {"lr": None, "transport": "tls"}
    assert uri.params == {"lr": None}


def test_parse_uint() -> None:
    assert parse_uint("0068", 255) == 68
    assert parse_uint("0" * 50 + "7", 10) == 7
    for bad in ("", "-1", "+1", "1.0", " 1", "\u0663", "\u00b2", "256", "9" * 5000):
        with pytest.raises(SipSyntaxError):
            parse_uint(bad, 255)


# -- parameters and comma lists --------------------------------------------------


def test_params_keep_order_and_lowercase_names() -> None:
    params = parse_params('Tag=AbC ; LR ;  q = 0.5;x="a;b"')
    assert params == {"tag": "AbC", "lr": None, "q": "0.5", "x": '"a;b"'}
    assert list(params) == ["tag", "lr", "q", "x"]
    assert format_params({"tag": "AbC", "lr": None}) == ";tag=AbC;lr"


@pytest.mark.parametrize("text", [";", "a;", "a;;b", "=x", "a b=c", 'x="unterminated'])
def test_bad_params(text: str) -> None:
    with pytest.raises(SipSyntaxError):
        parse_params(text)


def test_split_commas_respects_quotes_and_angle_brackets() -> None:
    assert split_commas('"Doe, John" <sip:j@h;a=1,2>;x="p,q", <sip:b@h> , sip:c@h') == [
        '"Doe, John" <sip:j@h;a=1,2>;x="p,q"',
        "<sip:b@h>",
        "sip:c@h",
    ]
    assert split_commas('"a \\" , b" <sip:x@h>, <sip:y@h>') == [
        '"a \\" , b" <sip:x@h>',
        "<sip:y@h>",
    ]
    assert split_commas(" , ,a,, ") == ["a"]
    with pytest.raises(SipSyntaxError):
        split_commas('"open, <sip:a@b>')


# -- name-addr / addr-spec -------------------------------------------------------


def test_name_addr_with_quoted_display_name_containing_escapes_and_commas() -> None:
    na = parse_name_addr(r'"Doe, \"JD\" \\ John" <sip:jd@example.com;transport=tcp>;tag=12;x')
    assert na.display == 'Doe, "JD" \\ John'
    assert na.uri.params == {"transport": "tcp"}
    assert na.params == {"tag": "12", "x": None}
    assert na.tag == "12"
    again = parse_name_addr(str(na))
    assert (again.display, again.uri, again.params) == (na.display, na.uri, na.params)


def test_name_addr_token_display_name() -> None:
    na = parse_name_addr("Alice   Liddell<sip:alice@example.com>")
    assert na.display == "Alice Liddell"
    assert str(na) == "Alice Liddell <sip:alice@example.com>"


def test_name_addr_without_display_name() -> None:
    na = parse_name_addr("  <sip:a@h>  ;  tag = x ")
    assert na.display is None and na.uri.user == "a" and na.tag == "x"


def test_empty_quoted_display_name() -> None:
    na = parse_name_addr('"" <sip:a@h>')
    assert na.display == ""


def test_addr_spec_parameters_belong_to_the_header() -> None:
    na = parse_name_addr("sip:bob@example.com;tag=abc;transport=tcp")
    assert na.uri.params == {}
    assert na.params == {"tag": "abc", "transport": "tcp"}
    assert str(na) == "<sip:bob@example.com>;tag=abc;transport=tcp"


def test_name_addr_with_tel_uri() -> None:
    na = parse_name_addr("<tel:+1-212-555-0101>;tag=1")
    assert na.uri.scheme == "tel" and na.tag == "1"


def test_contact_wildcard() -> None:
    na = parse_name_addr(" * ")
    assert na.wildcard and str(na) == "*"


def test_with_tag() -> None:
    na = parse_name_addr("<sip:a@h>;x=1").with_tag("t1")
    assert na.params == {"x": "1", "tag": "t1"}


def test_quoted_param_values_may_hold_anything_but_crlf() -> None:
    na = parse_name_addr(
        '<sip:a@h>;+sip.instance="<urn:uuid:00000000-0000-1000-8000-000A95A0E128>"'
    )
    assert na.params["+sip.instance"] == '"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>"'


@pytest.mark.parametrize(
    "text",
    [
        "",
        '"unterminated <sip:a@h>',
        '"quoted but no uri"',
        '"a" sip:a@h',
        "<sip:a@h",
        "< sip:a@h>",  # RFC 4475 badaspec
        "<sip:a@h >",
        "Bell, Alexander <sip:a@h>",  # RFC 4475 baddn
        "a@b <sip:a@h>",
        "<sip:a@h> junk",
        "<sip:a@h>;",
        "<sip:a@h>;;",  # RFC 4475 badinv01
        "<sip:a@h>;tag=a b",
        "<sip:a@h>;tag=<x>",
        "<sip:a@h>;tag=",
        "sip:a@h?subject=x",  # RFC 4475 regbadct: needs <>
        "sip:a@h, sip:b@h",
        "sip:a b@h",
    ],
)
def test_bad_name_addrs(text: str) -> None:
    with pytest.raises(SipSyntaxError):
        parse_name_addr(text)


# -- Via ------------------------------------------------------------------------


def test_via_basic() -> None:
    via = parse_via("SIP/2.0/UDP pc33.example.com:5066;branch=z9hG4bK776asdhds;rport")
    assert (via.protocol, via.transport, via.host, via.port) == (
        "SIP/2.0",
        "UDP",
        "pc33.example.com",
        5066,
    )
    assert via.branch == "z9hG4bK776asdhds"
    assert via.wants_rport and via.rport is None
    assert via.sent_by == "pc33.example.com:5066"
    assert str(via) == "SIP/2.0/UDP pc33.example.com:5066;branch=z9hG4bK776asdhds;rport"


def test_via_received_and_rport_values() -> None:
    via = parse_via("SIP/2.0/TCP h;branch=z9hG4bKx;received=192.0.2.7;rport=4711")
    assert via.received == "192.0.2.7" and via.rport == 4711
    marked = via.with_params(received="2001:db8::9", rport="1")
    assert marked.received == "2001:db8::9" and marked.rport == 1
    assert parse_via(str(marked)).received == "2001:db8::9"  # Via received may be bare IPv6


def test_via_rport_that_is_not_a_number() -> None:
    assert parse_via("SIP/2.0/UDP h").with_params(rport="\u00b2").rport is None
    with pytest.raises(SipSyntaxError):
        parse_via("SIP/2.0/UDP h;rport=\u00b2")


def test_via_with_lws_around_slashes_and_colon() -> None:
    via = parse_via("  sip /  2.0 / tls   host.example.com  :  5061 ; branch = z9hG4bKa ; ttl=3 ")
    assert (via.protocol, via.transport, via.host, via.port) == (
        "SIP/2.0",
        "TLS",
        "host.example.com",
        5061,
    )
    assert via.params == {"branch": "z9hG4bKa", "ttl": "3"}


def test_via_ipv6_sent_by() -> None:
    via = parse_via("SIP/2.0/UDP [2001:db8::9]:5070;branch=z9hG4bKz")
    assert (via.host, via.port) == ("2001:db8::9", 5070)
    assert via.sent_by == "[2001:db8::9]:5070"
    via = parse_via("SIP/2.0/UDP [2001:db8::9] : 5070")
    assert via.port == 5070


def test_via_unknown_transport_is_kept() -> None:
    assert parse_via("SIP/2.0/unknown t4.example.com").transport == "UNKNOWN"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "SIP/2.0/UDP",
        "SIP/2.0 UDP host",
        "SIP/2.0/UDP host port",
        "SIP/2.0/UDP host:99999",
        "SIP/2.0/UDP 2001:db8::1",
        "SIP/2.0/UDP host;;",
        "SIP/2.0/UDP host;",
        "SIP/2.0/UDP host;branch=a b",
        "SIP/2.0/UDP host;branch=",
        "SIP/2.0/UDP h\u00e9st",
    ],
)
def test_bad_vias(text: str) -> None:
    with pytest.raises(SipSyntaxError):
        parse_via(text)


def test_sipuri_defaults() -> None:
    uri = SipUri(scheme="sip", host="h")
    assert str(uri) == "sip:h" and uri.transport is None
