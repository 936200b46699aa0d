"""Message/CPIM (RFC 3862), the wrapper RCS and IMS clients put around every message, as a
value: parse it, build it, and read its namespaced headers (IMDN's, RFC 5438, above all).

A CPIM body is three parts, each after a blank line: the message headers (`From`, `To`,
`DateTime`, `NS`, `imdn.Message-ID`, ...), the MIME headers of the content (`Content-Type`
first of all), and the content itself, bytes untouched. Message header names are
case-sensitive and may carry a namespace prefix (`imdn.Message-ID`) that an `NS` header
declares; nothing is folded. The gateway wraps a page-mode body for an MSRP peer that
accepts only CPIM, unwraps one for a page-mode peer that does not take CPIM, and passes it
through otherwise. Pure functions over bytes: no I/O, no clock unless given one.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

__all__ = [
    "CPIM",
    "IMDN_NS",
    "CpimError",
    "CpimLimits",
    "CpimMessage",
    "is_cpim",
    "parse_cpim",
    "wrap",
]

CPIM = "message/cpim"
IMDN_NS = "urn:ietf:params:imdn"

# RFC 3862 §3.6: Header-name = [Name-prefix "."] Name, each a token of these characters.
_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+^_`|~-]+(?:\.[A-Za-z0-9!#$%&'*+^_`|~-]+)?")
_MIME_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+^_`|~.-]+")
# NS: [prefix SP] "<" URN ">"  (no prefix: the default namespace of unprefixed names)
_NS = re.compile(r"(?:([A-Za-z0-9!#$%&'*+^_`|~-]+) +)?<([^<>\s]+)>")
_CTL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # control characters but HTAB


class CpimError(ValueError):
    """A body that is no well-formed CPIM message: MSRP 400 / SIP 400 with `reason`."""

    def __init__(self, reason: str, code: int = 400) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(frozen=True, slots=True)
class CpimLimits:
    """Bounds on what a parse accepts (the body's own size is the transport's limit)."""

    max_headers: int = 64  # message and content headers together
    max_header_length: int = 4096  # one line, name and value


@dataclass(slots=True)
class CpimMessage:
    """One CPIM message. `headers` are the message headers as written (names with their
    prefix, in order); `content` the content's MIME headers; `body` the content."""

    headers: list[tuple[str, str]] = field(default_factory=list)
    content: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    @property
    def content_type(self) -> str:
        """The content's Content-Type as written (MIME's default when it has none)."""
        return self.content_header("Content-Type") or "text/plain; charset=us-ascii"

    def content_header(self, name: str) -> str | None:
        """A MIME header of the content (names compare case-insensitively there)."""
        lowered = name.lower()
        return next((v for k, v in self.content if k.lower() == lowered), None)

    def namespaces(self) -> dict[str, str]:
        """{prefix: URN} from the NS headers; "" is the default namespace."""
        found: dict[str, str] = {}
        for name, value in self.headers:
            if name == "NS":
                m = _NS.fullmatch(value.strip())
                if m is not None:
                    found[m.group(1) or ""] = m.group(2)
        return found

    def get(self, name: str, ns: str | None = None) -> str | None:
        """The first message header `name` (case-sensitive, RFC 3862 §3.1), in namespace
        `ns` (a URN, resolved through NS whatever prefix the sender chose) or unprefixed."""
        return next(self.get_all(name, ns), None)

    def get_all(self, name: str, ns: str | None = None) -> Iterator[str]:
        if ns is None:
            return (v for k, v in self.headers if k == name)
        prefixes = {p for p, urn in self.namespaces().items() if urn == ns}
        wanted = {f"{p}.{name}" if p else name for p in prefixes}
        return (v for k, v in self.headers if k in wanted)

    def to_bytes(self) -> bytes:
        """The body as sent: CRLF line ends, a blank line after each header block."""
        for name, value in (*self.headers, *self.content):  # what a parse would refuse
            if _CTL.search(value) or _CTL.search(name):
                raise CpimError(f"Control Character In CPIM Header {name!r}")
        head = "".join(f"{k}: {v}\r\n" for k, v in self.headers)
        mime = "".join(f"{k}: {v}\r\n" for k, v in self.content)
        return f"{head}\r\n{mime}\r\n".encode() + self.body


def is_cpim(content_type: str) -> bool:
    """Whether a Content-Type is message/cpim (parameters and case ignored)."""
    return content_type.split(";", 1)[0].strip().lower() == CPIM


def parse_cpim(data: bytes, limits: CpimLimits = CpimLimits()) -> CpimMessage:
    """Parse a message/cpim body; CpimError says what is wrong with it."""
    head, rest = _block(data, "message headers")
    mime, body = _block(rest, "content headers")
    headers = _lines(head, limits, 0, mime_block=False)
    content = _lines(mime, limits, len(headers), mime_block=True)
    if not headers:
        raise CpimError("CPIM Without Message Headers")
    message = CpimMessage(headers, content, body)
    for name, value in headers:
        if name == "NS" and _NS.fullmatch(value.strip()) is None:
            raise CpimError(f"Bad CPIM NS Header {value[:60]!r}")
    return message


def wrap(
    body: bytes,
    content_type: str,
    *,
    from_uri: str,
    to_uri: str,
    now: datetime | None = None,
    message_id: str | None = None,
    disposition: Sequence[str] = (),
    extra: Sequence[tuple[str, str]] = (),
) -> CpimMessage:
    """A page-mode body in CPIM for an MSRP peer that takes nothing else (RCC.07): From,
    To, DateTime and, with a Message-ID, the IMDN namespace, `imdn.Message-ID` and the
    `imdn.Disposition-Notification` asked for. `extra`: more message headers, as written."""
    when = (now or datetime.now(UTC)).astimezone(UTC)
    headers = [
        ("From", _angle(from_uri)),
        ("To", _angle(to_uri)),
        ("DateTime", when.isoformat(timespec="milliseconds").replace("+00:00", "Z")),
    ]
    if message_id is not None:
        headers.append(("NS", f"imdn <{IMDN_NS}>"))
        headers.append(("imdn.Message-ID", message_id))
        if disposition:
            headers.append(("imdn.Disposition-Notification", ", ".join(disposition)))
    headers += extra
    return CpimMessage(headers, [("Content-Type", content_type)], body)


def _angle(uri: str) -> str:
    """A URI as CPIM's From/To want it (`<uri>`), a name-addr left as it is."""
    return uri if "<" in uri else f"<{uri}>"


def _block(data: bytes, what: str) -> tuple[bytes, bytes]:
    """(the header block, what follows its blank line); CRLF, or bare LF as some send.
    A block with no header is its blank line alone."""
    for blank in (b"\r\n", b"\n"):
        if data.startswith(blank):
            return b"", data[len(blank) :]
    crlf = data.find(b"\r\n\r\n")
    lf = data.find(b"\n\n")
    if crlf < 0 and lf < 0:
        if what == "content headers" and data in (b"", b"\r\n", b"\n"):
            return b"", b""  # an empty content with no MIME headers
        raise CpimError(f"CPIM {what.title()} Not Terminated")
    if crlf >= 0 and (lf < 0 or crlf <= lf):
        return data[:crlf], data[crlf + 4 :]
    return data[:lf], data[lf + 2 :]


def _lines(
    block: bytes, limits: CpimLimits, seen: int, *, mime_block: bool
) -> list[tuple[str, str]]:
    try:
        text = block.decode("utf-8")
    except UnicodeDecodeError:
        raise CpimError("CPIM Header Not UTF-8") from None
    if not text:
        return []
    out: list[tuple[str, str]] = []
    for line in text.replace("\r\n", "\n").split("\n"):
        if len(line) > limits.max_header_length:
            raise CpimError("CPIM Header Too Long")
        if seen + len(out) >= limits.max_headers:
            raise CpimError("Too Many CPIM Headers")
        if line[:1] in (" ", "\t"):
            raise CpimError("Folded CPIM Header")  # RFC 3862 §3: no continuation lines
        name, colon, value = line.partition(":")
        pattern = _MIME_NAME if mime_block else _NAME
        if not colon or not pattern.fullmatch(name):
            raise CpimError(f"Malformed CPIM Header {line[:40]!r}")
        if _CTL.search(value):
            raise CpimError(f"Control Character In CPIM Header {name!r}")
        out.append((name, value.strip(" \t")))
    return out
