"""Media types as SDP `a=accept-types` and MSRP `Content-Type` compare them (RFC 4975 §8.6).

One matcher for both sides: the SIP stack checks a page-mode MESSAGE against the
gateway's types and the MSRP peer's, the MSRP stack checks a SEND against its session's.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

__all__ = ["covers", "mime_matches", "parse_mime"]


@functools.lru_cache(maxsize=1024)
def parse_mime(text: str) -> str | None:
    """Lower-cased `type/subtype` without parameters; `*` for any (`*` or `*/*`); None
    when malformed (no subtype, a `*` type, spaces). Cached: a few types recur."""
    base = text.split(";", 1)[0].strip().lower()
    if base in ("*", "*/*"):
        return "*"
    typ, slash, sub = base.partition("/")
    if not (slash and typ and sub) or typ == "*" or "/" in sub or " " in base:
        return None
    return base


def covers(pattern: str, mime: str) -> bool:
    """Whether a parsed pattern (`*`, `type/*`, exact) admits a parsed type."""
    return pattern in ("*", mime) or (pattern.endswith("/*") and mime.startswith(pattern[:-1]))


def mime_matches(content_type: str, patterns: Iterable[str]) -> bool:
    """True if an accept-types list admits `content_type` (parameters ignored, case too)."""
    mime = parse_mime(content_type)
    if mime is None:
        return False
    for pattern in patterns:
        p = parse_mime(pattern)
        if p is not None and covers(p, mime):
            return True
    return False
