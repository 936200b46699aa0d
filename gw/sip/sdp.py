"""SDP (RFC 4566) model plus the MSRP view and offer/answer rules (RFC 4975 §8, 6135, 6714).

Pure data in, data out: the SIP layer hands over INVITE bodies and gets bytes back.
MSRP URIs stay plain strings so that ``gw.sip`` never depends on ``gw.msrp``.
Every parse failure surfaces as :class:`SdpError` so callers can map it to a 488.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from gw.mime import covers, mime_matches, parse_mime

__all__ = [
    "Attribute",
    "Connection",
    "MediaDescription",
    "MsrpMedia",
    "Origin",
    "SdpError",
    "SessionDescription",
    "answer_setup",
    "build_msrp_answer",
    "build_msrp_offer",
    "find_msrp_media",
    "mime_matches",
    "msrp_media",
    "negotiate_types",
    "parse_sdp",
    "we_connect",
]


class SdpError(ValueError):
    """Malformed SDP, an unusable MSRP stream or an impossible a=setup combination."""


Attribute = tuple[str, str | None]
"""``(name, value)``; value is None for flag attributes such as ``a=msrp-cema``."""


@dataclass
class Origin:
    """The o= line; ids stay strings because peers are not always numeric."""

    username: str = "-"
    session_id: str = "0"
    session_version: str = "0"
    nettype: str = "IN"
    addrtype: str = "IP4"
    address: str = "0.0.0.0"


@dataclass
class Connection:
    """A c= line; ``address`` keeps any ``/ttl`` suffix verbatim."""

    nettype: str
    addrtype: str
    address: str


@dataclass
class MediaDescription:
    """An m= section. ``extra`` keeps unmodelled lines (i=, b=, k=, unknown) for round-trips."""

    media: str
    port: int
    proto: str
    fmts: list[str]
    port_count: int | None = None
    connection: Connection | None = None
    attributes: list[Attribute] = field(default_factory=list)
    extra: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class SessionDescription:
    """A whole SDP body. ``extra`` keeps unmodelled session lines (i=, u=, b=, z=, ...)."""

    version: int = 0
    origin: Origin = field(default_factory=Origin)
    session_name: str = "-"
    connection: Connection | None = None
    timing: list[tuple[int, int]] = field(default_factory=lambda: [(0, 0)])
    attributes: list[Attribute] = field(default_factory=list)
    media: list[MediaDescription] = field(default_factory=list)
    extra: list[tuple[str, str]] = field(default_factory=list)

    def to_bytes(self) -> bytes:
        """Serialize with CRLF, extras placed in RFC 4566 order; SdpError if a field would
        break the line structure (so a bad value can never smuggle in extra lines)."""
        head = [
            f"v={self.version}",
            "o=" + " ".join(_tok(x) for x in _origin_fields(self.origin)),
            f"s={self.session_name}",
        ]
        body = [_extra(k, v, _SESSION_MODELLED) for k, v in self.extra]
        if self.connection is not None:
            body.append(("c", _conn_text(self.connection)))
        body += [("t", f"{start} {stop}") for start, stop in self.timing]
        body += [("a", _attr_text(a)) for a in self.attributes]
        lines = head + _ranked(body, _SESSION_RANK)
        for m in self.media:
            port = f"{m.port}/{m.port_count}" if m.port_count is not None else str(m.port)
            lines.append("m=" + " ".join(_tok(x) for x in (m.media, port, m.proto, *m.fmts)))
            mbody = [_extra(k, v, _MEDIA_MODELLED) for k, v in m.extra]
            if m.connection is not None:
                mbody.append(("c", _conn_text(m.connection)))
            mbody += [("a", _attr_text(a)) for a in m.attributes]
            lines += _ranked(mbody, _MEDIA_RANK)
        if any("\r" in ln or "\n" in ln for ln in lines):
            raise SdpError("SDP field contains a line break")
        try:
            return ("\r\n".join(lines) + "\r\n").encode("utf-8", "surrogateescape")
        except UnicodeEncodeError as exc:
            raise SdpError(f"SDP field cannot be encoded: {exc}") from None


def _origin_fields(o: Origin) -> tuple[str, ...]:
    return (o.username, o.session_id, o.session_version, o.nettype, o.addrtype, o.address)


# Position of each line type within its section (RFC 4566 §5); unknown types go before a=.
_SESSION_RANK = {k: i for i, k in enumerate("iuepcbtrzk?a", 1)}  # "?" = unknown slot (11)
_MEDIA_RANK = {k: i for i, k in enumerate("icbk?a", 1)}  # "?" = unknown slot (5)
_SESSION_MODELLED = frozenset("vosctam")
_MEDIA_MODELLED = frozenset("vmca")
_DIGITS = re.compile(r"[0-9]{1,20}")  # bounded: int() refuses very long digit strings


def _ranked(body: list[tuple[str, str]], rank: dict[str, int]) -> list[str]:
    body.sort(key=lambda kv: rank.get(kv[0], rank["?"]))  # stable: keeps relative order
    return [f"{k}={v}" for k, v in body]


def _extra(kind: str, value: str, modelled: frozenset[str]) -> tuple[str, str]:
    if len(kind) != 1 or kind in modelled or kind.isspace():
        raise SdpError(f"invalid extra line type {kind!r}")
    return kind, value


def _tok(value: str) -> str:
    if value.split() != [value]:  # empty, or any whitespace (str.isspace's, in C)
        raise SdpError(f"SDP token must be non-empty without spaces: {value!r}")
    return value


def _conn_text(c: Connection) -> str:
    return " ".join(_tok(x) for x in (c.nettype, c.addrtype, c.address))


def _attr_text(attr: Attribute) -> str:
    name, value = attr
    if ":" in name:
        raise SdpError(f"attribute name contains ':': {name!r}")
    return name if value is None else f"{name}:{value}"


def _int(text: str, what: str) -> int:
    if not _DIGITS.fullmatch(text):
        raise SdpError(f"bad {what}: {text[:40]!r}")
    return int(text)


def _fields(value: str, count: int, what: str) -> list[str]:
    parts = value.split()
    if len(parts) != count:
        raise SdpError(f"bad {what} line: {value[:80]!r}")
    return parts


def _parse_m(value: str) -> MediaDescription:
    parts = value.split()
    if len(parts) < 3:
        raise SdpError(f"bad m= line: {value[:80]!r}")
    media, port_text, proto, *fmts = parts
    port_text, slash, count_text = port_text.partition("/")
    port = _int(port_text, "m= port")
    if port > 65535:
        raise SdpError(f"m= port out of range: {port}")
    count = _int(count_text, "m= port count") if slash else None
    return MediaDescription(media, port, proto, fmts, port_count=count)


def parse_sdp(data: bytes | str) -> SessionDescription:
    """Parse an SDP body, tolerating LF-only line ends, blank lines and unknown line types.

    Raises SdpError when v= is not first, o= is missing, or an o=/c=/t=/m= line is
    malformed or duplicated; undecodable bytes are kept (surrogateescape), not rejected.
    """
    text = data.decode("utf-8", "surrogateescape") if isinstance(data, bytes) else data
    lines = [ln.removesuffix("\r") for ln in text.split("\n")]
    lines = [ln for ln in lines if ln.strip()]
    if not lines or not lines[0].startswith("v="):
        raise SdpError("SDP must start with a v= line")
    sdp = SessionDescription(version=_int(lines[0][2:].strip(), "v="), timing=[])
    seen: set[str] = set()
    cur: MediaDescription | None = None
    for ln in lines[1:]:
        if len(ln) < 2 or ln[1] != "=" or ln[0].isspace():
            raise SdpError(f"malformed SDP line: {ln[:80]!r}")
        kind, value = ln[0], ln[2:]
        if kind == "v":
            raise SdpError("duplicate v= line")
        if kind == "m":
            cur = _parse_m(value)
            sdp.media.append(cur)
        elif kind == "a":
            name, colon, val = value.partition(":")
            (cur or sdp).attributes.append((name, val if colon else None))
        elif kind == "c":
            target: MediaDescription | SessionDescription = sdp if cur is None else cur
            if target.connection is not None:
                raise SdpError("duplicate c= line")
            target.connection = Connection(*_fields(value, 3, "c="))
        elif cur is not None:
            cur.extra.append((kind, value))
        elif kind in "os":
            if kind in seen:
                raise SdpError(f"duplicate {kind}= line")
            seen.add(kind)
            if kind == "o":
                sdp.origin = Origin(*_fields(value, 6, "o="))
            else:
                sdp.session_name = value
        elif kind == "t":
            start, stop = _fields(value, 2, "t=")
            sdp.timing.append((_int(start, "t= start"), _int(stop, "t= stop")))
        else:
            sdp.extra.append((kind, value))
    if "o" not in seen:
        raise SdpError("SDP has no o= line")
    return sdp


# --- MSRP view ------------------------------------------------------------------------

_MSRP_PROTOS = {"TCP/MSRP": False, "TCP/TLS/MSRP": True}
_SETUPS = frozenset({"active", "passive", "actpass", "holdconn"})
_DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
_MIRROR = dict(zip(_DIRECTIONS, ("sendrecv", "recvonly", "sendonly", "inactive"), strict=True))


@dataclass
class MsrpMedia:
    """What the gateway needs from one MSRP m= section (RFC 4975 §8, RFC 6135, RFC 6714)."""

    index: int
    port: int
    tls: bool
    path: list[str]
    accept_types: list[str] = field(default_factory=list)
    accept_wrapped_types: list[str] = field(default_factory=list)
    max_size: int | None = None
    setup: str | None = None
    cema: bool = False
    connection_address: str | None = None
    direction: str = "sendrecv"


def _values(attrs: list[Attribute], name: str) -> list[str | None]:
    return [v for n, v in attrs if n.lower() == name]


def _words(attrs: list[Attribute], name: str) -> list[str]:
    return " ".join(v for v in _values(attrs, name) if v).split()


def msrp_media(sdp: SessionDescription, index: int) -> MsrpMedia:
    """MSRP view of ``sdp.media[index]``; SdpError says why the stream is unusable."""
    if not 0 <= index < len(sdp.media):
        raise SdpError(f"no media description #{index}")
    m = sdp.media[index]
    tls = _MSRP_PROTOS.get(m.proto.upper())
    if m.media.lower() != "message" or tls is None:
        raise SdpError(f"m= #{index} is not MSRP: {m.media} {m.proto}")
    if m.port == 0:
        raise SdpError(f"MSRP stream #{index} is disabled (port 0)")
    path = _words(m.attributes, "path")
    if not path:
        raise SdpError(f"MSRP stream #{index} has no a=path")
    max_size = None
    if sizes := _values(m.attributes, "max-size"):
        max_size = _int((sizes[0] or "").strip(), "a=max-size")
    setups = _values(m.attributes, "setup") or _values(sdp.attributes, "setup")
    setup = (setups[0] or "").strip().lower() if setups else None
    if setup is not None and setup not in _SETUPS:
        raise SdpError(f"bad a=setup value: {setup[:40]!r}")
    conn = m.connection or sdp.connection
    direction = "sendrecv"
    for attrs in (sdp.attributes, m.attributes):  # media level overrides session level
        flags = [n.lower() for n, v in attrs if v is None and n.lower() in _DIRECTIONS]
        direction = flags[-1] if flags else direction
    return MsrpMedia(
        index=index,
        port=m.port,
        tls=tls,
        path=path,
        accept_types=_words(m.attributes, "accept-types"),
        accept_wrapped_types=_words(m.attributes, "accept-wrapped-types"),
        max_size=max_size,
        setup=setup,
        cema=bool(_values(m.attributes, "msrp-cema")),
        connection_address=conn.address.split("/")[0] if conn else None,
        direction=direction,
    )


def find_msrp_media(sdp: SessionDescription) -> MsrpMedia | None:
    """First usable MSRP stream (message, TCP[/TLS]/MSRP, port != 0, valid attributes)."""
    for index in range(len(sdp.media)):
        try:
            return msrp_media(sdp, index)
        except SdpError:
            continue
    return None


# --- MIME types ------------------------------------------------------------------------


def negotiate_types(offered: Sequence[str], ours: Sequence[str]) -> list[str]:
    """Types for our answer: each pairwise intersection (the narrower side), ours' order."""
    result: list[str] = []
    seen: set[str] = set()
    for mine in ours:
        if (a := parse_mime(mine)) is None:
            continue
        for theirs in offered:
            if (b := parse_mime(theirs)) is None:
                continue
            if covers(b, a):
                pick, key = mine, a
            elif covers(a, b):
                pick, key = theirs, b
            else:
                continue
            if key not in seen:
                seen.add(key)
                result.append(pick.strip())
            if pick is mine:
                break
    return result


# --- connection roles (RFC 4145 table, RFC 4975 defaults, RFC 6135) ----------------------

_Party = Literal["offerer", "answerer"]
_ROLES: dict[tuple[str, str], _Party | None] = {
    ("active", "passive"): "offerer",
    ("active", "holdconn"): None,
    ("passive", "active"): "answerer",
    ("passive", "holdconn"): None,
    ("actpass", "active"): "answerer",
    ("actpass", "passive"): "offerer",
    ("actpass", "holdconn"): None,
    ("holdconn", "holdconn"): None,
}


def _connecting_party(offer: str | None, answer: str | None) -> _Party | None:
    # Absent a=setup means RFC 4975's model: offerer "active", answerer "passive".
    key = ((offer or "active").lower(), (answer or "passive").lower())
    if key not in _ROLES:
        raise SdpError(f"incompatible a=setup: offer {offer!r}, answer {answer!r}")
    return _ROLES[key]


def answer_setup(offer_setup: str | None, prefer: str = "passive") -> str:
    """The a=setup value to answer with. ``prefer`` only decides an ``actpass`` offer;
    it defaults to passive because the gateway is publicly reachable and NATed
    clients can always dial out (the RFC 6135 motivation)."""
    offer = None if offer_setup is None else offer_setup.lower()
    if offer is None:
        return "passive"  # legacy RFC 4975 offerer will connect to us
    if offer not in _SETUPS:
        raise SdpError(f"bad a=setup value in offer: {offer_setup!r}")
    if offer == "actpass":
        if prefer not in ("active", "passive"):
            raise SdpError(f"prefer must be active or passive, not {prefer!r}")
        return prefer
    return {"active": "passive", "passive": "active", "holdconn": "holdconn"}[offer]


def we_connect(*, we_offered: bool, offer: str | None, answer: str | None) -> bool:
    """Whether our side opens the TCP connection, given the offer's and answer's a=setup.

    False for holdconn; SdpError for combinations RFC 4145 forbids (e.g. both active).
    """
    party = _connecting_party(offer, answer)
    return party is not None and (party == "offerer") == we_offered


# --- building ----------------------------------------------------------------------------


def _session(
    address: str, username: str, session_id: int | None, session_version: int | None
) -> SessionDescription:
    sid = secrets.randbelow(2**62) + 1 if session_id is None else session_id
    version = sid if session_version is None else session_version
    addrtype = "IP6" if ":" in address else "IP4"
    origin = Origin(username, str(sid), str(version), "IN", addrtype, address)
    return SessionDescription(origin=origin, connection=Connection("IN", addrtype, address))


def _msrp_section(
    *,
    port: int,
    path: Sequence[str],
    accept_types: Sequence[str],
    accept_wrapped_types: Sequence[str],
    max_size: int | None,
    setup: str | None,
    tls: bool,
    cema: bool,
    direction: str,
) -> MediaDescription:
    if not 0 < port <= 65535:
        raise SdpError(f"MSRP port out of range: {port}")
    if not path or not accept_types:
        raise SdpError("an MSRP stream needs a path and at least one accept type")
    if max_size is not None and max_size < 0:
        raise SdpError(f"negative max-size: {max_size}")
    attrs: list[Attribute] = [("accept-types", " ".join(map(_tok, accept_types)))]
    if accept_wrapped_types:
        attrs.append(("accept-wrapped-types", " ".join(map(_tok, accept_wrapped_types))))
    if max_size is not None:
        attrs.append(("max-size", str(max_size)))
    attrs.append(("path", " ".join(map(_tok, path))))
    if setup is not None:
        attrs.append(("setup", setup))
    if cema:
        attrs.append(("msrp-cema", None))
    if direction != "sendrecv":
        attrs.append((direction, None))
    proto = "TCP/TLS/MSRP" if tls else "TCP/MSRP"
    return MediaDescription("message", port, proto, ["*"], attributes=attrs)


def build_msrp_offer(
    *,
    address: str,
    port: int,
    path: Sequence[str],
    accept_types: Sequence[str],
    accept_wrapped_types: Sequence[str] = (),
    max_size: int | None = None,
    setup: str | None = "actpass",
    tls: bool | None = None,
    cema: bool = False,
    session_id: int | None = None,
    session_version: int | None = None,
    username: str = "msrp-gw",
) -> SessionDescription:
    """An offer with one MSRP stream.

    ``setup`` defaults to ``actpass`` (RFC 6135): a NATed answerer may pick active,
    while a legacy RFC 4975 answerer ignores it, answers without a=setup and so
    waits for us, which is also its default. ``None`` omits a=setup entirely.
    ``tls=None`` says ``TCP/TLS/MSRP`` when a URI of ``path`` is ``msrps:`` (TLS on
    every hop, RFC 4975 §6; a relay's Use-Path included), else ``TCP/MSRP``.
    Ids default to a random number (version = id), as RFC 4566 suggests for uniqueness.
    """
    if setup is not None and setup not in ("active", "passive", "actpass"):
        raise SdpError(f"offer a=setup must be active, passive or actpass, not {setup!r}")
    if tls is None:
        tls = any(p[:6].lower() == "msrps:" for p in path)
    sdp = _session(address, username, session_id, session_version)
    sdp.media.append(
        _msrp_section(
            port=port,
            path=path,
            accept_types=accept_types,
            accept_wrapped_types=accept_wrapped_types,
            max_size=max_size,
            setup=setup,
            tls=tls,
            cema=cema,
            direction="sendrecv",
        )
    )
    return sdp


def build_msrp_answer(
    offer: MsrpMedia,
    *,
    address: str,
    port: int,
    path: Sequence[str],
    accept_types: Sequence[str],
    accept_wrapped_types: Sequence[str] = (),
    max_size: int | None = None,
    setup: str | None = None,
    tls: bool | None = None,
    cema: bool = False,
    offer_sdp: SessionDescription | None = None,
    session_id: int | None = None,
    session_version: int | None = None,
    username: str = "msrp-gw",
) -> SessionDescription:
    """An answer accepting ``offer`` (``accept_types`` already negotiated).

    ``setup=None`` derives it with :func:`answer_setup`; it is only written when the
    offer carried a=setup or ``setup`` is explicit, so legacy peers see plain RFC 4975.
    a=msrp-cema is echoed only if both sides support it (RFC 6714); the transport and
    direction mirror the offer (RFC 3264). Give ``offer_sdp`` whenever the offer has
    other streams: each is answered with port 0 so the m= lines line up (RFC 3264 §6).
    """
    if tls is not None and tls != offer.tls:
        raise SdpError("answer transport must match the offer's (RFC 3264)")
    chosen = answer_setup(offer.setup) if setup is None else setup.lower()
    _connecting_party(offer.setup, chosen)
    section = _msrp_section(
        port=port,
        path=path,
        accept_types=accept_types,
        accept_wrapped_types=accept_wrapped_types,
        max_size=max_size,
        setup=chosen if offer.setup is not None or setup is not None else None,
        tls=offer.tls,
        cema=cema and offer.cema,
        direction=_MIRROR.get(offer.direction, "sendrecv"),
    )
    sdp = _session(address, username, session_id, session_version)
    if offer_sdp is None:
        if offer.index != 0:
            raise SdpError("offer_sdp is required to answer an offer with several streams")
        sdp.media = [section]
    elif not 0 <= offer.index < len(offer_sdp.media):
        raise SdpError(f"offer has no media description #{offer.index}")
    else:
        sdp.media = [
            section if i == offer.index else MediaDescription(m.media, 0, m.proto, list(m.fmts))
            for i, m in enumerate(offer_sdp.media)
        ]
    return sdp
