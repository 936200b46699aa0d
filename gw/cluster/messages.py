"""What nodes say to each other over `Rpc`, as typed values.

`Rpc` carries msgpack maps; this module is the only place that knows their keys. A
request is a `PageMessage` (a MESSAGE forwarded to its session's owner) or an
`EndSession`; a reply is an `Answer` (the MESSAGE's final answer), an `Ended`, or a
`Failed` (the handler raised). An unknown or malformed map decodes to `BadRpc`.

Every map carries `v`, the version of this vocabulary, so two releases can run side by side
during a rolling upgrade (docs/operations.md, "Rolling upgrades"). Within a version, changes
are additive: a new key has a default, and readers ignore keys they do not know (a map
without `v` is version 0, from a node older than versioning, and reads the same). A change
that is not additive raises `RPC_VERSION`; a node refuses a newer version than its own with a
`Failed` reply that says so, never a wrong answer.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "RPC_VERSION",
    "Answer",
    "BadRpc",
    "EndSession",
    "Ended",
    "Failed",
    "NewerRpc",
    "PageMessage",
    "RpcReply",
    "RpcRequest",
    "decode_reply",
    "decode_request",
    "encode_reply",
    "encode_request",
    "serving",
]


RPC_VERSION = 1


class BadRpc(ValueError):
    """A map that is no request or reply of ours (another version, or garbage)."""


class NewerRpc(BadRpc):
    """A map of a newer version than this node's (a release not rolled out here yet)."""


@dataclass(slots=True)
class PageMessage:
    """A page-mode MESSAGE as the gateway needs it; also what is forwarded to the owner."""

    key: str
    body: bytes
    content_type: str
    call_id: str
    page_from: str  # the MESSAGE's From (name-addr, no tag): the INVITE's From
    page_to: str  # the MESSAGE's To: the INVITE's To
    ruri: str  # where the INVITE goes (the MESSAGE's R-URI after routing)
    content_types: list[str] = field(default_factory=list)
    hops: int = 0  # times forwarded between nodes
    marks: list[str] = field(default_factory=list)  # the MESSAGE's X-Msrp-Gw deployments
    max_forwards: int = 70  # the MESSAGE's


@dataclass(frozen=True, slots=True)
class EndSession:
    key: str
    reason: str


RpcRequest = PageMessage | EndSession


@dataclass(frozen=True, slots=True)
class Answer:
    """The final answer for a forwarded MESSAGE."""

    status: int
    reason: str
    headers: list[tuple[str, str]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Ended:
    ok: bool


@dataclass(frozen=True, slots=True)
class Failed:
    error: str
    retry: bool = False  # the request can succeed later (a node of another release refused it)


RpcReply = Answer | Ended | Failed

_PAGE_FIELDS = tuple(PageMessage.__dataclass_fields__)


def encode_request(request: RpcRequest) -> dict[str, Any]:
    if isinstance(request, PageMessage):
        fields = {f: getattr(request, f) for f in _PAGE_FIELDS}
        return {"v": RPC_VERSION, "op": "message", **fields}
    return {"v": RPC_VERSION, "op": "end", "key": request.key, "reason": request.reason}


def _check_version(data: dict[str, Any]) -> None:
    version = data.get("v", 0)
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        raise BadRpc(f"bad rpc version {version!r}")
    if version > RPC_VERSION:
        raise NewerRpc(
            f"rpc version {version} is newer than this node's {RPC_VERSION}: upgrade this node"
        )


def decode_request(data: dict[str, Any]) -> RpcRequest:
    _check_version(data)
    op = data.get("op")
    try:
        if op == "message":
            page = PageMessage(**{f: data[f] for f in _PAGE_FIELDS if f in data})
            if not isinstance(page.key, str) or not isinstance(page.body, bytes):
                raise BadRpc("message: key and body must be str and bytes")
            return page
        if op == "end":
            return EndSession(str(data["key"]), str(data.get("reason", "mi")))
    except (KeyError, TypeError) as exc:
        raise BadRpc(f"{op}: {exc}") from None
    raise BadRpc(f"unknown op {op!r}")


def encode_reply(reply: RpcReply) -> dict[str, Any]:
    if isinstance(reply, Answer):
        answer = {"status": reply.status, "reason": reply.reason, "headers": reply.headers}
        return {"v": RPC_VERSION, **answer}
    if isinstance(reply, Ended):
        return {"v": RPC_VERSION, "ok": reply.ok}
    if reply.retry:
        return {"v": RPC_VERSION, "error": reply.error, "retry": True}
    return {"v": RPC_VERSION, "error": reply.error}


def decode_reply(data: dict[str, Any]) -> RpcReply:
    _check_version(data)
    if "error" in data:
        return Failed(str(data["error"]), data.get("retry") is True)
    if "ok" in data:
        return Ended(bool(data["ok"]))
    try:
        headers = [(str(h), str(v)) for h, v in data.get("headers", [])]
        return Answer(int(data["status"]), str(data.get("reason", "")), headers)
    except (KeyError, TypeError, ValueError) as exc:
        raise BadRpc(f"reply: {exc}") from None


def serving(
    handler: Callable[[RpcRequest], Awaitable[RpcReply]],
) -> Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]:
    """`handler` as an `Rpc` handler of maps: decodes each request, encodes its reply; a map
    that is no request of ours gets `Failed` (the caller gets an answer, not a timeout)."""

    async def serve(data: dict[str, Any]) -> dict[str, Any]:
        try:
            request = decode_request(data)
        except NewerRpc as exc:  # a rolling upgrade: the sender may retry, or go elsewhere
            return encode_reply(Failed(str(exc), retry=True))
        except BadRpc as exc:
            return encode_reply(Failed(str(exc)))
        return encode_reply(await handler(request))

    return serve
