"""SIP URIs, name-addr values and Via headers (RFC 3261 §19.1, §20, §25.1).

Parsing is strict enough to reject what RFC 4475 calls invalid, and lenient about
whitespace where the grammar allows LWS. All errors are `SipSyntaxError`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import unquote

__all__ = [
    "NameAddr",
    "SipSyntaxError",
    "SipUri",
    "Via",
    "cache_sizes",
    "format_params",
    "parse_name_addr",
    "parse_name_addr_general",
    "parse_params",
    "parse_uint",
    "parse_uri",
    "parse_uri_general",
    "parse_via",
    "parse_via_general",
    "split_commas",
]


class SipSyntaxError(ValueError):
    """Malformed SIP syntax; the message carrying it deserves a 400."""


_TOKEN = re.compile(r"^[A-Za-z0-9\-.!%*_+`'~]+$")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+\-.]*$")
# RFC 3261 hostname / IPv4address; "_" is tolerated (seen in the wild).
_HOSTNAME = re.compile(r"^[A-Za-z0-9\-._]+$")
_IPV6 = re.compile(r"^[0-9A-Fa-f:.]+$")
# RFC 3261 §25.1 user / password: unreserved, escaped and user-unreserved characters.
_USER = re.compile(r"^(?:[A-Za-z0-9\-_.!~*'()&=+$,;?/]|%[0-9A-Fa-f]{2})+$")
_PASSWORD = re.compile(r"^(?:[A-Za-z0-9\-_.!~*'()&=+$,]|%[0-9A-Fa-f]{2})*$")
_PARAM_BAD = re.compile(r"[\s<>\"@,;?]")
_URI_CHARS = re.compile(r"^[\x21-\x7e]+$")  # URIs are printable ASCII, no whitespace
# gen-value (§25.1): token / host / quoted-string. ":" admits Via received=IPv6address.
_GEN_VALUE = re.compile(r"^(?:[A-Za-z0-9\-.!%*_+`'~:\[\]]+|\"(?:[^\"\\\r\n]|\\[^\r\n])*\")$")

# Fast paths for the common shapes. Each accepts only text that the general code
# parses the same way (same fields, same parameter dicts); anything else (quotes,
# whitespace, escapes, IPv6, URI headers, ...) takes the general path, which alone
# decides what is an error.
_T = r"[A-Za-z0-9\-.!%*_+`'~]+"  # token
# `;`-separated parameters without quotes, angle brackets or whitespace.
_SIMPLE_PARAMS = re.compile(rf"{_T}(?:=[^\s;\"<]*)?(?:;{_T}(?:=[^\s;\"<]*)?)*")
# Header parameters whose values are all the token form of gen-value.
_GV = r"[A-Za-z0-9\-.!%*_+`'~:\[\]]+"
_SIMPLE_GEN_PARAMS = re.compile(rf"{_T}(?:={_GV})?(?:;{_T}(?:={_GV})?)*")
# URI parameter values: printable ASCII except whitespace and <>"@,;?
_UV = r"[!#-+\--:=A-~]+"
# sip:[user@]hostname[:port][;params], lower-case scheme, no password, escapes or headers.
_SIMPLE_SIP_URI = re.compile(
    rf"(sips?):(?:([A-Za-z0-9\-_.!~*'()&=+$,]+)@)?([A-Za-z0-9\-._]+)(?::([0-9]{{1,5}}))?"
    rf"((?:;{_T}(?:={_UV})?)*)"
)
# [display ]<simple SIP URI>[;params]: the display name is token words with single spaces,
# or a quoted string without escapes.
_SIMPLE_NAME_ADDR = re.compile(
    rf"(?:({_T}(?: {_T})*) ?|\"([^\"\\]*)\" ?)?<{_SIMPLE_SIP_URI.pattern}>"
    rf"((?:;{_T}(?:={_GV})?)*)"
)
# SIP/2.0/UDP hostname[:port][;params], single spaces only.
_SIMPLE_VIA = re.compile(
    rf"({_T})/([0-9.]+)/({_T}) ([A-Za-z0-9\-._]+)(?::([0-9]{{1,5}}))?"
    rf"((?:;{_T}(?:={_GV})?)*)"
)


def is_token(text: str) -> bool:
    return bool(_TOKEN.fullmatch(text))


def parse_params(text: str, *, sep: str = ";") -> dict[str, str | None]:
    """Parse `;a=b;c` into an ordered dict. Names are lower-cased (they compare so)."""
    params: dict[str, str | None] = {}
    if not text:
        return params
    if sep == ";" and _SIMPLE_PARAMS.fullmatch(text):
        for item in text.split(";"):
            name, eq, value = item.partition("=")
            params[name.lower()] = value if eq else None
        return params
    for raw in _split_unquoted(text, sep):
        item = raw.strip()
        if not item:
            raise SipSyntaxError(f"empty parameter in {text!r}")
        name, eq, value = item.partition("=")
        name = name.strip()
        if not is_token(name):
            raise SipSyntaxError(f"bad parameter name {name!r}")
        params[name.lower()] = value.strip() if eq else None
    return params


def _header_params(text: str) -> dict[str, str | None]:
    """Header parameters after their ";" (name-addr, Via): values must be gen-value."""
    if _SIMPLE_GEN_PARAMS.fullmatch(text):
        params: dict[str, str | None] = {}
        for item in text.split(";"):
            name, eq, raw = item.partition("=")
            params[name.lower()] = raw if eq else None
        return params
    if not text:
        raise SipSyntaxError("empty parameter")
    params = parse_params(text)
    for name, value in params.items():
        if value is not None and not _GEN_VALUE.fullmatch(value):
            raise SipSyntaxError(f"bad value for parameter {name!r}: {value!r}")
    return params


def format_params(params: dict[str, str | None], sep: str = ";") -> str:
    return "".join([f"{sep}{k}" if v is None else f"{sep}{k}={v}" for k, v in params.items()])


_SPLIT_SPECIALS = {sep: re.compile(r'[\\"<>' + sep + "]") for sep in ",;"}


def _split_unquoted(text: str, sep: str) -> list[str]:
    """Split on `sep` outside double quotes and angle brackets."""
    if '"' not in text and "<" not in text:
        return text.split(sep)  # a stray ">" changes nothing outside <>
    specials = _SPLIT_SPECIALS.get(sep) or re.compile(r'[\\"<>' + re.escape(sep) + "]")
    parts: list[str] = []
    depth = 0
    quoted = False
    start = 0
    escaped = -1  # index of the character after a backslash inside quotes
    for m in specials.finditer(text):
        i = m.start()
        if i == escaped:
            continue
        c = text[i]
        if quoted:
            if c == "\\":
                escaped = i + 1
            elif c == '"':
                quoted = False
        elif c == '"':
            quoted = True
        elif c == "<":
            depth += 1
        elif c == ">":
            depth = max(0, depth - 1)
        elif c == sep and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    if quoted:
        raise SipSyntaxError(f"unterminated quoted string in {text!r}")
    parts.append(text[start:])
    return parts


def split_commas(value: str) -> list[str]:
    """Split a multi-value header value on commas outside quotes and <>."""
    if "," not in value and '"' not in value:
        value = value.strip()
        return [value] if value else []
    return [p.strip() for p in _split_unquoted(value, ",") if p.strip()]


# The three value classes below are frozen dataclasses with a hand-written __init__: it
# fills the instance dict directly, where the generated one calls object.__setattr__ per
# field at twice the cost. They are built several times per message.
@dataclass(frozen=True, init=False)
class SipUri:
    """A sip:/sips: URI, or any other absolute URI kept opaque (tel:, im:, ...)."""

    scheme: str
    user: str | None = None
    password: str | None = None
    host: str = ""
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict, hash=False, compare=False)
    headers: str | None = None
    opaque: str | None = None  # the part after "scheme:" for non-SIP schemes

    def __init__(
        self,
        scheme: str,
        user: str | None = None,
        password: str | None = None,
        host: str = "",
        port: int | None = None,
        params: dict[str, str | None] | None = None,
        headers: str | None = None,
        opaque: str | None = None,
    ) -> None:
        d = self.__dict__
        d["scheme"] = scheme
        d["user"] = user
        d["password"] = password
        d["host"] = host
        d["port"] = port
        d["params"] = {} if params is None else params
        d["headers"] = headers
        d["opaque"] = opaque

    @property
    def is_sip(self) -> bool:
        return self.opaque is None

    @property
    def transport(self) -> str | None:
        t = self.params.get("transport")
        return t.lower() if t else None

    @property
    def aor(self) -> str:
        """Address of record: scheme:user@host, without port or parameters."""
        if not self.is_sip:
            return f"{self.scheme}:{self.opaque}"
        user = f"{self.user}@" if self.user is not None else ""
        return f"{self.scheme}:{user}{self.host_text}"

    @property
    def host_text(self) -> str:
        return f"[{self.host}]" if ":" in self.host else self.host

    @property
    def hostport(self) -> str:
        return self.host_text if self.port is None else f"{self.host_text}:{self.port}"

    def with_params(self, **params: str | None) -> SipUri:
        merged = dict(self.params)
        merged.update(params)
        return SipUri(
            self.scheme,
            self.user,
            self.password,
            self.host,
            self.port,
            merged,
            self.headers,
            self.opaque,
        )

    def __str__(self) -> str:
        text: str | None = self.__dict__.get("_str")  # immutable: format once
        if text is None:
            text = self.__dict__["_str"] = self._format()
        return text

    def _format(self) -> str:
        if not self.is_sip:
            return f"{self.scheme}:{self.opaque}"
        out = [self.scheme, ":"]
        if self.user is not None:
            out.append(self.user)
            if self.password is not None:
                out.append(":" + self.password)
            out.append("@")
        out.append(self.hostport)
        if self.params:
            out.append(format_params(self.params))
        if self.headers:
            out.append("?" + self.headers)
        return "".join(out)

    def equivalent(self, other: SipUri) -> bool:
        """URI comparison of RFC 3261 §19.1.4 (the parts that matter for routing)."""
        if self.scheme.lower() != other.scheme.lower():
            return False
        if not self.is_sip:
            return self.opaque == other.opaque
        if unquote(self.user or "") != unquote(other.user or ""):
            return False
        if self.host.lower() != other.host.lower() or self.port != other.port:
            return False
        for name in ("transport", "user", "ttl", "method", "maddr"):
            a, b = self.params.get(name), other.params.get(name)
            if (a is None) != (b is None) or (a and b and a.lower() != b.lower()):
                return False
        return True


def _parse_host(text: str) -> tuple[str, int | None]:
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise SipSyntaxError(f"unterminated IPv6 reference {text!r}")
        host = text[1:end]
        if not host or not _IPV6.fullmatch(host) or host.count(":") < 2:
            raise SipSyntaxError(f"bad IPv6 reference {text!r}")
        rest = text[end + 1 :]
    else:
        host, _, port_s = text.partition(":")
        rest = ":" + port_s if _ else ""
        if not host or not _HOSTNAME.fullmatch(host):
            raise SipSyntaxError(f"bad host {text!r}")
        # A bare IPv6 address without brackets is not allowed in a SIP URI.
    port: int | None = None
    if rest:
        if not rest.startswith(":"):
            raise SipSyntaxError(f"bad port in {text!r}")
        port = parse_uint(rest[1:], 65535)
    return host, port


def parse_uint(text: str, maximum: int) -> int:
    """A decimal made of ASCII digits only (leading zeros allowed), at most `maximum`."""
    if not text.isdigit() or not text.isascii():  # "".isdigit() is False
        raise SipSyntaxError(f"not a number: {text!r}")
    # Bound the length before int(): huge digit strings are slow or refused by int().
    if len(text) > 18 and len(text.lstrip("0")) > len(str(maximum)):
        raise SipSyntaxError(f"number out of range: {text!r}")
    value = int(text)
    if value > maximum:
        raise SipSyntaxError(f"number out of range: {text!r}")
    return value


# Parse results by exact text, shared between messages: the same URIs and untagged
# name-addrs (Request-URI, To, Contact, a session's coordinates) come back on every
# message. Shared values are why SipUri/NameAddr must never be changed, params included.
# Bounded: a full cache is emptied and refilled.
CACHE_MAX = 4096
_uris: dict[str, SipUri] = {}
_name_addrs: dict[str, NameAddr] = {}


def cache_sizes() -> tuple[int, int]:
    """Entries in the URI and name-addr parse caches (bounded by CACHE_MAX)."""
    return len(_uris), len(_name_addrs)


def parse_uri(text: str) -> SipUri:
    """Parse an absolute URI; sip/sips get full structure, other schemes stay opaque."""
    uri = _uris.get(text)
    if uri is None:
        m = _SIMPLE_SIP_URI.fullmatch(text)
        uri = (_simple_uri(m) if m is not None else None) or parse_uri_general(text)
        if len(_uris) >= CACHE_MAX:
            _uris.clear()
        _uris[text] = uri
    return uri


def _simple_uri(m: re.Match[str], first: int = 1) -> SipUri | None:
    """The SipUri of a _SIMPLE_SIP_URI match (groups from `first` on); None: port > 65535."""
    scheme, user, host, port_s, param_text = m.group(
        first, first + 1, first + 2, first + 3, first + 4
    )
    port = int(port_s) if port_s is not None else None
    if port is not None and port > 65535:
        return None
    params: dict[str, str | None] = {}
    if param_text:
        for item in param_text[1:].split(";"):
            name, eq, value = item.partition("=")
            params[name.lower()] = value if eq else None
    return SipUri(scheme, user, None, host, port, params, None)


def parse_uri_general(text: str) -> SipUri:
    """The full RFC 3261 grammar, without `parse_uri`'s fast path and cache (the
    reference the fast path is tested against)."""
    text = text.strip()
    scheme, colon, rest = text.partition(":")
    if not colon or not _SCHEME.fullmatch(scheme) or not rest:
        raise SipSyntaxError(f"bad URI {text!r}")
    if not _URI_CHARS.fullmatch(rest):
        raise SipSyntaxError(f"whitespace or non-ASCII character in URI {text!r}")
    lscheme = scheme.lower()
    if lscheme not in ("sip", "sips"):
        if "<" in rest or ">" in rest or '"' in rest:
            raise SipSyntaxError(f"bad URI {text!r}")
        return SipUri(scheme=lscheme, opaque=rest)
    user: str | None = None
    password: str | None = None
    # "@" may appear only after userinfo (params and headers must escape it), while
    # the user part itself may contain ";", "?" and "/" (RFC 3261 user-unreserved).
    at = rest.rfind("@")
    if at >= 0:
        userinfo, rest = rest[:at], rest[at + 1 :]
        user, pcolon, pw = userinfo.partition(":")
        if pcolon:
            password = pw
        bad_password = password is not None and not _PASSWORD.fullmatch(password)
        if not _USER.fullmatch(user) or bad_password:
            raise SipSyntaxError(f"bad userinfo in {text!r}")
    headers: str | None = None
    rest, q, hdrs = rest.partition("?")
    if q:
        headers = hdrs
    hostport, semi, param_text = rest.partition(";")
    host, port = _parse_host(hostport)
    if semi and not param_text:
        raise SipSyntaxError(f"empty URI parameter in {text!r}")
    params = parse_params(param_text) if semi else {}
    for value in params.values():
        if value is not None and (not value or _PARAM_BAD.search(value)):
            raise SipSyntaxError(f"bad URI parameter in {text!r}")
    return SipUri(lscheme, user, password, host, port, params, headers)


@dataclass(frozen=True, init=False)
class NameAddr:
    """From/To/Contact/Route values: optional display name, URI, header parameters."""

    uri: SipUri
    display: str | None = None
    params: dict[str, str | None] = field(default_factory=dict, hash=False, compare=False)
    wildcard: bool = False  # Contact: *

    def __init__(
        self,
        uri: SipUri,
        display: str | None = None,
        params: dict[str, str | None] | None = None,
        wildcard: bool = False,
    ) -> None:
        d = self.__dict__
        d["uri"] = uri
        d["display"] = display
        d["params"] = {} if params is None else params
        d["wildcard"] = wildcard

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    def with_tag(self, tag: str) -> NameAddr:
        merged = dict(self.params)
        merged["tag"] = tag
        return NameAddr(self.uri, self.display, merged, self.wildcard)

    def __str__(self) -> str:
        text: str | None = self.__dict__.get("_str")  # immutable: format once
        if text is None:
            text = self.__dict__["_str"] = self._format()
        return text

    def _format(self) -> str:
        if self.wildcard:
            return "*"
        disp = ""
        if self.display is not None:
            disp = (
                self.display + " "
                if _TOKEN_WORDS.fullmatch(self.display)
                else '"' + self.display.replace("\\", "\\\\").replace('"', '\\"') + '" '
            )
        if self.params:
            return f"{disp}<{self.uri}>{format_params(self.params)}"
        return f"{disp}<{self.uri}>"


_TOKEN_WORDS = re.compile(r"^[A-Za-z0-9\-.!%*_+`'~]+( [A-Za-z0-9\-.!%*_+`'~]+)*$")


def parse_name_addr(text: str) -> NameAddr:
    """Parse name-addr or addr-spec followed by header parameters."""
    value = _name_addrs.get(text)
    if value is not None:
        return value
    m = _SIMPLE_NAME_ADDR.fullmatch(text)
    if m is None:
        value = parse_name_addr_general(text)
    else:
        uri_text = text[m.start(3) : m.end(7)]  # the URI between < and >
        uri = _uris.get(uri_text) or _simple_uri(m, 3)
        if uri is None:
            value = parse_name_addr_general(text)  # port out of range
        else:
            if len(_uris) >= CACHE_MAX:
                _uris.clear()
            _uris[uri_text] = uri
            params: dict[str, str | None] = {}
            header_params = m.group(8)
            if header_params:
                for item in header_params[1:].split(";"):
                    name, eq, param = item.partition("=")
                    params[name.lower()] = param if eq else None
            quoted = m.group(2)
            value = NameAddr(uri, m.group(1) if quoted is None else quoted, params)
    if "tag" not in value.params:  # tags are new on every message: not worth keeping
        if len(_name_addrs) >= CACHE_MAX:
            _name_addrs.clear()
        _name_addrs[text] = value
    return value


def parse_name_addr_general(text: str) -> NameAddr:
    """The full grammar, without `parse_name_addr`'s fast path and cache."""
    text = text.strip()
    if text == "*":
        return NameAddr(uri=SipUri(scheme="sip", host="*"), wildcard=True)
    display: str | None = None
    if text.startswith('"'):
        i = 1
        buf: list[str] = []
        while i < len(text):
            c = text[i]
            if c == "\\" and i + 1 < len(text):
                buf.append(text[i + 1])
                i += 2
                continue
            if c == '"':
                break
            buf.append(c)
            i += 1
        else:
            raise SipSyntaxError(f"unterminated display name in {text!r}")
        display = "".join(buf)
        text = text[i + 1 :].lstrip()
        if not text.startswith("<"):
            raise SipSyntaxError("quoted display name without <uri>")
    lt = text.find("<")
    if lt >= 0:
        if display is None:
            words = text[:lt].strip()
            if words:
                if not _TOKEN_WORDS.fullmatch(" ".join(words.split())):
                    raise SipSyntaxError(f"bad display name {words!r}")
                display = " ".join(words.split())
        gt = text.find(">", lt)
        if gt < 0:
            raise SipSyntaxError(f"missing '>' in {text!r}")
        inner = text[lt + 1 : gt]
        if inner != inner.strip():
            raise SipSyntaxError(f"whitespace inside <> in {text!r}")
        uri = parse_uri(inner)
        tail = text[gt + 1 :].strip()
    else:
        # addr-spec: URI parameters cannot be told apart, so they belong to the header.
        uri_text, semi, tail = text.partition(";")
        if any(c.isspace() for c in uri_text.strip()):
            raise SipSyntaxError(f"bad addr-spec {text!r}")
        if "?" in uri_text or "," in uri_text:
            raise SipSyntaxError(f"addr-spec may not contain ',' or '?': {text!r}")
        uri = parse_uri(uri_text)
        tail = semi + tail
    if tail and not tail.startswith(";"):
        raise SipSyntaxError(f"junk after address: {tail!r}")
    return NameAddr(uri=uri, display=display, params=_header_params(tail[1:]) if tail else {})


@dataclass(frozen=True, init=False)
class Via:
    """One Via value. `sent_by` is what §17.2.3 matching and §18.2.2 routing use."""

    transport: str
    host: str
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict, hash=False, compare=False)
    protocol: str = "SIP/2.0"

    def __init__(
        self,
        transport: str,
        host: str,
        port: int | None = None,
        params: dict[str, str | None] | None = None,
        protocol: str = "SIP/2.0",
    ) -> None:
        d = self.__dict__
        d["transport"] = transport
        d["host"] = host
        d["port"] = port
        d["params"] = {} if params is None else params
        d["protocol"] = protocol

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    @property
    def sent_by(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port is None else f"{host}:{self.port}"

    @property
    def received(self) -> str | None:
        return self.params.get("received")

    @property
    def rport(self) -> int | None:
        value = self.params.get("rport")
        return int(value) if value and value.isascii() and value.isdigit() else None

    @property
    def wants_rport(self) -> bool:
        return "rport" in self.params

    def with_params(self, **params: str | None) -> Via:
        merged = dict(self.params)
        merged.update(params)
        return Via(self.transport, self.host, self.port, merged, self.protocol)

    def __str__(self) -> str:
        return f"{self.protocol}/{self.transport} {self.sent_by}{format_params(self.params)}"


_VIA = re.compile(
    r"^\s*([A-Za-z0-9\-.!%*_+`'~]+)\s*/\s*([0-9.]+)\s*/\s*([A-Za-z0-9\-.!%*_+`'~]+)\s+(.*)$",
    re.S,
)


def parse_via(text: str) -> Via:
    m = _SIMPLE_VIA.fullmatch(text)
    if m is not None:
        proto_name, version, transport, host, port_s, param_text = m.groups()
        port = int(port_s) if port_s is not None else None
        if port is None or port <= 65535:
            params: dict[str, str | None] = {}
            if param_text:
                for item in param_text[1:].split(";"):
                    name, eq, value = item.partition("=")
                    params[name.lower()] = value if eq else None
            return Via(transport.upper(), host, port, params, f"{proto_name.upper()}/{version}")
    return parse_via_general(text)


def parse_via_general(text: str) -> Via:
    """The full grammar, without `parse_via`'s fast path."""
    m = _VIA.match(text)
    if not m:
        raise SipSyntaxError(f"bad Via {text!r}")
    proto_name, version, transport, rest = m.groups()
    sent_by, semi, param_text = rest.partition(";")
    sent_by = re.sub(r"\s*:\s*", ":", sent_by.strip())
    if not sent_by or any(c.isspace() for c in sent_by):
        raise SipSyntaxError(f"bad Via sent-by {text!r}")
    host, port = _parse_host(sent_by)
    params = _header_params(param_text) if semi else {}
    return Via(
        transport=transport.upper(),
        host=host,
        port=port,
        params=params,
        protocol=f"{proto_name.upper()}/{version}",
    )
