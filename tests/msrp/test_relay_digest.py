"""HTTP Digest helpers (gw.msrp.digest) against the RFC examples."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gw.msrp.digest import Challenge, authorization, parse_challenge, supported_algorithm


def _params(header: str) -> dict[str, str]:
    assert header.startswith("Digest ")
    out = {}
    for part in header[len("Digest ") :].split(", "):
        k, _, v = part.partition("=")
        out[k] = v.strip('"')
    return out


def test_rfc2617_example() -> None:
    # RFC 2617 §3.5 (with the published erratum: realm testrealm@host.com, GET)
    ch = parse_challenge(
        'Digest realm="testrealm@host.com", qop="auth,auth-int", '
        'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41"'
    )
    assert ch is not None
    value = authorization(
        ch,
        username="Mufasa",
        password="Circle Of Life",
        method="GET",
        uri="/dir/index.html",
        cnonce="0a4f113b",
        nc=1,
    )
    p = _params(value)
    assert p["response"] == "6629fae49393a05397450978507c4ef1"
    assert p["qop"] == "auth" and p["nc"] == "00000001" and p["cnonce"] == "0a4f113b"
    assert p["opaque"] == "5ccc069c403ebaf9f0171e9517f40e41"
    assert "algorithm" not in p  # not echoed when the server did not send one


@pytest.mark.parametrize(
    ("algorithm", "response"),
    [
        ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
        ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
    ],
)
def test_rfc7616_examples(algorithm: str, response: str) -> None:
    ch = parse_challenge(
        f'Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm={algorithm}, '
        'nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", '
        'opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"'
    )
    assert ch is not None and supported_algorithm(ch)
    value = authorization(
        ch,
        username="Mufasa",
        password="Circle of Life",
        method="GET",
        uri="/dir/index.html",
        cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
        nc=1,
    )
    p = _params(value)
    assert p["response"] == response
    assert p["algorithm"] == algorithm


def _md5(s: str) -> str:
    return hashlib.md5(s.encode()).hexdigest()


def test_rfc2069_without_qop() -> None:
    ch = Challenge(realm="r", nonce="n")
    p = _params(
        authorization(ch, username="u", password="p", method="AUTH", uri="x", cnonce="c", nc=1)
    )
    ha1, ha2 = _md5("u:r:p"), _md5("AUTH:x")
    assert p["response"] == _md5(f"{ha1}:n:{ha2}")
    assert "qop" not in p and "nc" not in p and "cnonce" not in p


def test_md5_sess_and_auth_int() -> None:
    ch = Challenge(realm="r", nonce="n", algorithm="MD5-sess", qop=("auth-int",))
    p = _params(
        authorization(ch, username="u", password="p", method="AUTH", uri="x", cnonce="c", nc=2)
    )
    ha1 = _md5(f"{_md5('u:r:p')}:n:c")
    ha2 = _md5(f"AUTH:x:{_md5('')}")
    assert p["response"] == _md5(f"{ha1}:n:00000002:c:auth-int:{ha2}")
    assert p["qop"] == "auth-int" and p["algorithm"] == "MD5-sess"


def test_quoting_of_user_values() -> None:
    ch = Challenge(realm='re"al\\m', nonce="n", qop=("auth",))
    value = authorization(
        ch, username='a"b', password="p", method="AUTH", uri="x", cnonce="c", nc=1
    )
    assert 'username="a\\"b"' in value
    assert 'realm="re\\"al\\\\m"' in value
    again = parse_challenge(value.replace("username=", "x=", 1))
    assert again is not None and again.realm == 're"al\\m'


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('Digest realm="a", nonce="b"', Challenge("a", "b")),
        ('digest   nonce="b",realm="a" , qop="auth"', Challenge("a", "b", qop=("auth",))),
        (
            "Digest realm=a, nonce=b, stale=TRUE, algorithm=MD5",
            Challenge("a", "b", "MD5", stale=True),
        ),
        ('Digest realm="a", nonce="b", stale="true"', Challenge("a", "b", stale=True)),
        ('Digest realm="a\\"x", nonce="b"', Challenge('a"x', "b")),
        ('Digest realm="a", nonce="b", Basic realm="z"', Challenge("a", "b")),
        ('Digest realm="a", realm="other", nonce="b"', Challenge("a", "b")),
        ('Digest realm="", nonce="b"', Challenge("", "b")),
    ],
)
def test_parse_challenge(value: str, expected: Challenge) -> None:
    assert parse_challenge(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        'Basic realm="a"',
        "Digest",
        'Digest realm="a"',  # no nonce
        'Digest nonce="b"',  # no realm
        'Digest realm="a, nonce="b"',  # unterminated quote
        'Digest realm="a" nonce="b"',  # missing comma
        'Digest realm=, nonce="b"',
        "",
    ],
)
def test_parse_challenge_rejects(value: str) -> None:
    assert parse_challenge(value) is None


def test_supported_algorithm() -> None:
    assert supported_algorithm(Challenge("r", "n", "sha-256-sess", ("auth",)))
    assert not supported_algorithm(Challenge("r", "n", "SHA-1"))
    assert not supported_algorithm(Challenge("r", "n", qop=("auth-conf",)))
    with pytest.raises(ValueError):
        authorization(
            Challenge("r", "n", "AKAv1-MD5"),
            username="u",
            password="p",
            method="AUTH",
            uri="x",
            cnonce="c",
            nc=1,
        )


@given(st.text(max_size=200))
def test_parse_challenge_never_raises(value: str) -> None:
    parse_challenge(value)
    parse_challenge("Digest " + value)
