"""RFC 4475 torture messages against the SIP parser.

The data files in tests/sip/torture/ are the RFC 4475 messages in their bit-exact
form (named as in the RFC's archive: wsinv.dat, ...): CRLF line ends, <allOneLine>
lines joined, <hex> octets and <repeat> runs expanded (RFC 4475 §2). Every body's
length matches its Content-Length where the RFC means it to (checked below).

Layering: `parse_message` is the syntax layer. Where RFC 4475 expects a response that
depends on what the element supports (416, 420, 415, 406, 401, 483, ...), the parser
accepts the message and the test says which layer answers; where the RFC says the
message is invalid, the parser rejects it with the status the RFC names, attaching
the partial message so that the endpoint can address the error response.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from urllib.parse import unquote

import pytest

from gw.sip.framing import FramedError, FramedMessage, StreamFramer
from gw.sip.message import (
    Limits,
    Request,
    Response,
    SipParseError,
    parse_message,
)
from gw.sip.uri import parse_uint, parse_uri

TORTURE = Path(__file__).parent / "torture"

VALID = [  # §3.1.1
    "wsinv",
    "intmeth",
    "esc01",
    "escnull",
    "esc02",
    "lwsdisp",
    "longreq",
    "dblreq",
    "semiuri",
    "transports",
    "mpart01",
    "unreason",
    "noreason",
]
INVALID = [  # §3.1.2
    "badinv01",
    "clerr",
    "ncl",
    "scalar02",
    "scalarlg",
    "quotbal",
    "ltgtruri",
    "lwsruri",
    "lwsstart",
    "trws",
    "escruri",
    "baddate",
    "regbadct",
    "badaspec",
    "baddn",
    "badvers",
    "mismatch01",
    "mismatch02",
    "bigcode",
]
TRANSACTION = ["badbranch"]  # §3.2
APPLICATION = [  # §3.3
    "insuf",
    "unkscm",
    "novelsc",
    "unksm2",
    "bext01",
    "invut",
    "regaut01",
    "multi01",
    "mcl01",
    "bcast",
    "zeromf",
    "cparam01",
    "cparam02",
    "regescrt",
    "sdp01",
]
BACKWARD = ["inv2543"]  # §3.4
ALL = VALID + INVALID + TRANSACTION + APPLICATION + BACKWARD

SDP_TAIL = b"m=audio 49217 RTP/AVP 0 12\r\nm=video 3227 RTP/AVP 31\r\na=rtpmap:31 LPC\r\n"


def load(name: str) -> bytes:
    return (TORTURE / f"{name}.dat").read_bytes()


def parse(name: str) -> Request | Response:
    """Parse as a datagram (the RFC's messages ostensibly arrive over UDP)."""
    return parse_message(load(name))


def request(name: str) -> Request:
    msg = parse(name)
    assert isinstance(msg, Request)
    return msg


def reject(name: str, *, stream: bool = False) -> SipParseError:
    data = load(name)
    with pytest.raises(SipParseError) as info:
        parse_message(data, stream=stream)
    return info.value


def sdp(ip: str, t: str = "0 0") -> bytes:
    return (
        f"v=0\r\no=mhandley 29739 7272939 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt={t}\r\n"
    ).encode() + SDP_TAIL


# -- the data files themselves ---------------------------------------------------


def test_every_rfc4475_message_is_present() -> None:
    assert sorted(p.stem for p in TORTURE.glob("*.dat")) == sorted(ALL)
    assert len(ALL) == 49


@pytest.mark.parametrize("name", ALL)
def test_data_files_are_crlf_framed(name: str) -> None:
    data = load(name)
    head, sep, _ = data.partition(b"\r\n\r\n")
    assert sep, "every torture message has an empty line after its head"
    assert b"\n" not in head.replace(b"\r\n", b"")  # no bare LF in a head


@pytest.mark.parametrize(
    ("name", "length"),
    [
        ("wsinv", 150),
        ("esc01", 150),
        ("longreq", 150),
        ("mpart01", 553),
        ("unreason", 154),
        ("badinv01", 152),
        ("quotbal", 152),
        ("ltgtruri", 159),
        ("lwsruri", 159),
        ("lwsstart", 150),
        ("escruri", 150),
        ("baddate", 150),
        ("mismatch02", 138),
        ("insuf", 152),
        ("invut", 40),
        ("multi01", 154),
        ("bcast", 154),
        ("sdp01", 150),
    ],
)
def test_reconstruction_matches_content_length(name: str, length: int) -> None:
    """A cross-check of the reconstruction: the body is as long as the RFC says."""
    body = load(name).partition(b"\r\n\r\n")[2]
    assert len(body) == length


# -- §3.1.1 valid messages ----------------------------------------------------------


def test_wsinv_short_tortuous_invite() -> None:
    """§3.1.1.1: folding, escapes in quotes, empty Subject, LWS everywhere, mixed forms."""
    msg = request("wsinv")
    assert msg.method == "INVITE"
    assert msg.version == "SIP/2.0"
    assert (msg.uri.scheme, msg.uri.user, msg.uri.host, msg.uri.port) == (
        "sip",
        "vivekg",
        "chair-dnrc.example.com",
        None,
    )
    assert msg.uri.params == {"unknownparam": None}

    to = msg.to
    assert to.display is None
    assert to.uri.aor == "sip:vivekg@chair-dnrc.example.com"
    assert to.tag == "1918181833n"

    frm = msg.from_
    assert frm.display == 'J Rosenberg \\"'  # "J Rosenberg \\\"" unescaped
    assert frm.uri.aor == "sip:jdrosen@example.com"
    assert frm.params == {"tag": "98asjd8"}

    assert parse_uint(msg.get("Max-Forwards") or "", 255) == 68  # "0068"
    assert msg.call_id == "wsinv.ndaksdj@192.0.2.1"
    assert msg.get("Content-Length") == "150"
    assert msg.cseq == (9, "INVITE")  # "0009\r\n  INVITE" unfolded

    vias = msg.vias  # one Via line and one compact "v" line with two values
    assert [(v.protocol, v.transport, v.host, v.port, v.branch) for v in vias] == [
        ("SIP/2.0", "UDP", "192.0.2.2", None, "390skdjuw"),
        ("SIP/2.0", "TCP", "spindle.example.com", None, "z9hG4bK9ikj8"),
        ("SIP/2.0", "UDP", "192.168.255.111", None, "z9hG4bK30239"),
    ]
    assert [k for k, _ in msg.headers].count("Via") == 2

    assert msg.get("Subject") == ""  # "s :"
    assert msg.get("s") == ""
    assert msg.get("NewFangledHeader") == "newfangled value continued newfangled value"
    assert msg.get("UnknownHeaderWithUnusualValue") == ";;,,;;,;"  # opaque: never split
    assert msg.content_type == "application/sdp"

    (route,) = msg.routes
    assert route.uri.host == "services.example.com"
    assert route.uri.params == {"lr": None, "unknownwith": "value", "unknown-no-value": None}

    (contact,) = msg.contacts  # compact "m"
    assert contact.display == 'Quoted string ""'
    assert contact.uri.aor == "sip:jdrosen@example.com"
    assert contact.params == {"newparam": "newvalue", "secondparam": None, "q": "0.33"}

    assert msg.body == sdp("192.0.2.3").replace(b"c=IN IP4 192.0.2.3", b"c=IN IP4 192.0.2.4")
    assert [k for k, _ in msg.headers] == [
        "To",
        "From",
        "Max-Forwards",
        "Call-ID",
        "Content-Length",
        "CSeq",
        "Via",
        "Subject",
        "Newfangledheader",
        "Unknownheaderwithunusualvalue",
        "Content-Type",
        "Route",
        "Via",
        "Contact",
    ]


def test_intmeth_wide_range_of_valid_characters() -> None:
    """§3.1.1.2: unusual token characters, quoted NUL/BEL/DEL, UTF-8 values."""
    method = "!interesting-Method0123456789_*+`.%indeed'~"
    user = "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    msg = request("intmeth")
    assert msg.method == method  # % is no escape here: an unknown method (501 at the UAS)
    assert msg.uri.user == user  # "?", ";" and "/" belong to the user part
    assert msg.uri.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
    assert msg.uri.host == "example.com"
    assert msg.uri.params == {}
    assert msg.uri.headers is None

    assert msg.top_via.transport == "TCP"
    assert msg.top_via.branch == "z9hG4bK-.!%66*_+`'~"

    to = msg.to
    assert to.display == "BEL:\x07 NUL:\x00 DEL:\x7f"  # quoted-pairs of control characters
    assert to.uri.user == user
    assert to.uri.password is None

    frm = msg.from_
    assert frm.display == "token1~` token2'+_ token3*%!.-"
    assert frm.params == {
        "fromparam''~+*_!.-%": '"работающий"',  # names compare case-insensitively
        "tag": "_token~1'+`*%!-.",
    }
    assert frm.tag == "_token~1'+`*%!-."

    assert msg.call_id == "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"
    assert msg.cseq == (139122385, method)
    assert msg.get("Max-Forwards") == "255"
    assert msg.get("extensionHeader-!.%*+_`'~") == "\ufeff大停電"
    assert msg.body == b""


def test_esc01_valid_use_of_escaping() -> None:
    """§3.1.1.3: % HEX HEX in userparts and URI parameters, never unescaped recursively."""
    msg = request("esc01")
    assert msg.uri.user == "sips%3Auser%40example.com"
    assert unquote(msg.uri.user) == "sips:user@example.com"
    assert msg.uri.host == "example.net"

    assert msg.to.uri.user == "%75se%72"
    assert msg.to.uri.equivalent(parse_uri("sip:user@example.com"))
    assert unquote(msg.from_.uri.user or "") == "I have spaces"
    assert msg.from_.tag == "938"

    assert msg.call_id == "esc01.239409asdfakjkn23onasd0-3234"  # compact "i"
    assert msg.content_type == "application/sdp"  # compact "c"
    (contact,) = msg.contacts
    assert unquote(contact.uri.user or "") == "caller"
    assert contact.uri.params == {"%6c%72": None, "n%61me": "v%61lue%25%34%31"}
    assert unquote(contact.uri.params["n%61me"] or "") == "value%41"  # not "valueA"
    assert msg.body == sdp("192.0.2.1")


def test_escnull_escaped_nulls_in_uris() -> None:
    """§3.1.1.4: %00 in userparts must not shorten the AOR; two distinct contacts."""
    msg = request("escnull")
    assert msg.method == "REGISTER"
    assert msg.to.uri.user == "null-%00-null"
    assert unquote(msg.to.uri.user or "") == "null-\x00-null"
    assert msg.from_.uri.aor == "sip:null-%00-null@example.com"
    first, second = msg.contacts  # two separate Contact header fields
    assert (first.uri.user, second.uri.user) == ("%00", "%00%00")
    assert not first.uri.equivalent(second.uri)
    assert msg.get("Content-Length") == "0"  # "L:0"


def test_esc02_percent_is_not_an_escape_outside_uris() -> None:
    """§3.1.1.5: unknown method RE%47IST%45R; C%6Fntact is not a Contact."""
    msg = request("esc02")
    assert msg.method == "RE%47IST%45R"
    assert msg.method != "REGISTER"  # the UAS answers 501
    assert msg.cseq == (29344, "RE%47IST%45R")
    assert msg.to.display == "%Z%45"
    assert msg.from_.display == "%Z%45"
    assert msg.top_via.branch == "z9hG4bK209%fzsnel234"
    assert [c.uri.user for c in msg.contacts] == ["alias1", "alias3"]
    assert msg.get("C%6Fntact") == "<sip:alias2@host2.example.com>"


def test_lwsdisp_no_lws_between_display_name_and_laquot() -> None:
    """§3.1.1.6: `caller<sip:...>` is accepted (a known RFC 3261 grammar bug)."""
    msg = request("lwsdisp")
    assert msg.from_.display == "caller"
    assert msg.from_.uri.aor == "sip:caller@example.com"
    assert msg.from_.tag == "323"


def test_longreq_long_values_in_header_fields() -> None:
    """§3.1.1.7: long display name, parameters, tag, Call-ID, 34 Vias in many spellings."""
    msg = request("longreq")
    to = msg.to
    assert to.display == "I have a user name of " + "extreme" * 10 + " proportion"
    assert (to.uri.user, to.uri.host, to.uri.port) == ("user", "example.com", 6000)
    assert to.uri.params == {
        "unknownparam1": "very" + "long" * 20 + "value",
        "longparam" + "name" * 25: "shortvalue",
        ("very" + "long" * 25 + "ParameterNameWithNoValue").lower(): None,
    }
    frm = msg.from_  # compact "F"
    assert frm.uri.user == "amazinglylongcallername" * 5
    assert frm.tag == "12" + "982" * 50 + "424"
    assert frm.params["unknownheaderparam" + "name" * 20] == "unknowheaderparam" + "value" * 15
    assert (
        frm.params[
            "unknownvaluelessparamnameparamnameparamnameparamnameparamname"
            "paramnameparamnameparamnameparamnameparamname"
        ]
        is None
    )
    assert msg.call_id == "longreq.one" + "really" * 20 + "longcallid"
    assert msg.get("Unknown-" + "Long" * 20 + "-Name") == (
        "unknown-" + "long" * 20 + "-value; "
        "unknown-" + "long" * 20 + "-parameter-name = "
        "unknown-" + "long" * 20 + "-parameter-value"
    )
    vias = msg.vias
    assert len(vias) == 34
    assert [v.host for v in vias[:33]] == [f"sip{i}.example.com" for i in range(33, 0, -1)]
    assert all(v.transport == "TCP" and v.branch is None for v in vias[:33])
    last = vias[33]
    assert (last.host, last.received) == ("host.example.com", "192.0.2.5")
    assert last.branch == "very" + "long" * 50 + "branchvalue"
    (contact,) = msg.contacts
    assert contact.uri.user == "amazinglylongcallername" * 5
    assert msg.body == sdp("192.0.2.1")


def test_dblreq_extra_octets_after_the_body_of_a_datagram() -> None:
    """§3.1.1.8: the INVITE after the REGISTER's (empty) body is datagram noise."""
    msg = request("dblreq")
    assert msg.method == "REGISTER"
    assert msg.body == b""
    assert msg.call_id == "dblreq.0ha0isndaksdj99sdfafnl3lk233412"  # compact "I"
    assert msg.contacts[0].uri.aor == "sip:j.user@host.example.com"
    assert b"INVITE" not in msg.to_bytes()  # so a forwarded copy cannot carry it


def test_dblreq_on_a_stream_is_two_requests() -> None:
    """On a stream, Content-Length frames: the same octets are two messages."""
    events = StreamFramer().feed(load("dblreq"))
    register, invite = events[0], events[1]
    assert isinstance(register, FramedMessage) and isinstance(invite, FramedMessage)
    assert isinstance(register.message, Request) and register.message.method == "REGISTER"
    assert isinstance(invite.message, Request) and invite.message.method == "INVITE"
    assert len(invite.message.body) == 150


def test_semiuri_semicolon_in_request_uri_user_part() -> None:
    """§3.1.1.9: the user part is "user;par=u@example.net"; no URI parameters."""
    msg = request("semiuri")
    assert msg.uri.user == "user;par=u%40example.net"
    assert unquote(msg.uri.user) == "user;par=u@example.net"
    assert msg.uri.host == "example.com"
    assert msg.uri.params == {}
    assert msg.get_all("Accept") == [  # folded over three lines, comma-separated
        "application/sdp",
        "application/pkcs7-mime",
        "multipart/mixed",
        "multipart/signed",
        "message/sip",
        "message/sipfrag",
    ]


def test_transports_varied_and_unknown_transport_types() -> None:
    """§3.1.1.10."""
    msg = request("transports")
    assert [v.transport for v in msg.vias] == ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]
    assert msg.call_id == "transports.kijh4akdnaqjkwendsasfdj"


def test_mpart01_multipart_body_with_binary_part() -> None:
    """§3.1.1.11: 553 body octets including NULs, framed by Content-Length."""
    msg = request("mpart01")
    assert msg.method == "MESSAGE"
    assert msg.content_type == "multipart/mixed;boundary=7a9cbec02ceef655"
    assert len(msg.body) == 553
    assert b"\x00" in msg.body
    assert msg.body.startswith(b"--7a9cbec02ceef655\r\nContent-Type: text/plain\r\n")
    assert msg.body.endswith(b"\x99\xd0\x05\r\n--7a9cbec02ceef655--\r\n")
    via = msg.top_via
    assert (via.host, via.port, via.wants_rport, via.rport) == ("127.0.0.1", 5070, True, None)
    assert via.branch == "z9hG4bK-d87543-4dade06d0bdb11ee-1--d87543-"
    (route,) = msg.routes
    assert (route.uri.user, route.uri.host, route.uri.port) == (None, "127.0.0.1", 5080)
    assert (msg.get("Identity") or "").endswith("eivUhkMWYUA=")
    assert msg.get("Date") == "Sat, 15 Oct 2005 04:44:56 GMT"
    # the same octets over a stream give the same body
    (event,) = StreamFramer().feed(load("mpart01"))
    assert isinstance(event, FramedMessage) and event.message.body == msg.body


def test_unreason_unusual_reason_phrase() -> None:
    """§3.1.1.12: reserved, unreserved and UTF-8 characters in the Reason-Phrase."""
    msg = parse("unreason")
    assert isinstance(msg, Response)
    assert msg.status == 200
    assert msg.reason == "= 2**3 * 5**2 но сто девяносто девять - простое"
    assert msg.to.tag == "2229"
    assert msg.body == sdp("192.0.2.198")


def test_noreason_empty_reason_phrase() -> None:
    """§3.1.1.13: "SIP/2.0 100 " (the SP is present, the phrase is empty)."""
    msg = parse("noreason")
    assert isinstance(msg, Response)
    assert (msg.status, msg.reason) == (100, "")
    assert msg.to_bytes().startswith(b"SIP/2.0 100 \r\n")


# -- §3.1.2 invalid messages --------------------------------------------------------

# (name, status, reason fragment, why). Responses (scalarlg, bigcode) are never answered:
# the transport drops them; the code only records why.
REJECTED = [
    ("badinv01", 400, "parameter", "empty Via and Contact parameters"),
    ("clerr", 400, "Content-Length Larger", "datagram shorter than Content-Length"),
    ("ncl", 400, "Bad Content-Length", "negative Content-Length"),
    ("scalar02", 400, "CSeq", "CSeq >= 2**31 (also Max-Forwards 300, huge Expires)"),
    ("scalarlg", 400, "CSeq", "response: dropped, not answered"),
    ("quotbal", 400, "nterminated", "unterminated quoted display name"),
    ("ltgtruri", 400, "Request-URI", "<> around the Request-URI"),
    ("lwsruri", 400, "Request Line", "LWS inside the Request-URI"),
    ("lwsstart", 400, "Request Line", "several SP between start-line elements"),
    ("trws", 400, "Request Line", "SP after SIP-Version"),
    ("escruri", 400, "Headers In Request-URI", "escaped headers in the Request-URI"),
    ("baddate", 400, "Date", "non-GMT time zone in Date"),
    ("regbadct", 400, "?", "addr-spec Contact with a header part needs <>"),
    ("badaspec", 400, "<>", "spaces inside <> around an addr-spec"),
    ("baddn", 400, "display name", "unquoted display names with non-token characters"),
    ("badvers", 505, "Version", "SIP/7.0"),
    ("mismatch01", 400, "CSeq Method Mismatch", "OPTIONS request with CSeq INVITE"),
    # RFC 4475: 501 preferred, "a 400 Bad Request is also acceptable". Whether NEWMETHOD
    # is implemented is not the parser's knowledge, and the mismatch is a syntax error.
    ("mismatch02", 400, "CSeq Method Mismatch", "unknown method, CSeq INVITE"),
    ("bigcode", 400, "Status Line", "status code 4294967301: response is dropped"),
]


@pytest.mark.parametrize(("name", "status", "fragment", "why"), REJECTED)
def test_invalid_message_is_rejected(name: str, status: int, fragment: str, why: str) -> None:
    exc = reject(name)
    assert exc.code == status, why
    assert fragment in exc.reason, exc.reason


@pytest.mark.parametrize(
    "name",
    [n for n, *_ in REJECTED if n not in ("scalarlg", "bigcode")],
)
def test_invalid_requests_carry_enough_to_answer(name: str) -> None:
    """Even a bad request line leaves a partial Request with the headers a 400 needs."""
    partial = reject(name).partial
    assert isinstance(partial, Request)
    for header in ("Via", "From", "To", "Call-ID", "CSeq"):
        assert partial.get(header) is not None, header
    if name != "badinv01":  # there the Via itself is the broken part
        assert partial.top_via.host


def test_invalid_responses_carry_no_request() -> None:
    assert not isinstance(reject("scalarlg").partial, Request)
    assert reject("bigcode").partial is None


def test_clerr_on_a_stream_waits_for_the_rest_of_the_body() -> None:
    """§3.1.2.2: over TCP nothing can be done but wait (and time the connection out)."""
    framer = StreamFramer()
    assert framer.feed(load("clerr")) == []
    assert framer.feed(b"x" * (9999 - 154)) != []  # the missing octets complete it


def test_ncl_on_a_stream_is_a_fatal_framing_error() -> None:
    """§3.1.2.3: a negative Content-Length is unrecoverable on TCP: close the connection."""
    (event,) = StreamFramer().feed(load("ncl"))
    assert isinstance(event, FramedError) and event.fatal
    assert event.error.code == 400
    assert isinstance(event.error.partial, Request)  # so the 400 can still be sent


def test_scalar02_every_out_of_range_scalar_is_caught() -> None:
    """The CSeq is what the RFC says to answer 400 for; the others are checked too."""
    data = load("scalar02")
    fixed_cseq = data.replace(b"36893488147419103232", b"1")
    with pytest.raises(SipParseError) as info:
        parse_message(fixed_cseq)
    assert info.value.reason == "Bad Max-Forwards"
    expires_only = fixed_cseq.replace(b"Max-Forwards: 300", b"Max-Forwards: 70")
    msg = parse_message(expires_only)  # huge Expires values: the registrar uses its default
    assert msg.get("Expires") == "1" + "0" * 100
    assert msg.contacts[0].params["expires"] == "280297596632815"


# -- §3.2 transaction layer -------------------------------------------------------


def test_badbranch_missing_transaction_identifier() -> None:
    """§3.2.1: branch is just the magic cookie. The parser accepts it; the transaction
    layer may reject it (400) or fall back to RFC 2543 matching."""
    msg = request("badbranch")
    assert msg.top_via.branch == "z9hG4bK"


# -- §3.3 application layer ------------------------------------------------------


def test_insuf_missing_required_header_fields() -> None:
    """§3.3.1: no Call-ID, From or To: 400 Bad Request."""
    exc = reject("insuf")
    assert exc.code == 400
    assert exc.reason.startswith("Missing")
    assert isinstance(exc.partial, Request)


@pytest.mark.parametrize(
    ("name", "scheme", "opaque"),
    [
        ("unkscm", "nobodyknowsthisscheme", "totallyopaquecontent"),
        ("novelsc", "soap.beep", "//192.0.2.103:3002"),
    ],
)
def test_unknown_request_uri_scheme_is_parse_valid(name: str, scheme: str, opaque: str) -> None:
    """§3.3.2/§3.3.3: well formed. The endpoint (not the parser) answers 416
    Unsupported URI Scheme for schemes it does not serve."""
    msg = request(name)
    assert not msg.uri.is_sip
    assert (msg.uri.scheme, msg.uri.opaque) == (scheme, opaque)


def test_unksm2_unknown_schemes_in_header_fields() -> None:
    """§3.3.4: syntactically valid. A registrar answers 400 (the AOR in To is not
    sip/sips); a proxy handles the request as usual."""
    msg = request("unksm2")
    assert (msg.to.uri.scheme, msg.to.uri.opaque) == ("isbn", "2983792873")
    assert (msg.from_.uri.scheme, msg.from_.uri.opaque) == ("http", "//www.example.com")
    assert msg.from_.tag == "3234233"
    (contact,) = msg.contacts
    assert (contact.uri.scheme, contact.uri.opaque) == ("name", "John_Smith")


def test_bext01_require_and_proxy_require() -> None:
    """§3.3.5: parse-valid; the UAS answers 420 Bad Extension listing the Require
    values in Unsupported (a proxy does the same for Proxy-Require)."""
    msg = request("bext01")
    assert msg.get_all("Require") == ["nothingSupportsThis", "nothingSupportsThisEither"]
    assert msg.get_all("Proxy-Require") == [
        "noProxiesSupportThis",
        "norDoAnyProxiesSupportThis",
    ]
    assert msg.top_via.transport == "TLS"


def test_invut_unknown_content_type() -> None:
    """§3.3.6: parse-valid; the UAS answers 415 with an Accept header."""
    msg = request("invut")
    assert msg.content_type == "application/unknownformat"
    assert msg.body == b'<audio>\r\n <pcmu port="443"/>\r\n</audio>\r\n'


def test_regaut01_unknown_authorization_scheme() -> None:
    """§3.3.7: parse-valid; a registrar answers 401 with a scheme it supports."""
    msg = request("regaut01")
    assert msg.get("Authorization") == "NoOneKnowsThisScheme opaque-data=here"
    assert msg.get("Content-Length") == "0"  # "Content-Length:0"


def test_multi01_multiple_values_in_single_value_fields() -> None:
    """§3.3.8: duplicate Call-ID, To, From, Max-Forwards, CSeq: 400."""
    exc = reject("multi01")
    assert exc.code == 400
    assert exc.reason.startswith("Duplicate")


def test_mcl01_multiple_content_length_values() -> None:
    """§3.3.9: 400 on a datagram; a fatal framing error on a stream."""
    exc = reject("mcl01")
    assert (exc.code, exc.reason) == (400, "Duplicate Content-Length")
    (event,) = StreamFramer().feed(load("mcl01"))
    assert isinstance(event, FramedError) and event.fatal and event.error.code == 400


def test_bcast_response_with_broadcast_via() -> None:
    """§3.3.10: well formed. Whoever forwards responses must not send to 255.255.255.255."""
    msg = parse("bcast")
    assert isinstance(msg, Response)
    assert [v.host for v in msg.vias] == ["192.0.2.198", "255.255.255.255"]


def test_zeromf_max_forwards_zero() -> None:
    """§3.3.11: valid. A proxy answers 483; an endpoint answers the OPTIONS normally."""
    assert request("zeromf").get("Max-Forwards") == "0"


def test_cparam01_addr_spec_contact_parameter_belongs_to_the_header() -> None:
    """§3.3.12: without <>, ";unknownparam" is a Contact parameter, not a URI one."""
    (contact,) = request("cparam01").contacts
    assert contact.uri.params == {}
    assert contact.params == {"unknownparam": None}
    assert contact.uri.user == "+19725552222"


def test_cparam02_name_addr_contact_parameter_belongs_to_the_uri() -> None:
    """§3.3.13: inside <>, ";unknownparam" is a URI parameter."""
    (contact,) = request("cparam02").contacts
    assert contact.uri.params == {"unknownparam": None}
    assert contact.params == {}


def test_regescrt_escaped_header_in_contact_uri() -> None:
    """§3.3.14: valid in name-addr form (compact "M"); the registrar stores the URI."""
    (contact,) = request("regescrt").contacts
    assert contact.uri.headers == "Route=%3Csip:sip.example.com%3E"
    assert unquote(contact.uri.headers or "") == "Route=<sip:sip.example.com>"


def test_sdp01_unacceptable_accept_offering() -> None:
    """§3.3.15: parse-valid; the UAS answers 406 Not Acceptable (or 400)."""
    msg = request("sdp01")
    assert msg.get_all("Accept") == ["text/nobodyKnowsThis"]
    assert msg.content_type == "application/sdp"


# -- §3.4 backward compatibility ---------------------------------------------------


def test_inv2543_rfc2543_syntax() -> None:
    """§3.4.1: no branch, no tags, no Max-Forwards and no Content-Length (UDP: the body
    runs to the end of the datagram). Accepted; RFC 2543 matching is a transaction
    layer matter."""
    msg = request("inv2543")
    assert msg.top_via.branch is None
    assert msg.from_.tag is None and msg.to.tag is None
    assert msg.get("Max-Forwards") is None
    assert msg.to.params == {"user": "phone"}  # addr-spec: the parameter is the header's
    assert msg.from_.uri.params == {"user": "phone"}
    assert msg.record_routes[0].uri.params == {"maddr": "ss1.example.com"}
    assert msg.body.endswith(b"m=audio 49217 RTP/AVP 0\r\n")
    with pytest.raises(SipParseError) as info:  # on a stream it cannot be framed
        parse_message(load("inv2543"), stream=True)
    assert info.value.reason == "Missing Content-Length"


# -- every torture message, every way it can be cut --------------------------------


@pytest.mark.parametrize("name", ALL)
def test_stream_and_datagram_agree(name: str) -> None:
    """A message framed from a stream parses exactly as the datagram does."""
    data = load(name)
    try:
        expected: Request | Response | SipParseError = parse_message(data)
    except SipParseError as exc:
        expected = exc
    events = StreamFramer().feed(data)
    if not events:  # Content-Length larger than what was sent: still waiting
        assert name == "clerr"
        return
    first = events[0]
    if isinstance(first, FramedMessage):
        assert not isinstance(expected, SipParseError)
        assert first.message.to_bytes() == expected.to_bytes()
    else:
        assert isinstance(first, FramedError)
        assert isinstance(expected, SipParseError) or name == "inv2543"


@pytest.mark.parametrize("name", ALL)
def test_truncations_never_raise_anything_but_sip_parse_error(name: str) -> None:
    data = load(name)
    limits = Limits(max_message_size=2048, max_headers=40, max_header_length=600)
    for cut in range(0, len(data), 7):
        for chunk in (data[:cut], data[cut:]):
            with contextlib.suppress(SipParseError):
                parse_message(chunk, limits)
        framer = StreamFramer(limits)
        framer.feed(data[:cut])
        framer.feed(data[cut:])
