"""Transaction timer values (RFC 3261 §17, table 4; RFC 6026) and a deadline queue.

The queue is a heap with lazy deletion: cancelling a timer only forgets the
deadline on its owner, and stale heap entries are skipped (or compacted away
when they dominate), so arming and cancelling stay O(log n) at 100k timers.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

__all__ = ["TimerQueue", "Timers"]


@dataclass(frozen=True, slots=True)
class Timers:
    """T1/T2/T4 and the timer durations derived from them.

    `td` is Timer D on unreliable transports (the RFC asks for at least 32 s);
    it is a field so that tests can shrink it along with T1.
    """

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0
    td: float = 32.0

    @property
    def b(self) -> float:
        return 64 * self.t1

    @property
    def f(self) -> float:
        return 64 * self.t1

    @property
    def h(self) -> float:
        return 64 * self.t1

    @property
    def l(self) -> float:  # noqa: E743 - the RFC's name
        return 64 * self.t1

    def d(self, reliable: bool) -> float:
        return 0.0 if reliable else self.td

    def i(self, reliable: bool) -> float:
        return 0.0 if reliable else self.t4

    def j(self, reliable: bool) -> float:
        return 0.0 if reliable else 64 * self.t1

    def k(self, reliable: bool) -> float:
        return 0.0 if reliable else self.t4


class Timed(Protocol):
    """A timer owner: its armed timers by name, each with its deadline."""

    deadlines: dict[str, float]


T = TypeVar("T", bound=Timed)


class TimerQueue(Generic[T]):
    def __init__(self) -> None:
        self._heap: list[tuple[float, int, T, str]] = []
        self._seq = itertools.count()
        self._live = 0

    def __len__(self) -> int:
        """Heap entries, stale ones included (for tests of the compaction)."""
        return len(self._heap)

    def arm(self, owner: T, name: str, deadline: float) -> None:
        if name not in owner.deadlines:
            self._live += 1
        owner.deadlines[name] = deadline
        heapq.heappush(self._heap, (deadline, next(self._seq), owner, name))
        if len(self._heap) > 1024 and len(self._heap) > 3 * self._live:
            self._heap = [e for e in self._heap if _valid(e)]
            heapq.heapify(self._heap)

    def cancel(self, owner: T, *names: str) -> None:
        for name in names:
            if owner.deadlines.pop(name, None) is not None:
                self._live -= 1

    def cancel_all(self, owner: T) -> None:
        self._live -= len(owner.deadlines)
        owner.deadlines.clear()

    def next_deadline(self) -> float | None:
        heap = self._heap
        while heap and not _valid(heap[0]):
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def pop_due(self, now: float) -> tuple[T, str] | None:
        """The earliest armed timer due at `now`, disarmed; None when nothing is due."""
        heap = self._heap
        while heap and heap[0][0] <= now:
            entry = heapq.heappop(heap)
            if _valid(entry):
                _, _, owner, name = entry
                del owner.deadlines[name]
                self._live -= 1
                return owner, name
        return None


def _valid(entry: tuple[float, int, Timed, str]) -> bool:
    return entry[2].deadlines.get(entry[3]) == entry[0]
