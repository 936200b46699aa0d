"""100k concurrent transactions: dict lookups and a lazily pruned timer heap.

Counts are asserted, not timings; a quadratic path would trip pytest's timeout.
"""

from __future__ import annotations

from collections import Counter

from gw.sip.message import Request
from gw.sip.transaction import Address, RequestReceived, TransactionLayer, build_response
from gw.sip.uri import SipUri
from tests.sip.test_transaction_util import SERVER, TIMEOUT, TIMERS

N = 100_000
URI = SipUri("sip", "bob", host="example.com")


def _request(i: int, method: str = "MESSAGE") -> Request:
    return Request(
        headers=[
            ("Via", f"SIP/2.0/UDP 198.51.100.7:5062;branch=z9hG4bK{i}"),
            ("From", "<sip:alice@example.org>;tag=a"),
            ("To", "<sip:bob@example.com>"),
            ("Call-ID", f"c{i}"),
            ("CSeq", f"1 {method}"),
        ],
        method=method,
        uri=URI,
    )


def test_100k_client_transactions_time_out() -> None:
    tl = TransactionLayer(TIMERS)
    for i in range(N):
        tl.send_request(_request(i, "INVITE" if i % 2 else "MESSAGE"), SERVER, i * 1e-7)
    assert len(tl) == N
    # One jump past Timer B/F: each fires one retransmission, then times out.
    counts = Counter(type(e).__name__ for e in tl.on_timer(TIMEOUT + 1.0))
    assert counts == {"Send": N, "TimedOut": N, "Terminated": N}
    assert len(tl) == 0 and tl.next_deadline() is None
    assert tl.timer_entries < 2048  # stale retransmission timers did not pile up


def test_100k_server_transactions_answered_and_expired() -> None:
    tl = TransactionLayer(TIMERS)
    source = Address("UDP", "198.51.100.7", 5062)
    keys = []
    for i in range(N):
        [event] = tl.receive_request(_request(i), source, 0.0)
        assert isinstance(event, RequestReceived)
        keys.append((event.key, event.request))
    for key, req in keys:  # final responses cancel the guard timers: heap gets compacted
        assert len(tl.respond(key, build_response(req, 200, to_tag="t"), 0.1)) == 1
    assert tl.timer_entries <= 3 * N
    counts = Counter(type(e).__name__ for e in tl.on_timer(0.1 + TIMEOUT))
    assert counts == {"Terminated": N}
    assert len(tl) == 0 and tl.transport_addresses == 0 and tl.next_deadline() is None
