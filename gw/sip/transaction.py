"""Sans-I/O SIP transaction layer (RFC 3261 §17, RFC 6026, §18.2.2, RFC 3581).

One `TransactionLayer` holds every client and server transaction. It never
touches sockets or clocks: each call gets `now` and returns a list of events
(messages to send, things for the transaction user); timers are deadlines that
the caller waits for (`next_deadline`) before calling `on_timer`. Peer input
never raises: what cannot be matched is reported (stray response, ACK) or
dropped (a request without a usable Via).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import StrEnum
from typing import Generic, NamedTuple, TypeVar

from gw.sip.message import Request, Response, SipParseError, parse_message
from gw.sip.responses import MAGIC_COOKIE, build_ack, build_cancel, build_response, new_branch
from gw.sip.timers import TimerQueue, Timers
from gw.sip.uri import Via

__all__ = [
    "MAGIC_COOKIE",
    "AckReceived",
    "AckTimeout",
    "Address",
    "Event",
    "RequestReceived",
    "ResponseReceived",
    "Send",
    "State",
    "StrayResponse",
    "Terminated",
    "TimedOut",
    "Timers",
    "TransactionLayer",
    "TransportFailed",
    "TxKey",
    "build_ack",
    "build_cancel",
    "build_response",
    "new_branch",
    "response_address",
    "stamp_via",
]


@dataclass(frozen=True, slots=True)
class Address:
    """A transport destination or source; for TCP/TLS it names the connection."""

    transport: str
    host: str
    port: int

    @property
    def reliable(self) -> bool:
        return self.transport.upper() != "UDP"


class TxKey(NamedTuple):
    """Transaction identity (§17.1.3, §17.2.3). ACK uses its INVITE's key.

    RFC 2543 peers (no magic cookie) get a synthetic `branch` built from the
    fields that identify their transactions. A NamedTuple: it is a dict key on
    every message, and a tuple hashes without building a new tuple each time.
    """

    branch: str
    method: str
    sent_by: str = ""
    server: bool = False


class State(StrEnum):
    CALLING = "Calling"
    TRYING = "Trying"
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    CONFIRMED = "Confirmed"
    ACCEPTED = "Accepted"
    TERMINATED = "Terminated"


# -- events ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Send:
    """Transmit `message` to `dest` (over the existing connection for TCP/TLS)."""

    message: Request | Response
    dest: Address
    key: TxKey | None = None


@dataclass(frozen=True, slots=True)
class ResponseReceived:
    key: TxKey
    response: Response


@dataclass(frozen=True, slots=True)
class StrayResponse:
    """No client transaction matches: e.g. a retransmitted 2xx to re-ACK (§13.2.2.4)."""

    response: Response


@dataclass(frozen=True, slots=True)
class RequestReceived:
    """A new server transaction. For CANCEL, `cancels` is the matched INVITE's key."""

    key: TxKey
    request: Request
    source: Address
    cancels: TxKey | None = None


@dataclass(frozen=True, slots=True)
class AckReceived:
    """An ACK that is not the transaction's own (ACK for a 2xx): the dialog's business."""

    request: Request
    source: Address


@dataclass(frozen=True, slots=True)
class TimedOut:
    """Timer B/F (or 64*T1 after CANCEL): the TU should act as on a 408."""

    key: TxKey
    request: Request


@dataclass(frozen=True, slots=True)
class AckTimeout:
    """Timer H: no ACK came for the non-2xx final response to an INVITE."""

    key: TxKey


@dataclass(frozen=True, slots=True)
class TransportFailed:
    """§17.1.4 / §17.2.4: the TU should act as on a 503."""

    key: TxKey
    request: Request


@dataclass(frozen=True, slots=True)
class Terminated:
    """The transaction is gone; its key will not be reported again."""

    key: TxKey


Event = (
    Send
    | ResponseReceived
    | StrayResponse
    | RequestReceived
    | AckReceived
    | TimedOut
    | AckTimeout
    | TransportFailed
    | Terminated
)


# -- routing of responses ----------------------------------------------------------------------
def response_address(via: Via, source: Address) -> Address:
    """Where a response to a request with top `via`, received from `source`, goes.

    §18.2.2: reliable transports answer on the request's connection; otherwise
    maddr, then `received` (the packet source, which is what the transport would
    stamp), with the port from rport (RFC 3581) or sent-by (default 5060).
    """
    if source.reliable:
        return source
    maddr = via.params.get("maddr")
    if maddr:
        return Address(source.transport, maddr, via.port or 5060)
    host = via.received or source.host
    port = (via.rport or source.port) if via.wants_rport else (via.port or 5060)
    return Address(source.transport, host, port)


def stamp_via(request: Request, source: Address, via: Via | None = None) -> Via:
    """Add received/rport to the top Via (§18.2.1, RFC 3581 §4) so responses copy them.

    Returns the (possibly updated) top Via; pass `via` if it is already parsed.
    """
    via = via or request.top_via
    current = via.params
    if via.wants_rport and via.rport is None:
        rport = str(source.port)
        if current.get("received") == source.host and current.get("rport") == rport:
            return via
        via = via.with_params(received=source.host, rport=rport)
    elif via.host.strip("[]").lower() != source.host.strip("[]").lower():
        if current.get("received") == source.host:
            return via
        via = via.with_params(received=source.host)
    else:
        return via
    request.replace_top_via(via)
    return via


# -- transactions ------------------------------------------------------------------------------
_CLIENT_LIVE = (State.CALLING, State.TRYING, State.PROCEEDING)


class _Tx:
    """One transaction. `dest` is the request's destination (client) or the reply address."""

    __slots__ = (
        "ack",
        "deadlines",
        "dest",
        "interval",
        "invite",
        "key",
        "last",
        "legacy",
        "reliable",
        "request",
        "state",
    )

    def __init__(self, key: TxKey, request: Request, dest: Address, state: State) -> None:
        self.key = key
        self.request = request
        self.dest = dest
        self.state = state
        self.invite = key.method == "INVITE"
        self.reliable = dest.reliable
        self.deadlines: dict[str, float] = {}
        self.interval = 0.0  # current Timer A/E/G interval
        self.last: Response | None = None  # last response sent (server)
        self.ack: Request | None = None  # ACK for a non-2xx final (INVITE client)
        self.legacy: str | None = None  # RFC 2543 index entry (INVITE server)


class TransactionLayer:
    """All transactions of one endpoint, keyed by TxKey.

    `send_trying`: answer a new INVITE with 100 Trying at once (§17.2.1 asks for
    it unless the TU answers within 200 ms, which an asyncio TU cannot promise).
    Non-INVITE server transactions the TU never answers are dropped after 64*T1,
    when the client has given up (no RFC timer; it bounds memory).

    Completed non-INVITE transactions on UDP (Timer J, 32 s, server; Timer K, 5 s,
    client) only absorb retransmissions. At 5,000 MESSAGEs/s that is 160,000 of them, and
    kept as full transactions (request, response, timers) they were millions of objects
    for the cyclic GC to walk: 170 ms pauses every few seconds, UDP receive buffers
    overflowing, 1 % of MESSAGEs retransmitted (bench/notes.md). So they move to
    `_Lingering` stores: the server keeps the encoded final response and where it went
    (atomic values, which the GC stops tracking), the client only the key; every entry of a
    store lives the same time, so a FIFO replaces the heap.
    """

    def __init__(self, timers: Timers | None = None, *, send_trying: bool = True) -> None:
        self.timers = timers or Timers()
        self.send_trying = send_trying
        self._txs: dict[TxKey, _Tx] = {}
        self._queue: TimerQueue[_Tx] = TimerQueue()
        self._by_addr: dict[Address, set[TxKey]] = {}  # for transport_error(Address)
        self._legacy: dict[str, TxKey] = {}  # RFC 2543 INVITEs, for ACK matching
        # Completed non-INVITE server (Timer J): the final response's bytes and its address.
        self._answered: _Lingering[tuple[bytes, str, str, int]] = _Lingering()
        self._finished: _Lingering[None] = _Lingering()  # non-INVITE client (Timer K)

    # -- queries ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._txs) + len(self._answered) + len(self._finished)

    @property
    def timer_entries(self) -> int:
        """Entries in the timer heap, stale ones included: bounded by the live transactions,
        since cancelled timers are compacted away (memory under load)."""
        return len(self._queue)

    @property
    def transport_addresses(self) -> int:
        """Addresses with live transactions (kept to fail them on a transport error)."""
        return len(self._by_addr)

    def has(self, key: TxKey) -> bool:
        return key in self._txs or key in self._answered or key in self._finished

    def state(self, key: TxKey) -> State | None:
        tx = self._txs.get(key)
        if tx is not None:
            return tx.state
        return State.COMPLETED if key in self._answered or key in self._finished else None

    def request(self, key: TxKey) -> Request | None:
        """The request that created the transaction (e.g. the INVITE a CANCEL targets)."""
        tx = self._txs.get(key)
        return tx.request if tx else None

    def next_deadline(self) -> float | None:
        deadlines = (
            self._queue.next_deadline(),
            self._answered.next_deadline(),
            self._finished.next_deadline(),
        )
        return min((d for d in deadlines if d is not None), default=None)

    # -- client side -----------------------------------------------------------------------
    def send_request(
        self, request: Request, dest: Address, now: float
    ) -> tuple[TxKey, list[Event]]:
        """Start a client transaction. ValueError means a TU bug (no RFC 3261 branch,
        ACK, which is not a transaction, or a branch already in use)."""
        branch = request.top_via.branch or ""
        if not branch.startswith(MAGIC_COOKIE):
            raise ValueError(f"top Via branch {branch!r} lacks the {MAGIC_COOKIE} cookie")
        if request.method == "ACK":
            raise ValueError("ACK is not sent in a transaction")
        key = TxKey(branch, request.method)
        if key in self._txs or key in self._finished:
            raise ValueError(f"transaction {key} already exists")
        tx = _Tx(key, request, dest, State.CALLING if key.method == "INVITE" else State.TRYING)
        self._add(tx)
        if not tx.reliable:
            tx.interval = self.timers.t1
            self._queue.arm(tx, "A" if tx.invite else "E", now + tx.interval)
        self._queue.arm(tx, "B" if tx.invite else "F", now + self.timers.b)
        if request.method == "CANCEL":
            # §9.1: with no final response 64*T1 after CANCEL, the INVITE is given up.
            invite = self._txs.get(TxKey(branch, "INVITE"))
            if invite is not None and invite.state in _CLIENT_LIVE:
                self._queue.arm(invite, "cancelled", now + self.timers.b)
        return key, [Send(request, dest, key)]

    def cancel(
        self, invite: Request, now: float, dest: Address | None = None
    ) -> tuple[TxKey, list[Event]] | None:
        """§9.1: start a CANCEL client transaction for our `invite`, built by
        `build_cancel` (its Request-URI, top Via, Route set, From, To, Call-ID and CSeq
        number) and sent where the INVITE's transaction sends. With no such transaction
        (never sent, or ended) it goes to `dest`, so the far end can answer 481; None
        when `dest` is None then: the caller routes it and calls again."""
        tx = self._txs.get(TxKey(invite.top_via.branch or "", "INVITE"))
        target = tx.dest if tx is not None else dest
        if target is None:
            return None
        return self.send_request(build_cancel(invite), target, now)

    def receive_response(self, response: Response, now: float) -> list[Event]:
        try:
            key = TxKey(response.top_via.branch or "", response.cseq[1])
        except ValueError:
            return [StrayResponse(response)]
        tx = self._txs.get(key)
        if tx is None:
            return [] if key in self._finished else [StrayResponse(response)]  # Timer K absorbs
        status = response.status
        if tx.state not in _CLIENT_LIVE:
            if tx.state is State.COMPLETED and tx.ack is not None and status >= 300:
                return [Send(tx.ack, tx.dest, key)]  # §17.1.1.2: re-ACK retransmissions
            if tx.invite and 200 <= status < 300:
                return [StrayResponse(response)]  # a forked 2xx: the dialog layer's
            return []  # Timer D/K absorb
        events: list[Event] = [ResponseReceived(key, response)]
        if status < 200:
            if tx.state is State.CALLING:
                self._queue.cancel(tx, "A", "B")
            tx.state = State.PROCEEDING
            return events
        if tx.invite and status < 300:
            return events + self._remove(tx)  # RFC 3261: the TU/dialog owns the 2xx
        self._queue.cancel_all(tx)
        tx.state = State.COMPLETED
        if tx.invite:
            tx.ack = build_ack(tx.request, response)
            events.insert(0, Send(tx.ack, tx.dest, key))
            return events + self._linger(tx, "D", self.timers.d(tx.reliable), now)
        duration = self.timers.k(tx.reliable)
        if duration <= 0:
            return events + self._remove(tx)
        self._drop(tx)
        self._finished.add(key, None, now + duration)  # Terminated when Timer K fires
        return events

    # -- server side -----------------------------------------------------------------------
    def receive_request(self, request: Request, source: Address, now: float) -> list[Event]:
        try:
            via = request.top_via
            key, legacy = _server_key(request, via)
            if request.method == "ACK":
                return self._receive_ack(request, source, key, legacy, now)
            tx = self._txs.get(key)
            if tx is not None:
                return self._retransmission(tx)
            if key in self._answered:
                return self._answer_again(key)
            reply = response_address(stamp_via(request, source, via), source)
        except ValueError:
            return []  # no usable Via/From/To/Call-ID/CSeq: nothing can be answered
        invite = request.method == "INVITE"
        tx = _Tx(key, request, reply, State.PROCEEDING if invite else State.TRYING)
        self._add(tx)
        cancels = None
        if request.method == "CANCEL":
            target = TxKey(key.branch, "INVITE", key.sent_by, True)
            cancels = target if target in self._txs else None
        received = RequestReceived(key, request, source, cancels)
        if invite:
            if legacy is not None:
                tx.legacy = legacy
                self._legacy[legacy] = key
            if self.send_trying:
                # Before the TU sees the INVITE: a TU that refuses it at once (488, 400)
                # would otherwise have its final answer followed by this 100 on the wire.
                tx.last = build_response(request, 100)
                return [Send(tx.last, reply, key), received]
        else:
            self._queue.arm(tx, "guard", now + self.timers.f)
        return [received]

    def respond(self, key: TxKey, response: Response, now: float) -> list[Event]:
        """Send a response in a server transaction; ignored when it no longer fits."""
        tx = self._txs.get(key)
        if tx is None or not key.server:
            return []
        status = response.status
        send: list[Event] = [Send(response, tx.dest, key)]
        if tx.state is State.ACCEPTED and 200 <= status < 300:
            return send  # RFC 6026: the TU retransmits its 2xx through us
        if tx.state not in (State.TRYING, State.PROCEEDING):
            return []
        tx.last = response
        if status < 200:
            tx.state = State.PROCEEDING
            return send
        self._queue.cancel_all(tx)
        if not tx.invite:
            duration = self.timers.j(tx.reliable)
            if duration <= 0:
                return send + self._remove(tx)
            self._drop(tx)
            dest = tx.dest
            wire = (response.to_bytes(), dest.transport, dest.host, dest.port)
            self._answered.add(key, wire, now + duration)  # Terminated when Timer J fires
            return send
        if status < 300:
            tx.state = State.ACCEPTED
            self._queue.arm(tx, "L", now + self.timers.l)
            return send
        tx.state = State.COMPLETED
        if not tx.reliable:
            tx.interval = self.timers.t1
            self._queue.arm(tx, "G", now + tx.interval)
        self._queue.arm(tx, "H", now + self.timers.h)
        return send

    def _retransmission(self, tx: _Tx) -> list[Event]:
        """§17.2.1/§17.2.2: resend the last response; Trying/Confirmed/Accepted absorb."""
        if tx.state in (State.PROCEEDING, State.COMPLETED) and tx.last is not None:
            return [Send(tx.last, tx.dest, tx.key)]
        return []

    def _answer_again(self, key: TxKey) -> list[Event]:
        """Timer J: a retransmitted request gets the final response again (rare: parsed
        back from its bytes here rather than kept as an object for 32 s)."""
        wire = self._answered.get(key)
        if wire is None:
            return []
        data, transport, host, port = wire
        try:
            response = parse_message(data)
        except SipParseError:  # our own encoding: cannot happen, but never raise on input
            return []
        return [Send(response, Address(transport, host, port), key)]

    def _receive_ack(
        self, ack: Request, source: Address, key: TxKey, legacy: str | None, now: float
    ) -> list[Event]:
        tx = self._txs.get(key) if legacy is None else self._legacy_ack(ack, legacy)
        if tx is None or tx.state is State.ACCEPTED:
            return [AckReceived(ack, source)]
        if tx.state is not State.COMPLETED:
            return []  # Confirmed absorbs; an ACK before any final response is bogus
        self._queue.cancel_all(tx)
        tx.state = State.CONFIRMED
        return self._linger(tx, "I", self.timers.i(tx.reliable), now)

    def _legacy_ack(self, ack: Request, legacy: str) -> _Tx | None:
        """§17.2.3 for RFC 2543: the ACK's To tag is that of the response we sent."""
        key = self._legacy.get(legacy)
        tx = self._txs.get(key) if key is not None else None
        if tx is None or tx.last is None:
            return None
        return tx if tx.last.to.tag == ack.to.tag else None

    # -- timers and failures -----------------------------------------------------------------
    def on_timer(self, now: float) -> list[Event]:
        events: list[Event] = []
        while (due := self._queue.pop_due(now)) is not None:
            tx, name = due
            events.extend(self._fire(tx, name, now))
        events.extend(Terminated(key) for key in self._answered.pop_due(now))
        events.extend(Terminated(key) for key in self._finished.pop_due(now))
        return events

    def _fire(self, tx: _Tx, name: str, now: float) -> list[Event]:
        key = tx.key
        if name in ("A", "E", "G"):
            message: Request | Response | None = tx.request if name != "G" else tx.last
            if name == "E" and tx.state is State.PROCEEDING:
                tx.interval = self.timers.t2
            elif name == "A":
                tx.interval *= 2
            else:
                tx.interval = min(tx.interval * 2, self.timers.t2)
            self._queue.arm(tx, name, now + tx.interval)
            return [Send(message, tx.dest, key)] if message is not None else []
        if name in ("B", "F", "cancelled"):
            return [TimedOut(key, tx.request), *self._remove(tx)]
        if name == "H":
            return [AckTimeout(key), *self._remove(tx)]
        return self._remove(tx)  # D, I, J, K, L, guard

    def transport_error(self, target: TxKey | Address, now: float) -> list[Event]:
        """§17.1.4/§17.2.4: fail one transaction, or every one using an address."""
        if isinstance(target, TxKey):
            keys = [target] if target in self._txs else []
        else:
            keys = list(self._by_addr.get(target, ()))
        events: list[Event] = []
        for key in keys:
            tx = self._txs[key]
            # Tell the TU unless it is done with the transaction anyway.
            pending = tx.state is not State.CONFIRMED if key.server else tx.state in _CLIENT_LIVE
            if pending:
                events.append(TransportFailed(key, tx.request))
            events.extend(self._remove(tx))
        return events

    def terminate(self, key: TxKey) -> list[Event]:
        """Drop a transaction at the TU's request (e.g. a dialog torn down)."""
        tx = self._txs.get(key)
        if tx is not None:
            return self._remove(tx)
        if self._answered.discard(key) or self._finished.discard(key):
            return [Terminated(key)]
        return []

    # -- bookkeeping -----------------------------------------------------------------------
    def _add(self, tx: _Tx) -> None:
        self._txs[tx.key] = tx
        self._by_addr.setdefault(tx.dest, set()).add(tx.key)

    def _linger(self, tx: _Tx, name: str, duration: float, now: float) -> list[Event]:
        """Wait `duration` absorbing retransmissions; zero (reliable) ends at once."""
        if duration <= 0:
            return self._remove(tx)
        self._queue.arm(tx, name, now + duration)
        return []

    def _remove(self, tx: _Tx) -> list[Event]:
        self._drop(tx)
        return [Terminated(tx.key)]

    def _drop(self, tx: _Tx) -> None:
        """Forget the transaction; `_remove` also tells the TU (a `_Lingering` entry
        taking over tells it when that expires)."""
        self._queue.cancel_all(tx)
        tx.state = State.TERMINATED
        del self._txs[tx.key]
        keys = self._by_addr.get(tx.dest)
        if keys is not None:
            keys.discard(tx.key)
            if not keys:
                del self._by_addr[tx.dest]
        if tx.legacy is not None and self._legacy.get(tx.legacy) == tx.key:
            del self._legacy[tx.legacy]


V = TypeVar("V")


class _Lingering(Generic[V]):
    """Keys that each expire the same time after they were added: a dict and a FIFO.

    The FIFO holds (deadline, key); an entry whose key was discarded, or added again
    later, is stale and skipped (its deadline no longer matches the dict's).
    """

    __slots__ = ("_fifo", "_items")

    def __init__(self) -> None:
        self._items: dict[TxKey, tuple[float, V]] = {}
        self._fifo: deque[tuple[float, TxKey]] = deque()

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: TxKey) -> bool:
        return key in self._items

    def get(self, key: TxKey) -> V | None:
        item = self._items.get(key)
        return item[1] if item is not None else None

    def add(self, key: TxKey, value: V, deadline: float) -> None:
        self._items[key] = (deadline, value)
        self._fifo.append((deadline, key))

    def discard(self, key: TxKey) -> bool:
        return self._items.pop(key, None) is not None

    def next_deadline(self) -> float | None:
        fifo, items = self._fifo, self._items
        while fifo:
            deadline, key = fifo[0]
            item = items.get(key)
            if item is not None and item[0] == deadline:
                return deadline
            fifo.popleft()  # stale
        return None

    def pop_due(self, now: float) -> list[TxKey]:
        fifo, items = self._fifo, self._items
        out: list[TxKey] = []
        while fifo and fifo[0][0] <= now:
            deadline, key = fifo.popleft()
            item = items.get(key)
            if item is not None and item[0] == deadline:
                del items[key]
                out.append(key)
        return out


def _server_key(request: Request, via: Via) -> tuple[TxKey, str | None]:
    """§17.2.3 matching key; for RFC 2543 peers also the To-tag-free index of INVITEs.

    Raises ValueError (SipSyntaxError) on missing or malformed identifying headers.
    """
    method = "INVITE" if request.method == "ACK" else request.method
    branch = via.branch or ""
    if branch.startswith(MAGIC_COOKIE):
        return TxKey(branch, method, via.sent_by.lower(), True), None
    legacy = "\0".join(
        (str(request.uri), request.from_.tag or "", request.call_id, str(request.cseq[0]), str(via))
    )
    return TxKey(f"2543\0{legacy}\0{request.to.tag or ''}", method, "", True), legacy
