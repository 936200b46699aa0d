"""Batched random ids: right length, hex, never repeated across urandom batches."""

from __future__ import annotations

import os
import string

import pytest

from gw.ids import random_hex
from gw.sip.dialog import new_tag
from gw.sip.responses import MAGIC_COOKIE, new_branch


def test_lengths_and_alphabet() -> None:
    for chars in (1, 12, 16, 24):
        value = random_hex(chars)
        assert len(value) == chars and set(value) <= set(string.hexdigits.lower())
    assert new_branch().startswith(MAGIC_COOKIE) and len(new_branch()) == len(MAGIC_COOKIE) + 24
    assert len(new_tag()) == 12


def test_unique_across_batches() -> None:
    ids = [random_hex(16) for _ in range(3000)]  # about 12 batches of 256
    assert len(set(ids)) == len(ids)


@pytest.mark.parametrize("chars", [0, 25, -1])
def test_out_of_range_is_refused(chars: int) -> None:
    with pytest.raises(ValueError):
        random_hex(chars)


def test_forked_child_draws_its_own() -> None:
    random_hex()  # the pool now holds ids a child must not reuse
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.write(write, random_hex().encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = os.read(read, 64).decode()
    os.close(read)
    assert len(child) == 24 and child != random_hex()
