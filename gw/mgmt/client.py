"""A small MI client: JSON-RPC 2.0 over HTTP to a node's `/mi` (what `msrp-gw sessions` uses).

Synchronous and dependency-free (urllib). An MI error reply raises `MiCallError` with the
OpenSIPS code and message (e.g. 404 "Session doesn't exist"); anything that keeps us from
getting a JSON-RPC reply (connection refused, HTTP 401, a non-JSON body) raises
`MiTransportError`.
"""

from __future__ import annotations

import itertools
import json
import urllib.error
import urllib.request
from typing import Any

from gw.mgmt.http import parse_listen

__all__ = ["MiCallError", "MiClient", "MiTransportError", "mi_url"]


class MiCallError(Exception):
    """The node answered with a JSON-RPC error object."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        self.code = code
        self.message = message
        self.data = data
        detail = f" ({data})" if data is not None else ""
        super().__init__(f"{code} {message}{detail}")


class MiTransportError(Exception):
    """No JSON-RPC reply: the node is unreachable, refused us, or answered something else."""


def mi_url(listen: str) -> str:
    """`host:port` as in mgmt.listen -> the URL of its /mi endpoint (wildcards -> loopback)."""
    host, port = parse_listen(listen)
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/mi"


class MiClient:
    def __init__(self, url: str, token: str = "", *, timeout: float = 30.0) -> None:
        self.url = url
        self.token = token
        self.timeout = timeout
        self._ids = itertools.count(1)

    def call(self, method: str, params: dict[str, Any] | list[Any] | None = None) -> Any:
        """Run one MI command and return its `result`."""
        request: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "id": next(self._ids)}
        if params is not None:
            request["params"] = params
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        http_request = urllib.request.Request(
            self.url, data=json.dumps(request).encode(), headers=headers, method="POST"
        )
        try:
            with urllib.request.urlopen(http_request, timeout=self.timeout) as response:
                body = response.read()
        except urllib.error.HTTPError as exc:
            text = exc.read().decode("utf-8", "replace").strip()
            hint = " (set mgmt.token or pass --token)" if exc.code == 401 else ""
            raise MiTransportError(f"HTTP {exc.code} from {self.url}: {text}{hint}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise MiTransportError(f"cannot reach {self.url}: {reason}") from None
        try:
            reply = json.loads(body)
        except ValueError:
            raise MiTransportError(f"{self.url} answered with something that is not JSON") from None
        if not isinstance(reply, dict) or reply.get("jsonrpc") != "2.0":
            raise MiTransportError(f"{self.url} answered with something that is not JSON-RPC 2.0")
        error = reply.get("error")
        if isinstance(error, dict):
            code = error.get("code")
            raise MiCallError(
                code if isinstance(code, int) else 0,
                str(error.get("message", "")),
                error.get("data"),
            )
        if "result" not in reply:
            raise MiTransportError(f"{self.url} answered with neither result nor error")
        return reply["result"]
