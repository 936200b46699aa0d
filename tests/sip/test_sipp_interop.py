"""Interop with SIPp (Debian sip-tester) as the third-party peer, over real sockets."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator

import pytest

from gw.sip.endpoint import EndpointConfig, IncomingRequest, SipEndpoint
from gw.sip.transaction import Address, Timers
from gw.sip.transport import ListenSpec
from tests.support.sipp import Sipp

pytestmark = pytest.mark.interop


class Recorder:
    def __init__(self, status: int = 200, delay: float = 0.0) -> None:
        self.status = status
        self.delay = delay
        self.requests: list[IncomingRequest] = []

    async def __call__(self, incoming: IncomingRequest) -> None:
        if incoming.request.method == "ACK":
            return
        self.requests.append(incoming)
        if self.delay:
            await asyncio.sleep(self.delay)
        incoming.respond(self.status)


async def _endpoint(handler: Recorder | None, t1: float = 0.5) -> SipEndpoint:
    ep = SipEndpoint(EndpointConfig(timers=Timers(t1=t1, t2=max(4.0 * t1, t1))), handler)
    await ep.start([ListenSpec("UDP", "127.0.0.1", 0), ListenSpec("TCP", "127.0.0.1", 0)])
    return ep


@pytest.fixture
async def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
async def uas(recorder: Recorder) -> AsyncIterator[SipEndpoint]:
    ep = await _endpoint(recorder)
    yield ep
    await ep.close()


@pytest.mark.parametrize(("transport", "sipp_t"), [("UDP", "u1"), ("TCP", "t1")])
async def test_sipp_uac_message_gets_configured_response(
    transport: str, sipp_t: str, uas: SipEndpoint, recorder: Recorder
) -> None:
    recorder.status = 202
    port = uas.local(transport).port
    sipp = Sipp(
        "message_uac.xml",
        transport=sipp_t,
        remote=("127.0.0.1", port),
        calls=3,
        replace={"EXPECT": "202"},
    )
    result = await sipp.run()
    assert result.returncode == 0, result.stderr + result.errors
    assert len(recorder.requests) == 3
    bodies = sorted(r.request.body for r in recorder.requests)
    assert bodies == [b"hello from sipp 1\r\n", b"hello from sipp 2\r\n", b"hello from sipp 3\r\n"]
    assert all(r.source.transport == transport for r in recorder.requests)
    assert "SIP/2.0 202 Accepted" in result.messages


async def test_sipp_uac_wrong_expectation_fails(uas: SipEndpoint, recorder: Recorder) -> None:
    """The SIPp check above can fail: a 404 where SIPp expects 202 is an error."""
    recorder.status = 404
    sipp = Sipp(
        "message_uac.xml",
        remote=("127.0.0.1", uas.local("UDP").port),
        replace={"EXPECT": "202"},
    )
    result = await sipp.run()
    assert result.returncode != 0


async def test_sipp_retransmission_gets_same_response_without_second_delivery(
    uas: SipEndpoint, recorder: Recorder
) -> None:
    # -nr: SIPp otherwise answers the (identical) second 200 by resending its last request,
    # which is its own retransmission logic, not ours, and ping-pongs until its timeout.
    sipp = Sipp(
        "message_uac_retrans.xml", remote=("127.0.0.1", uas.local("UDP").port), extra=["-nr"]
    )
    result = await sipp.run()
    assert result.returncode == 0, result.stderr + result.errors
    assert len(recorder.requests) == 1, "a retransmission was delivered twice"
    assert result.messages.count("SIP/2.0 200 OK") == 2
    tags = {
        line for line in result.messages.splitlines() if line.startswith("To:") and "tag=" in line
    }
    assert len(tags) == 1, "the retransmission must get the same response (same To tag)"
    assert uas.stats.requests_in["MESSAGE"] == 2


async def test_sipp_retransmits_while_uas_is_slow(uas: SipEndpoint, recorder: Recorder) -> None:
    """SIPp retransmits (its T1 is 500 ms) while our TU thinks; one delivery, one 200."""
    recorder.delay = 1.2
    sipp = Sipp(
        "message_uac.xml", remote=("127.0.0.1", uas.local("UDP").port), replace={"EXPECT": "200"}
    )
    result = await sipp.run()
    assert result.returncode == 0, result.stderr + result.errors
    assert len(recorder.requests) == 1
    assert uas.stats.requests_in["MESSAGE"] >= 2, "SIPp should have retransmitted"


@pytest.mark.parametrize(("transport", "sipp_t"), [("UDP", "u1"), ("TCP", "t1")])
async def test_our_uac_message_to_sipp_uas(transport: str, sipp_t: str) -> None:
    sipp = Sipp("message_uas.xml", transport=sipp_t)
    await sipp.start()
    uac = await _endpoint(None)
    try:
        req = uac.new_request(
            "MESSAGE",
            f"sip:bob@127.0.0.1:{sipp.port}",
            from_="<sip:gw@127.0.0.1>",
            to=f"<sip:bob@127.0.0.1:{sipp.port}>",
            body=b"hello sipp",
            content_type="text/plain",
        )
        response = await uac.request(req, Address(transport, "127.0.0.1", sipp.port))
        assert response.status == 200
        assert response.to.tag is not None
    finally:
        await uac.close()
    result = await sipp.wait()
    assert result.returncode == 0, result.stderr + result.errors
    assert "hello sipp" in result.messages


async def test_our_uac_retransmits_per_timer_e_and_times_out() -> None:
    """SIPp stays silent: Timer E retransmissions (T1, 2T1, 4T1.. capped at T2), 408 at 64*T1."""
    t1 = 0.05
    sipp = Sipp("message_uas_silent.xml", replace={"WAIT_MS": "5000"})
    await sipp.start()
    uac = await _endpoint(None, t1=t1)
    sent_at: list[float] = []

    def count_sends(direction: str, message: object, dest: Address) -> None:
        if direction == "out":
            sent_at.append(uac.now())

    uac.transports.tracer = count_sends
    try:
        req = uac.new_request(
            "MESSAGE",
            f"sip:bob@127.0.0.1:{sipp.port}",
            from_="<sip:gw@127.0.0.1>",
            to="<sip:bob@127.0.0.1>",
            body=b"anyone?",
            content_type="text/plain",
        )
        start = uac.now()
        response = await uac.request(req, Address("UDP", "127.0.0.1", sipp.port))
        elapsed = uac.now() - start
    finally:
        await uac.close()
    result = await sipp.wait()
    assert response.status == 408
    assert 64 * t1 * 0.9 <= elapsed <= 64 * t1 + 1.0
    gaps = [b - a for a, b in itertools.pairwise(sent_at)]
    # Intervals double from T1 and are capped at T2 = 4*T1.
    assert gaps[0] == pytest.approx(t1, abs=0.03)
    assert gaps[1] == pytest.approx(2 * t1, abs=0.03)
    assert gaps[2] == pytest.approx(4 * t1, abs=0.03)
    assert max(gaps) <= 4 * t1 + 0.05
    # About 64*T1 / T2 + a few retransmissions in all; SIPp saw each of them.
    assert len(sent_at) >= 10
    assert result.messages.count("MESSAGE sip:bob@") >= len(sent_at) - 1
