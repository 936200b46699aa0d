"""A world for the sans-I/O gateway core: a fake clock, a store in a dict, MSRP legs and
SIP transactions as plain objects, and a scheduler that runs the core's procedures to
the point where they wait. No socket, no event loop, no Redis: a rule test runs in
microseconds (tests/gateway/test_core.py).

The world carries out every effect and step the way the asyncio adapter does, with
answers the test chooses: `invite_answer` for our INVITEs, `alive` for peer nodes,
`ask` for their RPC replies, `store_down` to make every store step fail.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from redis.exceptions import ConnectionError as RedisConnectionError

from gw.cluster.rpc import NodeUnreachable
from gw.gateway import commands as c
from gw.gateway.core import GatewayCore
from gw.gateway.legs import Role
from gw.gateway.policy import Policy
from gw.gateway.session import GwSession, Pending
from gw.gateway.settings import GatewaySettings
from gw.msrp.endpoint import Session as MsrpHandle
from gw.msrp.events import SessionEvent
from gw.msrp.uri import MsrpUri, parse_msrp_uri
from gw.sip.dialog import Dialog
from gw.sip.endpoint import EndpointConfig, SipEndpoint
from gw.sip.message import LocalFailure, Request, Response, parse_message
from gw.sip.sdp import MsrpMedia, SessionDescription, build_msrp_answer, build_msrp_offer
from gw.sip.transaction import build_response
from gw.sip.uri import SipUri
from gw.store.records import SessionRecord
from gw.store.sessions import SessionNotFound

GW = "127.0.0.1:5060"
PAGE = "sip:alice@page.example"
MSRP = "sip:bob@msrp.example"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def time(self) -> float:
        return self.now

    def perf(self) -> float:
        return self.now


class FakeSip:
    """Builds requests as the endpoint does (a SipEndpoint that never starts)."""

    def __init__(self) -> None:
        self.endpoint = SipEndpoint(EndpointConfig())

    def new_request(self, method: str, uri: SipUri | str, **kwargs: Any) -> Request:
        return self.endpoint.new_request(method, uri, **kwargs)

    def contact(self) -> str:
        return f"sip:gw@{GW}"

    def own_sent_by(self) -> frozenset[str]:
        return frozenset({GW})


@dataclass(eq=False)
class FakeLeg:
    """An MSRP leg: what the core reads of one (its URIs, whether it is closed)."""

    local_uri: MsrpUri
    peer_path: tuple[MsrpUri, ...]
    role: Role
    session: GwSession
    closed: bool = False
    closed_why: str = ""

    @property
    def local_path(self) -> tuple[MsrpUri, ...]:
        return (self.local_uri,)

    def close(self, reason: str = "closed") -> None:
        self.closed, self.closed_why = True, reason


class FakeLegs:
    def __init__(self) -> None:
        self.ids = itertools.count(1)
        self.opened: list[FakeLeg] = []
        self.relay_down = False

    def new_local_uri(self) -> MsrpUri:
        return parse_msrp_uri(f"msrp://{GW.split(':')[0]}:2855/s{next(self.ids)};tcp")

    def offer(self, local_uri: MsrpUri, types: Sequence[str], setup: str | None) -> bytes:
        if self.relay_down:
            from gw.msrp.endpoint import MsrpSessionError

            raise MsrpSessionError(503, "relay down")
        return build_msrp_offer(
            address="127.0.0.1", port=2855, path=[str(local_uri)], accept_types=types, setup=setup
        ).to_bytes()

    def open(
        self,
        session: GwSession,
        media: MsrpMedia,
        *,
        path: Sequence[MsrpUri],
        local_uri: MsrpUri,
        role: Role,
        types: Sequence[str],
    ) -> MsrpHandle:
        leg = FakeLeg(local_uri, tuple(path), role, session)
        self.opened.append(leg)
        return cast(MsrpHandle, leg)

    def answer(
        self,
        media: MsrpMedia,
        handle: MsrpHandle,
        *,
        types: Sequence[str],
        setup: str | None,
        offer: SessionDescription | None,
    ) -> bytes:
        return build_msrp_answer(
            media,
            address="127.0.0.1",
            port=2855,
            path=[str(u) for u in handle.local_path],
            accept_types=types,
            setup=setup,
            offer_sdp=offer,
        ).to_bytes()


@dataclass(eq=False)
class Txn:
    """A SIP request to answer: what the core answered, and the dialog a 2xx creates."""

    request: Request
    dialog: Dialog | None = None
    answers: list[c.Respond] = field(default_factory=list)

    @property
    def status(self) -> int | None:
        return self.answers[-1].status if self.answers else None


def sip_request(
    method: str,
    *,
    frm: str = PAGE,
    to: str = MSRP,
    body: bytes = b"hello",
    content_type: str | None = "text/plain",
    extra: Sequence[str] = (),
    to_tag: str = "",
    call_id: str = "call-1",
) -> Request:
    lines = [
        f"{method} {to} SIP/2.0",
        "Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-test",
        "Max-Forwards: 70",
        f"From: <{frm}>;tag=f1",
        f"To: <{to}>" + (f";tag={to_tag}" if to_tag else ""),
        f"Call-ID: {call_id}",
        f"CSeq: 1 {method}",
        "Contact: <sip:peer@10.0.0.1:5060>",
        *extra,
    ]
    if content_type:
        lines.append(f"Content-Type: {content_type}")
    lines.append(f"Content-Length: {len(body)}")
    data = ("\r\n".join(lines) + "\r\n\r\n").encode() + body
    request = parse_message(data)
    assert isinstance(request, Request)
    return request


def msrp_offer(path: str = "msrp://10.0.0.2:7777/peer1;tcp", setup: str = "active") -> bytes:
    return build_msrp_offer(
        address="10.0.0.2", port=7777, path=[path], accept_types=["text/plain"], setup=setup
    ).to_bytes()


def answer_2xx(invite: Request, sdp: bytes | None = None) -> tuple[Response, Dialog]:
    """The MSRP side's 200 to our INVITE, and the dialog it makes."""
    response = build_response(invite, 200, "OK", to_tag="t2")
    response.add("Contact", "<sip:bob@10.0.0.2:5060>")
    response.add("Content-Type", "application/sdp")
    response.body = msrp_offer(setup="passive") if sdp is None else sdp
    return response, Dialog.from_uac(invite, response)


def refused(invite: Request, status: int, reason: str = "") -> tuple[Response, None]:
    return build_response(invite, status, reason or "Refused"), None


def timed_out(invite: Request) -> tuple[Response, None]:
    response = build_response(invite, 408, "Request Timeout")
    response.local = LocalFailure.TIMEOUT
    return response, None


PARK = object()  # a step that waits for the test (an INVITE's answer, an outcome)


class World:
    def __init__(self, **settings: Any) -> None:
        self.clock = FakeClock()
        self.legs = FakeLegs()
        self.settings = GatewaySettings(node_id="n1", content_types=["text/plain"], **settings)
        self.msrp_ids = (f"m{i}" for i in itertools.count(1))
        self.core = GatewayCore(
            self.settings,
            sip=FakeSip(),
            legs=self.legs,
            policy=Policy(content_types=["text/plain"]),
            clock=self.clock,
            new_id=lambda: next(self.msrp_ids),
        )
        self.core.lifecycle.deadline_of = lambda rec: rec.last_message + 3600
        self.store: dict[str, SessionRecord] = {}
        self.store_down = False
        self.alive: set[str] = set()
        self.ask: Callable[[c.Ask], Any] = lambda step: (_ for _ in ()).throw(
            NodeUnreachable(step.node)
        )
        # Our INVITEs' answers; None parks the set-up until `answer_invite`.
        self.invite_answer: Callable[[Request], tuple[Response, Dialog | None]] | None = None
        self.effects: list[c.Effect] = []
        self.steps: list[c.Step] = []
        self.published: list[tuple[str, dict[str, Any]]] = []
        self.timers: dict[Pending, tuple[float, GwSession]] = {}
        self.invites: list[tuple[c.Procedure[Any], c.Invite]] = []
        # BYEs park until `answer_bye` when set (a peer gone silent: 64*T1 on the wire).
        self.byes_wait = False
        # What the MSRP leg's connect raises (None: it connects); what was handed to the
        # leg (SendMsrp) when it was asked to connect.
        self.connect_error: Exception | None = None
        self.sent_at_connect: list[c.SendMsrp] = []
        # The store step after the connect parks until `resume_after_connect` when set (a
        # slow store: the first SEND's outcome can come before the set-up ends).
        self.park_after_connect = False
        self._after_connect: c.Procedure[Any] | None = None
        self._parked_update: c.StoreUpdate | None = None
        self.byes: list[tuple[c.Procedure[Any], c.Bye]] = []
        self.sleepers: list[tuple[float, c.Procedure[Any]]] = []  # Sleep > 0.1 s: until then
        self._waiting: dict[Pending, list[c.Procedure[Any]]] = {}
        self._ready: deque[tuple[c.Procedure[Any], Any, BaseException | None]] = deque()

    # -- feeding the core -------------------------------------------------------------------

    def request(self, request: Request) -> Txn:
        txn = Txn(request)
        self.core.request(txn)
        self.run()
        return txn

    def message(self, body: bytes = b"hello", **kwargs: Any) -> Txn:
        return self.request(sip_request("MESSAGE", body=body, **kwargs))

    def msrp_event(self, session: GwSession, event: SessionEvent) -> None:
        self.core.msrp_event(session, event)
        self.run()

    def procedure(self, procedure: c.Procedure[Any]) -> Any:
        """Run a procedure the adapter would start (end_session, expired, sweep...)."""
        result = self._inline(procedure)
        self.run()
        return result

    def start(self, procedure: c.Procedure[Any]) -> None:
        """Start a procedure as the adapter's Spawn does: it may park on a step."""
        self._ready.append((procedure, None, None))
        self.run()

    def advance(self, seconds: float) -> None:
        """Move the clock on and fire the timers that are due."""
        self.clock.now += seconds
        for pending, (when, session) in list(self.timers.items()):
            if when <= self.clock.now:
                del self.timers[pending]
                self.core.delivery_timeout(pending, session)
        due = [p for when, p in self.sleepers if when <= self.clock.now]
        self.sleepers = [(w, p) for w, p in self.sleepers if w > self.clock.now]
        self._ready.extend((p, None, None) for p in due)
        self.run()

    def resume_after_connect(self, error: Exception | None = None) -> None:
        """The parked store step after the connect completes (or fails with `error`)."""
        procedure, self._after_connect = self._after_connect, None
        assert procedure is not None, "nothing parked"
        value = None if error is not None else self._answer(procedure, self._parked_update)
        self._ready.append((procedure, value, error))
        self.run()

    def answer_bye(self, index: int = 0) -> None:
        """The parked BYE `index` completes (answered, or timed out: the core sees None)."""
        procedure, _ = self.byes.pop(index)
        self._ready.append((procedure, None, None))
        self.run()

    def answer_invite(self, index: int, answer: tuple[Response, Dialog | None]) -> None:
        procedure, _ = self.invites.pop(index)
        self._ready.append((procedure, answer, None))
        self.run()

    # -- what the core did -------------------------------------------------------------------

    def of(self, kind: type[Any]) -> list[Any]:
        return [e for e in [*self.effects, *self.steps] if isinstance(e, kind)]

    def session(self, key: str = "alice@page.example-bob@msrp.example") -> GwSession:
        session = self.core.ctx.table.get(key)
        assert session is not None, key
        return session

    # -- the scheduler -----------------------------------------------------------------------

    def run(self) -> None:
        while True:
            effects = self.core.ctx.outbox.take()
            for effect in effects:
                self._effect(effect)
            if self._ready:
                procedure, value, error = self._ready.popleft()
                self._step(procedure, value, error)
            elif not effects:
                return

    def _effect(self, effect: c.Effect) -> None:
        self.effects.append(effect)
        if isinstance(effect, c.Respond):
            txn = cast(Txn, effect.to)
            if txn.answers and txn.answers[-1].status >= 200:
                return
            txn.answers.append(effect)
            if effect.status == 200 and txn.request.method == "INVITE":
                txn.dialog = Dialog.from_uas(txn.request, "gwtag")
        elif isinstance(effect, c.Spawn):
            self._ready.append((effect.procedure, None, None))
        elif isinstance(effect, c.StartTimer):
            self.timers[effect.pending] = (self.clock.now + effect.delay, effect.session)
        elif isinstance(effect, c.StopTimer):
            self.timers.pop(effect.pending, None)
        elif isinstance(effect, c.Wake):
            for procedure in self._waiting.pop(effect.pending, []):
                self._ready.append((procedure, effect.pending.outcome, None))
        elif isinstance(effect, c.Publish):
            self.published.append((effect.name, effect.data))
        elif isinstance(effect, c.CloseMsrp):
            effect.handle.close(effect.reason)

    def _step(self, procedure: c.Procedure[Any], value: Any, error: BaseException | None) -> None:
        """Run a procedure until it ends or parks on a step that waits for the test."""
        self._drive(procedure, value, error, nested=False)

    def _inline(self, procedure: c.Procedure[Any]) -> Any:
        """Run a nested procedure (Exclusive, Refresh) to its end: none of its steps wait."""
        return self._drive(procedure, None, None, nested=True)

    def _drive(
        self, procedure: c.Procedure[Any], value: Any, error: BaseException | None, *, nested: bool
    ) -> Any:
        while True:
            try:
                step = procedure.throw(error) if error is not None else procedure.send(value)
            except StopIteration as stop:
                return stop.value
            finally:
                for effect in self.core.ctx.outbox.take():
                    self._effect(effect)
            result = self._do(procedure, step)
            if result is PARK:
                assert not nested, f"{step} waits inside a nested procedure"
                return None
            value, error = result

    def _do(self, procedure: c.Procedure[Any], step: c.Step) -> Any:
        """(value, error) for the step, or PARK."""
        self.steps.append(step)
        store_step = step.__class__.__name__.startswith("Store")
        if store_step and self.store_down:
            return None, RedisConnectionError("store down")
        try:
            return self._answer(procedure, step), None
        except Parked:
            return PARK
        except Exception as exc:
            return None, exc

    def _answer(self, procedure: c.Procedure[Any], step: c.Step) -> Any:
        store = self.store
        match step:
            case c.StoreGet(key):  # copies, as a real store gives
                rec = store.get(key)
                return None if rec is None else dataclasses.replace(rec)
            case c.StoreCreate(record):
                if record.key in store:
                    return False
                store[record.key] = dataclasses.replace(record)
                return True
            case c.StoreCreateOrGet(record):
                if record.key in store:
                    return dataclasses.replace(store[record.key])
                store[record.key] = dataclasses.replace(record)
                return None
            case c.StoreUpdate(key, fields, event, sid) if (
                self.park_after_connect and self.sent_at_connect and self._after_connect is None
            ):
                self._after_connect = procedure
                self.park_after_connect = False
                self._parked_update = step
                raise Parked
            case c.StoreUpdate(key, fields, event, sid):
                if key not in store or (sid and store[key].sid != sid):
                    return False
                for name, value in fields.items():
                    setattr(store[key], name, value)
                if event is not None:
                    self.published.append(event)
                return True
            case c.StoreDelete(key, owner, sid):
                rec = store.get(key)
                if rec is None or (owner is not None and rec.owner != owner):
                    return False
                if sid and rec.sid != sid:
                    return False
                del store[key]
                return True
            case c.StoreClaim(key, expected, new):
                rec = store.get(key)
                if rec is None or rec.owner != expected:
                    return None
                rec.owner = new
                return dataclasses.replace(rec)
            case c.StoreSids(keys):
                return [store[k].sid if k in store else None for k in keys]
            case c.StoreTouch(key, _, now, sid):
                if key not in store or (sid and store[key].sid != sid):
                    raise SessionNotFound(key)
                store[key].last_message = now
                return None
            case c.StoreSweep():
                return [k for k, r in store.items() if r.last_message + 3600 <= self.clock.now]
            case c.Alive(node):
                return node in self.alive
            case c.ForgetNode():
                return None
            case c.Ask():
                return self.ask(step)
            case c.Invite(request):
                if self.invite_answer is None:
                    self.invites.append((procedure, step))
                    raise Parked
                return self.invite_answer(request)
            case c.Bye():
                if self.byes_wait:
                    self.byes.append((procedure, step))
                    raise Parked
                return None
            case c.Sleep(seconds) if seconds > 0.1:  # a timeout: runs on the fake clock
                self.sleepers.append((self.clock.now + seconds, procedure))
                raise Parked
            case c.Connect():
                self.sent_at_connect = self.of(c.SendMsrp)
                if self.connect_error is not None:
                    raise self.connect_error
                return None
            case c.Cancel() | c.Sleep():
                return None
            case c.PublishNow(name, data):
                self.published.append((name, data))
                return None
            case c.Exclusive(_, inner) | c.Refresh(_, _, inner):
                return self._inline(inner)
            case c.DialogOf(txn):
                return txn.dialog
            case c.AwaitOutcome(pending):
                if pending.outcome is not None:
                    return pending.outcome
                self._waiting.setdefault(pending, []).append(procedure)
                raise Parked
        raise AssertionError(f"unknown step {step}")


class Parked(Exception):
    """The step waits for the test."""


__all__ = [
    "MSRP",
    "PAGE",
    "FakeClock",
    "FakeLeg",
    "Txn",
    "World",
    "answer_2xx",
    "msrp_offer",
    "refused",
    "sip_request",
    "timed_out",
]
