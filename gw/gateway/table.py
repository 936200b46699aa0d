"""The sessions this node owns, found by key and by Call-ID, and what they share.

One object writes both indexes, so they cannot disagree: `add`, `index` and `remove`
are the only writers. It also keeps what sessions share to stay small (interned type
lists, parsed page-mode coordinates of the busiest ones) and the per-key trace switch.
"""

from __future__ import annotations

import sys
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from typing import NamedTuple

from gw.gateway.session import GwSession
from gw.sip.uri import NameAddr, SipUri, parse_name_addr, parse_uri

__all__ = ["COORDS_CACHE", "Coordinates", "LocalSessions"]

# Parsed page-mode coordinates kept for the busiest sessions (see LocalSessions.coordinates).
COORDS_CACHE = 1024


class Coordinates(NamedTuple):
    """Where a session's MESSAGEs to the page-mode user go, parsed for `new_request`."""

    ruri: SipUri
    from_: NameAddr
    to: NameAddr


class LocalSessions:
    def __init__(self) -> None:
        self._by_key: dict[str, GwSession] = {}
        self._by_call_id: dict[str, GwSession] = {}
        self.traced: set[str] = set()  # keys traced (config trace_keys, MI msrp_gw_trace)
        self.trace_call_ids: set[str] = set()
        self.coords_cache_size = COORDS_CACHE
        self._coords: OrderedDict[tuple[str, str, str], Coordinates] = OrderedDict()
        self._types: dict[tuple[str, ...], tuple[str, ...]] = {}

    def __len__(self) -> int:
        return len(self._by_key)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._by_key))

    @property
    def by_key(self) -> Mapping[str, GwSession]:
        return self._by_key

    def get(self, key: str) -> GwSession | None:
        return self._by_key.get(key)

    def by_call_id(self, call_id: str) -> GwSession | None:
        return self._by_call_id.get(call_id)

    def sessions(self) -> list[GwSession]:
        return list(self._by_key.values())

    def add(self, session: GwSession) -> None:
        """`session` is now the key's (a replaced one must have been removed first)."""
        self._by_key[session.key] = session
        session.trace = session.key in self.traced
        if session.call_id:
            self.index(session, session.call_id)

    def index(self, session: GwSession, call_id: str) -> None:
        """Find `session` by `call_id` too (in-dialog requests, traces)."""
        self._by_call_id[call_id] = session
        if session.trace and len(self.trace_call_ids) < 10000:
            self.trace_call_ids.add(call_id)

    def remove(self, session: GwSession) -> None:
        """Forget `session` from both indexes, where it is still the one they hold."""
        if self._by_key.get(session.key) is session:
            del self._by_key[session.key]
        for call_id in (session.record.call_id, session.call_id):
            if call_id and self._by_call_id.get(call_id) is session:
                del self._by_call_id[call_id]

    def set_trace(self, key: str, on: bool) -> None:
        if on:
            self.traced.add(key)
        else:
            self.traced.discard(key)
            if not self.traced:
                self.trace_call_ids.clear()
        session = self._by_key.get(key)
        if session is not None:
            session.trace = on
            if on:
                for call_id in (session.call_id, session.record.call_id):
                    if call_id:
                        self.trace_call_ids.add(call_id)

    def coordinates(self, msg_from: str, msg_to: str, msg_ruri: str) -> Coordinates:
        """The parsed From/To/R-URI of MESSAGEs to the page-mode user (SipSyntaxError).

        A small LRU: a session sending MESSAGEs parses its coordinates once, and idle
        sessions do not keep the parsed objects (about 1.7 KB each) around."""
        key = (msg_from, msg_to, msg_ruri)
        cache = self._coords
        coords = cache.get(key)
        if coords is not None:
            cache.move_to_end(key)
            return coords
        to = parse_name_addr(f"<{msg_to}>")
        ruri = to.uri if msg_ruri == msg_to else parse_uri(msg_ruri)
        coords = Coordinates(ruri, parse_name_addr(f"<{msg_from}>"), to)
        cache[key] = coords
        if len(cache) > self.coords_cache_size:
            cache.popitem(last=False)
        return coords

    def types(self, values: Sequence[str]) -> tuple[str, ...]:
        """An interned tuple of content types: sessions share one per distinct list."""
        key = tuple(values)
        found = self._types.get(key)
        if found is None:
            if len(self._types) >= 256:
                return key
            found = self._types[key] = tuple(sys.intern(v) for v in key)
        return found
