"""One fuzz target per wire parser. Each takes any bytes and must either return or raise the
error type its parser documents (a precise answer follows from it); any other exception, a
hang or a crash is a finding. The same functions replay the committed corpus in the suite
(tests/test_fuzz.py), so a finding stays fixed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable

from gw.cpim import IMDN_NS, CpimError, parse_cpim
from gw.mgmt.mi import MiRegistry
from gw.msrp.digest import parse_challenge
from gw.msrp.frame import FrameParser, parse_byte_range
from gw.msrp.uri import MsrpUriError, parse_msrp_uri
from gw.sip.framing import StreamFramer
from gw.sip.message import Limits, Request, SipParseError, parse_message
from gw.sip.sdp import SdpError, find_msrp_media, parse_sdp
from gw.sip.uri import SipSyntaxError, parse_name_addr, parse_uri, parse_via

__all__ = ["TARGETS"]

LIMITS = Limits()


def sip_message(data: bytes) -> None:
    """A datagram: parsed or refused with SipParseError; a request's views, its encoding and
    the parse of that encoding raise SipSyntaxError at most."""
    try:
        message = parse_message(data, LIMITS)
    except SipParseError:
        return
    try:
        if isinstance(message, Request):
            _ = (message.from_, message.to, message.vias, message.call_id, message.cseq)
            _ = message.uri
        parse_message(message.to_bytes(), LIMITS)
    except (SipSyntaxError, SipParseError):
        pass


def sip_stream(data: bytes) -> None:
    """A TCP stream cut anywhere: the framer never raises, whatever the split."""
    for size in (len(data) or 1, 7, 1):
        framer = StreamFramer(LIMITS)
        for i in range(0, len(data), size):
            framer.feed(data[i : i + size])
        _ = framer.buffered


def sdp(data: bytes) -> None:
    try:
        description = parse_sdp(data)
    except SdpError:
        return
    find_msrp_media(description)
    with contextlib.suppress(SdpError):
        parse_sdp(description.to_bytes())


def sip_uri(data: bytes) -> None:
    text = data.decode("utf-8", "replace")
    for parse in (parse_uri, parse_name_addr, parse_via):
        try:
            value = parse(text)
            str(value)
        except SipSyntaxError:
            pass


def msrp_stream(data: bytes) -> None:
    """MSRP bytes cut anywhere: events (errors among them), never an exception; the same
    events for any split."""
    whole = FrameParser().feed(data)
    parser = FrameParser()
    pieces = []
    for i in range(0, len(data), 5):
        pieces += parser.feed(data[i : i + 5])
    assert [type(e) for e in pieces] == [type(e) for e in whole], "depends on the split"


def msrp_uri(data: bytes) -> None:
    text = data.decode("utf-8", "replace")
    with contextlib.suppress(MsrpUriError):
        str(parse_msrp_uri(text))
    with contextlib.suppress(ValueError):
        parse_byte_range(text)


def cpim(data: bytes) -> None:
    """A message/cpim body: parsed or refused with CpimError; what parses writes back to
    bytes that parse to the same message."""
    try:
        msg = parse_cpim(data)
    except CpimError:
        return
    msg.get("Message-ID", IMDN_NS)
    again = parse_cpim(msg.to_bytes())
    if again != msg:
        raise AssertionError(f"round trip changed the message: {msg!r} -> {again!r}")


def digest(data: bytes) -> None:
    parse_challenge(data.decode("utf-8", "replace"))


_MI = MiRegistry()
_LOOP = asyncio.new_event_loop()  # one for all inputs: a loop per input is most of the cost


async def _echo(params: object) -> object:
    return params


_MI.register("echo", _echo)


def mgmt_jsonrpc(data: bytes) -> None:
    """The management API's JSON-RPC: always an answer that is JSON, or none (a
    notification)."""
    reply = _LOOP.run_until_complete(_MI.handle(data))
    if reply is not None:
        json.loads(reply)


TARGETS: dict[str, Callable[[bytes], None]] = {
    "sip_message": sip_message,
    "sip_stream": sip_stream,
    "sdp": sdp,
    "sip_uri": sip_uri,
    "msrp_stream": msrp_stream,
    "msrp_uri": msrp_uri,
    "digest": digest,
    "cpim": cpim,
    "mgmt_jsonrpc": mgmt_jsonrpc,
}
