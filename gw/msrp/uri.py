"""MSRP URIs (RFC 4975 §6, §9): parsing, canonical form, §6.1 comparison, ids.

Hosts are kept as written (IPv6 without brackets) so that echoing a peer's URI
back in a path header reproduces its spelling; `matches` does the RFC
equivalence instead of `==`.
"""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
import re
import secrets
import string
from collections.abc import Iterable
from dataclasses import dataclass, field

from gw.ids import random_hex

__all__ = [
    "MsrpUri",
    "MsrpUriError",
    "format_path",
    "new_session_id",
    "new_transaction_id",
    "parse_msrp_uri",
    "parse_path",
]

_UNRESERVED = string.ascii_letters + string.digits + "-._~"
_PCT = r"%[0-9A-Fa-f]{2}"
_USERINFO_RE = re.compile(rf"(?:[A-Za-z0-9\-._~!$&'()*+,;=:]|{_PCT})*")
_REGNAME_RE = re.compile(rf"(?:[A-Za-z0-9\-._~!$&'()*+,=]|{_PCT})+")
_SESSION_RE = re.compile(r"[A-Za-z0-9\-._~+=/]+")
_TOKEN_RE = re.compile(r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+")
_ALNUM_RE = re.compile(r"[A-Za-z0-9]+")
_PORT_RE = re.compile(r"[0-9]{1,5}")
_SCHEMES = ("msrp", "msrps")
_PATH_CACHE_SIZE = 4096  # distinct path header values kept parsed (two per busy session)


class MsrpUriError(ValueError):
    """Raised for text that is not a valid MSRP URI or path."""


@dataclass(frozen=True, slots=True, kw_only=True)
class MsrpUri:
    """One MSRP URI. `str()` gives the canonical wire form."""

    host: str
    port: int | None = None
    session_id: str | None = None
    transport: str = "tcp"
    scheme: str = "msrp"
    user: str | None = None
    params: tuple[tuple[str, str | None], ...] = ()
    # The wire form, built on first use: paths are formatted for every frame sent.
    _text: str | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Validate built URIs too, so nothing unparseable ever reaches the wire.
        _check(self)

    def __str__(self) -> str:
        text = self._text
        if text is None:
            text = self._format()
            object.__setattr__(self, "_text", text)
        return text

    def _format(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        parts = [self.scheme, "://"]
        if self.user is not None:
            parts += [self.user, "@"]
        parts.append(host)
        if self.port is not None:
            parts.append(f":{self.port}")
        if self.session_id is not None:
            parts.append(f"/{self.session_id}")
        parts.append(f";{self.transport}")
        for name, value in self.params:
            parts.append(f";{name}" if value is None else f";{name}={value}")
        return "".join(parts)

    @property
    def secure(self) -> bool:
        """True for msrps (TLS) URIs."""
        return self.scheme == "msrps"

    def with_session(self, session_id: str | None) -> MsrpUri:
        """Same URI with another session-id (e.g. a fresh one per session)."""
        return dataclasses.replace(self, session_id=session_id)

    def matches(self, other: MsrpUri) -> bool:
        """RFC 4975 §6.1 equivalence.

        Scheme and host are case-insensitive (IP literals compare as addresses,
        percent-encoded unreserved characters are decoded); an explicit port
        never matches a missing one; session-id is case-sensitive and must be
        present in both or neither; transport is case-insensitive; userinfo and
        other parameters are ignored.
        """
        if self is other:
            return True
        return (
            self.scheme == other.scheme
            and self.port == other.port
            and self.session_id == other.session_id
            and (self.host == other.host or _host_key(self.host) == _host_key(other.host))
            and (
                self.transport == other.transport
                or self.transport.lower() == other.transport.lower()
            )
        )


def parse_msrp_uri(text: str) -> MsrpUri:
    """Parse `msrp[s]://[user@]host[:port][/session-id];transport[;param[=v]]...`."""
    scheme, sep, rest = text.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in _SCHEMES:
        raise MsrpUriError(f"not an msrp/msrps URI: {text!r}")
    user: str | None = None
    at = rest.find("@")
    if at >= 0:
        user, rest = rest[:at], rest[at + 1 :]
    auth_end = len(rest)
    for delim in "/;":
        idx = rest.find(delim)
        if 0 <= idx < auth_end:
            auth_end = idx
    host, port = _split_hostport(rest[:auth_end], text)
    rest = rest[auth_end:]
    session_id: str | None = None
    if rest.startswith("/"):
        semi = rest.find(";")
        semi = len(rest) if semi < 0 else semi
        session_id, rest = rest[1:semi], rest[semi:]
    if not rest.startswith(";"):
        raise MsrpUriError(f"missing transport: {text!r}")
    transport, *raw_params = rest[1:].split(";")
    params: list[tuple[str, str | None]] = []
    for raw in raw_params:
        name, eq, value = raw.partition("=")
        params.append((name, value if eq else None))
    try:
        return MsrpUri(
            scheme=scheme,
            user=user,
            host=host,
            port=port,
            session_id=session_id,
            transport=transport,
            params=tuple(params),
        )
    except MsrpUriError as exc:
        raise MsrpUriError(f"{exc}: {text!r}") from None


@functools.lru_cache(maxsize=_PATH_CACHE_SIZE)
def parse_path(header_value: str) -> tuple[MsrpUri, ...]:
    """Parse a To-Path/From-Path/Use-Path value: one or more space-separated URIs.

    Results are cached (bounded LRU): every frame carries two paths and a session's
    paths repeat. The URIs are immutable, so sharing them is safe; errors are not cached.
    """
    parts = header_value.split()
    if not parts:
        raise MsrpUriError("empty path")
    return tuple(parse_msrp_uri(p) for p in parts)


def format_path(uris: Iterable[MsrpUri]) -> str:
    """Inverse of `parse_path`."""
    text = " ".join(str(u) for u in uris)
    if not text:
        raise MsrpUriError("empty path")
    return text


def new_session_id() -> str:
    """Random session-id: 128 bits, URL-safe characters (all valid in the grammar)."""
    return secrets.token_urlsafe(16)


def new_transaction_id() -> str:
    """Random 16-char hex transaction id (64 bits, within ident's 4..32), from batched
    urandom (gw.ids): this runs for every chunk and every message."""
    return random_hex(16)


def _split_hostport(auth: str, text: str) -> tuple[str, int | None]:
    if auth.startswith("["):
        close = auth.find("]")
        if close < 0:
            raise MsrpUriError(f"unclosed IPv6 literal: {text!r}")
        host, tail = auth[1:close], auth[close + 1 :]
        if ":" not in host:
            raise MsrpUriError(f"bracketed host is not IPv6: {text!r}")
    else:
        host, colon, port_text = auth.partition(":")
        tail = colon + port_text
    if not tail:
        return host, None
    if not tail.startswith(":") or not _PORT_RE.fullmatch(tail[1:]):
        raise MsrpUriError(f"bad port: {text!r}")
    return host, int(tail[1:])


def _check(uri: MsrpUri) -> None:
    if uri.scheme not in _SCHEMES:
        raise MsrpUriError(f"bad scheme {uri.scheme!r}")
    if uri.user is not None and not _USERINFO_RE.fullmatch(uri.user):
        raise MsrpUriError(f"bad userinfo {uri.user!r}")
    if ":" in uri.host:
        try:
            ipaddress.IPv6Address(uri.host)
        except ValueError:
            raise MsrpUriError(f"bad IPv6 host {uri.host!r}") from None
    elif not _REGNAME_RE.fullmatch(uri.host):
        raise MsrpUriError(f"bad host {uri.host!r}")
    if uri.port is not None and not 0 < uri.port < 65536:
        raise MsrpUriError(f"bad port {uri.port!r}")
    if uri.session_id is not None and not _SESSION_RE.fullmatch(uri.session_id):
        raise MsrpUriError(f"bad session-id {uri.session_id!r}")
    if not _ALNUM_RE.fullmatch(uri.transport):
        raise MsrpUriError(f"bad transport {uri.transport!r}")
    for name, value in uri.params:
        if not _TOKEN_RE.fullmatch(name) or (value is not None and not _TOKEN_RE.fullmatch(value)):
            raise MsrpUriError(f"bad parameter {name!r}={value!r}")


@functools.lru_cache(maxsize=1024)
def _host_key(host: str) -> str:
    """Comparison key for a host: decoded unreserved escapes, lower case, IPs normalised."""
    decoded = re.sub(_PCT, _decode_unreserved, host).lower()
    try:
        return ipaddress.ip_address(decoded).compressed
    except ValueError:
        return decoded


def _decode_unreserved(m: re.Match[str]) -> str:
    char = chr(int(m.group(0)[1:], 16))
    return char if char in _UNRESERVED else m.group(0).upper()
