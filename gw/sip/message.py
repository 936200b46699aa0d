"""SIP message model, parser and serializer (RFC 3261 §7, §20, §25).

One parser serves datagrams and streams: `parse_message` takes one complete
message; `StreamFramer` (framing.py) cuts a byte stream into such messages.
Errors are `SipParseError` carrying the status a server should answer with and,
when the head was readable, the partial message so that a response can be built.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, overload

from gw.sip.uri import (
    NameAddr,
    SipSyntaxError,
    SipUri,
    Via,
    is_token,
    parse_name_addr,
    parse_uint,
    parse_uri,
    parse_via,
    split_commas,
)

__all__ = [
    "COMPACT_FORMS",
    "Headers",
    "Limits",
    "LocalFailure",
    "Request",
    "Response",
    "SipMessage",
    "SipParseError",
    "canonical_name",
    "content_length",
    "find_head_end",
    "parse_cseq",
    "parse_head",
    "parse_message",
    "partial_head",
    "reason_phrase",
]

# RFC 3261 §7.3.3 plus the compact forms of later extensions.
COMPACT_FORMS = {
    "i": "Call-ID",
    "m": "Contact",
    "e": "Content-Encoding",
    "l": "Content-Length",
    "c": "Content-Type",
    "f": "From",
    "s": "Subject",
    "k": "Supported",
    "t": "To",
    "v": "Via",
    "o": "Event",
    "r": "Refer-To",
    "b": "Referred-By",
    "u": "Allow-Events",
    "a": "Accept-Contact",
    "j": "Reject-Contact",
    "d": "Request-Disposition",
    "x": "Session-Expires",
    "y": "Identity",
}

_CANONICAL = {
    name.lower(): name
    for name in (
        "Accept",
        "Accept-Encoding",
        "Accept-Language",
        "Alert-Info",
        "Allow",
        "Authentication-Info",
        "Authorization",
        "Call-ID",
        "Call-Info",
        "Contact",
        "Content-Disposition",
        "Content-Encoding",
        "Content-Language",
        "Content-Length",
        "Content-Type",
        "CSeq",
        "Date",
        "Error-Info",
        "Expires",
        "From",
        "In-Reply-To",
        "Max-Forwards",
        "MIME-Version",
        "Min-Expires",
        "Organization",
        "Priority",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "Proxy-Require",
        "Record-Route",
        "Reply-To",
        "Require",
        "Retry-After",
        "Route",
        "Server",
        "Subject",
        "Supported",
        "Timestamp",
        "To",
        "Unsupported",
        "User-Agent",
        "Via",
        "Warning",
        "WWW-Authenticate",
        "Event",
        "Allow-Events",
        "Session-Expires",
        "Min-SE",
        "RSeq",
        "RAck",
        "P-Asserted-Identity",
        "Path",
        "Refer-To",
        "Referred-By",
        "Identity",
    )
}

# Headers whose values may be combined with commas (§7.3.1); others keep commas.
_MULTI = {
    "via",
    "route",
    "record-route",
    "contact",
    "accept",
    "accept-encoding",
    "accept-language",
    "allow",
    "supported",
    "require",
    "proxy-require",
    "unsupported",
    "allow-events",
    "path",
    "in-reply-to",
    "content-encoding",
    "content-language",
    "alert-info",
    "call-info",
    "error-info",
    "warning",
}

_REASONS = {
    100: "Trying",
    180: "Ringing",
    181: "Call Is Being Forwarded",
    182: "Queued",
    183: "Session Progress",
    200: "OK",
    202: "Accepted",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    410: "Gone",
    413: "Request Entity Too Large",
    414: "Request-URI Too Long",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    420: "Bad Extension",
    421: "Extension Required",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    484: "Address Incomplete",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    491: "Request Pending",
    500: "Server Internal Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Server Time-out",
    505: "Version Not Supported",
    513: "Message Too Large",
    600: "Busy Everywhere",
    603: "Decline",
    604: "Does Not Exist Anywhere",
    606: "Not Acceptable",
}


_CLASS_REASONS = {1: "Provisional", 2: "OK", 3: "Redirect"}


def reason_phrase(code: int) -> str:
    reason = _REASONS.get(code)
    return reason if reason is not None else _CLASS_REASONS.get(code // 100, "Error")


# Spellings seen so far -> canonical name. Only valid header names (tokens) are kept, so a
# hit also tells parse_head that the name is well-formed; bounded against peers sending
# ever new names.
_NAME_CACHE: dict[str, str] = {}
_NAME_CACHE_MAX = 2048


def canonical_name(name: str) -> str:
    """Expand compact forms and normalise case, so lookups are by one spelling."""
    canon = _NAME_CACHE.get(name)
    if canon is not None:
        return canon
    low = name.lower()
    if len(low) == 1 and low in COMPACT_FORMS:
        canon = COMPACT_FORMS[low]
    else:
        canon = _CANONICAL.get(low) or "-".join(p.capitalize() for p in name.split("-"))
    if len(_NAME_CACHE) < _NAME_CACHE_MAX and _HEADER_NAME.fullmatch(name):
        _NAME_CACHE[name] = canon
    return canon


for _name in _CANONICAL.values():
    _NAME_CACHE[_name] = _NAME_CACHE[_name.lower()] = _name
for _short, _name in COMPACT_FORMS.items():
    _NAME_CACHE[_short] = _NAME_CACHE[_short.upper()] = _name
del _short, _name
_MULTI_CANONICAL = frozenset(_CANONICAL[name] for name in _MULTI)


@dataclass(frozen=True)
class Limits:
    """Parser limits. Over a limit: 413 (size) or 400 (header count/length) for requests."""

    max_message_size: int = 65536
    max_headers: int = 128
    max_header_length: int = 8192
    max_body_size: int = 65536


class SipParseError(Exception):
    def __init__(self, code: int, reason: str, partial: SipMessage | None = None) -> None:
        super().__init__(f"{code} {reason}")
        self.code = code
        self.reason = reason
        self.partial = partial


class Headers(Sequence[tuple[str, str]]):
    """A message's header fields: (canonical name, raw value) pairs, in order.

    It also holds the parsed views of its message (`SipMessage.from_`, `vias`, ...), and
    every method that changes the fields drops them (`set`, `add`, `remove`): there is no
    other way to change them, so a view never outlives the text it was parsed from. Reading
    is a sequence of pairs (iteration, `len`, indexing, slices as lists) plus `get` and
    `get_all` by name; it compares equal to a list of the same pairs.
    """

    __slots__ = ("_items", "views")

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items: list[tuple[str, str]] = list(items)
        # Parsed views of the message (SipMessage._cached); None: none parsed yet.
        self.views: dict[str, Any] | None = None

    # -- reading ----------------------------------------------------------------
    def get(self, name: str) -> str | None:
        """The first value of `name` (any spelling or compact form), or None."""
        key = _NAME_CACHE.get(name) or canonical_name(name)
        for k, v in self._items:
            if k == key:
                return v
        return None

    def get_all(self, name: str) -> list[str]:
        """All values, comma-split for headers that allow combining (§7.3.1)."""
        key = _NAME_CACHE.get(name) or canonical_name(name)
        values = [v for k, v in self._items if k == key]
        if key in _MULTI_CANONICAL:
            return [part for v in values for part in split_commas(v)]
        return values

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._items)

    def __contains__(self, item: object) -> bool:
        return item in self._items

    @overload
    def __getitem__(self, index: int) -> tuple[str, str]: ...
    @overload
    def __getitem__(self, index: slice) -> list[tuple[str, str]]: ...
    def __getitem__(self, index: int | slice) -> tuple[str, str] | list[tuple[str, str]]:
        return self._items[index]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Headers):
            return self._items == other._items
        if isinstance(other, list):
            return self._items == other
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"

    # -- changing (each drops the parsed views) ------------------------------------
    def set(self, name: str, value: str) -> None:
        """Replace every occurrence with one value, kept at the first one's position."""
        self.views = None
        key = canonical_name(name)
        items = self._items
        for i, (k, _) in enumerate(items):
            if k == key:
                items[i] = (key, value)
                items[i + 1 :] = [(kk, vv) for kk, vv in items[i + 1 :] if kk != key]
                return
        items.append((key, value))

    def add(self, name: str, value: str, *, first: bool = False) -> None:
        self.views = None
        entry = (canonical_name(name), value)
        if first:
            self._items.insert(0, entry)
        else:
            self._items.append(entry)

    def remove(self, name: str) -> None:
        """Remove every occurrence of `name`."""
        self.views = None
        key = canonical_name(name)
        self._items = [(k, v) for k, v in self._items if k != key]


def _headers(items: Iterable[tuple[str, str]]) -> Headers:
    """`Headers(items)` without the call to __init__ (one per message parsed or built)."""
    headers: Headers = object.__new__(Headers)
    headers._items = list(items)
    headers.views = None
    return headers


class SipMessage:
    """A SIP message head (its `Headers`) and body.

    The typed views (`vias`, `top_via`, `from_`, `to`, `call_id`, `cseq`, `contacts`,
    `routes`, `record_routes`) are parsed on first use and cached on the `Headers`, which
    drops them whenever its fields change. `remove_first_via` and `replace_top_via` keep
    them right; assigning `headers` replaces the fields (with their own, empty, cache).
    """

    __slots__ = ("_headers", "body")

    def __init__(self, headers: Iterable[tuple[str, str]] = (), body: bytes = b"") -> None:
        self._headers = headers if type(headers) is Headers else _headers(headers)
        self.body = body

    @property
    def headers(self) -> Headers:
        return self._headers

    @headers.setter
    def headers(self, value: Iterable[tuple[str, str]]) -> None:
        self._headers = value if type(value) is Headers else _headers(value)

    # -- header access ------------------------------------------------------
    # `get` and `add` repeat Headers' bodies: they run a dozen times per message, and a
    # delegating call cost 2 % of the per-MESSAGE CPU (bench/micro_sip.py).
    def get(self, name: str) -> str | None:
        key = _NAME_CACHE.get(name) or canonical_name(name)
        for k, v in self._headers._items:
            if k == key:
                return v
        return None

    def get_all(self, name: str) -> list[str]:
        """All values, comma-split for headers that allow combining (§7.3.1)."""
        return self._headers.get_all(name)

    def set(self, name: str, value: str) -> None:
        """Replace every occurrence with one value, kept at the first one's position."""
        self._headers.set(name, value)

    def add(self, name: str, value: str, *, first: bool = False) -> None:
        headers = self._headers
        headers.views = None
        entry = (canonical_name(name), value)
        if first:
            headers._items.insert(0, entry)
        else:
            headers._items.append(entry)

    def remove(self, name: str) -> None:
        self._headers.remove(name)

    def remove_first_via(self) -> None:
        headers = self._headers
        headers.views = None
        items = headers._items
        for i, (k, v) in enumerate(items):
            if k == "Via":
                parts = split_commas(v)
                if len(parts) > 1:
                    items[i] = (k, ", ".join(parts[1:]))
                elif parts:
                    del items[i]
                else:
                    continue  # an empty Via line: the first via-parm is further on
                return

    def replace_top_via(self, via: Via) -> None:
        """Write `via` over the first Via value (e.g. stamped with received/rport); the
        views are updated rather than dropped (this runs on every request received)."""
        items = self._headers._items
        for i, (name, value) in enumerate(items):
            if name == "Via":
                parts = split_commas(value)
                if not parts:
                    continue  # an empty Via line holds no via-parm: the top one is further on
                parts[0] = str(via)
                items[i] = (name, ", ".join(parts))
                break
        else:
            return
        views = self._cached()
        vias = views.pop("vias", None)
        if vias:
            views["vias"] = (via, *vias[1:])
        views["top_via"] = via

    def _cached(self) -> dict[str, Any]:
        headers = self._headers
        views = headers.views
        if views is None:
            views = headers.views = {}
        return views

    # -- typed views ----------------------------------------------------------
    @property
    def vias(self) -> list[Via]:
        views = self._cached()
        vias: tuple[Via, ...] | None = views.get("vias")
        if vias is None:
            vias = views["vias"] = tuple([parse_via(v) for v in self.get_all("Via")])
        return list(vias)

    @property
    def top_via(self) -> Via:
        views = self._cached()
        via: Via | None = views.get("top_via")
        if via is None:
            vias: tuple[Via, ...] | None = views.get("vias")
            if vias is not None:
                if not vias:
                    raise SipSyntaxError("no Via")
                via = vias[0]
            else:
                values = self._headers.get_all("Via")
                if not values:
                    raise SipSyntaxError("no Via")
                via = parse_via(values[0])
            views["top_via"] = via
        return via

    @property
    def from_(self) -> NameAddr:
        views = self._cached()
        value: NameAddr | None = views.get("from")
        if value is None:
            value = views["from"] = parse_name_addr(self._required("From"))
        return value

    @property
    def to(self) -> NameAddr:
        views = self._cached()
        value: NameAddr | None = views.get("to")
        if value is None:
            value = views["to"] = parse_name_addr(self._required("To"))
        return value

    @property
    def call_id(self) -> str:
        views = self._cached()
        value: str | None = views.get("call_id")
        if value is None:
            value = views["call_id"] = self._required("Call-ID")
        return value

    @property
    def cseq(self) -> tuple[int, str]:
        views = self._cached()
        value: tuple[int, str] | None = views.get("cseq")
        if value is None:
            value = views["cseq"] = parse_cseq(self._required("CSeq"))
        return value

    @property
    def contacts(self) -> list[NameAddr]:
        return self._name_addrs("Contact")

    @property
    def record_routes(self) -> list[NameAddr]:
        return self._name_addrs("Record-Route")

    @property
    def routes(self) -> list[NameAddr]:
        return self._name_addrs("Route")

    def _name_addrs(self, name: str) -> list[NameAddr]:
        views = self._cached()
        values: tuple[NameAddr, ...] | None = views.get(name)
        if values is None:
            values = views[name] = tuple([parse_name_addr(v) for v in self._headers.get_all(name)])
        return list(values)

    @property
    def content_type(self) -> str | None:
        value = self._headers.get("Content-Type")
        return value.strip() if value is not None else None

    def _required(self, name: str) -> str:
        value = self._headers.get(name)
        if value is None:
            raise SipSyntaxError(f"missing {name}")
        return value

    # -- serialization ----------------------------------------------------------
    def start_line(self) -> str:
        raise NotImplementedError

    def to_bytes(self) -> bytes:
        """Serialize; Content-Length is always written last, from the actual body."""
        headers = self._headers._items
        lines = [f"{k}: {v}" for k, v in headers if k != "Content-Length"]
        head = "\r\n".join(lines)
        # One CR and one LF between lines and none inside them, or a header (maybe a
        # Content-Length one, left out above) needs the per-header check.
        n = len(lines) - 1
        if len(lines) != len(headers) or head.count("\n") != n or head.count("\r") != n:
            for k, v in headers:
                if "\r" in k or "\n" in k or "\r" in v or "\n" in v:
                    raise ValueError(f"CR/LF in header {k!r}: would inject header lines")
        if lines:
            head = f"{self.start_line()}\r\n{head}\r\nContent-Length: {len(self.body)}\r\n\r\n"
        else:
            head = f"{self.start_line()}\r\nContent-Length: {len(self.body)}\r\n\r\n"
        return head.encode("utf-8") + self.body

    def __bytes__(self) -> bytes:
        return self.to_bytes()


class Request(SipMessage):
    __slots__ = ("method", "uri", "version")

    def __init__(
        self,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        method: str = "OPTIONS",
        uri: SipUri | None = None,
        version: str = "SIP/2.0",
    ) -> None:
        self._headers = headers if type(headers) is Headers else _headers(headers)
        self.body = body
        self.method = method
        self.uri = uri if uri is not None else SipUri(scheme="sip", host="invalid")
        self.version = version

    def start_line(self) -> str:
        return f"{self.method} {self.uri} {self.version}"

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.uri}>"


class LocalFailure(enum.Enum):
    """Why a response was made here rather than received (it never went on the wire)."""

    TIMEOUT = "timeout"  # no final response in time (Timer B/F, §8.1.3.1)
    TRANSPORT = "transport"  # could not be sent (§8.1.3.1: a 503)
    INVALID = "invalid"  # we could not send the request or use its answer


class Response(SipMessage):
    __slots__ = ("local", "reason", "status", "version")

    def __init__(
        self,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        status: int = 200,
        reason: str = "OK",
        version: str = "SIP/2.0",
        local: LocalFailure | None = None,
    ) -> None:
        self._headers = headers if type(headers) is Headers else _headers(headers)
        self.body = body
        self.status = status
        self.reason = reason
        self.version = version
        self.local = local  # set on responses synthesised by our own stack

    def start_line(self) -> str:
        return f"{self.version} {self.status} {self.reason}"

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.reason}>"


def parse_cseq(value: str) -> tuple[int, str]:
    """CSeq: 1*DIGIT LWS Method; the number must be < 2**31 (RFC 3261 §8.1.1.5)."""
    parts = value.split()
    if len(parts) != 2 or not is_token(parts[1]):
        raise SipSyntaxError(f"bad CSeq {value!r}")
    try:
        number = parse_uint(parts[0], 2**31 - 1)
    except SipSyntaxError:
        raise SipSyntaxError(f"bad CSeq number {value!r}") from None
    return number, parts[1]


_STATUS = re.compile(r"SIP/([0-9]+\.[0-9]+) ([0-9]{3}) (.*)", re.S)
_REQUEST = re.compile(r"([A-Za-z0-9\-.!%*_+`'~]+) (\S+) SIP/([0-9]+\.[0-9]+)", re.A)
_HEADER_NAME = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
# SIP-date = rfc1123-date, and only "GMT" is a valid zone (RFC 3261 §20.17, RFC 4475 §3.1.2.12).
_DATE = re.compile(
    r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun), [0-9]{2} "
    r"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) [0-9]{4} "
    r"[0-9]{2}:[0-9]{2}:[0-9]{2} GMT"
)
_CONTENT_TYPE = re.compile(r"[\w.+\-!#$&^`{|}~]+/[\w.+\-!#$&^`{|}~*]+", re.A)


def _unfold(lines: Iterable[str]) -> Iterator[str]:
    """Join continuation lines (leading SP/HT) to the header they continue (§7.3.1)."""
    current: str | None = None
    for line in lines:
        if line[:1] in (" ", "\t"):
            if current is None:
                raise SipSyntaxError("continuation line before first header")
            current += " " + line.strip(" \t")
        else:
            if current is not None:
                yield current
            current = line
    if current is not None:
        yield current


def find_head_end(data: bytes | bytearray) -> tuple[int, int] | None:
    """(index, length) of the first empty line ending the head; bare LFs are tolerated."""
    idx = data.find(b"\r\n\r\n")
    lf = data.find(b"\n\n")
    if idx >= 0 and (lf < 0 or idx <= lf):
        return idx, 4
    if lf >= 0:
        return lf, 2
    return None


def split_head(data: bytes) -> tuple[bytes, bytes] | None:
    """Split at the first empty line; tolerate bare LF line ends."""
    found = find_head_end(data)
    if found is None:
        return None
    idx, sep = found
    return data[:idx], data[idx + sep :]


def parse_message(
    data: bytes, limits: Limits = Limits(), *, stream: bool = False
) -> Request | Response:
    """Parse one complete message.

    On a datagram a body longer than Content-Length is truncated (§18.3); a shorter
    one is a 400. `stream=True` means the framer already cut the body to size.
    """
    if len(data) > limits.max_message_size:
        raise SipParseError(413, "Message Too Large", _partial_head(data, limits))
    parts = split_head(data)
    if parts is None:
        raise SipParseError(400, "Missing Empty Line After Headers")
    head, body = parts
    msg = parse_head(head, limits)
    _check_body(msg, body, limits, stream)
    return msg


def _partial_head(data: bytes, limits: Limits) -> SipMessage | None:
    """Best-effort head parse, so an oversized request can still be answered."""
    parts = split_head(data[: limits.max_message_size])
    if parts is None:
        return None
    return partial_head(parts[0], limits)


def partial_head(head: bytes, limits: Limits = Limits()) -> SipMessage | None:
    """The head parsed as far as possible (None if not even the start line is readable)."""
    try:
        return parse_head(head, limits)
    except SipParseError as exc:
        return exc.partial


def parse_head(head: bytes, limits: Limits = Limits()) -> Request | Response:
    """Parse and validate a message head (start line and headers, without the empty line)."""
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        text = head.decode("latin-1")
    text = text.replace("\r\n", "\n")
    if text.endswith("\r"):  # "CRLF LF" ending the head
        text = text[:-1]
    if "\r" in text:
        raise SipParseError(400, "Bare CR In Message Head")
    raw_lines = text.split("\n")
    # Leading CRLFs are allowed before a message on streams (keepalives).
    while raw_lines and raw_lines[0] == "":
        raw_lines.pop(0)
    if not raw_lines:
        raise SipParseError(400, "Empty Message")
    start = raw_lines[0]
    msg: Request | Response
    # The first problem found; raised once the headers are read, so that the partial
    # message carries Via/From/To/Call-ID/CSeq and a 400 can still be addressed.
    error: SipParseError | None = None
    m = _STATUS.fullmatch(start) if start.startswith("SIP/") else None
    if m:
        version, code, reason = m.groups()
        msg = Response(status=int(code), reason=reason, version=f"SIP/{version}")
        if not 100 <= msg.status <= 699:
            raise SipParseError(400, "Bad Status Code")  # responses are never answered
    else:
        m = _REQUEST.fullmatch(start)
        if m is None:
            words = start.split(maxsplit=1)
            method = words[0] if words else ""
            if start.startswith("SIP/") or not is_token(method):
                bad = "Bad Status Line" if start.startswith("SIP/") else "Bad Request Line"
                raise SipParseError(400, bad)
            msg = Request(method=method)  # placeholder Request-URI: partial only
            error = SipParseError(400, "Bad Request Line")
        else:
            method, uri_text, version = m.groups()
            try:
                uri = parse_uri(uri_text)
            except SipSyntaxError as exc:
                msg = Request(method=method, version=f"SIP/{version}")
                error = SipParseError(400, f"Bad Request-URI: {exc}")
            else:
                msg = Request(method=method, uri=uri, version=f"SIP/{version}")
                if uri.is_sip and uri.headers is not None:
                    # §19.1.1: no headers in a Request-URI (RFC 4475 §3.1.2.11 escruri).
                    error = SipParseError(400, "Headers In Request-URI")
    if "\n " in text or "\n\t" in text:
        try:
            folded = list(_unfold(raw_lines[1:]))
        except SipSyntaxError as exc:
            raise SipParseError(400, str(exc), msg) from None
    else:
        folded = raw_lines[1:]  # no continuation lines
    if len(folded) > limits.max_headers:
        error = error or SipParseError(400, "Too Many Headers")
        folded = folded[: limits.max_headers]
    max_length = limits.max_header_length
    append = msg._headers._items.append  # a new message: no views to drop yet
    names = _NAME_CACHE
    for line in folded:
        if len(line) > max_length:
            error = error or SipParseError(400, "Header Too Long")
            continue
        name, colon, value = line.partition(":")
        if not colon:
            error = error or SipParseError(400, f"Malformed Header Line {line[:40]!r}")
            continue
        canon = names.get(name)  # a known spelling is a valid name
        if canon is None:
            name = name.rstrip(" \t")
            if not _HEADER_NAME.fullmatch(name):
                error = error or SipParseError(400, f"Malformed Header Line {line[:40]!r}")
                continue
            canon = canonical_name(name)
        append((canon, value.strip(" \t")))
    if error is not None:
        error.partial = msg
        raise error
    if msg.version != "SIP/2.0":
        raise SipParseError(505, "Version Not Supported", msg)
    _validate(msg)
    return msg


# Headers that may appear at most once (RFC 4475 §3.3.8 multi01, §3.3.9 mcl01).
_SINGLE_VALUED = (
    "From",
    "To",
    "Call-ID",
    "CSeq",
    "Max-Forwards",
    "Expires",
    "Date",
    "Content-Length",
    "Content-Type",
)


_MANDATORY = ("Via", "From", "To", "Call-ID", "CSeq")


def _validate(msg: Request | Response) -> None:
    """Mandatory headers and their syntax (§8.1.1), so later code can rely on them.

    The parsed values are what the typed views return afterwards (they are cached).
    """
    try:
        first: dict[str, str] = {}  # first value of each header
        repeated: set[str] = set()
        via_values: list[str] = []
        for k, v in msg._headers._items:
            if k in first:
                repeated.add(k)
            else:
                first[k] = v
            if k == "Via":
                via_values.append(v)
        for name in _MANDATORY:
            if name not in first:
                raise SipSyntaxError(f"Missing {name}")
        if repeated:
            for name in _SINGLE_VALUED:
                if name in repeated:
                    raise SipSyntaxError(f"Duplicate {name}")
        views = msg._cached()
        via_values = [v for value in via_values for v in split_commas(value)]  # all split first
        views["vias"] = tuple([parse_via(v) for v in via_values])
        frm = views["from"] = parse_name_addr(first["From"])
        to = views["to"] = parse_name_addr(first["To"])
        if frm.wildcard or to.wildcard:
            raise SipSyntaxError("Wildcard in From/To")
        call_id = views["call_id"] = first["Call-ID"]
        if call_id.split() != [call_id] or not call_id.isprintable():
            raise SipSyntaxError("Bad Call-ID")  # empty, with whitespace or a control character
        _, method = views["cseq"] = parse_cseq(first["CSeq"])
        if isinstance(msg, Request):
            if method != msg.method:
                raise SipSyntaxError("CSeq Method Mismatch")
            if msg.method == "INVITE" or msg.method == "REGISTER":
                msg.contacts  # noqa: B018
        mf = first.get("Max-Forwards")
        if mf is not None:
            try:
                parse_uint(mf, 255)
            except SipSyntaxError:
                raise SipSyntaxError("Bad Max-Forwards") from None
        expires = first.get("Expires")
        if expires is not None and not (expires.isascii() and expires.isdigit()):
            raise SipSyntaxError("Bad Expires")
        date = first.get("Date")
        if date is not None and not _DATE.fullmatch(date):
            raise SipSyntaxError("Bad Date")
        ctype = first.get("Content-Type")
        if ctype is not None and not _CONTENT_TYPE.match(ctype):
            raise SipSyntaxError("Bad Content-Type")
    except SipSyntaxError as exc:
        reason = str(exc)
        reason = reason[0].upper() + reason[1:] if reason else "Bad Request"
        raise SipParseError(400, reason, msg) from None


_MAX_CONTENT_LENGTH = 2**63 - 1


def content_length(msg: SipMessage) -> int | None:
    value = msg.get("Content-Length")
    if value is None:
        return None
    try:
        return parse_uint(value.strip(), _MAX_CONTENT_LENGTH)
    except SipSyntaxError:
        raise SipSyntaxError("Bad Content-Length") from None


def _check_body(msg: SipMessage, body: bytes, limits: Limits, stream: bool) -> None:
    try:
        length = content_length(msg)
    except SipSyntaxError:
        raise SipParseError(400, "Bad Content-Length", msg) from None
    if length is None:
        if stream:
            raise SipParseError(400, "Missing Content-Length", msg)
        length = len(body)
    if len(body) < length:  # §18.3: on a datagram this is a 400 (RFC 4475 clerr)
        raise SipParseError(400, "Content-Length Larger Than Body", msg)
    if length > limits.max_body_size:
        raise SipParseError(413, "Body Too Large", msg)
    msg.body = body[:length]
