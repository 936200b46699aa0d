"""JSON-RPC 2.0 with OpenSIPS MI semantics: params by name/position, batches, notifications,
error objects; and the same over POST /mi."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from gw.mgmt import MgmtServer, MiError, MiRegistry, param_str
from gw.mgmt.mi import MiParams
from tests.mgmt.helpers import exchange, post_json, request


def _registry() -> tuple[MiRegistry, list[MiParams]]:
    reg = MiRegistry()
    seen: list[MiParams] = []

    async def raw(params: MiParams) -> Any:
        seen.append(params)
        return {"got": params}

    async def end(params: MiParams) -> str:
        if param_str(params, "key") != "k1":
            raise MiError(404, "Session doesn't exist")
        return "OK"

    async def pair(params: MiParams) -> Any:
        return params

    async def broken(params: MiParams) -> Any:
        raise KeyError("internal detail")

    async def not_json(params: MiParams) -> Any:
        return {1, 2}

    async def with_data(params: MiParams) -> Any:
        raise MiError(500, "Failed", data={"why": "because"})

    reg.register("raw", raw)
    reg.register("end", end, aliases=["mod:end"], params=[("key",)])
    reg.register("pair", pair, params=[(), ("a",), ("a", "b"), ("x", "y", "z")])
    reg.register("broken", broken)
    reg.register("not_json", not_json)
    reg.register("with_data", with_data)
    return reg, seen


async def _call(reg: MiRegistry, doc: Any) -> Any:
    out = await reg.handle(json.dumps(doc).encode())
    return None if out is None else json.loads(out)


def _req(method: str, params: Any = None, rid: Any = 1) -> dict[str, Any]:
    doc: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "id": rid}
    if params is not None:
        doc["params"] = params
    return doc


async def test_result_shape() -> None:
    reg, _ = _registry()
    assert await _call(reg, _req("end", {"key": "k1"}, "42")) == {
        "jsonrpc": "2.0",
        "result": "OK",
        "id": "42",
    }


async def test_params_by_name_and_by_position_reach_handler_by_name() -> None:
    reg, _ = _registry()
    assert (await _call(reg, _req("end", {"key": "k1"})))["result"] == "OK"
    assert (await _call(reg, _req("end", ["k1"])))["result"] == "OK"
    assert (await _call(reg, _req("mod:end", ["k1"])))["result"] == "OK"
    assert (await _call(reg, _req("pair", [1, 2])))["result"] == {"a": 1, "b": 2}
    assert (await _call(reg, _req("pair", {"b": 2, "a": 1})))["result"] == {"a": 1, "b": 2}
    assert (await _call(reg, _req("pair")))["result"] == {}
    assert (await _call(reg, _req("pair", [])))["result"] == {}


async def test_without_recipes_handler_gets_params_as_sent() -> None:
    reg, seen = _registry()
    await _call(reg, _req("raw", [1, "two"]))
    await _call(reg, _req("raw", {"k": [1]}))
    await _call(reg, _req("raw"))
    assert seen == [[1, "two"], {"k": [1]}, {}]


@pytest.mark.parametrize(
    ("method", "params", "data"),
    [
        ("end", None, "Too few or too many parameters"),
        ("end", ["k1", "k2"], "Too few or too many parameters"),
        ("end", {"key": "k1", "extra": 1}, "Too few or too many parameters"),
        ("end", {"kee": "k1"}, "Named parameters do not match"),
        ("pair", [1, 2, 3, 4], "Too few or too many parameters"),
        ("end", {"key": True}, "Bad type for parameter 'key'"),
        ("end", [["k1"]], "Bad type for parameter 'key'"),
    ],
)
async def test_invalid_params(method: str, params: Any, data: str) -> None:
    reg, _ = _registry()
    reply = await _call(reg, _req(method, params, 7))
    assert reply == {
        "jsonrpc": "2.0",
        "error": {"code": -32602, "message": "Invalid params", "data": data},
        "id": 7,
    }


async def test_ambiguous_positional_call() -> None:
    reg2 = MiRegistry()

    async def h(params: MiParams) -> Any:
        return params

    reg2.register("amb", h, params=[("a", "b"), ("x", "y")])
    reply = await _call(reg2, _req("amb", [1, 2]))
    assert reply["error"]["data"] == "Ambiguous call, use named parameters instead"
    assert (await _call(reg2, _req("amb", {"x": 1, "y": 2})))["result"] == {"x": 1, "y": 2}


async def test_number_accepted_as_string_param() -> None:
    reg, _ = _registry()
    reply = await _call(reg, _req("end", {"key": 5}))
    assert reply["error"] == {"code": 404, "message": "Session doesn't exist"}


async def test_command_error_object() -> None:
    reg, _ = _registry()
    reply = await _call(reg, _req("end", ["nope"], None))
    assert reply == {
        "jsonrpc": "2.0",
        "error": {"code": 404, "message": "Session doesn't exist"},
        "id": None,
    }
    reply = await _call(reg, _req("with_data"))
    assert reply["error"] == {"code": 500, "message": "Failed", "data": {"why": "because"}}


async def test_method_not_found() -> None:
    reg, _ = _registry()
    reply = await _call(reg, _req("msrp_gw_nothing", rid=3))
    assert reply == {
        "jsonrpc": "2.0",
        "error": {"code": -32601, "message": "Method not found"},
        "id": 3,
    }


async def test_handler_crash_is_server_error_without_details() -> None:
    reg, _ = _registry()
    reply = await _call(reg, _req("broken"))
    assert reply["error"] == {"code": -32000, "message": "Server error"}
    reply = await _call(reg, _req("not_json"))
    assert reply["error"]["code"] == -32000


@pytest.mark.parametrize(
    "body",
    [b"{", b"", b"not json", b'{"jsonrpc": "2.0", "method": "raw", "id": NaN}', b"\xff\xfe{}",
     b"[" * 100000 + b"]" * 100000, b'{"jsonrpc": "2.0", "method": "raw", "id": 1e400}',
     b'{"jsonrpc": "2.0", "method": "raw", "params": [-1e999], "id": 1}'],
)  # fmt: skip
async def test_parse_error(body: bytes) -> None:
    reg, _ = _registry()
    out = await reg.handle(body)
    assert out is not None
    assert json.loads(out) == {
        "jsonrpc": "2.0",
        "error": {"code": -32700, "message": "Parse error"},
        "id": None,
    }


@pytest.mark.parametrize(
    ("doc", "rid"),
    [
        (1, None),
        ("x", None),
        ({"method": "raw", "id": 1}, 1),
        ({"jsonrpc": "1.0", "method": "raw", "id": 1}, 1),
        ({"jsonrpc": "2.0", "id": 2}, 2),
        ({"jsonrpc": "2.0", "method": 5, "id": 2}, 2),
        ({"jsonrpc": "2.0", "method": "raw", "params": "x", "id": 3}, 3),
        ({"jsonrpc": "2.0", "method": "raw", "params": 1}, None),
        ({"jsonrpc": "2.0", "method": "raw", "params": None, "id": 4}, 4),
        ({"jsonrpc": "2.0", "method": "raw", "id": True}, None),
        ({"jsonrpc": "2.0", "method": "raw", "id": {"a": 1}}, None),
        ({"jsonrpc": "2.0", "method": "raw", "id": [1]}, None),
    ],
)
async def test_invalid_request(doc: Any, rid: Any) -> None:
    reg, seen = _registry()
    reply = await _call(reg, doc)
    assert reply["error"]["code"] == -32600
    assert reply["error"]["message"] == "Invalid Request"
    assert reply["id"] == rid
    assert seen == []


async def test_notifications_get_no_reply_even_on_error() -> None:
    reg, seen = _registry()
    assert await _call(reg, {"jsonrpc": "2.0", "method": "raw", "params": [1]}) is None
    assert await _call(reg, {"jsonrpc": "2.0", "method": "nothing"}) is None
    assert await _call(reg, {"jsonrpc": "2.0", "method": "broken"}) is None
    assert await _call(reg, {"jsonrpc": "2.0", "method": "end", "params": []}) is None
    assert seen == [[1]]  # the notification did run


async def test_null_id_is_a_request_not_a_notification() -> None:
    reg, _ = _registry()
    assert await _call(reg, _req("raw", [1], None)) == {
        "jsonrpc": "2.0",
        "result": {"got": [1]},
        "id": None,
    }


async def test_batch() -> None:
    reg, seen = _registry()
    batch = [
        _req("raw", [1], "a"),
        {"jsonrpc": "2.0", "method": "raw", "params": ["note"]},
        _req("end", ["nope"], 2),
        _req("missing", rid=3),
        {"foo": "bar"},
        7,
        _req("end", {"key": "k1"}, 4.5),
    ]
    replies = await _call(reg, batch)
    assert replies == [
        {"jsonrpc": "2.0", "result": {"got": [1]}, "id": "a"},
        {"jsonrpc": "2.0", "error": {"code": 404, "message": "Session doesn't exist"}, "id": 2},
        {"jsonrpc": "2.0", "error": {"code": -32601, "message": "Method not found"}, "id": 3},
        {"jsonrpc": "2.0", "error": _invalid("'jsonrpc' must be \"2.0\""), "id": None},
        {"jsonrpc": "2.0", "error": _invalid("Request must be an object"), "id": None},
        {"jsonrpc": "2.0", "result": "OK", "id": 4.5},
    ]
    assert seen == [[1], ["note"]]


def _invalid(data: str) -> dict[str, Any]:
    return {"code": -32600, "message": "Invalid Request", "data": data}


async def test_batch_of_notifications_has_no_reply() -> None:
    reg, seen = _registry()
    note = {"jsonrpc": "2.0", "method": "raw", "params": [1]}
    assert await _call(reg, [note, note]) is None
    assert len(seen) == 2


async def test_empty_and_oversized_batch() -> None:
    reg, seen = _registry()
    assert (await _call(reg, []))["error"] == _invalid("Empty batch")
    reply = await _call(reg, [_req("raw", [i], i) for i in range(65)])
    assert reply["error"]["code"] == -32600 and reply["id"] is None
    assert seen == []


async def test_slow_command_times_out_as_server_error() -> None:
    reg = MiRegistry(timeout=0.05)

    async def slow(params: MiParams) -> Any:
        await asyncio.sleep(10)

    reg.register("slow", slow)
    reply = await _call(reg, _req("slow", rid=1))
    assert reply["error"]["code"] == -32000
    assert reply["error"]["data"] == "Command timed out"


async def test_which_lists_commands() -> None:
    reg, _ = _registry()
    result = (await _call(reg, _req("which")))["result"]
    assert {"end", "mod:end", "which"} <= set(result)


def test_register_rejects_duplicates_and_bad_names() -> None:
    reg, _ = _registry()

    async def h(params: MiParams) -> Any:
        return None

    with pytest.raises(ValueError):
        reg.register("end", h)
    with pytest.raises(ValueError):
        reg.register("new", h, aliases=["mod:end"])
    with pytest.raises(ValueError):
        reg.register("new", h, aliases=["new"])
    with pytest.raises(ValueError):
        reg.register("bad name", h)
    with pytest.raises(ValueError):
        reg.register("", h)
    assert "new" not in reg.commands()


async def test_call_directly() -> None:
    reg, _ = _registry()
    assert await reg.call("end", ["k1"]) == "OK"
    with pytest.raises(MiError) as info:
        await reg.call("end", {"key": "zz"})
    assert (info.value.code, info.value.message) == (404, "Session doesn't exist")


# Over HTTP: status codes as OpenSIPS mi_http (200 for every JSON-RPC reply, errors included).


async def test_http_reply(server: MgmtServer) -> None:
    reg, _ = _registry()
    server.mi = reg
    resp = await post_json(server.port, _req("end", ["nope"], 9))
    assert resp.status == 200
    assert resp.headers["content-type"] == "application/json"
    assert resp.json()["error"] == {"code": 404, "message": "Session doesn't exist"}
    resp = await exchange(server.port, request("POST", "/mi", b"{oops"))
    assert (resp.status, resp.json()["error"]["code"]) == (200, -32700)


async def test_http_notification_202_empty(server: MgmtServer) -> None:
    resp = await post_json(server.port, {"jsonrpc": "2.0", "method": "which"})
    assert (resp.status, resp.body) == (202, b"")


async def test_http_empty_body_400(server: MgmtServer) -> None:
    resp = await exchange(server.port, request("POST", "/mi"))
    assert resp.status == 400


async def test_http_batch(server: MgmtServer) -> None:
    resp = await post_json(server.port, [_req("which", rid=1), _req("nope", rid=2)])
    assert resp.status == 200
    assert [r["id"] for r in resp.json()] == [1, 2]
