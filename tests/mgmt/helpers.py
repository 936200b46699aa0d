"""Raw-socket HTTP helpers: tests talk bytes to the server so malformed input is testable."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import Any

TIMEOUT = 5.0


@dataclass
class Resp:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


async def read_response(reader: asyncio.StreamReader, *, head_only: bool = False) -> Resp:
    """One response (Content-Length framed, as the server always sends)."""
    async with asyncio.timeout(TIMEOUT):
        raw = await reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        version, status, _ = lines[0].split(" ", 2)
        assert version == "HTTP/1.1"
        headers = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        length = 0 if head_only else int(headers.get("content-length", "0"))
        body = await reader.readexactly(length)
    return Resp(int(status), headers, body)


async def read_eof(reader: asyncio.StreamReader) -> bytes:
    """Everything until the server closes (fails the test if it never does)."""
    async with asyncio.timeout(TIMEOUT):
        return await reader.read()


@asynccontextmanager
async def connect(port: int) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        yield reader, writer
    finally:
        writer.close()
        with suppress(ConnectionError):
            await writer.wait_closed()


async def exchange(port: int, raw: bytes) -> Resp:
    """Send raw bytes on a fresh connection, read one response."""
    async with connect(port) as (reader, writer):
        writer.write(raw)
        await writer.drain()
        return await read_response(reader)


def request(
    method: str,
    path: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
) -> bytes:
    """A well-formed HTTP/1.1 request."""
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}")
    if body or method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def get(port: int, path: str, headers: dict[str, str] | None = None) -> Resp:
    return await exchange(port, request("GET", path, headers=headers))


async def post_json(port: int, doc: Any, headers: dict[str, str] | None = None) -> Resp:
    body = json.dumps(doc).encode()
    hdrs = {"Content-Type": "application/json", **(headers or {})}
    return await exchange(port, request("POST", "/mi", body, hdrs))
