"""Key names. `{key}` is a Redis Cluster hash tag: a session's hash and deadline share a slot.

A key containing `}` still works: the tag ends at the first `}`, which both names share.
"""

from __future__ import annotations

import re

__all__ = ["KeySpace"]

_GLOB = re.compile(r"([*?\[\]\\])")


class KeySpace:
    def __init__(self, prefix: str = "msrpgw") -> None:
        if not prefix or "{" in prefix or "}" in prefix:
            raise ValueError(f"store prefix must be non-empty and brace-free: {prefix!r}")
        self.prefix = prefix
        self._sess = f"{prefix}:sess:{{"
        self._dl = f"{prefix}:dl:{{"
        self.events = f"{prefix}:events"

    def session(self, key: str) -> str:
        return f"{self._sess}{key}}}"

    def deadline(self, key: str) -> str:
        return f"{self._dl}{key}}}"

    def session_pattern(self) -> str:
        """SCAN MATCH pattern for every session hash of this prefix."""
        return _GLOB.sub(r"\\\1", self._sess) + "*}"

    def key_of_session(self, name: bytes | str) -> str | None:
        return _strip(name, self._sess)

    def key_of_deadline(self, name: bytes | str) -> str | None:
        return _strip(name, self._dl)


def _strip(name: bytes | str, head: str) -> str | None:
    if isinstance(name, bytes):
        try:
            name = name.decode()
        except UnicodeDecodeError:
            return None
    if name.startswith(head) and name.endswith("}") and len(name) > len(head):
        return name[len(head) : -1]
    return None
