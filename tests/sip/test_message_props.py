"""Property tests: round trips, stream splitting, and robustness against any input."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Literal

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from gw.sip.framing import FramedError, FramedMessage, KeepAlive, StreamFramer
from gw.sip.message import (
    Limits,
    Request,
    Response,
    SipMessage,
    SipParseError,
    canonical_name,
    parse_message,
)
from gw.sip.uri import NameAddr, SipUri, Via, format_params

TORTURE = sorted((Path(__file__).parent / "torture").glob("*.dat"))
PROPS = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])

ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
TOKEN = ALNUM + "-.!%*_+`'~"
UNRESERVED = ALNUM + "-_.!~*'()"
HEX = "0123456789ABCDEFabcdef"
SURROGATES: tuple[Literal["Cs"]] = ("Cs",)
LINE_CHARS = st.characters(blacklist_categories=SURROGATES, blacklist_characters="\r\n")

# -- strategies -------------------------------------------------------------------

tokens = st.text(TOKEN, min_size=1, max_size=12)
escaped = st.tuples(st.sampled_from(HEX), st.sampled_from(HEX)).map(lambda p: "%" + "".join(p))


def uri_text(chars: str, min_size: int = 1) -> st.SearchStrategy[str]:
    return st.lists(st.sampled_from(chars) | escaped, min_size=min_size, max_size=10).map("".join)


labels = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True)
hostnames = st.lists(labels, min_size=1, max_size=4).map(".".join)
hosts = hostnames | st.ip_addresses(v=4).map(str) | st.ip_addresses(v=6).map(str)
ports = st.none() | st.integers(0, 65535)
param_names = st.text("abcdefghijklmnopqrstuvwxyz0123456789-._!*+~", min_size=1, max_size=8)
uri_param_values = st.none() | uri_text(UNRESERVED + "[]/:&+$")
quoted = st.text(LINE_CHARS, max_size=10).map(
    lambda t: '"' + t.replace("\\", "\\\\").replace('"', '\\"') + '"'
)
gen_values = st.none() | tokens | quoted


@st.composite
def sip_uris(draw: st.DrawFn, *, headers: bool = False) -> SipUri:
    user = draw(st.none() | uri_text(UNRESERVED + "&=+$,;?/"))
    password = draw(st.none() | uri_text(UNRESERVED + "&=+$,", min_size=0)) if user else None
    params = draw(st.dictionaries(param_names, uri_param_values, max_size=3))
    hdrs = None
    if headers:
        hdrs = draw(
            st.none()
            | st.lists(
                st.tuples(uri_text(UNRESERVED), uri_text(UNRESERVED + "[]/?:+$", min_size=0)),
                min_size=1,
                max_size=3,
            ).map(lambda kv: "&".join(f"{k}={v}" for k, v in kv))
        )
    return SipUri(
        scheme=draw(st.sampled_from(["sip", "sips"])),
        user=user,
        password=password,
        host=draw(hosts),
        port=draw(ports),
        params=params,
        headers=hdrs,
    )


other_uris = st.builds(
    lambda s, o: SipUri(scheme=s, opaque=o),
    st.sampled_from(["tel", "im", "urn", "x-unknown"]),
    uri_text(UNRESERVED + ":/?&=+$,;@", min_size=1),
)

displays = st.none() | st.text(LINE_CHARS, max_size=12)


@st.composite
def name_addrs(draw: st.DrawFn, *, tag: bool | None = None, uri_headers: bool = False) -> NameAddr:
    uri = draw(sip_uris(headers=uri_headers) | other_uris)
    params = draw(st.dictionaries(param_names.filter(lambda n: n != "tag"), gen_values, max_size=2))
    if tag or (tag is None and draw(st.booleans())):
        params["tag"] = draw(tokens)
    return NameAddr(uri=uri, display=draw(displays), params=params)


@st.composite
def vias(draw: st.DrawFn) -> Via:
    params: dict[str, str | None] = {"branch": "z9hG4bK" + draw(tokens)}
    if draw(st.booleans()):
        params["rport"] = draw(st.none() | st.integers(1, 65535).map(str))
    if draw(st.booleans()):
        params["received"] = draw(st.ip_addresses().map(str))
    params.update(draw(st.dictionaries(param_names, gen_values, max_size=2)))
    return Via(
        transport=draw(st.sampled_from(["UDP", "TCP", "TLS", "SCTP", "WS", "WSS"])),
        host=draw(hosts),
        port=draw(ports),
        params=params,
    )


header_values = st.text(LINE_CHARS, max_size=30).filter(lambda v: v == v.strip(" \t"))
extension_names = tokens.map(lambda t: "X-" + t)


def grouped(values: list[str], draw: st.DrawFn) -> list[str]:
    """Spread values over header lines: each line holds one or more comma-joined values."""
    out: list[str] = []
    i = 0
    while i < len(values):
        n = draw(st.integers(1, len(values) - i))
        out.append(", ".join(values[i : i + n]))
        i += n
    return out


@st.composite
def common_headers(draw: st.DrawFn, method: str) -> list[tuple[str, str]]:
    """Vias first (in order, spread over lines), the rest in any order."""
    via_values = [str(v) for v in draw(st.lists(vias(), min_size=1, max_size=4))]
    rest = [
        ("Max-Forwards", str(draw(st.integers(0, 255)))),
        ("From", str(draw(name_addrs(tag=True)))),
        ("To", str(draw(name_addrs()))),
        ("Call-ID", draw(tokens) + draw(st.sampled_from(["", "@"])) + draw(tokens)),
        ("CSeq", f"{draw(st.integers(0, 2**31 - 1))} {method}"),
    ]
    contacts = [str(c) for c in draw(st.lists(name_addrs(uri_headers=True), max_size=3))]
    rest += [("Contact", c) for c in grouped(contacts, draw)]
    rest += draw(st.lists(st.tuples(extension_names, header_values), max_size=4))
    return [("Via", v) for v in grouped(via_values, draw)] + draw(st.permutations(rest))


@st.composite
def requests(draw: st.DrawFn) -> Request:
    method = draw(tokens)
    headers = [(canonical_name(k), v) for k, v in draw(common_headers(method))]
    return Request(
        method=method,
        uri=draw(sip_uris() | other_uris),
        headers=headers,
        body=draw(st.binary(max_size=300)),
    )


@st.composite
def responses(draw: st.DrawFn) -> Response:
    headers = [(canonical_name(k), v) for k, v in draw(common_headers(draw(tokens)))]
    reason = draw(st.text(LINE_CHARS, max_size=20))
    return Response(
        status=draw(st.integers(100, 699)),
        reason=reason,
        headers=headers,
        body=draw(st.binary(max_size=300)),
    )


messages = requests() | responses()

# -- round trips --------------------------------------------------------------------


def expected_headers(msg: SipMessage) -> list[tuple[str, str]]:
    return [h for h in msg.headers if h[0] != "Content-Length"] + [
        ("Content-Length", str(len(msg.body)))
    ]


def assert_same_uri(a: SipUri, b: SipUri) -> None:
    assert a == b
    assert a.params == b.params
    assert str(a) == str(b)


def assert_same_name_addr(a: NameAddr, b: NameAddr) -> None:
    assert_same_uri(a.uri, b.uri)
    assert (a.display, a.params, a.wildcard) == (b.display, b.params, b.wildcard)


@PROPS
@given(messages)
def test_parse_of_serialize_round_trips(msg: Request | Response) -> None:
    data = msg.to_bytes()
    back = parse_message(data)
    assert type(back) is type(msg)
    if isinstance(msg, Request):
        assert isinstance(back, Request)
        assert back.method == msg.method
        assert_same_uri(back.uri, msg.uri)
    else:
        assert isinstance(back, Response)
        assert (back.status, back.reason) == (msg.status, msg.reason)
    assert back.version == "SIP/2.0"
    assert back.headers == expected_headers(msg)
    assert back.body == msg.body
    assert [str(v) for v in back.vias] == [str(v) for v in msg.vias]
    for got, want in zip(back.vias, msg.vias, strict=True):
        assert (got.transport, got.host, got.port, got.params) == (
            want.transport,
            want.host,
            want.port,
            want.params,
        )
    assert_same_name_addr(back.from_, msg.from_)
    assert_same_name_addr(back.to, msg.to)
    for got_c, want_c in zip(back.contacts, msg.contacts, strict=True):
        assert_same_name_addr(got_c, want_c)
    assert back.cseq == msg.cseq
    assert back.to_bytes() == data  # and the serializer is a fixpoint


@PROPS
@given(messages)
def test_stream_round_trip(msg: Request | Response) -> None:
    data = msg.to_bytes()
    (event,) = StreamFramer().feed(data)
    assert isinstance(event, FramedMessage)
    assert event.message.to_bytes() == data


@PROPS
@given(sip_uris(headers=True) | other_uris)
def test_uri_round_trip(uri: SipUri) -> None:
    from gw.sip.uri import parse_uri

    assert_same_uri(parse_uri(str(uri)), uri)


@PROPS
@given(name_addrs(uri_headers=True))
def test_name_addr_round_trip(na: NameAddr) -> None:
    from gw.sip.uri import parse_name_addr

    assert_same_name_addr(parse_name_addr(str(na)), na)


@PROPS
@given(vias())
def test_via_round_trip(via: Via) -> None:
    from gw.sip.uri import parse_via

    back = parse_via(str(via))
    assert (back.transport, back.host, back.port, back.params) == (
        via.transport,
        via.host,
        via.port,
        via.params,
    )
    assert format_params(back.params) == format_params(via.params)


# -- stream splitting ----------------------------------------------------------------


def framed(chunks: list[bytes], limits: Limits | None = None) -> list[bytes | str]:
    """The event sequence, messages as their serialized bytes."""
    framer = StreamFramer(limits)
    out: list[bytes | str] = []
    for chunk in chunks:
        for event in framer.feed(chunk):
            if isinstance(event, FramedMessage):
                out.append(event.message.to_bytes())
            elif isinstance(event, KeepAlive):
                out.append("keepalive")
            else:
                assert isinstance(event, FramedError)
                out.append(f"error {event.error.code} {event.fatal}")
    return out


@PROPS
@given(
    st.lists(messages | st.just(None), min_size=1, max_size=5),
    st.randoms(use_true_random=False),
    st.booleans(),
)
def test_framer_is_independent_of_how_the_stream_is_split(
    items: list[Request | Response | None], rnd: random.Random, lf_only: bool
) -> None:
    parts: list[bytes] = []
    for item in items:
        if item is None:
            parts.append(b"\r\n\r\n")  # keepalive
            continue
        data = item.to_bytes()
        if lf_only:  # bare-LF heads; the body stays as it is
            head, _, body = data.partition(b"\r\n\r\n")
            data = head.replace(b"\r\n", b"\n") + b"\n\n" + body
        parts.append(data)
    stream = b"".join(parts)
    whole = framed([stream])
    assert len(whole) == len(items)
    for got, item in zip(whole, items, strict=True):
        assert got == ("keepalive" if item is None else item.to_bytes())
    cuts = sorted(rnd.sample(range(len(stream) + 1), min(len(stream) + 1, rnd.randint(1, 12))))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    assert framed(chunks) == whole
    assert framed([stream[i : i + 1] for i in range(len(stream))]) == whole


# -- robustness: nothing but SipParseError, whatever the input ---------------------

SMALL = Limits(max_message_size=4096, max_headers=30, max_header_length=512, max_body_size=2048)


def never_crashes(data: bytes) -> None:
    for limits in (Limits(), SMALL):
        for stream in (False, True):
            try:
                parse_message(data, limits, stream=stream)
            except SipParseError as exc:
                assert 400 <= exc.code <= 599
                assert exc.partial is None or isinstance(exc.partial, SipMessage)
        framer = StreamFramer(limits)
        for event in framer.feed(data) + framer.feed(data):
            assert isinstance(event, FramedMessage | FramedError | KeepAlive)


@PROPS
@given(st.binary(max_size=2000))
def test_random_bytes_never_raise_anything_else(data: bytes) -> None:
    never_crashes(data)


sip_alphabet = st.sampled_from(
    [
        b"\r\n",
        b"\n",
        b"\r",
        b" ",
        b"\t",
        b":",
        b";",
        b",",
        b"<",
        b">",
        b'"',
        b"\\",
        b"@",
        b"=",
        b"/",
        b"?",
        b"%",
        b"[",
        b"]",
        b"SIP/2.0",
        b"sip:",
        b"Via: ",
        b"l: ",
        b"CSeq: ",
        b"Content-Length: ",
        b"INVITE ",
        b"0",
        b"9",
        b"\x00",
        b"\xff",
        b"\xc2\xb2",
        b"a",
        b"Z",
    ]
)


@PROPS
@given(st.lists(sip_alphabet, max_size=200).map(b"".join))
def test_sip_looking_noise_never_raises_anything_else(data: bytes) -> None:
    never_crashes(data)


def seeds() -> st.SearchStrategy[bytes]:
    return st.sampled_from([p.read_bytes() for p in TORTURE]) | messages.map(lambda m: m.to_bytes())


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(seeds()))
    for _ in range(draw(st.integers(1, 8))):
        if not data:
            break
        pos = draw(st.integers(0, len(data) - 1))
        kind = draw(st.integers(0, 7))
        if kind == 0:  # flip a byte
            data[pos] = draw(st.integers(0, 255))
        elif kind == 1:  # delete a range
            del data[pos : pos + draw(st.integers(1, 40))]
        elif kind == 2:  # insert something SIP-ish
            data[pos:pos] = draw(sip_alphabet)
        elif kind == 3:  # duplicate a range
            end = pos + draw(st.integers(1, 80))
            data[pos:pos] = data[pos:end]
        elif kind == 4:  # truncate
            del data[pos:]
        elif kind == 5:  # line ends
            data = bytearray(
                data.replace(b"\r\n", draw(st.sampled_from([b"\n", b"\r", b"\r\r\n"])))
            )
        elif kind == 6:  # a huge number somewhere
            data[pos:pos] = b"9" * draw(st.integers(5, 6000))
        else:  # fold a line
            data[pos:pos] = b"\r\n "
    return bytes(data)


@PROPS
@given(mutated())
def test_mutated_messages_never_raise_anything_else(data: bytes) -> None:
    never_crashes(data)


@PROPS
@given(mutated(), st.randoms(use_true_random=False))
def test_mutated_streams_in_pieces_never_raise(data: bytes, rnd: random.Random) -> None:
    framer = StreamFramer(SMALL)
    pos = 0
    while pos < len(data):
        step = rnd.randint(1, 64)
        for event in framer.feed(data[pos : pos + step]):
            assert isinstance(event, FramedMessage | FramedError | KeepAlive)
        pos += step


@PROPS
@given(messages, st.sampled_from(["Via", "From", "To", "Call-ID", "CSeq"]))
def test_dropping_a_mandatory_header_is_a_400(msg: Request | Response, name: str) -> None:
    msg.remove(name)
    assume(msg.headers)
    try:
        parse_message(msg.to_bytes())
    except SipParseError as exc:
        assert exc.code == 400
    else:
        raise AssertionError(f"accepted a message without {name}")
