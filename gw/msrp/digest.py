"""HTTP Digest client side (RFC 2617, RFC 7616) as MSRP relays use it (RFC 4976 §5).

Pure functions: parse a `WWW-Authenticate` value, build an `Authorization` value.
Parsing never raises on peer input; it returns None for anything unusable.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass

__all__ = [
    "Challenge",
    "authorization",
    "parse_challenge",
    "supported_algorithm",
]

_TOKEN_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_WS = " \t"


def _sha512_256(data: bytes) -> str:
    return hashlib.new("sha512_256", data).hexdigest()


def _available(name: str) -> bool:
    try:
        hashlib.new(name)
    except ValueError:
        return False
    return True


_HASHES: dict[str, Callable[[bytes], str]] = {
    "MD5": lambda b: hashlib.md5(b, usedforsecurity=False).hexdigest(),
    "SHA-256": lambda b: hashlib.sha256(b).hexdigest(),
}
if _available("sha512_256"):  # depends on the OpenSSL build
    _HASHES["SHA-512-256"] = _sha512_256


@dataclass(frozen=True, slots=True)
class Challenge:
    """One Digest challenge. `qop` is empty for an RFC 2069 challenge (no qop)."""

    realm: str
    nonce: str
    algorithm: str | None = None  # as the server spelled it; None means MD5
    qop: tuple[str, ...] = ()
    opaque: str | None = None
    stale: bool = False

    @property
    def base_algorithm(self) -> str:
        """Upper-case algorithm without the -sess suffix ("MD5", "SHA-256", ...)."""
        alg = (self.algorithm or "MD5").upper()
        return alg.removesuffix("-SESS")

    @property
    def session_variant(self) -> bool:
        return (self.algorithm or "").upper().endswith("-SESS")


def supported_algorithm(challenge: Challenge) -> bool:
    """True when we can answer this challenge (known hash, qop absent or auth/auth-int)."""
    if challenge.base_algorithm not in _HASHES:
        return False
    return not challenge.qop or bool({"auth", "auth-int"} & set(challenge.qop))


def parse_challenge(value: str) -> Challenge | None:
    """Parse a `WWW-Authenticate: Digest ...` value; None if not a usable Digest challenge.

    Only the first challenge of a value is read (a second scheme after a comma ends it).
    """
    scheme, _, rest = value.strip(_WS).partition(" ")
    if scheme.lower() != "digest":
        return None
    params = _parse_params(rest)
    if params is None:
        return None
    realm, nonce = params.get("realm"), params.get("nonce")
    if realm is None or not nonce:
        return None
    qop_raw = params.get("qop")
    qop = tuple(q.strip(_WS).lower() for q in qop_raw.split(",")) if qop_raw else ()
    return Challenge(
        realm=realm,
        nonce=nonce,
        algorithm=params.get("algorithm"),
        qop=tuple(q for q in qop if q),
        opaque=params.get("opaque"),
        stale=(params.get("stale") or "").lower() == "true",
    )


def _parse_params(text: str) -> dict[str, str] | None:
    """`name=token|"quoted", ...` -> dict (names lower-cased, first wins); None if malformed."""
    params: dict[str, str] = {}
    i, n = 0, len(text)
    while True:
        while i < n and text[i] in _WS + ",":
            i += 1
        if i >= n:
            return params
        m = _TOKEN_RE.match(text, i)
        if m is None:
            return None
        name, i = m[0].lower(), m.end()
        while i < n and text[i] in _WS:
            i += 1
        if i >= n or text[i] != "=":
            # a bare token starts the next challenge (RFC 7235 list): stop here
            return params
        i += 1
        while i < n and text[i] in _WS:
            i += 1
        if i < n and text[i] == '"':
            value, i = _quoted(text, i)
            if value is None:
                return None
        else:
            m = _TOKEN_RE.match(text, i)
            if m is None:
                return None
            value, i = m[0], m.end()
        params.setdefault(name, value)
        while i < n and text[i] in _WS:
            i += 1
        if i < n and text[i] != ",":
            return None


def _quoted(text: str, i: int) -> tuple[str | None, int]:
    """Read the quoted-string starting at text[i] == '"'; (None, i) if unterminated."""
    out: list[str] = []
    i += 1
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            out.append(text[i + 1])
            i += 2
        elif c == '"':
            return "".join(out), i + 1
        else:
            out.append(c)
            i += 1
    return None, i


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def authorization(
    challenge: Challenge,
    *,
    username: str,
    password: str,
    method: str,
    uri: str,
    cnonce: str,
    nc: int,
    body: bytes = b"",
) -> str:
    """The `Authorization` header value answering `challenge`.

    qop "auth" is preferred to "auth-int" (whose hash covers `body`). Raises
    ValueError when `supported_algorithm(challenge)` is False: check first.
    """
    if not supported_algorithm(challenge):
        raise ValueError(f"unsupported Digest challenge {challenge.algorithm!r} {challenge.qop!r}")
    h = _HASHES[challenge.base_algorithm]
    ha1 = h(f"{username}:{challenge.realm}:{password}".encode())
    if challenge.session_variant:
        ha1 = h(f"{ha1}:{challenge.nonce}:{cnonce}".encode())
    qop = None
    if challenge.qop:
        qop = "auth" if "auth" in challenge.qop else "auth-int"
    a2 = f"{method}:{uri}"
    if qop == "auth-int":
        a2 += ":" + h(body)
    ha2 = h(a2.encode())
    nc_text = f"{nc:08x}"
    if qop is None:
        response = h(f"{ha1}:{challenge.nonce}:{ha2}".encode())
    else:
        response = h(f"{ha1}:{challenge.nonce}:{nc_text}:{cnonce}:{qop}:{ha2}".encode())
    parts = [
        f"username={_quote(username)}",
        f"realm={_quote(challenge.realm)}",
        f"nonce={_quote(challenge.nonce)}",
        f"uri={_quote(uri)}",
        f"response={_quote(response)}",
    ]
    if challenge.algorithm is not None:
        parts.append(f"algorithm={challenge.algorithm}")
    if challenge.opaque is not None:
        parts.append(f"opaque={_quote(challenge.opaque)}")
    if qop is not None:
        parts += [f"qop={qop}", f"nc={nc_text}", f"cnonce={_quote(cnonce)}"]
    return "Digest " + ", ".join(parts)
