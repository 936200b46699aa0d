"""JSON-RPC 2.0 dispatcher with OpenSIPS MI semantics, so OpenSIPS's own MI clients work unchanged.

Mirrors OpenSIPS 3.x `mi_http`: replies (errors included) are JSON-RPC objects, errors carry
`code`, `message` and optionally `data` (the detail); a notification (no `id`) gets no reply
unless it is malformed; parameters come by name (object) or by position (array) and, when a
command declares parameter-name recipes, are matched to one recipe the way OpenSIPS does.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
SERVER_ERROR = -32000

_MESSAGES = {
    PARSE_ERROR: "Parse error",
    INVALID_REQUEST: "Invalid Request",
    METHOD_NOT_FOUND: "Method not found",
    INVALID_PARAMS: "Invalid params",
    SERVER_ERROR: "Server error",
}
_log = logging.getLogger("gw.mgmt.mi")

MiParams = dict[str, Any] | list[Any]
MiHandler = Callable[[MiParams], Awaitable[Any]]


class MiError(Exception):
    """An MI error reply, e.g. MiError(404, "Session doesn't exist") as OpenSIPS modules send."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.data = data


def _std_error(code: int, data: str | None = None) -> MiError:
    return MiError(code, _MESSAGES[code], data)


def param_str(params: MiParams, name: str) -> str:
    """A string parameter by name; like OpenSIPS, a number is accepted as its decimal text."""
    value = params.get(name) if isinstance(params, dict) else None
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if value is None:
        raise _std_error(INVALID_PARAMS, f"Missing parameter '{name}'")
    raise _std_error(INVALID_PARAMS, f"Bad type for parameter '{name}'")


@dataclass(frozen=True, slots=True)
class _Command:
    name: str
    handler: MiHandler
    recipes: tuple[tuple[str, ...], ...] | None


class MiRegistry:
    """MI commands by name (aliases included) and the JSON-RPC front end that calls them."""

    def __init__(self, *, max_batch: int = 64, timeout: float = 20.0) -> None:
        self.max_batch = max_batch
        self.timeout = timeout  # per command; below the HTTP handler timeout so it is a reply
        self._commands: dict[str, _Command] = {}
        self.register("which", self._which, params=[()])

    def register(
        self,
        name: str,
        handler: MiHandler,
        aliases: Iterable[str] = (),
        *,
        params: Iterable[Sequence[str]] | None = None,
    ) -> None:
        """Add a command. `params`, if given, lists the accepted parameter-name sets (OpenSIPS
        recipes, `()` for none): calls are matched to one and the handler gets a dict by name
        whether the client sent an object or an array. Without it the handler gets the raw
        params (`{}` when absent)."""
        recipes = None if params is None else tuple(tuple(r) for r in params)
        names = (name, *aliases)
        if len(set(names)) != len(names):
            raise ValueError(f"repeated name among {names}")
        for n in names:
            if not n or not isinstance(n, str) or any(c.isspace() for c in n):
                raise ValueError(f"invalid MI command name {n!r}")
            if n in self._commands:
                raise ValueError(f"MI command {n!r} already registered")
        for n in names:
            self._commands[n] = _Command(name, handler, recipes)

    def commands(self) -> list[str]:
        return sorted(self._commands)

    async def _which(self, params: MiParams) -> list[str]:
        return self.commands()

    async def call(self, method: str, params: MiParams | None = None) -> Any:
        """Run one command; raises MiError for unknown methods, bad params, command errors."""
        cmd = self._commands.get(method)
        if cmd is None:
            raise _std_error(METHOD_NOT_FOUND)
        args: MiParams = {} if params is None else params
        if cmd.recipes is not None:
            args = _bind(cmd.recipes, args)
        return await cmd.handler(args)

    async def handle(self, body: bytes | str) -> bytes | None:
        """A JSON-RPC request or batch in, its reply out; None when nothing is to be sent back
        (notifications only)."""
        try:
            text = body.decode("utf-8") if isinstance(body, bytes) else body
            doc = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
        except (ValueError, RecursionError):
            return _encode_error(None, _std_error(PARSE_ERROR))
        if not isinstance(doc, list):
            return await self._one(doc)
        if not doc:
            return _encode_error(None, _std_error(INVALID_REQUEST, "Empty batch"))
        if len(doc) > self.max_batch:
            detail = f"Batch of {len(doc)} requests, more than {self.max_batch}"
            return _encode_error(None, _std_error(INVALID_REQUEST, detail))
        parts = [r for item in doc if (r := await self._one(item)) is not None]
        return b"[" + b",".join(parts) + b"]" if parts else None

    async def _one(self, req: Any) -> bytes | None:
        if not isinstance(req, dict):
            return _encode_error(None, _std_error(INVALID_REQUEST, "Request must be an object"))
        has_id = "id" in req
        rid = req.get("id")
        if has_id and (isinstance(rid, bool) or not isinstance(rid, str | int | float | None)):
            return _encode_error(None, _std_error(INVALID_REQUEST, "Bad 'id' type"))
        method = req.get("method")
        params = req.get("params")
        detail = None
        if req.get("jsonrpc") != "2.0":
            detail = "'jsonrpc' must be \"2.0\""
        elif not isinstance(method, str):
            detail = "'method' must be a string"
        elif "params" in req and not isinstance(params, dict | list):
            detail = "'params' must be an object or an array"
        if detail is not None or not isinstance(method, str):
            return _encode_error(rid, _std_error(INVALID_REQUEST, detail))
        try:
            async with asyncio.timeout(self.timeout):
                result = await self.call(method, params)
        except MiError as exc:
            error = exc
        except TimeoutError:
            _log.error("MI command %s timed out after %s s", method, self.timeout)
            error = _std_error(SERVER_ERROR, "Command timed out")
        except Exception:
            _log.exception("MI command %s failed", method)
            error = _std_error(SERVER_ERROR)
        else:
            if not has_id:
                return None
            try:
                return _dumps({"jsonrpc": "2.0", "result": result, "id": rid})
            except (TypeError, ValueError):
                _log.error("MI command %s returned a value that is not JSON: %r", method, result)
                error = _std_error(SERVER_ERROR, "Reply is not JSON")
        return _encode_error(rid, error) if has_id else None


def _bind(recipes: tuple[tuple[str, ...], ...], params: MiParams) -> dict[str, Any]:
    """OpenSIPS's recipe matching (mi/mi.c get_cmd_recipe), yielding params by name."""
    if not params:
        if () in recipes:
            return {}
        raise _std_error(INVALID_PARAMS, "Too few or too many parameters")
    sized = [r for r in recipes if r and len(r) == len(params)]
    if isinstance(params, list):
        if len(sized) == 1:
            return dict(zip(sized[0], params, strict=True))
        detail = "Ambiguous call, use named parameters instead" if sized else None
        raise _std_error(INVALID_PARAMS, detail or "Too few or too many parameters")
    for recipe in sized:
        if set(recipe) == params.keys():
            return dict(params)
    detail = "Named parameters do not match" if sized else "Too few or too many parameters"
    raise _std_error(INVALID_PARAMS, detail)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    """A number too large for a double (1e400) would come back as inf, which no reply can
    carry: a parse error, as NaN and Infinity are."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:40]} is out of range")
    return value


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


def _encode_error(rid: Any, exc: MiError) -> bytes:
    error: dict[str, Any] = {"code": exc.code, "message": exc.message}
    if exc.data is not None:
        error["data"] = exc.data
    try:
        return _dumps({"jsonrpc": "2.0", "error": error, "id": rid})
    except (TypeError, ValueError):
        plain = {"code": exc.code, "message": exc.message}
        return _dumps({"jsonrpc": "2.0", "error": plain, "id": rid})
