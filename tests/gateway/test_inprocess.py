"""The gateway in this process (gw.node.Node on the test's loop, a private Redis): what it
costs per message and keeps per idle session, which a node process does not show.

- a MESSAGE on an established session runs no gateway task (answered from a callback);
- SEND -> MESSAGE parses a session's coordinates once, not per message;
- an idle session keeps neither its INVITE, nor a queue, a task, a lock or a closure;
- an ended session is freed by reference counting (no cycle left for the collector);
- GcTuner freezes after a batch of new sessions and reclaims after a turnover.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import socket
import tempfile
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from gw.config import Config
from gw.gateway import table as gateway_table
from gw.gateway.engine import KeyLocks
from gw.gateway.session import GwSession
from gw.gateway.settings import Backlog
from gw.gateway.stats import Direction
from gw.node import GcTuner, Node
from gw.sip.message import Response, parse_message
from tests.support.msrp_user import MsrpUser
from tests.support.page_user import PageUser
from tests.support.redis_server import RedisServer

KEY = "alice@127.0.0.1-bob@127.0.0.1"
# Tasks the gateway itself would start for a message: the adapter runs each procedure of
# the core in Gateway._drive (the SIP endpoint's are SipEndpoint._guard).
GATEWAY_TASKS = ("SipEndpoint._guard", "Gateway.")


class InProcess:
    """The node, addressed like tests.support.node.GatewayProcess (`sip(transport)`)."""

    def __init__(self, node: Node) -> None:
        self.node = node

    def sip(self, transport: str) -> tuple[str, int]:
        for addr in self.node.bound:
            if addr.transport == transport.upper():
                return addr.host, addr.port
        raise KeyError(transport)

    def output(self) -> str:
        return "(in-process node)"

    @property
    def gw(self) -> Any:
        assert self.node.gateway is not None
        return self.node.gateway


@pytest.fixture
def state_dir() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="gw-inproc-") as path:
        yield path


@pytest.fixture
def tweak() -> Callable[[Config], None]:
    """Config changes for one test (override the fixture)."""
    return lambda cfg: None


def node_config(redis_url: str, msrp_user: MsrpUser, state_dir: str) -> Config:
    """The in-process node's config (also tests/gateway/test_inprocess_uvloop.py)."""
    cfg = Config()
    cfg.node.id = "gw-inproc"
    cfg.node.state_dir = state_dir
    cfg.store.url = redis_url
    cfg.sip.listen = ["udp:127.0.0.1:0"]
    cfg.sip.t1, cfg.sip.t2 = 0.1, 0.4
    cfg.msrp.listen = "msrp://127.0.0.1:0;tcp"
    cfg.mgmt.listen = "127.0.0.1:0"
    cfg.gateway.ruri_rewrite = f"sip:{{user}}@127.0.0.1:{msrp_user.sip_port}"
    cfg.gateway.delivery_timeout = 5
    return cfg


@pytest.fixture
async def node(
    redis_server: RedisServer,
    msrp_user: MsrpUser,
    page: PageUser,
    state_dir: str,
    tweak: Callable[[Config], None],
) -> AsyncIterator[InProcess]:
    cfg = node_config(redis_server.url, msrp_user, state_dir)
    tweak(cfg)
    cfg.validate()
    n = Node(cfg)
    await n.start()
    try:
        yield InProcess(n)
    finally:
        await n.stop()


class TaskCounter:
    def __init__(self) -> None:
        self.names: Counter[str] = Counter()

    def __call__(
        self, loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any
    ) -> asyncio.Future[Any]:
        self.names[getattr(coro, "__qualname__", type(coro).__name__)] += 1
        return asyncio.Task(coro, loop=loop, **kwargs)

    def gateway_tasks(self) -> dict[str, int]:
        return {k: v for k, v in self.names.items() if k.startswith(GATEWAY_TASKS)}


async def test_message_on_an_established_session_starts_no_gateway_task(
    node: InProcess, msrp_user: MsrpUser, page: PageUser
) -> None:
    first = await page.message(node, msrp_user.uri("bob"), b"set up")
    assert first.status == 200
    counter = TaskCounter()
    loop = asyncio.get_running_loop()
    loop.set_task_factory(counter)
    try:
        for i in range(10):
            response = await page.message(node, msrp_user.uri("bob"), f"m{i}".encode())
            assert response.status == 200
    finally:
        loop.set_task_factory(None)
    received = await msrp_user.wait_for(11)
    assert [r.body for r in received[1:]] == [f"m{i}".encode() for i in range(10)]
    # Only a message due to refresh the deadline in Redis (once a second per session) runs
    # as a task (the adapter driving the core's slow-path procedure), as before.
    tasks = counter.gateway_tasks()
    assert set(tasks) <= {"Gateway._drive"} and tasks.get("Gateway._drive", 0) <= 2, counter.names
    backlog = node.gw.backlog()
    assert (backlog.messages_to_msrp, backlog.key_locks) == (0, 0)


async def test_idle_session_keeps_no_invite_queue_task_or_lock(
    node: InProcess, msrp_user: MsrpUser, page: PageUser
) -> None:
    response = await page.message(node, msrp_user.uri("bob"), b"hello")
    assert response.status == 200
    await asyncio.sleep(0.1)
    gw = node.gw
    session: GwSession = gw.sessions[KEY]
    assert session.invite is None, "the INVITE is dropped once the dialog is up"
    assert session.dialog is not None and session.call_id == session.dialog.call_id
    assert gw.core.ctx.table.by_call_id(session.call_id) is session
    assert session.queue is None and session.queued == 0 and session.queued_bytes == 0
    assert not hasattr(session, "__dict__"), "slots"
    assert gw.backlog() == Backlog(0, 0, 0, 0), "no message, lock or task per idle session"
    assert session.peer_types == ("text/plain",)
    # Sessions share one interned tuple per distinct list of types.
    assert gw.core.ctx.table.types(["text/plain"]) is session.peer_types


async def test_ended_session_is_freed_without_the_cyclic_collector(
    node: InProcess, msrp_user: MsrpUser, page: PageUser
) -> None:
    response = await page.message(node, msrp_user.uri("bob"), b"hello")
    assert response.status == 200
    gw = node.gw
    gc.collect()
    gc.disable()
    try:
        assert await gw.end_session(KEY, "test")
        await asyncio.sleep(0.3)
        left = [o for o in gc.get_objects() if isinstance(o, GwSession)]
        assert left == [], "an ended session must not wait for the cyclic GC"
    finally:
        gc.enable()


async def test_send_to_message_parses_the_coordinates_once(
    node: InProcess, msrp_user: MsrpUser, page: PageUser, monkeypatch: pytest.MonkeyPatch
) -> None:
    parsed: list[str] = []
    real = gateway_table.parse_name_addr

    def counting(text: str) -> Any:
        parsed.append(text)
        return real(text)

    monkeypatch.setattr(gateway_table, "parse_name_addr", counting)
    status, handle = await msrp_user.call(node.sip("udp"), to=page.aor("alice"))
    assert status == 200 and handle is not None
    for i in range(5):
        outcome = await handle.send(f"s{i}".encode(), "text/plain")
        assert type(outcome).__name__ == "MessageDelivered"
    messages = await page.wait_for(5)
    # (each SEND is its own MESSAGE transaction: the first waits for the deadline touch)
    assert sorted(m.body for m in messages) == [f"s{i}".encode() for i in range(5)]
    assert len(parsed) == 2, parsed  # From and To once; the R-URI is the To URI
    first = messages[0]
    assert first.from_.uri.user == "bob" and first.to.uri.user == "alice"
    assert len({m.from_.tag for m in messages}) == 5, "a fresh From tag per MESSAGE"


async def test_send_on_an_established_session_starts_no_gateway_task_and_keeps_order(
    node: InProcess, msrp_user: MsrpUser, page: PageUser
) -> None:
    status, handle = await msrp_user.call(node.sip("udp"), to=page.aor("alice"))
    assert status == 200 and handle is not None
    outcome = await handle.send(b"first", "text/plain")  # refreshes the deadline: a task
    assert type(outcome).__name__ == "MessageDelivered"
    await page.wait_for(1)  # sent once the deadline refresh is done
    counter = TaskCounter()
    loop = asyncio.get_running_loop()
    loop.set_task_factory(counter)
    try:
        outcomes = await asyncio.gather(
            *(handle.send(f"s{i}".encode(), "text/plain") for i in range(10))
        )
    finally:
        loop.set_task_factory(None)
    assert {type(o).__name__ for o in outcomes} == {"MessageDelivered"}
    messages = await page.wait_for(11)
    assert [m.body for m in messages] == [b"first"] + [f"s{i}".encode() for i in range(10)]
    # No refresh is due within the second: each MESSAGE is sent from the MSRP event and
    # its answer handled by a callback, without a task. (SipEndpoint._guard tasks here are
    # the in-process page user's, answering the MESSAGEs; the node receives no request.)
    tasks = {k for k in counter.gateway_tasks() if k != "SipEndpoint._guard"}
    assert tasks == set(), counter.names
    assert node.gw.stats.delivered[Direction.MSRP_TO_PAGE] == 11


@pytest.mark.parametrize(
    "tweak", [lambda cfg: setattr(cfg.gateway, "max_pending_setups", 1)], ids=["max1"]
)
async def test_new_sessions_beyond_max_pending_setups_get_a_fast_503(
    node: InProcess, msrp_user: MsrpUser, page: PageUser, caplog: pytest.LogCaptureFixture
) -> None:
    msrp_user.answer_delay = 0.5  # the first set-up stays pending that long
    first = asyncio.ensure_future(page.message(node, msrp_user.uri("bob"), b"one"))
    await asyncio.sleep(0.2)
    assert node.gw.setups_pending == 1
    with caplog.at_level(logging.WARNING, logger="gw.gateway"):
        second = await page.message(node, msrp_user.uri("carol"), b"two")
    assert (second.status, second.reason) == (503, "Too Many Session Setups")
    assert second.get("Retry-After") == "5"
    assert "refusing new sessions with 503: 1 set-ups in progress" in caplog.text
    assert node.gw.stats.setups_refused == 1
    assert (await first).status == 200
    assert node.gw.setups_pending == 0
    again = await page.message(node, msrp_user.uri("carol"), b"two again")
    assert again.status == 200, "served once the first set-up is done"


@pytest.mark.parametrize(
    "tweak", [lambda cfg: setattr(cfg.gateway, "max_pending_messages", 4)], ids=["max4"]
)
async def test_msrp_input_pauses_while_max_pending_messages_are_unanswered(
    node: InProcess, msrp_user: MsrpUser, page: PageUser
) -> None:
    status, handle = await msrp_user.call(node.sip("udp"), to=page.aor("alice"))
    assert status == 200 and handle is not None
    assert type(await handle.send(b"first", "text/plain")).__name__ == "MessageDelivered"
    await page.wait_for(1)
    page.delay = 0.4  # the page side answers slowly
    first_batch = [handle.send(f"a{i}".encode(), "text/plain") for i in range(6)]
    sends = [asyncio.ensure_future(c) for c in first_batch]
    await asyncio.sleep(0.15)
    gw = node.gw
    assert gw.msrp.input_paused and gw.pages_pending >= 4, gw.pages_pending
    assert gw.stats.msrp_input_paused == 1
    assert len(page.messages) == 7
    # Sent now, these wait in the socket: the node reads nothing while paused.
    sends += [asyncio.ensure_future(handle.send(f"b{i}".encode(), "text/plain")) for i in range(3)]
    await asyncio.sleep(0.15)
    assert len(page.messages) == 7, "nothing read while paused"
    page.delay = 0.0
    messages = await page.wait_for(10)  # answers come, input resumes, b0..b2 go out
    assert [m.body for m in messages[1:]] == [f"a{i}".encode() for i in range(6)] + [
        f"b{i}".encode() for i in range(3)
    ]
    await asyncio.gather(*sends)
    await asyncio.sleep(0.1)
    assert not gw.msrp.input_paused and gw.pages_pending == 0


async def test_key_locks_keep_nothing_per_idle_key() -> None:
    locks = KeyLocks()
    order: list[int] = []

    async def user(i: int) -> None:
        async with locks.hold("k"):
            order.append(i)
            await asyncio.sleep(0.01)

    await asyncio.gather(*(user(i) for i in range(3)))
    assert order == [0, 1, 2] and len(locks) == 0


@pytest.fixture
def restore_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


def test_gc_tuner_freezes_after_a_batch_and_reclaims_after_a_turnover(
    restore_gc: None,
) -> None:
    counts = [0, 0, 0]  # created, ended, live
    tuner = GcTuner(lambda: (counts[0], counts[1], counts[2]), batch=10)
    tuner.start()
    assert gc.get_threshold()[0] == 20000 and gc.get_freeze_count() > 0
    counts[:] = [9, 0, 9]
    tuner.tick()
    assert tuner.freezes == 0, "not a batch yet"
    counts[:] = [10, 0, 10]
    tuner.tick()
    assert tuner.freezes == 1 and tuner.reclaims == 0
    tuner.tick()
    assert tuner.freezes == 1, "nothing new since"
    counts[:] = [30, 25, 5]  # ended >= max(batch, live): reclaim what is frozen
    tuner.tick()
    assert tuner.reclaims == 1 and tuner.freezes == 2
    tuner.tick(force=True)
    assert tuner.freezes == 3 and tuner.reclaims == 1
    tuner.stop()  # its pause watch must not outlive the test


def test_gc_tuner_reports_every_pause_and_logs_slow_ones(
    restore_gc: None, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[tuple[int, float]] = []
    tuner = GcTuner(lambda: (0, 0, 0), slow_pause=0.0)  # every pause counts as slow
    tuner.observe = lambda gen, seconds: seen.append((gen, seconds))
    tuner.start()
    try:
        seen.clear()
        with caplog.at_level(logging.WARNING, logger="gw.node"):
            gc.collect(1)
        assert [g for g, _ in seen] == [1] and seen[0][1] >= 0.0
        assert "generation 1 collection paused the node" in caplog.text
    finally:
        tuner.stop()
    gc.collect(1)
    assert len(seen) == 1, "no longer watching after stop()"


async def test_messages_keep_their_order_while_a_deadline_refresh_is_slow(
    node: InProcess, msrp_user: MsrpUser, page: PageUser, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first MESSAGE due to refresh the deadline waits for Redis; the ones behind it
    wait for that same refresh (one touch, not five) and go out on MSRP after it, in order."""
    assert (await page.message(node, msrp_user.uri("bob"), b"set up")).status == 200
    gw = node.gw
    real = gw.store.touch
    calls = 0

    async def slow_first(key: str, **kwargs: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            await asyncio.sleep(0.3)  # a slow reply (another pooled connection is faster)
        await real(key, **kwargs)

    monkeypatch.setattr(gw.store, "touch", slow_first)
    gw.sessions[KEY].touched_page = 0.0  # due now
    responses = await asyncio.gather(
        *(page.message(node, msrp_user.uri("bob"), f"o{i}".encode()) for i in range(5))
    )
    assert [r.status for r in responses] == [200] * 5
    received = await msrp_user.wait_for(6)
    assert [r.body for r in received[1:]] == [f"o{i}".encode() for i in range(5)]
    assert calls == 1


def raw_message(to_user: str, call_id: str) -> bytes:
    return (
        f"MESSAGE sip:{to_user}@127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK{call_id};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:zed@127.0.0.1>;tag=z{call_id}\r\n"
        f"To: <sip:{to_user}@127.0.0.1>\r\n"
        f"Call-ID: {call_id}\r\n"
        "CSeq: 1 MESSAGE\r\n"
        "Content-Type: text/plain\r\n"
        "Content-Length: 2\r\n\r\nhi"
    ).encode()


@pytest.mark.parametrize(
    "tweak", [lambda cfg: setattr(cfg.gateway, "max_pending_setups", 1)], ids=["max1"]
)
async def test_at_capacity_refusals_are_stateless_and_sessions_are_still_served(
    node: InProcess, msrp_user: MsrpUser, page: PageUser
) -> None:
    assert (await page.message(node, msrp_user.uri("bob"), b"up")).status == 200
    msrp_user.answer_delay = 0.5  # carol's set-up keeps the node at capacity that long
    pending = asyncio.ensure_future(page.message(node, msrp_user.uri("carol"), b"one"))
    await asyncio.sleep(0.2)
    assert node.gw.setups_pending == 1
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    loop = asyncio.get_running_loop()

    async def recv() -> bytes:
        return await asyncio.wait_for(loop.sock_recv(sock, 4096), 2)

    try:
        request = raw_message("dave", "shed-1")
        answers = []
        for _ in range(2):  # the same request twice: the same answer, no state kept
            sock.sendto(request, node.sip("udp"))
            answers.append(parse_message(await recv()))
        first, again = answers
        assert isinstance(first, Response) and isinstance(again, Response)
        assert (first.status, first.reason) == (503, "Too Many Session Setups")
        assert first.get("Retry-After") == "5" and (first.get("Server") or "").startswith("msrp-gw")
        assert first.to.tag and again.to.tag == first.to.tag
        assert first.call_id == "shed-1" and first.cseq == (1, "MESSAGE")
        assert node.gw.stats.setups_refused == 2
        assert node.gw.stats.page_answers[503] == 2  # counted as the parsed path counts
        bye = request.replace(b"MESSAGE sip", b"BYE sip", 1).replace(b"1 MESSAGE", b"2 BYE")
        bye = bye.replace(b"To: <sip:dave@127.0.0.1>", b"To: <sip:dave@127.0.0.1>;tag=t")
        sock.sendto(bye, node.sip("udp"))
        gone = parse_message(await recv())
        assert isinstance(gone, Response) and gone.status == 481 and gone.cseq == (2, "BYE")
        assert node.gw.stats.rejected[481] == 1
        # at capacity still: a MESSAGE for the established session is served as ever
        assert node.gw.setups_pending == 1
        assert (await page.message(node, msrp_user.uri("bob"), b"still")).status == 200
    finally:
        sock.close()
    assert (await pending).status == 200
