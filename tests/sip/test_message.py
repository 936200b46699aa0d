"""Message model, parser and serializer (gw/sip/message.py)."""

from __future__ import annotations

import pytest

from gw.sip.message import (
    COMPACT_FORMS,
    Limits,
    Request,
    Response,
    SipMessage,
    SipParseError,
    canonical_name,
    find_head_end,
    parse_cseq,
    parse_head,
    parse_message,
    partial_head,
    reason_phrase,
    split_head,
)
from gw.sip.uri import SipSyntaxError, parse_uri

HEADERS = (
    "Via: SIP/2.0/UDP pc33.example.com;branch=z9hG4bK776asdhds\r\n"
    "Max-Forwards: 70\r\n"
    "To: Bob <sip:bob@example.com>\r\n"
    "From: Alice <sip:alice@example.com>;tag=1928301774\r\n"
    "Call-ID: a84b4c76e66710@pc33.example.com\r\n"
    "CSeq: 314159 MESSAGE\r\n"
)


def req(extra: str = "", body: bytes = b"", *, start: str = "", headers: str = HEADERS) -> bytes:
    start = start or "MESSAGE sip:bob@example.com SIP/2.0"
    length = f"Content-Length: {len(body)}\r\n" if body else ""
    return f"{start}\r\n{headers}{extra}{length}\r\n".encode() + body


def ok(data: bytes, **kw: object) -> Request | Response:
    return parse_message(data, **kw)  # type: ignore[arg-type]


def err(data: bytes, limits: Limits | None = None, *, stream: bool = False) -> SipParseError:
    with pytest.raises(SipParseError) as info:
        parse_message(data, limits or Limits(), stream=stream)
    return info.value


def response_bytes(status_line: str = "SIP/2.0 200 OK", extra: str = "") -> bytes:
    return f"{status_line}\r\n{HEADERS}{extra}Content-Length: 0\r\n\r\n".encode()


# -- start lines -----------------------------------------------------------------


def test_request_line() -> None:
    msg = ok(req(body=b"hi"))
    assert isinstance(msg, Request)
    assert msg.method == "MESSAGE"
    assert msg.uri == parse_uri("sip:bob@example.com")
    assert msg.version == "SIP/2.0"
    assert msg.body == b"hi"
    assert msg.start_line() == "MESSAGE sip:bob@example.com SIP/2.0"


def test_extension_methods_are_case_sensitive_tokens() -> None:
    data = req(start="message sip:bob@example.com SIP/2.0").replace(b"MESSAGE", b"message")
    assert ok(data).method == "message"  # type: ignore[union-attr]


def test_status_line() -> None:
    msg = ok(response_bytes("SIP/2.0 486 Busy Here, try later"))
    assert isinstance(msg, Response)
    assert (msg.status, msg.reason, msg.version) == (486, "Busy Here, try later", "SIP/2.0")
    assert msg.start_line() == "SIP/2.0 486 Busy Here, try later"


def test_status_line_with_empty_reason() -> None:
    msg = ok(response_bytes("SIP/2.0 180 "))
    assert isinstance(msg, Response) and msg.reason == ""


@pytest.mark.parametrize(
    ("start", "reason"),
    [
        ("MESSAGE  sip:bob@example.com SIP/2.0", "Bad Request Line"),
        ("MESSAGE sip:bob@example.com  SIP/2.0", "Bad Request Line"),
        ("MESSAGE sip:bob@example.com SIP/2.0 ", "Bad Request Line"),
        ("MESSAGE sip:bob@example.com", "Bad Request Line"),
        ("MESSAGE sip:bob@example.com HTTP/1.1", "Bad Request Line"),
        ("MESSAGE\tsip:bob@example.com SIP/2.0", "Bad Request Line"),
        ("MESSAGE sip:bob@example.com SIP/\u0662.0", "Bad Request Line"),  # Arabic-Indic 2
        ("MESSAGE <sip:bob@example.com> SIP/2.0", "Bad Request-URI"),
        ("MESSAGE sip:bob@example.com?Subject=hi SIP/2.0", "Headers In Request-URI"),
    ],
)
def test_bad_request_lines_keep_a_partial_request(start: str, reason: str) -> None:
    exc = err(req(start=start))
    assert exc.code == 400
    assert exc.reason.startswith(reason)
    assert isinstance(exc.partial, Request) and exc.partial.method == "MESSAGE"
    assert exc.partial.call_id == "a84b4c76e66710@pc33.example.com"  # enough for a 400


def test_garbage_start_line_has_no_partial() -> None:
    exc = err(b"\x16\x03\x01\x02\x00\r\n" + HEADERS.encode() + b"\r\n")
    assert (exc.code, exc.reason, exc.partial) == (400, "Bad Request Line", None)


@pytest.mark.parametrize(
    "line",
    [
        "SIP/2.0 99 Too Small",
        "SIP/2.0 700 Too Big",
        "SIP/2.0 2000 OK",
        "SIP/2.0 200",  # the SP before an empty reason is required
        "SIP/2.0  200 OK",
        "SIP/2.0 \u0662\u0660\u0660 OK",
    ],
)
def test_bad_status_lines(line: str) -> None:
    exc = err(response_bytes(line))
    assert exc.code == 400 and exc.partial is None


def test_version_other_than_2_0_is_505_with_partial() -> None:
    exc = err(req(start="MESSAGE sip:bob@example.com SIP/3.0"))
    assert exc.code == 505
    assert isinstance(exc.partial, Request)
    assert exc.partial.get("Via") is not None


def test_leading_crlfs_before_the_start_line_are_skipped() -> None:
    assert ok(b"\r\n" + req()).method == "MESSAGE"  # type: ignore[union-attr]


# -- headers: folding, compact forms, names ------------------------------------


def test_folded_header_values_are_unfolded() -> None:
    msg = ok(req("Subject: first\r\n  second\r\n\tthird\r\nX-Y:\r\n value\r\n"))
    assert msg.get("Subject") == "first second third"
    assert msg.get("X-Y") == "value"


def test_folding_inside_a_mandatory_header() -> None:
    headers = HEADERS.replace("CSeq: 314159 MESSAGE", "CSeq:\r\n 314159\r\n\tMESSAGE")
    assert ok(req(headers=headers)).cseq == (314159, "MESSAGE")


def test_continuation_before_first_header_is_rejected() -> None:
    data = b"MESSAGE sip:bob@example.com SIP/2.0\r\n folded\r\n" + HEADERS.encode() + b"\r\n"
    exc = err(data)
    assert exc.code == 400
    assert isinstance(exc.partial, Request)


@pytest.mark.parametrize(("short", "long"), sorted(COMPACT_FORMS.items()))
def test_compact_forms(short: str, long: str) -> None:
    assert canonical_name(short) == canonical_name(short.upper()) == long
    assert canonical_name(long.lower()) == long


@pytest.mark.parametrize("short", sorted(set(COMPACT_FORMS) - set("vftilmc")))
def test_compact_form_headers_are_stored_under_their_long_name(short: str) -> None:
    msg = ok(req(f"{short.upper()}: value-{short}\r\n"))
    assert (COMPACT_FORMS[short], f"value-{short}") in msg.headers
    assert msg.get(short) == msg.get(COMPACT_FORMS[short]) == f"value-{short}"


def test_compact_mandatory_headers() -> None:
    headers = (
        "v: SIP/2.0/UDP pc33.example.com;branch=z9hG4bK776asdhds\r\n"
        "t: <sip:bob@example.com>\r\n"
        "f: <sip:alice@example.com>;tag=1\r\n"
        "i: abc@h\r\n"
        "CSeq: 1 MESSAGE\r\n"
        "c: text/plain\r\n"
        "m: <sip:alice@pc33.example.com>\r\n"
        "l: 2\r\n"
    )
    msg = ok(b"MESSAGE sip:bob@example.com SIP/2.0\r\n" + headers.encode() + b"\r\nhi")
    assert [k for k, _ in msg.headers] == [
        "Via",
        "To",
        "From",
        "Call-ID",
        "CSeq",
        "Content-Type",
        "Contact",
        "Content-Length",
    ]
    assert msg.call_id == "abc@h" and msg.content_type == "text/plain" and msg.body == b"hi"


def test_header_names_are_case_insensitive_and_canonicalised() -> None:
    msg = ok(req("sUbJeCt: x\r\nx-custom-HEADER: y\r\nWWW-authenticate: z\r\n"))
    assert ("Subject", "x") in msg.headers
    assert ("X-Custom-Header", "y") in msg.headers
    assert ("WWW-Authenticate", "z") in msg.headers
    assert msg.get("x-CUSTOM-header") == "y"


def test_lws_before_colon_and_around_value() -> None:
    msg = ok(req("Subject \t :   spaced out  \r\n"))
    assert msg.get("Subject") == "spaced out"


def test_empty_header_value() -> None:
    assert ok(req("Subject:\r\n")).get("Subject") == ""


@pytest.mark.parametrize(
    "line",
    ["NoColonHere", ": no name", "Bad Name: x", "Bad\x00Name: x", "Sub[ject]: x"],
)
def test_malformed_header_lines(line: str) -> None:
    exc = err(req(line + "\r\n"))
    assert exc.code == 400 and exc.reason.startswith("Malformed Header Line")
    assert isinstance(exc.partial, Request) and exc.partial.get("Via") is not None


def test_bare_cr_in_head_is_rejected() -> None:
    exc = err(req("Subject: a\rInjected: b\r\n"))
    assert (exc.code, exc.reason) == (400, "Bare CR In Message Head")


def test_lf_only_line_ends_are_tolerated() -> None:
    body = b"hello\r\n\r\nworld"
    head = req(body=body)[: -len(body)].replace(b"\r\n", b"\n")
    msg = ok(head + body)
    assert msg.call_id == "a84b4c76e66710@pc33.example.com"
    assert msg.cseq == (314159, "MESSAGE")
    assert msg.body == body  # the body is never touched


def test_lf_only_body_is_cut_by_content_length() -> None:
    head = req().replace(b"\r\n", b"\n")[:-1]  # drop the empty line
    msg = ok(head + b"Content-Length: 3\n\nabcdef")
    assert msg.body == b"abc"


def test_mixed_line_ends() -> None:
    data = b"MESSAGE sip:bob@example.com SIP/2.0\n" + HEADERS.encode() + b"\n"
    assert ok(data).cseq == (314159, "MESSAGE")


def test_utf8_and_non_utf8_heads() -> None:
    assert ok(req("Subject: caf\u00e9 \u2603\r\n")).get("Subject") == "caf\u00e9 \u2603"
    latin1 = req().replace(b"\r\n\r\n", b"\r\nSubject: caf\xe9\r\n\r\n")
    assert ok(latin1).get("Subject") == "caf\u00e9"  # not UTF-8: read as Latin-1


def test_values_keep_non_ascii_whitespace() -> None:
    assert ok(req("Subject: \u00a0x\u00a0\r\n")).get("Subject") == "\u00a0x\u00a0"


# -- multi-valued headers --------------------------------------------------------


def test_comma_separated_and_repeated_values_are_one_list() -> None:
    extra = (
        "Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>\r\n"
        "Route: <sip:p3.example.com;lr>\r\n"
        "Supported: 100rel , timer,path\r\n"
    )
    msg = ok(req(extra))
    assert [r.uri.host for r in msg.routes] == [
        "p1.example.com",
        "p2.example.com",
        "p3.example.com",
    ]
    assert msg.get_all("Supported") == ["100rel", "timer", "path"]
    assert msg.get("Route") == "<sip:p1.example.com;lr>, <sip:p2.example.com;lr>"


def test_multiple_vias_in_one_and_several_lines() -> None:
    headers = (
        "Via: SIP/2.0/UDP first.example.com;branch=z9hG4bK1, "
        "SIP/2.0/TCP second.example.com:5061;branch=z9hG4bK2\r\n"
        "Via: SIP/2.0/UDP [2001:db8::3];branch=z9hG4bK3;received=2001:db8::4\r\n"
        + HEADERS.split("\r\n", 1)[1]
    )
    msg = ok(req(headers=headers))
    assert [v.host for v in msg.vias] == ["first.example.com", "second.example.com", "2001:db8::3"]
    assert msg.top_via.branch == "z9hG4bK1"
    msg.remove_first_via()
    assert msg.top_via.host == "second.example.com"
    msg.remove_first_via()
    assert msg.top_via.host == "2001:db8::3"
    assert [k for k, _ in msg.headers].count("Via") == 1


def test_contacts_with_quoted_commas_and_star() -> None:
    extra = 'Contact: "Doe, John" <sip:jd@h>;q=0.7, <sip:x@h>;expires=60\r\n'
    msg = ok(req(extra))
    assert [(c.display, c.uri.user, c.params) for c in msg.contacts] == [
        ("Doe, John", "jd", {"q": "0.7"}),
        (None, "x", {"expires": "60"}),
    ]
    star = ok(req("Contact: *\r\n"))
    assert star.contacts[0].wildcard


def test_non_list_headers_keep_their_commas() -> None:
    msg = ok(req("Subject: one, two\r\nDate: Sat, 13 Nov 2010 23:29:00 GMT\r\n"))
    assert msg.get_all("Subject") == ["one, two"]
    assert msg.get_all("Date") == ["Sat, 13 Nov 2010 23:29:00 GMT"]


# -- CSeq, Max-Forwards and other mandatory headers -----------------------------


def test_parse_cseq() -> None:
    assert parse_cseq("1 INVITE") == (1, "INVITE")
    assert parse_cseq("  0009 \t INVITE ") == (9, "INVITE")
    assert parse_cseq(f"{2**31 - 1} ACK") == (2**31 - 1, "ACK")
    for bad in (
        "",
        "1",
        "INVITE",
        "1 INVITE x",
        f"{2**31} INVITE",
        "-1 INVITE",
        "1.0 INVITE",
        "\u00b2 INVITE",
        "1 IN<VITE",
        "9" * 5000 + " INVITE",
    ):
        with pytest.raises(SipSyntaxError):
            parse_cseq(bad)


@pytest.mark.parametrize(
    ("old", "new", "reason"),
    [
        ("CSeq: 314159 MESSAGE", "CSeq: 314159 INVITE", "CSeq Method Mismatch"),
        ("CSeq: 314159 MESSAGE", "CSeq: 2147483648 MESSAGE", "Bad CSeq number"),
        ("Max-Forwards: 70", "Max-Forwards: 256", "Bad Max-Forwards"),
        ("Max-Forwards: 70", "Max-Forwards: -1", "Bad Max-Forwards"),
        ("Max-Forwards: 70", "Max-Forwards: \u0667\u0660", "Bad Max-Forwards"),
        ("Call-ID: a84b4c76e66710@pc33.example.com", "Call-ID: a b", "Bad Call-ID"),
        ("Call-ID: a84b4c76e66710@pc33.example.com", "Call-ID:", "Bad Call-ID"),
        ("Call-ID: a84b4c76e66710@pc33.example.com", "Call-ID: a\x00b", "Bad Call-ID"),
        ("Call-ID: a84b4c76e66710@pc33.example.com", "Call-ID: a\x1bb@x", "Bad Call-ID"),
        ("Call-ID: a84b4c76e66710@pc33.example.com", "Call-ID: ab\x7f", "Bad Call-ID"),
        ("To: Bob <sip:bob@example.com>", "To: *", "Wildcard in From/To"),
        ("To: Bob <sip:bob@example.com>", "To: Bob <sip:bob@example.com", "Missing '>'"),
        ("Via: SIP/2.0/UDP pc33.example.com;branch=z9hG4bK776asdhds", "Via: nonsense", "Bad Via"),
        ("Max-Forwards: 70", "Expires: soon", "Bad Expires"),
        ("Max-Forwards: 70", "Date: Sat, 13 Nov 2010 23:29:00 UTC", "Bad Date"),
        ("Max-Forwards: 70", "Content-Type: text", "Bad Content-Type"),
    ],
)
def test_mandatory_header_syntax(old: str, new: str, reason: str) -> None:
    exc = err(req(headers=HEADERS.replace(old, new)))
    assert exc.code == 400
    assert exc.reason.startswith(reason), exc.reason
    assert isinstance(exc.partial, Request)


@pytest.mark.parametrize("missing", ["Via", "To", "From", "Call-ID", "CSeq"])
def test_missing_mandatory_header(missing: str) -> None:
    headers = "".join(
        line + "\r\n"
        for line in HEADERS.split("\r\n")
        if line and not line.startswith(missing + ":")
    )
    exc = err(req(headers=headers))
    assert (exc.code, exc.reason) == (400, f"Missing {missing}")


@pytest.mark.parametrize(
    "dup",
    [
        "To: <sip:x@h>",
        "From: <sip:x@h>;tag=2",
        "Call-ID: other",
        "CSeq: 2 MESSAGE",
        "Max-Forwards: 5",
        "Expires: 5\r\nExpires: 6",
        "Content-Type: a/b\r\nc: a/b",
    ],
)
def test_single_valued_headers_must_not_repeat(dup: str) -> None:
    exc = err(req(dup + "\r\n"))
    assert exc.code == 400 and exc.reason.startswith("Duplicate")


def test_contacts_are_checked_on_invite_and_register_only() -> None:
    bad_contact = "Contact: <sip:a@h>;;\r\n"
    assert ok(req(bad_contact)).method == "MESSAGE"  # type: ignore[union-attr]
    invite = req(bad_contact, start="INVITE sip:bob@example.com SIP/2.0").replace(
        b"314159 MESSAGE", b"314159 INVITE"
    )
    assert err(invite).code == 400


def test_response_does_not_need_matching_method() -> None:
    msg = ok(response_bytes())
    assert msg.cseq == (314159, "MESSAGE")


# -- bodies and Content-Length on datagrams --------------------------------------


def test_body_cut_to_content_length_on_datagrams() -> None:
    data = req("Content-Length: 3\r\n").replace(b"\r\n\r\n", b"\r\n\r\nabcdef")
    assert ok(data).body == b"abc"


def test_missing_content_length_on_datagram_takes_the_rest() -> None:
    assert ok(req() + b"whole datagram").body == b"whole datagram"


def test_missing_content_length_on_stream_is_400() -> None:
    exc = err(req() + b"x", stream=True)
    assert (exc.code, exc.reason) == (400, "Missing Content-Length")
    assert isinstance(exc.partial, Request)


def test_content_length_larger_than_datagram_is_400() -> None:
    exc = err(req("Content-Length: 10\r\n") + b"short")
    assert (exc.code, exc.reason) == (400, "Content-Length Larger Than Body")


@pytest.mark.parametrize("value", ["-1", "five", "1 2", "0x10", "\u0661", "1" * 5000, ""])
def test_bad_content_length(value: str) -> None:
    exc = err(req(f"Content-Length: {value}\r\n"))
    assert (exc.code, exc.reason) == (400, "Bad Content-Length")


def test_binary_body_is_kept_byte_exact() -> None:
    body = bytes(range(256)) * 3
    assert ok(req(body=body)).body == body


# -- limits --------------------------------------------------------------------


def test_over_max_message_size_is_413_with_partial_head() -> None:
    body = b"x" * 5000
    exc = err(req(body=body), Limits(max_message_size=1000))
    assert exc.code == 413
    assert isinstance(exc.partial, Request)
    assert exc.partial.call_id == "a84b4c76e66710@pc33.example.com"


def test_over_max_message_size_with_unreadable_head_has_no_partial() -> None:
    exc = err(req("X: " + "y" * 2000 + "\r\n"), Limits(max_message_size=1000))
    assert exc.code == 413 and exc.partial is None


def test_body_over_max_body_size_is_413() -> None:
    exc = err(req(body=b"x" * 101), Limits(max_body_size=100))
    assert (exc.code, exc.reason) == (413, "Body Too Large")
    assert isinstance(exc.partial, Request)


def test_too_many_headers_is_400_with_the_first_headers_kept() -> None:
    extra = "".join(f"X-H{i}: {i}\r\n" for i in range(20))
    exc = err(req(extra), Limits(max_headers=10))
    assert (exc.code, exc.reason) == (400, "Too Many Headers")
    assert isinstance(exc.partial, Request)
    assert exc.partial.get("CSeq") is not None  # the mandatory ones came first
    assert len(exc.partial.headers) == 10


def test_header_too_long_is_400() -> None:
    exc = err(req("X-Long: " + "a" * 200 + "\r\n"), Limits(max_header_length=100))
    assert (exc.code, exc.reason) == (400, "Header Too Long")
    assert isinstance(exc.partial, Request) and exc.partial.get("X-Long") is None


def test_header_length_counts_after_unfolding() -> None:
    folded = "X-Long: " + "\r\n ".join(["a" * 40] * 5) + "\r\n"
    assert err(req(folded), Limits(max_header_length=100)).reason == "Header Too Long"
    assert ok(req(folded), limits=Limits(max_header_length=300)).get("X-Long")


def test_exactly_at_the_limits_is_fine() -> None:
    data = req(body=b"abc")
    assert ok(data, limits=Limits(max_message_size=len(data), max_body_size=3))


# -- heads, partials, helpers ---------------------------------------------------------


def test_split_head_and_find_head_end() -> None:
    assert split_head(b"A\r\n\r\nbody") == (b"A", b"body")
    assert split_head(b"A\n\nbody\r\n\r\n") == (b"A", b"body\r\n\r\n")
    assert split_head(b"A\r\n\r\nb\n\nc") == (b"A", b"b\n\nc")
    assert split_head(b"no end\r\n") is None
    assert find_head_end(bytearray(b"xy\n\n")) == (2, 2)


def test_parse_head_and_partial_head() -> None:
    head = req()[:-4]
    assert parse_head(head).method == "MESSAGE"  # type: ignore[union-attr]
    assert isinstance(partial_head(head.replace(b"CSeq", b"X-CSeq")), Request)
    assert partial_head(b"\x00garbage") is None


def test_empty_message() -> None:
    assert err(b"\r\n\r\n").reason == "Empty Message"
    assert err(b"").reason == "Missing Empty Line After Headers"


# -- the model: access and serialization -----------------------------------------------


def test_get_set_add_remove() -> None:
    msg = ok(req("Subject: a\r\nSubject: b\r\n"))
    assert msg.get("subject") == "a"
    assert msg.get_all("Subject") == ["a", "b"]
    msg.set("Subject", "c")
    assert msg.get_all("Subject") == ["c"]
    msg.add("Route", "<sip:p@h;lr>", first=True)
    assert msg.headers[0] == ("Route", "<sip:p@h;lr>")
    msg.add("s", "d")
    assert msg.get_all("Subject") == ["c", "d"]
    msg.remove("SUBJECT")
    assert msg.get("Subject") is None
    msg.set("X-New", "1")
    assert msg.headers[-1] == ("X-New", "1")
    assert msg.get("Nope") is None and msg.get_all("Nope") == []


def test_typed_views_raise_syntax_error_when_missing() -> None:
    msg = SipMessage()
    for view in ("top_via", "from_", "to", "call_id", "cseq"):
        with pytest.raises(SipSyntaxError):
            getattr(msg, view)
    assert msg.vias == [] and msg.contacts == [] and msg.content_type is None


def test_to_bytes_round_trip_and_content_length_last() -> None:
    data = req("Content-Length: 5\r\nSubject: hi\r\n").replace(b"\r\n\r\n", b"\r\n\r\nhello")
    msg = ok(data)
    out = msg.to_bytes()
    assert out.endswith(b"Subject: hi\r\nContent-Length: 5\r\n\r\nhello")
    again = ok(out)
    assert again.headers == [*msg.headers[:6], ("Subject", "hi"), ("Content-Length", "5")]
    assert again.body == b"hello" and bytes(again) == out


def test_to_bytes_writes_content_length_from_the_body() -> None:
    msg = Request(method="MESSAGE", uri=parse_uri("sip:b@h"), headers=[("Content-Length", "99")])
    msg.body = b"four"
    assert msg.to_bytes() == b"MESSAGE sip:b@h SIP/2.0\r\nContent-Length: 4\r\n\r\nfour"


def test_to_bytes_refuses_header_injection() -> None:
    msg = Response(status=200, reason="OK")
    msg.add("Subject", "x\r\nVia: SIP/2.0/UDP evil")
    with pytest.raises(ValueError):
        msg.to_bytes()


def test_response_serialization() -> None:
    msg = Response(status=404, reason=reason_phrase(404), headers=[("Call-ID", "x")])
    assert msg.to_bytes() == b"SIP/2.0 404 Not Found\r\nCall-ID: x\r\nContent-Length: 0\r\n\r\n"
    assert repr(msg) == "<Response 404 Not Found>"


def test_reason_phrases() -> None:
    assert reason_phrase(200) == "OK"
    assert reason_phrase(413) == "Request Entity Too Large"
    assert reason_phrase(416) == "Unsupported URI Scheme"
    assert reason_phrase(299) == "OK"
    assert reason_phrase(399) == "Redirect"
    assert reason_phrase(499) == "Error"


def test_an_empty_first_via_line_is_skipped_when_stamping_and_removing() -> None:
    """`Via:` with no value before the real one: the top via-parm is the next line's, and
    stamping it (received/rport) or removing it must not trip over the empty line."""
    from gw.sip.transaction import Address, stamp_via

    headers = "Via: \r\nVia: SIP/2.0/UDP host.example.com;branch=z9hG4bKe;rport\r\n"
    msg = ok(req(headers=headers + HEADERS.split("\r\n", 1)[1]))
    assert msg.top_via.host == "host.example.com"
    via = stamp_via(msg, Address("UDP", "192.0.2.7", 5099))
    assert (via.params["received"], via.params["rport"]) == ("192.0.2.7", "5099")
    assert msg.top_via.params["rport"] == "5099"
    assert "received=192.0.2.7" in msg.to_bytes().decode()
    msg.remove_first_via()
    assert msg.vias == []
