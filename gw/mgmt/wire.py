"""HTTP/1.1 wire format for the management server: bounded request reading, response encoding.

Only what a management API needs: Content-Length bodies (chunked requests get 411), no
trailers, no upgrades. Every limit is explicit so a bad or slow client costs bounded memory
and time, and every malformed request gets a precise status instead of a crash or a hang.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus
from urllib.parse import urlsplit

_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_REQUEST_LINE = re.compile(rb"(" + _TOKEN + rb") ([\x21-\x7e]+) HTTP/(\d)\.(\d)")
_HEADER_NAME = re.compile(_TOKEN)
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_MAX_EMPTY_LINES = 4  # RFC 9112 2.2: tolerate a few stray CRLFs before a request line


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-connection limits; the defaults suit an operator-facing management port."""

    max_header_bytes: int = 16 * 1024  # request line + header lines
    max_headers: int = 100
    max_body_bytes: int = 1024 * 1024
    read_timeout: float = 10.0  # whole request from its first byte (and the first request)
    idle_timeout: float = 60.0  # between requests on a kept-alive connection
    write_timeout: float = 10.0
    handler_timeout: float = 30.0
    ready_timeout: float = 5.0  # the readiness callback
    max_connections: int = 128


class HttpError(Exception):
    """A request the server answers with `status` and then closes the connection."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Head:
    """A parsed request line and header block; `deadline` bounds reading the body."""

    method: str
    target: str
    path: str
    query: str
    version: tuple[int, int]
    headers: dict[str, str]  # lower-case names; repeated fields joined with ", "
    keep_alive: bool
    content_length: int
    deadline: float


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    query: str
    headers: Mapping[str, str]
    body: bytes


async def read_head(reader: asyncio.StreamReader, limits: Limits, wait: float) -> Head | None:
    """Read one request head. None: the peer closed or stayed idle for `wait` between requests.

    The clock for the rest of the request (`limits.read_timeout`) starts at its first byte.
    """
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(wait):
            first = await reader.read(1)
    except TimeoutError:
        return None
    if not first:
        return None
    deadline = loop.time() + limits.read_timeout
    try:
        async with asyncio.timeout_at(deadline):
            lines = await _read_lines(reader, first, limits)
    except TimeoutError:
        raise HttpError(408, "request not received in time") from None
    if lines is None:
        return None
    return _parse_head(lines, limits, deadline)


async def read_body(reader: asyncio.StreamReader, head: Head) -> bytes | None:
    """The Content-Length body, or None if the peer closed before sending all of it."""
    if head.content_length == 0:
        return b""
    try:
        async with asyncio.timeout_at(head.deadline):
            return await reader.readexactly(head.content_length)
    except TimeoutError:
        raise HttpError(408, "request body not received in time") from None
    except asyncio.IncompleteReadError:
        return None


async def _read_lines(
    reader: asyncio.StreamReader, first: bytes, limits: Limits
) -> list[bytes] | None:
    """Lines up to the empty one (CRLF or bare LF), within the byte and count limits."""
    lines: list[bytes] = []
    total = 0
    empty = 0
    pending = first
    while True:
        if pending == b"\n":
            line = pending
        else:
            try:
                line = pending + await reader.readline()
            except ValueError:  # longer than the stream limit
                raise _too_large(lines) from None
        pending = b""
        if not line.endswith(b"\n"):
            return None  # EOF in the middle of the head
        total += len(line)
        if total > limits.max_header_bytes:
            raise _too_large(lines)
        line = line[:-2] if line.endswith(b"\r\n") else line[:-1]
        if not line:
            if lines:
                return lines
            empty += 1
            if empty > _MAX_EMPTY_LINES:
                raise HttpError(400, "expected a request line")
            continue
        lines.append(line)
        if len(lines) > limits.max_headers + 1:
            raise HttpError(431, f"more than {limits.max_headers} header fields")


def _too_large(lines: list[bytes]) -> HttpError:
    if not lines:
        return HttpError(414, "request line too long")
    return HttpError(431, "request header fields too large")


def _parse_head(lines: list[bytes], limits: Limits, deadline: float) -> Head:
    m = _REQUEST_LINE.fullmatch(lines[0])
    if m is None:
        raise HttpError(400, "malformed request line")
    method, raw_target, major, minor = m.groups()
    if major != b"1":
        raise HttpError(505, "only HTTP/1.x is supported")
    version = (1, int(minor))
    target = raw_target.decode("ascii")
    path, query = _split_target(target)
    headers = _parse_fields(lines[1:])
    if version >= (1, 1) and "host" not in headers:
        raise HttpError(400, "missing Host header")
    tokens = {t.strip().lower() for t in headers.get("connection", "").split(",")}
    keep_alive = "close" not in tokens if version >= (1, 1) else "keep-alive" in tokens
    return Head(
        method=method.decode("ascii"),
        target=target,
        path=path,
        query=query,
        version=version,
        headers=headers,
        keep_alive=keep_alive,
        content_length=_content_length(headers, limits),
        deadline=deadline,
    )


def _split_target(target: str) -> tuple[str, str]:
    if target.startswith("/"):
        path, _, query = target.partition("?")
        return path, query
    if target.lower().startswith(("http://", "https://")):  # absolute-form (RFC 9112 3.2.2)
        parts = urlsplit(target)
        return parts.path or "/", parts.query
    raise HttpError(400, "request target must be an absolute path")


def _parse_fields(lines: list[bytes]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in lines:
        if line[:1] in (b" ", b"\t"):
            raise HttpError(400, "obsolete header line folding")
        name, sep, value = line.partition(b":")
        if not sep or _HEADER_NAME.fullmatch(name) is None:
            raise HttpError(400, "malformed header field")
        value = value.strip(b" \t")
        if _BAD_VALUE.search(value):
            raise HttpError(400, "control character in header field value")
        key = name.decode("ascii").lower()
        text = value.decode("latin-1")
        if key in headers:
            if key == "content-length":
                if headers[key] != text:
                    raise HttpError(400, "conflicting Content-Length fields")
                continue
            if key in ("host", "authorization"):
                raise HttpError(400, f"repeated {key} field")
            text = f"{headers[key]}, {text}"
        headers[key] = text
    return headers


def _content_length(headers: Mapping[str, str], limits: Limits) -> int:
    raw = headers.get("content-length")
    if "transfer-encoding" in headers:
        if raw is not None:
            raise HttpError(400, "both Transfer-Encoding and Content-Length")
        raise HttpError(411, "Content-Length required (chunked request bodies are not accepted)")
    if raw is None:
        return 0
    if not raw.isdigit() or not raw.isascii() or len(raw) > 19:
        raise HttpError(400, "invalid Content-Length")
    length = int(raw)
    if length > limits.max_body_bytes:
        raise HttpError(413, f"body over {limits.max_body_bytes} bytes")
    return length


def encode_response(
    status: int, headers: Mapping[str, str], body: bytes, *, keep_alive: bool, head_only: bool
) -> bytes:
    """Status line, headers (Content-Length and Connection always), then the body."""
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = ""
    out = [f"HTTP/1.1 {status} {reason}"]
    for name, value in headers.items():
        if "\r" in name or "\n" in name or "\r" in value or "\n" in value:
            raise ValueError(f"CR/LF in response header {name!r}")
        if name.lower() not in ("content-length", "connection"):
            out.append(f"{name}: {value}")
    out.append(f"Content-Length: {len(body)}")
    out.append("Connection: keep-alive" if keep_alive else "Connection: close")
    data = ("\r\n".join(out) + "\r\n\r\n").encode("latin-1")
    return data if head_only else data + body
