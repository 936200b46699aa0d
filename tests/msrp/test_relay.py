"""RelayClient (sans-I/O RFC 4976 AUTH) on a fake clock, without sockets or Kamailio.

The stream adapter used by tests (tests/support/relay_link.py) is tested in test_relay_link.py.
"""

from __future__ import annotations

import hashlib
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gw.msrp.frame import Frame, make_response, serialize
from gw.msrp.relay import (
    Authenticated,
    AuthFailed,
    RelayClient,
    RelayError,
    RelayState,
)
from gw.msrp.uri import MsrpUri, parse_msrp_uri

RELAY = MsrpUri(host="relay.example.net", port=2855)
ME = MsrpUri(host="10.0.0.1", port=7000, session_id="me1")
USE = "msrps://relay.example.net:2855/a1b2;tcp"
REALM = "relay.example.net"


def client(expires: int | None = 600, **kw: object) -> RelayClient:
    return RelayClient(RELAY, ME, "alice", "s3cret", expires, cnonce=lambda: "cn0nce", **kw)  # type: ignore[arg-type]


def take_one(c: RelayClient) -> Frame:
    frames = c.frames_to_send()
    assert len(frames) == 1, frames
    return frames[0]


def reply(req: Frame, status: int, *headers: tuple[str, str]) -> Frame:
    resp = make_response(req, status)
    resp.headers += headers
    return resp


def challenge(
    nonce: str = "n1", *, stale: bool = False, algorithm: str | None = None
) -> tuple[str, str]:
    value = f'Digest realm="{REALM}", nonce="{nonce}", qop="auth"'
    if algorithm:
        value += f", algorithm={algorithm}"
    if stale:
        value += ", stale=true"
    return ("WWW-Authenticate", value)


def granted(req: Frame, expires: int | None = 600, use: str = USE) -> Frame:
    headers = [("Use-Path", use)]
    if expires is not None:
        headers.append(("Expires", str(expires)))
    return reply(req, 200, *headers)


def digest_params(req: Frame) -> dict[str, str]:
    value = req.header("Authorization")
    assert value is not None and value.startswith("Digest ")
    return {
        m[1]: m[2] if m[2] is not None else m[3]
        for m in re.finditer(r'(\w+)=(?:"([^"]*)"|([^,\s]+))', value)
    }


def expected_response(p: dict[str, str], password: str = "s3cret", method: str = "AUTH") -> str:
    def md5(s: str) -> str:
        return hashlib.md5(s.encode()).hexdigest()

    ha1 = md5(f"{p['username']}:{REALM}:{password}")
    ha2 = md5(f"{method}:{p['uri']}")
    return md5(f"{ha1}:{p['nonce']}:{p['nc']}:{p['cnonce']}:{p['qop']}:{ha2}")


def authenticate(c: RelayClient, now: float = 0.0, expires: int | None = 600) -> Frame:
    """Run start -> 401 -> AUTH -> 200; return the second AUTH."""
    c.start(now)
    first = take_one(c)
    assert c.receive(reply(first, 401, challenge()), now) == []
    second = take_one(c)
    events = c.receive(granted(second, expires), now)
    assert len(events) == 1 and isinstance(events[0], Authenticated)
    return second


# -- the AUTH exchange ---------------------------------------------------------


def test_first_auth_frame() -> None:
    c = client(expires=900)
    c.start(0.0)
    req = take_one(c)
    assert req.method == "AUTH"
    assert [str(u) for u in req.to_path] == [str(RELAY)]
    assert [str(u) for u in req.from_path] == [str(ME)]
    assert req.header("Authorization") is None
    assert req.header("Expires") == "900"
    assert req.body == b"" and req.content_type is None
    assert b"\r\n\r\n" not in serialize(req)  # no body section at all
    assert c.state is RelayState.AUTHENTICATING


def test_no_expires_header_when_not_requested() -> None:
    c = client(expires=None)
    c.start(0.0)
    assert take_one(c).header("Expires") is None


def test_digest_answer_and_grant() -> None:
    c = client()
    c.start(10.0)
    first = take_one(c)
    assert c.receive(reply(first, 401, challenge("abc")), 10.1) == []
    second = take_one(c)
    assert second.tid != first.tid
    p = digest_params(second)
    assert p["username"] == "alice" and p["realm"] == REALM and p["nonce"] == "abc"
    assert p["uri"] == str(RELAY)  # RFC 4976 §5: the relay's URI, not a path
    assert p["qop"] == "auth" and p["nc"] == "00000001" and p["cnonce"] == "cn0nce"
    assert p["response"] == expected_response(p)

    [ev] = c.receive(granted(second, 300), 10.2)
    assert isinstance(ev, Authenticated)
    assert not ev.refresh and not ev.path_changed
    assert [str(u) for u in ev.use_path] == [USE]
    assert [str(u) for u in ev.path] == [USE, str(ME)]
    assert c.path() == ev.path
    assert ev.expires == 300 and ev.expires_at == pytest.approx(10.1 + 300)
    assert c.state is RelayState.AUTHENTICATED and c.authenticated
    peer = (parse_msrp_uri("msrp://b.example:9/x;tcp"),)
    assert [str(u) for u in c.outbound_to_path(peer)] == [USE, "msrp://b.example:9/x;tcp"]


def test_multi_hop_use_path() -> None:
    c = client()
    c.start(0.0)
    first = take_one(c)
    c.receive(reply(first, 401, challenge()), 0.0)
    two = f"{USE} msrps://r2.example:2855/zz;tcp"
    [ev] = c.receive(granted(take_one(c), 600, two), 0.0)
    assert isinstance(ev, Authenticated)
    assert [str(u) for u in c.path()] == [*two.split(), str(ME)]


def test_relay_that_needs_no_challenge() -> None:
    c = client()
    c.start(0.0)
    [ev] = c.receive(granted(take_one(c)), 0.0)
    assert isinstance(ev, Authenticated)


def test_prefers_strongest_algorithm() -> None:
    c = client()
    c.start(0.0)
    first = take_one(c)
    c.receive(reply(first, 401, challenge("m"), challenge("s", algorithm="SHA-256")), 0.0)
    p = digest_params(take_one(c))
    assert p["nonce"] == "s" and p["algorithm"] == "SHA-256"


def test_path_before_grant_raises() -> None:
    c = client()
    with pytest.raises(RelayError):
        c.path()
    c.start(0.0)
    with pytest.raises(RelayError):
        c.outbound_to_path(())


# -- failures -----------------------------------------------------------------


def test_wrong_password_403() -> None:
    c = client()
    c.start(0.0)
    first = take_one(c)
    c.receive(reply(first, 401, challenge()), 0.0)
    [ev] = c.receive(reply(take_one(c), 403), 0.0)
    assert ev == AuthFailed(403, "Forbidden", False)
    assert c.state is RelayState.FAILED
    assert c.next_refresh(0.0) is None
    assert c.frames_to_send() == []


def test_second_plain_401_is_a_failure() -> None:
    c = client()
    c.start(0.0)
    c.receive(reply(take_one(c), 401, challenge("n1")), 0.0)
    [ev] = c.receive(reply(take_one(c), 401, challenge("n2")), 0.0)
    assert isinstance(ev, AuthFailed) and ev.status == 401
    assert c.frames_to_send() == []


def test_stale_nonce_is_retried_a_bounded_number_of_times() -> None:
    c = client()
    c.start(0.0)
    c.receive(reply(take_one(c), 401, challenge("n1")), 0.0)
    for i in range(2):
        assert c.receive(reply(take_one(c), 401, challenge(f"s{i}", stale=True)), 0.0) == []
    [ev] = c.receive(reply(take_one(c), 401, challenge("s9", stale=True)), 0.0)
    assert isinstance(ev, AuthFailed) and ev.status == 401


@pytest.mark.parametrize(
    "header",
    [None, ("WWW-Authenticate", 'Basic realm="x"'), ("WWW-Authenticate", "Digest garbage")],
)
def test_401_without_usable_challenge(header: tuple[str, str] | None) -> None:
    c = client()
    c.start(0.0)
    req = take_one(c)
    [ev] = c.receive(reply(req, 401, *([header] if header else [])), 0.0)
    assert isinstance(ev, AuthFailed) and ev.status == 401


def test_423_min_expires_retry_once() -> None:
    c = client(expires=5)
    c.start(0.0)
    req = take_one(c)
    assert c.receive(reply(req, 423, ("Min-Expires", "60")), 0.0) == []
    retry = take_one(c)
    assert retry.header("Expires") == "60"
    [ev] = c.receive(reply(retry, 423, ("Min-Expires", "90")), 0.0)
    assert isinstance(ev, AuthFailed) and ev.status == 423


def test_423_max_expires() -> None:
    c = client(expires=99999)
    c.start(0.0)
    c.receive(reply(take_one(c), 423, ("Max-Expires", "3600")), 0.0)
    retry = take_one(c)
    assert retry.header("Expires") == "3600"
    [ev] = c.receive(granted(retry, 3600), 0.0)
    assert isinstance(ev, Authenticated) and ev.expires == 3600


def test_423_without_bound_fails() -> None:
    c = client(expires=5)
    c.start(0.0)
    [ev] = c.receive(reply(take_one(c), 423), 0.0)
    assert isinstance(ev, AuthFailed) and ev.status == 423


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ([("Expires", "60")], "without Use-Path"),
        ([("Use-Path", "http://nope"), ("Expires", "60")], "malformed Use-Path"),
        ([("Use-Path", USE), ("Expires", "0")], "zero lifetime"),
    ],
)
def test_unusable_200(headers: list[tuple[str, str]], reason: str) -> None:
    c = client()
    c.start(0.0)
    [ev] = c.receive(reply(take_one(c), 200, *headers), 0.0)
    assert isinstance(ev, AuthFailed) and ev.status is None and reason in ev.reason


def test_missing_or_bad_expires_falls_back_to_requested() -> None:
    for value in (None, "soon", "-5", "\u00b2", "1" * 11):
        c = client(expires=120)
        c.start(0.0)
        headers = [("Use-Path", USE)] + ([("Expires", value)] if value else [])
        [ev] = c.receive(reply(take_one(c), 200, *headers), 0.0)
        assert isinstance(ev, Authenticated) and ev.expires == 120


def test_no_expires_anywhere_means_no_refresh() -> None:
    c = client(expires=None)
    c.start(0.0)
    [ev] = c.receive(granted(take_one(c), None), 0.0)
    assert isinstance(ev, Authenticated) and ev.expires is None and ev.expires_at is None
    assert c.next_refresh(5.0) is None
    assert c.on_timer(1e9) == []


def test_response_timeout() -> None:
    c = client(response_timeout=30.0)
    c.start(100.0)
    take_one(c)
    assert c.next_refresh(100.0) == 130.0
    assert c.on_timer(129.9) == []
    [ev] = c.on_timer(130.0)
    assert ev == AuthFailed(408, "no response to AUTH", False)


def test_start_again_after_failure() -> None:
    c = client()
    c.start(0.0)
    c.receive(reply(take_one(c), 500), 0.0)
    assert c.state is RelayState.FAILED
    c.start(1.0)
    first = take_one(c)
    c.receive(reply(first, 401, challenge()), 1.0)
    [ev] = c.receive(granted(take_one(c)), 1.0)
    assert isinstance(ev, Authenticated)


def test_ignores_foreign_and_late_frames() -> None:
    c = client()
    c.start(0.0)
    first = take_one(c)
    c.receive(reply(first, 401, challenge()), 0.0)
    second = take_one(c)
    late = reply(first, 200, ("Use-Path", USE))
    assert c.handles(late) and c.receive(late, 0.0) == []  # answered already
    other = make_response(Frame.request("SEND", [ME], [RELAY], tid="othertid1"), 200)
    assert not c.handles(other) and c.receive(other, 0.0) == []
    request = Frame.request("SEND", [ME], [RELAY], tid=second.tid)
    assert not c.handles(request) and c.receive(request, 0.0) == []
    assert c.state is RelayState.AUTHENTICATING
    [ev] = c.receive(granted(second), 0.0)
    assert isinstance(ev, Authenticated)


def test_unreadable_answer_fails_at_once() -> None:
    c = client()
    c.start(0.0)
    req = take_one(c)
    assert c.receive_unreadable("someothertid", "malformed header") == []
    assert c.receive_unreadable(None, "malformed start line") == []
    [ev] = c.receive_unreadable(req.tid, "malformed header")
    assert isinstance(ev, AuthFailed) and ev.status is None and "malformed header" in ev.reason


def test_close_stops_everything() -> None:
    c = client()
    authenticate(c)
    c.close()
    assert c.state is RelayState.CLOSED
    assert c.on_timer(1e9) == [] and c.frames_to_send() == []
    with pytest.raises(RelayError):
        c.start(0.0)


# -- refresh ------------------------------------------------------------------


def test_refresh_reuses_nonce_and_keeps_path() -> None:
    c = client(expires=100)
    authenticate(c, now=0.0, expires=100)
    assert c.next_refresh(1.0) == pytest.approx(80.0)
    assert c.on_timer(79.0) == [] and c.frames_to_send() == []
    assert c.on_timer(80.0) == []
    refresh = take_one(c)
    assert c.state is RelayState.REFRESHING and c.authenticated  # path still usable
    p = digest_params(refresh)
    assert p["nonce"] == "n1" and p["nc"] == "00000002"  # preemptive, one round trip
    assert p["response"] == expected_response(p)
    assert refresh.header("Expires") == "100"
    [ev] = c.receive(granted(refresh, 100), 80.5)
    assert isinstance(ev, Authenticated) and ev.refresh and not ev.path_changed
    assert ev.expires_at == pytest.approx(180.0)
    assert c.next_refresh(81.0) == pytest.approx(160.0)


def test_refresh_with_new_use_path() -> None:
    c = client(expires=100)
    authenticate(c, expires=100)
    c.on_timer(80.0)
    [ev] = c.receive(granted(take_one(c), 100, "msrps://relay.example.net:2855/new;tcp"), 80.0)
    assert isinstance(ev, Authenticated) and ev.refresh and ev.path_changed


def test_refresh_compares_use_path_uri_by_uri_rfc_4975_6_1() -> None:
    """The case of host and transport is no new path; the session-id's case and a port
    given or left out are (gw.msrp.connection.same_path)."""
    c = client(expires=100)
    authenticate(c, expires=100)  # Use-Path msrps://relay.example.net:2855/a1b2;tcp
    now = 80.0
    for use, changed in [
        ("msrps://RELAY.example.NET:2855/a1b2;TCP", False),
        ("msrps://relay.example.net:2855/A1B2;tcp", True),
        ("msrps://relay.example.net/A1B2;tcp", True),
    ]:
        c.on_timer(now)
        [ev] = c.receive(granted(take_one(c), 100, use), now)
        assert isinstance(ev, Authenticated) and ev.path_changed is changed, use
        now += 80.0


def test_refresh_answers_a_fresh_challenge() -> None:
    c = client(expires=100)
    authenticate(c, expires=100)
    c.on_timer(80.0)
    refresh = take_one(c)
    # the relay forgot the nonce: even a non-stale 401 gets one answer per cycle
    assert c.receive(reply(refresh, 401, challenge("n2")), 80.0) == []
    p = digest_params(take_one(c))
    assert p["nonce"] == "n2" and p["nc"] == "00000001"


def test_refresh_stale_then_grant() -> None:
    c = client(expires=100)
    authenticate(c, expires=100)
    c.on_timer(80.0)
    assert c.receive(reply(take_one(c), 401, challenge("n2", stale=True)), 80.0) == []
    [ev] = c.receive(granted(take_one(c), 100), 80.0)
    assert isinstance(ev, Authenticated) and ev.refresh


def test_refresh_not_answered_before_expiry() -> None:
    c = client(expires=10, response_timeout=30.0)
    authenticate(c, expires=10)
    c.on_timer(8.0)
    take_one(c)
    assert c.next_refresh(8.0) == pytest.approx(10.0)  # expiry comes before the timeout
    [ev] = c.on_timer(10.0)
    assert isinstance(ev, AuthFailed) and ev.was_authenticated and ev.status is None
    with pytest.raises(RelayError):
        c.path()


def test_refresh_refused() -> None:
    c = client(expires=10)
    authenticate(c, expires=10)
    c.on_timer(8.0)
    [ev] = c.receive(reply(take_one(c), 403), 8.1)
    assert ev == AuthFailed(403, "Forbidden", True)


def test_connection_lost() -> None:
    c = client()
    assert c.connection_lost() == []
    authenticate(c)
    [ev] = c.connection_lost()
    assert isinstance(ev, AuthFailed) and ev.was_authenticated
    assert c.connection_lost() == []


def test_constructor_validation() -> None:
    with pytest.raises(ValueError):
        RelayClient(RELAY, ME, "a\r\nb", "p")
    with pytest.raises(ValueError):
        RelayClient(RELAY, ME, "a", "p", refresh_ratio=1.0)
    with pytest.raises(ValueError):
        RelayClient(RELAY, ME, "a", "p", 0)


# -- peer input never raises -----------------------------------------------------

_header_names = st.sampled_from(
    ["WWW-Authenticate", "Use-Path", "Expires", "Min-Expires", "Max-Expires", "X"]
)
_values = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=80
) | st.sampled_from([USE, 'Digest realm="r", nonce="n", qop="auth"', "0", "60", "99999999999"])


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([200, 401, 403, 423, 481, 500, 0, 999]),
            st.lists(st.tuples(_header_names, _values), max_size=4),
        ),
        max_size=6,
    )
)
def test_random_responses_never_raise(script: list[tuple[int, list[tuple[str, str]]]]) -> None:
    c = client(expires=30)
    c.start(0.0)
    now = 0.0
    for status, headers in script:
        frames = c.frames_to_send()
        if not frames:
            now += 100.0
            c.on_timer(now)
            frames = c.frames_to_send()
            if not frames:
                break
        resp = make_response(frames[-1], 200)
        resp.status, resp.headers = status, resp.headers + headers
        for ev in c.receive(resp, now):
            assert isinstance(ev, Authenticated | AuthFailed)
        if c.authenticated:
            assert c.path()[-1] == ME
