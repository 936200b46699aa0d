"""gw.cluster.messages: every request and reply survives msgpack both ways; anything
else decodes to BadRpc, and a served handler answers it with Failed."""

from __future__ import annotations

import asyncio

import msgpack
import pytest

from gw.cluster.messages import (
    RPC_VERSION,
    Answer,
    BadRpc,
    Ended,
    EndSession,
    Failed,
    PageMessage,
    RpcReply,
    RpcRequest,
    decode_reply,
    decode_request,
    encode_reply,
    encode_request,
    serving,
)

PAGE = PageMessage(
    key="alice@a-bob@b",
    body=b"\x00hello\xff",
    content_type="text/plain",
    call_id="c1",
    page_from="<sip:alice@a>",
    page_to="<sip:bob@b>",
    ruri="sip:bob@b",
    content_types=["text/plain"],
    hops=1,
    marks=["d1"],
    max_forwards=9,
)


def wire(data: dict[str, object]) -> dict[str, object]:
    out = msgpack.unpackb(msgpack.packb(data, use_bin_type=True), raw=False)
    assert isinstance(out, dict)
    return out


@pytest.mark.parametrize("request_", [PAGE, EndSession("k", "mi")])
def test_requests_round_trip(request_: RpcRequest) -> None:
    assert decode_request(wire(encode_request(request_))) == request_


@pytest.mark.parametrize(
    "reply", [Answer(503, "Queue Full", [("Retry-After", "5")]), Ended(True), Failed("boom")]
)
def test_replies_round_trip(reply: RpcReply) -> None:
    assert decode_reply(wire(encode_reply(reply))) == reply


@pytest.mark.parametrize(
    "data",
    [
        {"op": "unknown"},
        {},
        {"op": "message", "key": "k"},
        {"op": "message", "key": 1, "body": b""},
    ],
)
def test_what_is_not_a_request_is_bad_rpc(data: dict[str, object]) -> None:
    with pytest.raises(BadRpc):
        decode_request(data)


def test_a_reply_without_status_is_bad_rpc() -> None:
    with pytest.raises(BadRpc):
        decode_reply({"reason": "x"})


async def test_served_handler_answers_bad_requests_with_failed() -> None:
    async def handler(request: RpcRequest) -> RpcReply:
        return Ended(isinstance(request, EndSession))

    serve = serving(handler)
    assert decode_reply(await serve(encode_request(EndSession("k", "mi")))) == Ended(True)
    reply = decode_reply(await serve({"op": "nope"}))
    assert isinstance(reply, Failed) and "nope" in reply.error


def await_serve_newer(wire: dict[str, object]) -> dict[str, object]:
    """What a node answers to a request of the next version."""

    async def handler(request: RpcRequest) -> RpcReply:
        raise AssertionError("not reached")

    return asyncio.run(serving(handler)({**wire, "v": RPC_VERSION + 1}))


def test_versions_older_and_unversioned_read_newer_refused() -> None:
    """A rolling upgrade: maps without `v` (older nodes) and with unknown keys (a newer
    release's additions) read as before; a newer version is refused, saying so."""
    page = PageMessage("k", b"hi", "text/plain", "c1", "<sip:a@x>", "<sip:b@y>", "sip:b@y")
    wire = encode_request(page)
    assert wire["v"] == RPC_VERSION
    unversioned = {k: v for k, v in wire.items() if k != "v"}
    assert decode_request(unversioned) == page
    assert decode_request({**wire, "added_later": [1, 2]}) == page
    assert decode_reply({"status": 200, "reason": "OK"}) == Answer(200, "OK")
    with pytest.raises(BadRpc, match="newer than this node's"):
        decode_request({**wire, "v": RPC_VERSION + 1})
    refused = decode_reply(await_serve_newer(wire))
    assert isinstance(refused, Failed) and refused.retry, "the sender may retry: 503, not 500"
    with pytest.raises(BadRpc, match="newer than this node's"):
        decode_reply({"v": RPC_VERSION + 1, "ok": True})
    for bad in ("1", -1, True, None):
        with pytest.raises(BadRpc, match="bad rpc version"):
            decode_request({**wire, "v": bad})
