"""Message/CPIM (RFC 3862) and its IMDN headers (RFC 5438): the examples of the RFCs, what
RCS clients send, and any bytes (a parse raises CpimError or returns a message)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gw.cpim import IMDN_NS, CpimError, CpimLimits, CpimMessage, is_cpim, parse_cpim, wrap

# RFC 3862 §5.1 (line ends made CRLF, as sent).
RFC3862 = (
    b"From: MR SANDERS <im:piglet@100akerwood.com>\r\n"
    b"To: Depressed Donkey <im:eeyore@100akerwood.com>\r\n"
    b"DateTime: 2000-12-13T13:40:00-08:00\r\n"
    b"Subject: the weather will be fine today\r\n"
    b"Subject:;lang=fr beau temps prevu pour aujourd'hui\r\n"
    b"NS: MyFeatures <mid:MessageFeatures@id.foo.com>\r\n"
    b"Require: MyFeatures.VitalMessageOption\r\n"
    b"MyFeatures.VitalMessageOption: Confirmation-requested\r\n"
    b"MyFeatures.WackyMessageOption: Use-silly-font\r\n"
    b"\r\n"
    b"Content-type: text/xml; charset=utf-8\r\n"
    b"Content-ID: <1234567890@foo.com>\r\n"
    b"\r\n"
    b"<body>\r\nHere is the text of my message.\r\n</body>"
)

# What an RCS client sends (RFC 5438 §7.1.1.1 style, a prefix of its own choosing).
RCS = (
    b"From: <sip:alice@ims.example>\r\n"
    b"To: <sip:bob@ims.example>\r\n"
    b"DateTime: 2026-12-08T10:00:00.000Z\r\n"
    b"NS: rcs <urn:ietf:params:imdn>\r\n"
    b"rcs.Message-ID: 34jk324j\r\n"
    b"rcs.Disposition-Notification: positive-delivery, display\r\n"
    b"\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"\r\n"
    b"Hello \xc3\xa9\r\n\r\nwith a blank line inside"
)


def test_rfc3862_example_parses_and_round_trips() -> None:
    msg = parse_cpim(RFC3862)
    assert msg.get("From") == "MR SANDERS <im:piglet@100akerwood.com>"
    assert list(msg.get_all("Subject")) == [
        "the weather will be fine today",
        ";lang=fr beau temps prevu pour aujourd'hui",
    ]
    assert msg.get("VitalMessageOption", "mid:MessageFeatures@id.foo.com") == (
        "Confirmation-requested"
    )
    assert msg.get("subject") is None, "message header names are case-sensitive"
    assert msg.content_type == "text/xml; charset=utf-8"  # MIME names: any case
    assert msg.content_header("content-id") == "<1234567890@foo.com>"
    assert msg.body == b"<body>\r\nHere is the text of my message.\r\n</body>"
    assert parse_cpim(msg.to_bytes()) == msg


def test_imdn_headers_are_found_through_the_prefix_the_sender_chose() -> None:
    msg = parse_cpim(RCS)
    assert msg.namespaces() == {"rcs": IMDN_NS}
    assert msg.get("Message-ID", IMDN_NS) == "34jk324j"
    assert msg.get("Disposition-Notification", IMDN_NS) == "positive-delivery, display"
    assert msg.get("Message-ID") is None, "unprefixed is another namespace"
    assert msg.body == "Hello é\r\n\r\nwith a blank line inside".encode()
    assert msg.content_type == "text/plain; charset=utf-8"


def test_wrap_builds_what_rcs_expects_and_parses_back() -> None:
    when = datetime(2026, 12, 8, 10, 0, 0, 123000, tzinfo=UTC)
    msg = wrap(
        b"hi \xf0\x9f\x91\x8b",
        "text/plain; charset=utf-8",
        from_uri="sip:alice@page.example",
        to_uri='"Bob" <sip:bob@msrp.example>',
        now=when,
        message_id="m-1",
        disposition=["positive-delivery", "negative-delivery"],
    )
    wire = msg.to_bytes()
    assert wire.startswith(
        b'From: <sip:alice@page.example>\r\nTo: "Bob" <sip:bob@msrp.example>\r\n'
        b"DateTime: 2026-12-08T10:00:00.123Z\r\nNS: imdn <urn:ietf:params:imdn>\r\n"
        b"imdn.Message-ID: m-1\r\n"
        b"imdn.Disposition-Notification: positive-delivery, negative-delivery\r\n\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n\r\n"
    )
    back = parse_cpim(wire)
    assert back == msg and back.get("Message-ID", IMDN_NS) == "m-1"
    plain = wrap(b"x", "text/plain", from_uri="sip:a@x", to_uri="sip:b@y")
    assert plain.get("NS") is None and plain.get("Message-ID", IMDN_NS) is None


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "Message Headers Not Terminated"),
        (b"From: <sip:a@x>\r\nTo: <sip:b@y>", "Message Headers Not Terminated"),
        (b"\r\n\r\nContent-Type: text/plain\r\n\r\nx", "Without Message Headers"),
        (b"From: <sip:a@x>\r\n\r\nContent-Type: text/plain", "Content Headers Not Terminated"),
        (b"From: <sip:a@x>\r\n  folded\r\n\r\n\r\n", "Folded CPIM Header"),
        (b"From <sip:a@x>\r\n\r\n\r\n", "Malformed CPIM Header"),
        (b"a.b.c: x\r\n\r\n\r\n", "Malformed CPIM Header"),
        (b"NS: imdn urn:ietf:params:imdn\r\n\r\n\r\n", "Bad CPIM NS Header"),
        (b"From: \xff\r\n\r\n\r\n", "Not UTF-8"),
        (b"From: a\x00b\r\n\r\n\r\n", "Control Character"),
        (b"From: <sip:a@x>\r\n\r\nContent Type: text/plain\r\n\r\n", "Malformed CPIM Header"),
    ],
)
def test_malformed_bodies_get_a_precise_reason(data: bytes, reason: str) -> None:
    with pytest.raises(CpimError) as info:
        parse_cpim(data)
    assert reason in info.value.reason and info.value.code == 400


def test_limits_bound_headers_and_lines() -> None:
    many = b"".join(b"X-%d: v\r\n" % i for i in range(10)) + b"\r\n\r\n"
    assert len(parse_cpim(many).headers) == 10
    with pytest.raises(CpimError, match="Too Many"):
        parse_cpim(many, CpimLimits(max_headers=9))
    with pytest.raises(CpimError, match="Too Long"):
        parse_cpim(b"From: " + b"a" * 100 + b"\r\n\r\n\r\n", CpimLimits(max_header_length=50))


def test_a_header_value_cannot_smuggle_lines_out() -> None:
    with pytest.raises(CpimError):
        CpimMessage([("Subject", "x\r\nTo: <sip:evil@x>")]).to_bytes()
    with pytest.raises(CpimError, match="Control Character"):
        wrap(b"x", "text/plain", from_uri="sip:a@x", to_uri="sip:b@y", message_id="\x00").to_bytes()


def test_an_empty_content_header_block_is_its_blank_line_alone() -> None:
    """Found by fuzzing: the body after an empty MIME block kept one CRLF too few."""
    msg = parse_cpim(b"From: <sip:a@x>\r\n\r\n\r\n\r\nbody after a CRLF")
    assert msg.content == [] and msg.body == b"\r\nbody after a CRLF"
    assert parse_cpim(msg.to_bytes()) == msg


def test_content_type_checks() -> None:
    assert is_cpim("Message/CPIM") and is_cpim("message/cpim; charset=utf-8")
    assert not is_cpim("text/plain") and not is_cpim("message/cpimx")
    assert parse_cpim(b"From: <sip:a@x>\r\n\r\n").content_type.startswith("text/plain")


@given(st.binary(max_size=400))
def test_any_bytes_parse_or_raise_cpim_error(data: bytes) -> None:
    try:
        msg = parse_cpim(data)
    except CpimError as exc:
        assert exc.code == 400 and exc.reason
    else:
        assert parse_cpim(msg.to_bytes()).body == msg.body


@given(
    st.binary(max_size=300),
    st.sampled_from(["text/plain", "text/plain; charset=utf-8", "application/octet-stream"]),
    st.text(
        alphabet=st.characters(min_codepoint=33, max_codepoint=0x2FFF, exclude_characters="\x7f"),
        min_size=1,
    ),
)
def test_wrap_round_trips_any_body(body: bytes, content_type: str, message_id: str) -> None:
    msg = wrap(body, content_type, from_uri="sip:a@x", to_uri="sip:b@y", message_id=message_id)
    back = parse_cpim(msg.to_bytes())
    assert back.body == body and back.content_type == content_type
    assert back.get("Message-ID", IMDN_NS) == message_id
