"""Cut a SIP byte stream (TCP/TLS) into messages by Content-Length (§18.3)."""

from __future__ import annotations

from dataclasses import dataclass

from gw.sip.message import (
    Limits,
    Request,
    Response,
    SipMessage,
    SipParseError,
    find_head_end,
    parse_message,
    partial_head,
)
from gw.sip.uri import SipSyntaxError, parse_uint

__all__ = ["FramedError", "FramedMessage", "KeepAlive", "StreamFramer", "stream_content_length"]


@dataclass
class FramedMessage:
    message: Request | Response


@dataclass
class FramedError:
    """A message that could not be parsed. `fatal`: framing is lost, close the stream."""

    error: SipParseError
    fatal: bool


@dataclass
class KeepAlive:
    """A double-CRLF ping (RFC 5626 §3.5.1): answer with a single CRLF."""


FramerEvent = FramedMessage | FramedError | KeepAlive


def stream_content_length(head: bytes) -> int:
    """The Content-Length of a message head, as a stream needs it for framing.

    Looks at every (unfolded) header line, so position, folding, case and the compact
    form `l` do not matter. Missing, repeated or non-numeric values are framing errors
    (RFC 3261 §18.3; RFC 4475 ncl, mcl01) and raise a 400 `SipParseError`.
    """
    lines = head.decode("latin-1").replace("\r\n", "\n").split("\n")[1:]
    values: list[str] = []
    current: str | None = None
    for line in [*lines, ""]:
        if line[:1] in (" ", "\t") and current is not None:
            current += " " + line.strip()
            continue
        if current is not None:
            name, colon, value = current.partition(":")
            if colon and name.rstrip(" \t").lower() in ("content-length", "l"):
                values.append(value.strip())
        current = line
    if not values:
        raise SipParseError(400, "Missing Content-Length")
    if len(values) > 1:
        raise SipParseError(400, "Multiple Content-Length")
    try:
        return parse_uint(values[0], 2**63 - 1)
    except SipSyntaxError:
        raise SipParseError(400, "Bad Content-Length") from None


class StreamFramer:
    def __init__(self, limits: Limits | None = None) -> None:
        self.limits = limits or Limits()
        self._buf = bytearray()
        self._closed = False

    @property
    def buffered(self) -> int:
        """Bytes of a message not complete yet (0 between messages; keepalive CRLFs are
        not a message)."""
        buf = self._buf
        if not buf or (buf[0] in (0x0D, 0x0A) and not buf.strip(b"\r\n")):
            return 0
        return len(buf)

    def feed(self, data: bytes) -> list[FramerEvent]:
        if self._closed:
            return []
        self._buf += data
        events: list[FramerEvent] = []
        while self._buf and not self._closed:
            event = self._next()
            if event is None:
                break
            events.append(event)
        return events

    def _next(self) -> FramerEvent | None:
        buf = self._buf
        # Leading CRLFs between messages are keepalives.
        if buf[0] in (0x0D, 0x0A):
            if buf.startswith(b"\r\n\r\n"):
                del buf[:4]
                return KeepAlive()
            stripped = len(buf) - len(buf.lstrip(b"\r\n"))
            if stripped == len(buf) and len(buf) < 4:
                return None
            del buf[:stripped]
            return None if not buf else self._next()
        found = find_head_end(buf)
        if found is None:
            if len(buf) > self.limits.max_message_size:
                return self._fatal(413, "Message Too Large")
            return None
        end, sep = found
        head = bytes(buf[:end])
        try:
            length = stream_content_length(head)
        except SipParseError as exc:
            return self._fatal(exc.code, exc.reason, head)
        total = end + sep + length
        if length > self.limits.max_body_size or total > self.limits.max_message_size:
            return self._fatal(413, "Message Too Large", head)
        if len(buf) < total:
            return None
        raw = bytes(buf[:total])
        del buf[:total]
        try:
            return FramedMessage(parse_message(raw, self.limits, stream=True))
        except SipParseError as exc:
            return FramedError(exc, fatal=False)

    def _fatal(self, code: int, reason: str, head: bytes = b"") -> FramedError:
        """Framing is lost: close. The head, when known, is parsed so a response can be built."""
        self._closed = True
        self._buf.clear()
        head = head[: self.limits.max_message_size]  # bound the work spent on a bad peer
        partial: SipMessage | None = partial_head(head, self.limits) if head else None
        return FramedError(SipParseError(code, reason, partial), fatal=True)
