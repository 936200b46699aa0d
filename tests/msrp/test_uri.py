"""MSRP URI parsing, canonical form and RFC 4975 §6.1 comparison."""

from __future__ import annotations

import contextlib
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gw.msrp.uri import (
    MsrpUri,
    MsrpUriError,
    format_path,
    new_session_id,
    new_transaction_id,
    parse_msrp_uri,
    parse_path,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "msrp://atlanta.example.com:7654/jshA7weztas;tcp",
            MsrpUri(host="atlanta.example.com", port=7654, session_id="jshA7weztas"),
        ),
        (
            "msrps://alice@intra.example.com;tcp",
            MsrpUri(scheme="msrps", user="alice", host="intra.example.com"),
        ),
        (
            "msrp://[2001:db8::1]:2855/abc;tcp",
            MsrpUri(host="2001:db8::1", port=2855, session_id="abc"),
        ),
        (
            "msrp://192.0.2.1:2855/s1;tcp;foo=bar;flag",
            MsrpUri(
                host="192.0.2.1",
                port=2855,
                session_id="s1",
                params=(("foo", "bar"), ("flag", None)),
            ),
        ),
        (
            "msrp://h.example:1/a/b+c=-_.~;ws",
            MsrpUri(host="h.example", port=1, session_id="a/b+c=-_.~", transport="ws"),
        ),
        (
            "msrp://bob%40x:pw@h:9/s;tcp",
            MsrpUri(user="bob%40x:pw", host="h", port=9, session_id="s"),
        ),
        ("msrp://relay.example.net;tcp", MsrpUri(host="relay.example.net")),
        ("msrp://[::1]/s;tcp", MsrpUri(host="::1", session_id="s")),
    ],
)
def test_parse_and_canonical_round_trip(text: str, expected: MsrpUri) -> None:
    uri = parse_msrp_uri(text)
    assert uri == expected
    assert str(uri) == text
    assert parse_msrp_uri(str(uri)) == uri


def test_scheme_lowercased_rest_preserved() -> None:
    uri = parse_msrp_uri("MSRPS://Host.Example.COM:1/Sid;TCP")
    assert uri.scheme == "msrps" and uri.secure
    assert str(uri) == "msrps://Host.Example.COM:1/Sid;TCP"


def test_ipv6_stored_without_brackets() -> None:
    uri = parse_msrp_uri("msrp://[2001:db8::1]:2855/abc;tcp")
    assert uri.host == "2001:db8::1"
    assert str(uri).startswith("msrp://[2001:db8::1]:2855/")


def test_with_session() -> None:
    uri = parse_msrp_uri("msrp://h:1/old;tcp;x=y")
    assert str(uri.with_session("new")) == "msrp://h:1/new;tcp;x=y"
    assert uri.with_session(None).session_id is None


@pytest.mark.parametrize(
    "text",
    [
        "",
        "sip:alice@example.com",
        "msrp:/h:1/s;tcp",
        "http://h:1/s;tcp",
        "msrp://h:1/s",  # transport is mandatory
        "msrp://h:1/s;",
        "msrp://h:1/;tcp",  # empty session-id
        "msrp://:1/s;tcp",
        "msrp://h:0/s;tcp",
        "msrp://h:65536/s;tcp",
        "msrp://h:/s;tcp",
        "msrp://h:abc/s;tcp",
        "msrp://h:1:2/s;tcp",
        "msrp://[2001:db8::1/s;tcp",
        "msrp://[nonsense]:1/s;tcp",
        "msrp://2001:db8::1:2855/s;tcp",
        "msrp://h:1/s p;tcp",
        "msrp://h:1/s%41;tcp",
        "msrp://h:1/s\u00e9;tcp",
        "msrp://h:1/s;t-c",
        "msrp://h:1/s;tcp;",
        "msrp://h:1/s;tcp;a=b=c",
        "msrp://h:1/s;tcp;a@b",
        "msrp://us er@h:1/s;tcp",
        "msrp://h:1/s@x;tcp",
        "msrp://h%zz:1/s;tcp",
    ],
)
def test_rejects_bad_uris(text: str) -> None:
    with pytest.raises(MsrpUriError):
        parse_msrp_uri(text)


def test_error_is_value_error() -> None:
    assert issubclass(MsrpUriError, ValueError)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"host": ""},
        {"host": "h", "scheme": "sip"},
        {"host": "h", "port": 70000},
        {"host": "h", "transport": ""},
        {"host": "h", "session_id": "a b"},
        {"host": "h;x"},
        {"host": "::zz"},
    ],
)
def test_constructor_validates(kwargs: dict[str, object]) -> None:
    with pytest.raises(MsrpUriError):
        MsrpUri(**kwargs)  # type: ignore[arg-type]


def _m(a: str, b: str) -> bool:
    ua, ub = parse_msrp_uri(a), parse_msrp_uri(b)
    assert ua.matches(ub) == ub.matches(ua)
    return ua.matches(ub)


@pytest.mark.parametrize(
    ("a", "b", "equal"),
    [
        ("msrp://h.example:1/s;tcp", "msrp://h.example:1/s;tcp", True),
        ("MSRP://h.example:1/s;tcp", "msrp://h.example:1/s;tcp", True),
        ("msrp://h.example:1/s;tcp", "msrps://h.example:1/s;tcp", False),
        ("msrp://ATLANTA.Example.com:1/s;tcp", "msrp://atlanta.example.com:1/s;tcp", True),
        ("msrp://%61tlanta.example.com:1/s;tcp", "msrp://atlanta.example.com:1/s;tcp", True),
        ("msrp://[2001:DB8:0::1]:1/s;tcp", "msrp://[2001:db8::1]:1/s;tcp", True),
        ("msrp://[2001:db8::1]:1/s;tcp", "msrp://[2001:db8::2]:1/s;tcp", False),
        ("msrp://h.example:1/s;tcp", "msrp://h.example:2/s;tcp", False),
        # An explicit port never matches a missing one.
        ("msrp://h.example:2855/s;tcp", "msrp://h.example/s;tcp", False),
        ("msrp://h.example/s;tcp", "msrp://h.example/s;tcp", True),
        # Session-id is case-sensitive, and must be present in both or neither.
        ("msrp://h.example:1/abc;tcp", "msrp://h.example:1/ABC;tcp", False),
        ("msrp://h.example:1/abc;tcp", "msrp://h.example:1;tcp", False),
        # Transport is case-insensitive but must match.
        ("msrp://h.example:1/s;TCP", "msrp://h.example:1/s;tcp", True),
        ("msrp://h.example:1/s;tcp", "msrp://h.example:1/s;ws", False),
        # Userinfo and other parameters are ignored.
        ("msrp://alice@h.example:1/s;tcp", "msrp://bob@h.example:1/s;tcp", True),
        ("msrp://h.example:1/s;tcp;a=1", "msrp://h.example:1/s;tcp;b", True),
        ("msrp://h.example:1/s;tcp", "msrp://g.example:1/s;tcp", False),
    ],
)
def test_matches_rfc4975_6_1(a: str, b: str, equal: bool) -> None:
    assert _m(a, b) is equal


def test_parse_path() -> None:
    value = "msrp://relay.example:1/r1;tcp  msrps://[::1]:2/x;tcp\tmsrp://bob.example:3/b;tcp"
    path = parse_path(value)
    assert [u.host for u in path] == ["relay.example", "::1", "bob.example"]
    assert format_path(path) == (
        "msrp://relay.example:1/r1;tcp msrps://[::1]:2/x;tcp msrp://bob.example:3/b;tcp"
    )


@pytest.mark.parametrize("value", ["", "   ", "msrp://a:1/s;tcp bogus", "msrp://a:1/s"])
def test_parse_path_rejects(value: str) -> None:
    with pytest.raises(MsrpUriError):
        parse_path(value)


def test_format_path_rejects_empty() -> None:
    with pytest.raises(MsrpUriError):
        format_path([])


def test_new_session_id() -> None:
    ids = {new_session_id() for _ in range(200)}
    assert len(ids) == 200
    for sid in ids:
        assert len(sid) >= 14  # >= 80 bits at 6 bits per character
        assert re.fullmatch(r"[A-Za-z0-9_-]+", sid)
        assert parse_msrp_uri(f"msrp://h:1/{sid};tcp").session_id == sid


def test_new_transaction_id() -> None:
    ids = {new_transaction_id() for _ in range(200)}
    assert len(ids) == 200
    for tid in ids:
        assert re.fullmatch(r"[A-Za-z0-9]{8,32}", tid)


_HOSTS = st.one_of(
    st.from_regex(r"[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?(\.[a-zA-Z]{2,6}){0,2}", fullmatch=True),
    st.ip_addresses().map(str),
)
_TOKENS = st.from_regex(r"[!#$%&'*+\-.0-9A-Z^_`a-z|~]{1,8}", fullmatch=True)

uris = st.builds(
    MsrpUri,
    scheme=st.sampled_from(["msrp", "msrps"]),
    user=st.none() | st.from_regex(r"[A-Za-z0-9._~!$&'()*+,;=:-]{1,10}", fullmatch=True),
    host=_HOSTS,
    port=st.none() | st.integers(1, 65535),
    session_id=st.none() | st.from_regex(r"[A-Za-z0-9\-._~+=/]{1,24}", fullmatch=True),
    transport=st.sampled_from(["tcp", "TCP", "ws", "sctp"]),
    params=st.lists(st.tuples(_TOKENS, st.none() | _TOKENS), max_size=3).map(tuple),
)


@given(uris)
def test_str_parse_round_trip(uri: MsrpUri) -> None:
    again = parse_msrp_uri(str(uri))
    assert again == uri
    assert again.matches(uri)


@given(st.lists(uris, min_size=1, max_size=4))
def test_path_round_trip(path: list[MsrpUri]) -> None:
    assert parse_path(format_path(path)) == tuple(path)


@given(st.text(max_size=60))
def test_parser_only_raises_uri_error(text: str) -> None:
    with contextlib.suppress(MsrpUriError):
        parse_msrp_uri(text)
