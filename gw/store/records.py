"""The session record and its encoding as a Redis hash.

Strings are stored as strings and numbers as decimal strings (so Lua scripts can read the
timestamps and HINCRBY the epoch); lists and dicts are msgpack. Unknown hash fields are
ignored on read, so an older node can read what a newer one wrote.

Each record says which version of this layout wrote it (`version`; a hash without it is
version 0, from before versioning). Within a version, changes are additive: a new field
has a default that keeps an older reader right. A change that is not raises
`RECORD_VERSION` (docs/operations.md, "Rolling upgrades").
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import msgpack

__all__ = [
    "FIELDS",
    "RECORD_VERSION",
    "Origin",
    "SessionRecord",
    "State",
    "decode_record",
    "encode_fields",
    "record_fields",
]

State = Literal["setup", "active", "ending"]
Origin = Literal["msg_to_msrp", "answer"]

RECORD_VERSION = 1

_STATES = frozenset(get_args(State))
_ORIGINS = frozenset(get_args(Origin))


@dataclass(slots=True)
class SessionRecord:
    """One gateway session; zero timestamps are filled by `SessionStore.create`."""

    key: str
    # The session instance that wrote the record (see gw.store.lua: its own operations are
    # conditional on it); "" in records written before it existed.
    sid: str = ""
    state: State = "setup"
    origin: Origin = "msg_to_msrp"
    owner: str = ""
    msg_from: str = ""
    msg_to: str = ""
    msg_ruri: str = ""
    call_id: str = ""
    local_tag: str = ""
    remote_tag: str = ""
    local_path: list[str] = field(default_factory=list)
    peer_path: list[str] = field(default_factory=list)
    content_types: list[str] = field(default_factory=list)
    created: float = 0.0
    last_message: float = 0.0
    last_send: float = 0.0
    epoch: int = 0
    # The path of the request that started the session (gw.gateway.loops): the
    # deployments it passed and the Max-Forwards it had left.
    marks: list[str] = field(default_factory=list)
    max_forwards: int = 70
    extra: dict[str, Any] = field(default_factory=dict)
    version: int = RECORD_VERSION  # of the layout that wrote it; 0: before versioning

    def __post_init__(self) -> None:
        if self.state not in _STATES:
            raise ValueError(f"state must be one of {sorted(_STATES)}: {self.state!r}")
        if self.origin not in _ORIGINS:
            raise ValueError(f"origin must be one of {sorted(_ORIGINS)}: {self.origin!r}")


_STR = (
    *("sid", "state", "origin", "owner", "msg_from", "msg_to", "msg_ruri"),
    *("call_id", "local_tag", "remote_tag"),
)
_FLOAT = ("created", "last_message", "last_send")
_INT = ("epoch", "max_forwards", "version")
_PACKED = ("local_path", "peer_path", "content_types", "marks", "extra")
FIELDS = frozenset(_STR + _FLOAT + _INT + _PACKED)


def _encode_value(name: str, value: Any) -> bytes:
    if name in _STR:
        if not isinstance(value, str):
            raise TypeError(f"{name} must be str, not {type(value).__name__}")
        return value.encode()
    if name in _FLOAT:
        return repr(float(value)).encode()
    if name in _INT:
        return str(int(value)).encode()
    if name in _PACKED:
        packed: bytes = msgpack.packb(value, use_bin_type=True)
        return packed
    raise TypeError(f"unknown session field {name!r}")


def encode_fields(values: Mapping[str, Any]) -> list[bytes]:
    """Flat [field, value, ...] for HSET; refuses unknown fields and `key` (the identity)."""
    if "state" in values and values["state"] not in _STATES:
        raise ValueError(f"bad state {values['state']!r}")
    if "origin" in values and values["origin"] not in _ORIGINS:
        raise ValueError(f"bad origin {values['origin']!r}")
    flat: list[bytes] = []
    for name, value in values.items():
        flat += [name.encode(), _encode_value(name, value)]
    return flat


def record_fields(record: SessionRecord) -> dict[str, Any]:
    """Every stored field of `record` (all but the key, which is in the hash name)."""
    return {f.name: getattr(record, f.name) for f in dataclasses.fields(record) if f.name != "key"}


def decode_record(key: str, raw: dict[bytes, bytes]) -> SessionRecord:
    """Build a record from HGETALL output (missing fields keep their defaults)."""
    values: dict[str, Any] = {"version": 0}  # a hash without it predates versioning
    for bname, bvalue in raw.items():
        name = bname.decode()
        if name in _STR:
            values[name] = bvalue.decode()
        elif name in _FLOAT:
            values[name] = float(bvalue)
        elif name in _INT:
            values[name] = int(bvalue)
        elif name in _PACKED:
            values[name] = msgpack.unpackb(bvalue, raw=False)
    return SessionRecord(key=key, **values)
