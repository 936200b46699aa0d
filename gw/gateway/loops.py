"""Loops between and within deployments: the `X-Msrp-Gw` marks and Max-Forwards.

The gateway is a B2BUA: what it sends because of a request (the INVITE for a
MESSAGE, the MESSAGEs of a session an INVITE set up) is a new request, so neither
Via nor Max-Forwards carries over by itself. Two rules make up for that:

- **Marks.** Each request we send because of another carries that request's marks
  plus our deployment's id (`X-Msrp-Gw: d1, d2`). A request that carries our own
  mark came back to this deployment: 482. Another deployment's mark is ordinary
  traffic (two msrp-gw clusters, or OpenSIPS, back to back).
- **Hops.** It also carries the request's Max-Forwards less one (RFC 3261 §16.6
  step 3, as a proxy would), so a loop through deployments that do not see each
  other's marks (one strips headers) still ends: a request arriving with 0 gets 483.
"""

from __future__ import annotations

from dataclasses import dataclass

from gw.sip.message import Request

__all__ = ["LOOP_HEADER", "MAX_FORWARDS", "Hops", "Onward", "hops_of", "onward"]

LOOP_HEADER = "X-Msrp-Gw"
MAX_FORWARDS = 70  # RFC 3261 §8.1.1.6: what a request we originate starts with
MAX_MARKS = 16  # marks kept on an onward request (the oldest are dropped)


@dataclass(frozen=True, slots=True)
class Hops:
    """What a request says of the path it came along: the deployments it passed
    (oldest first) and the hops it has left."""

    marks: tuple[str, ...] = ()
    max_forwards: int = MAX_FORWARDS

    def passed(self, deployment: str) -> bool:
        """Whether it came through `deployment` already (a loop, if that is us)."""
        return deployment in self.marks


_PLAIN = Hops()


def hops_of(request: Request) -> Hops:
    """The marks and Max-Forwards of a received request (validated by the parser:
    Max-Forwards is a number 0-255 when present; 70 when absent)."""
    values = request.get_all(LOOP_HEADER)
    mf = request.get("Max-Forwards")
    if not values and (mf is None or mf == "70"):
        return _PLAIN
    marks = tuple(m for v in values for part in v.split(",") if (m := part.strip()))
    return Hops(marks, MAX_FORWARDS if mf is None else int(mf))


@dataclass(frozen=True, slots=True)
class Onward:
    """What a request we send because of another carries: its headers (the marks) and
    its Max-Forwards."""

    headers: tuple[tuple[str, str], ...]
    max_forwards: int


_ONWARD: dict[tuple[tuple[str, ...], int, str], Onward] = {}


def onward(hops: Hops, deployment: str) -> Onward:
    """For a request we send because of one that came with `hops`: its marks plus ours,
    and one hop less (never more than a request of our own would have). Interned:
    the sessions of one path share one value."""
    key = (hops.marks, hops.max_forwards, deployment)
    found = _ONWARD.get(key)
    if found is None:
        marks = [m for m in hops.marks if m != deployment][-(MAX_MARKS - 1) :]
        marks.append(deployment)
        mf = max(0, min(MAX_FORWARDS, hops.max_forwards - 1))
        found = Onward(((LOOP_HEADER, ", ".join(marks)),), mf)
        if len(_ONWARD) >= 1024:
            _ONWARD.clear()
        _ONWARD[key] = found
    return found
