"""Random identifiers (SIP branches, tags, Call-IDs; MSRP transaction ids) from batched urandom.

Every message needs one or two, and `secrets.token_hex` costs a system call each: here one
`os.urandom` call serves 256 ids. The bytes are the same CSPRNG's; each id takes its own,
never shared with another id.
"""

from __future__ import annotations

import os
from collections import deque

__all__ = ["new_sid", "random_hex"]

_CHARS = 24  # hex characters per pooled id: 96 bits, the most any caller takes
_BATCH = 256
_pool: deque[str] = deque()  # popleft and extend are atomic: safe across threads too


def random_hex(chars: int = _CHARS) -> str:
    """`chars` (at most 24) random lowercase hex characters."""
    if not 0 < chars <= _CHARS:
        raise ValueError(f"random_hex takes 1..{_CHARS} characters, not {chars}")
    try:
        item = _pool.popleft()
    except IndexError:
        raw = os.urandom(_CHARS // 2 * _BATCH).hex()
        _pool.extend([raw[i : i + _CHARS] for i in range(_CHARS, len(raw), _CHARS)])
        item = raw[:_CHARS]
    return item[:chars]


if hasattr(os, "register_at_fork"):  # a forked child must not reuse its parent's ids
    os.register_at_fork(after_in_child=_pool.clear)


def new_sid() -> str:
    """A session instance's id (SessionRecord.sid): 64 random bits."""
    return random_hex(16)
