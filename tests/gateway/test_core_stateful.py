"""The gateway core under random interleavings (issue 16 §4): MESSAGEs, INVITEs from the MSRP
side, BYEs, MSRP outcomes and lost legs, MI ends, sweeps, time passing and the store going
down, on two keys, in whatever order hypothesis picks. After every step:

- no ghost: a session whose MSRP leg is open is the one the table holds for its key;
- no phantom: (while the store has never failed) every record of this node belongs to a live
  session here, with the same sid;
- no 2xx without delivery: a MESSAGE answered 2xx had its MSRP SEND delivered;
- every session ends: at the end a drain leaves no session, no open leg and no record.

It runs on the sans-I/O core (tests/support/core_world.py): no socket, no Redis, no loop.
"""

from __future__ import annotations

import itertools
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from redis.exceptions import RedisError

from gw.gateway import commands as c
from gw.gateway.state import SessionState
from gw.msrp.events import MessageDelivered, MessageFailed, SessionBound, SessionClosed
from tests.support.core_world import World, answer_2xx, msrp_offer, refused, sip_request

USERS = ("u0", "u1")  # MSRP-side users: two keys with the page-mode user alice


def key_of(user: str) -> str:
    return f"alice@page.example-{user}@msrp.example"


class CoreMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.world = World(max_unbound_per_source=8, bind_timeout=30.0)
        self.bodies = (f"m{i}".encode() for i in itertools.count())
        self.calls = (f"inv{i}" for i in itertools.count())
        self.messages: list[tuple[Any, bytes]] = []  # (txn, body) of each MESSAGE sent
        self.delivered: set[bytes] = set()
        self.settled: set[str] = set()  # MSRP message ids given an outcome
        self.store_failed = False

    # -- page-mode side ---------------------------------------------------------------------

    @rule(user=st.sampled_from(USERS))
    def message(self, user: str) -> None:
        body = next(self.bodies)
        txn = self.world.message(body, to=f"sip:{user}@msrp.example")
        self.messages.append((txn, body))

    @rule(user=st.sampled_from(USERS))
    def converse(self, user: str) -> None:
        """A MESSAGE whose set-up and delivery succeed as soon as they can (so that runs
        also reach established sessions, not only set-ups in flight)."""
        self.message(user)
        while self.world.invites:
            self.world.answer_invite(0, answer_2xx(self.world.invites[0][1].request))
        for send in self.unsettled():
            self.settled.add(send.message_id)
            self.delivered.add(send.body)
            self.world.msrp_event(send.session, MessageDelivered(send.message_id))

    @precondition(lambda self: bool(self.world.invites))
    @rule(ok=st.booleans(), data=st.data())
    def answer_our_invite(self, ok: bool, data: st.DataObject) -> None:
        index = data.draw(st.integers(0, len(self.world.invites) - 1))
        request = self.world.invites[index][1].request
        self.world.answer_invite(index, answer_2xx(request) if ok else refused(request, 486))

    @precondition(lambda self: bool(self.unsettled()))
    @rule(ok=st.booleans(), data=st.data())
    def msrp_outcome(self, ok: bool, data: st.DataObject) -> None:
        sends = self.unsettled()
        send = sends[data.draw(st.integers(0, len(sends) - 1))]
        self.settled.add(send.message_id)
        if ok:
            self.delivered.add(send.body)
            outcome: Any = MessageDelivered(send.message_id)
        else:
            outcome = MessageFailed(send.message_id, 486, "Busy")
        self.world.msrp_event(send.session, outcome)

    def unsettled(self) -> list[c.SendMsrp]:
        return [
            s
            for s in self.world.of(c.SendMsrp)
            if s.message_id not in self.settled and not s.session.state.over
        ]

    # -- MSRP side ----------------------------------------------------------------------------

    @rule(user=st.sampled_from(USERS))
    def invite_us(self, user: str) -> None:
        call = next(self.calls)
        invite = sip_request(
            "INVITE",
            frm=f"sip:{user}@msrp.example",
            to="sip:alice@page.example",
            body=msrp_offer(path=f"msrp://10.0.0.2:7777/{call};tcp"),
            content_type="application/sdp",
            call_id=call,
        )
        self.world.request(invite)

    @rule(user=st.sampled_from(USERS))
    def leg_binds(self, user: str) -> None:
        session = self.world.core.ctx.table.get(key_of(user))
        if session is not None and session.msrp is not None and not session.state.over:
            self.world.msrp_event(session, SessionBound())

    @rule(user=st.sampled_from(USERS))
    def leg_lost(self, user: str) -> None:
        session = self.world.core.ctx.table.get(key_of(user))
        if session is not None and session.msrp is not None and not session.msrp.closed:
            session.msrp.close("connection lost")
            self.world.msrp_event(session, SessionClosed("connection lost"))

    @rule(user=st.sampled_from(USERS))
    def bye_from_peer(self, user: str) -> None:
        session = self.world.core.ctx.table.get(key_of(user))
        if session is None or session.dialog is None:
            return
        d = session.dialog
        bye = sip_request(
            "BYE",
            frm=f"sip:{user}@msrp.example",
            to="sip:alice@page.example",
            to_tag=d.local_tag,
            call_id=d.call_id,
        )
        self.world.request(bye)

    # -- operators, time, the store ---------------------------------------------------------

    @rule(user=st.sampled_from(USERS))
    def mi_end(self, user: str) -> None:
        try:
            self.world.start(self.world.core.end_session(key_of(user), "mi"))
        except RedisError:
            assert self.world.store_down  # the MI command answers "store unavailable"

    @rule()
    def sweep(self) -> None:
        self.world.start(self.world.core.sweep())

    @rule(seconds=st.sampled_from([0.5, 5.0, 31.0]))
    def time_passes(self, seconds: float) -> None:
        self.world.advance(seconds)

    @rule(down=st.booleans())
    def store(self, down: bool) -> None:
        self.world.store_down = down
        self.store_failed |= down

    # -- invariants ---------------------------------------------------------------------------

    @invariant()
    def no_ghost(self) -> None:
        table = self.world.core.ctx.table
        for leg in self.world.legs.opened:
            session = leg.session
            if not leg.closed:
                assert not session.state.over, f"an ended session's leg is open: {session.key}"
                assert table.get(session.key) is session, f"ghost: {session.key}"

    @invariant()
    def no_phantom_record(self) -> None:
        if self.store_failed:
            return  # a delete the store refused leaves a record until it expires
        table = self.world.core.ctx.table
        for key, record in self.world.store.items():
            if record.owner != "n1":
                continue
            session = table.get(key)
            assert session is not None and not session.state.over, f"phantom record: {key}"
            assert session.record.sid == record.sid, f"record of another instance: {key}"

    @invariant()
    def no_2xx_without_delivery(self) -> None:
        for txn, body in self.messages:
            if txn.status is not None and 200 <= txn.status < 300:
                assert body in self.delivered, f"2xx for {body!r} never delivered"

    def teardown(self) -> None:
        world = self.world
        world.store_down = False
        world.byes_wait = False
        world.start(world.core.drain())
        while world.invites:  # set-ups still inviting: their answers come
            world.answer_invite(0, refused(world.invites[0][1].request, 487, "Terminated"))
        world.advance(60.0)
        table = world.core.ctx.table
        assert not table.sessions(), [s.key for s in table.sessions()]
        assert all(leg.closed for leg in world.legs.opened)
        if not self.store_failed:
            assert not [k for k, r in world.store.items() if r.owner == "n1"], world.store
        for session in (leg.session for leg in world.legs.opened):
            assert session.state is SessionState.ENDED


TestCoreInterleavings = CoreMachine.TestCase
TestCoreInterleavings.settings = settings(
    max_examples=200,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
