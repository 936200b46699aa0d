"""HTTP/1.1 server: parsing edge cases, limits, timeouts, keep-alive, routing."""

from __future__ import annotations

import asyncio
import time
from contextlib import suppress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gw.mgmt import Limits, MgmtServer, Reply, Request
from gw.mgmt.http import parse_listen
from gw.mgmt.wire import HttpError, encode_response, read_head
from tests.mgmt.helpers import connect, exchange, get, read_eof, read_response, request


async def test_healthz_ok(server: MgmtServer) -> None:
    resp = await get(server.port, "/healthz")
    assert resp.status == 200
    assert resp.body == b"ok\n"
    assert resp.headers["content-type"].startswith("text/plain")
    assert resp.headers["connection"] == "keep-alive"


async def test_start_returns_bound_port() -> None:
    srv = MgmtServer("127.0.0.1:0")
    host, port = await srv.start()
    try:
        assert host == "127.0.0.1" and port > 0
        assert (await get(port, "/healthz")).status == 200
    finally:
        await srv.close()


async def test_keep_alive_two_requests_one_connection(server: MgmtServer) -> None:
    async with connect(server.port) as (reader, writer):
        writer.write(request("GET", "/healthz"))
        first = await read_response(reader)
        writer.write(request("GET", "/readyz"))
        second = await read_response(reader)
    assert (first.status, first.body) == (200, b"ok\n")
    assert (second.status, second.body) == (200, b"ready\n")


async def test_pipelined_requests_answered_in_order(server: MgmtServer) -> None:
    async with connect(server.port) as (reader, writer):
        writer.write(b"".join(request("GET", p) for p in ("/healthz", "/nope", "/readyz")))
        statuses = [(await read_response(reader)).status for _ in range(3)]
    assert statuses == [200, 404, 200]


async def test_connection_close_honoured(server: MgmtServer) -> None:
    async with connect(server.port) as (reader, writer):
        writer.write(request("GET", "/healthz", headers={"Connection": "close"}))
        resp = await read_response(reader)
        assert resp.headers["connection"] == "close"
        assert await read_eof(reader) == b""


async def test_http10_closes_unless_keep_alive(server: MgmtServer) -> None:
    async with connect(server.port) as (reader, writer):
        writer.write(b"GET /healthz HTTP/1.0\r\n\r\n")
        assert (await read_response(reader)).status == 200
        assert await read_eof(reader) == b""
    async with connect(server.port) as (reader, writer):
        writer.write(b"GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        assert (await read_response(reader)).headers["connection"] == "keep-alive"
        writer.write(b"GET /healthz HTTP/1.0\r\n\r\n")
        assert (await read_response(reader)).status == 200


async def test_head_has_headers_but_no_body(server: MgmtServer) -> None:
    async with connect(server.port) as (reader, writer):
        writer.write(request("HEAD", "/healthz"))
        resp = await read_response(reader, head_only=True)
        assert resp.status == 200 and resp.headers["content-length"] == "3"
        writer.write(request("GET", "/healthz"))  # nothing stray was sent after the head
        assert (await read_response(reader)).body == b"ok\n"


async def test_unknown_path_404(server: MgmtServer) -> None:
    resp = await get(server.port, "/nope")
    assert resp.status == 404
    assert b"/nope" in resp.body


async def test_query_string_ignored_for_routing(server: MgmtServer) -> None:
    assert (await get(server.port, "/healthz?verbose=1")).status == 200


async def test_absolute_form_target(server: MgmtServer) -> None:
    resp = await exchange(server.port, request("GET", f"http://127.0.0.1:{server.port}/healthz"))
    assert resp.status == 200


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("GET", "/mi", "POST"),
        ("POST", "/healthz", "GET, HEAD"),
        ("DELETE", "/metrics", "GET, HEAD"),
    ],
)
async def test_wrong_method_405(server: MgmtServer, method: str, path: str, allow: str) -> None:
    resp = await exchange(server.port, request(method, path))
    assert resp.status == 405
    assert resp.headers["allow"] == allow


@pytest.mark.parametrize(
    "raw",
    [
        b"GARBAGE\r\n\r\n",
        b"GET /healthz\r\n\r\n",
        b"GET /healthz HTTP/1.1 extra\r\nHost: x\r\n\r\n",
        b"GET  /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
        b"G(T /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET healthz HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET * HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /healthz FTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /h\xc3\xa9 HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /healthz HTTP/1.x\r\nHost: x\r\n\r\n",
        b"\r\n\r\n\r\n\r\n\r\n\r\n",
    ],
)
async def test_bad_request_line_400(server: MgmtServer, raw: bytes) -> None:
    async with connect(server.port) as (reader, writer):
        writer.write(raw)
        resp = await read_response(reader)
        assert resp.status == 400
        assert resp.headers["connection"] == "close"
        assert await read_eof(reader) == b""


async def test_http2_version_505(server: MgmtServer) -> None:
    assert (await exchange(server.port, b"GET /healthz HTTP/2.0\r\nHost: x\r\n\r\n")).status == 505


async def test_leading_empty_lines_tolerated(server: MgmtServer) -> None:
    assert (await exchange(server.port, b"\r\n" + request("GET", "/healthz"))).status == 200


async def test_bare_lf_line_endings_accepted(server: MgmtServer) -> None:
    assert (await exchange(server.port, b"GET /healthz HTTP/1.1\nHost: x\n\n")).status == 200


async def test_missing_host_400(server: MgmtServer) -> None:
    resp = await exchange(server.port, b"GET /healthz HTTP/1.1\r\n\r\n")
    assert resp.status == 400 and b"Host" in resp.body


@pytest.mark.parametrize(
    "field",
    [
        b"NoColon",
        b"Bad Name: x",
        b"Name : x",
        b" folded",
        b"X-Ctl: a\x01b",
        b": empty-name",
        b"Host: other",  # a second Host
    ],
)
async def test_malformed_header_400(server: MgmtServer, field: bytes) -> None:
    raw = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + field + b"\r\n\r\n"
    assert (await exchange(server.port, raw)).status == 400


async def test_oversized_header_block_431(server: MgmtServer) -> None:
    big = b"".join(b"X-Pad-%d: %s\r\n" % (i, b"a" * 1000) for i in range(20))
    raw = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + big + b"\r\n"
    async with connect(server.port) as (reader, writer):
        writer.write(raw)
        assert (await read_response(reader)).status == 431
        assert await read_eof(reader) == b""


async def test_one_huge_header_line_431(server: MgmtServer) -> None:
    raw = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n"
    assert (await exchange(server.port, raw)).status == 431


async def test_too_many_header_fields_431(server: MgmtServer) -> None:
    many = b"".join(b"X-%d: 1\r\n" % i for i in range(101))
    raw = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n"
    assert (await exchange(server.port, raw)).status == 431


async def test_oversized_request_line_414(server: MgmtServer) -> None:
    raw = b"GET /" + b"a" * 17000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    assert (await exchange(server.port, raw)).status == 414


async def test_oversized_body_413_without_reading_it(server: MgmtServer) -> None:
    raw = request("POST", "/mi", headers={"Content-Length": str(1024 * 1024 + 1)})
    raw = raw.replace(b"Content-Length: 0\r\n", b"")
    async with connect(server.port) as (reader, writer):
        writer.write(raw)
        resp = await read_response(reader)
        assert resp.status == 413
        assert await read_eof(reader) == b""


async def test_oversized_body_413_while_client_keeps_sending(server: MgmtServer) -> None:
    body = b"x" * (2 * 1024 * 1024)
    async with connect(server.port) as (reader, writer):
        writer.write(request("POST", "/mi", body))
        assert (await read_response(reader)).status == 413


async def test_body_at_limit_accepted(server: MgmtServer) -> None:
    body = b" " * (1024 * 1024 - 2) + b"[]"  # valid JSON, exactly 1 MiB
    resp = await exchange(server.port, request("POST", "/mi", body))
    assert resp.status == 200
    assert resp.json()["error"]["code"] == -32600


async def test_chunked_request_411(server: MgmtServer) -> None:
    raw = request("POST", "/mi", headers={"Transfer-Encoding": "chunked"}).replace(
        b"Content-Length: 0\r\n", b""
    )
    assert (await exchange(server.port, raw + b"0\r\n\r\n")).status == 411


async def test_chunked_plus_content_length_400(server: MgmtServer) -> None:
    raw = request("POST", "/mi", b"{}", headers={"Transfer-Encoding": "chunked"})
    assert (await exchange(server.port, raw)).status == 400


@pytest.mark.parametrize("value", ["abc", "-1", "1,2", "+5", " ", "99999999999999999999"])
async def test_invalid_content_length_400(server: MgmtServer, value: str) -> None:
    raw = f"POST /mi HTTP/1.1\r\nHost: x\r\nContent-Length: {value}\r\n\r\n".encode()
    assert (await exchange(server.port, raw)).status == 400


async def test_conflicting_content_lengths_400(server: MgmtServer) -> None:
    raw = b"POST /mi HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}"
    assert (await exchange(server.port, raw)).status == 400


async def test_idle_client_closed_after_timeout(server: MgmtServer) -> None:
    async with connect(server.port) as (reader, _writer):
        start = time.monotonic()
        assert await read_eof(reader) == b""  # no request, no reply: just closed
        assert time.monotonic() - start < 3.0


async def test_idle_keep_alive_connection_closed(server: MgmtServer) -> None:
    async with connect(server.port) as (reader, writer):
        writer.write(request("GET", "/healthz"))
        assert (await read_response(reader)).status == 200
        assert await read_eof(reader) == b""


async def test_slow_headers_get_408(server: MgmtServer) -> None:
    async with connect(server.port) as (reader, writer):
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # never finishes the head
        resp = await read_response(reader)
        assert resp.status == 408
        assert await read_eof(reader) == b""


async def test_dribbling_client_bounded_by_read_timeout(server: MgmtServer) -> None:
    """A byte every 0.1 s never gets past the per-request deadline (slowloris)."""
    async with connect(server.port) as (reader, writer):

        async def dribble() -> None:
            with suppress(ConnectionError):
                for byte in b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 50:
                    writer.write(bytes([byte]))
                    await writer.drain()
                    await asyncio.sleep(0.1)

        start = time.monotonic()
        task = asyncio.create_task(dribble())
        try:
            resp = await read_response(reader)
        finally:
            task.cancel()
        assert resp.status == 408
        assert time.monotonic() - start < 2.0


async def test_slow_body_gets_408(server: MgmtServer) -> None:
    async with connect(server.port) as (reader, writer):
        writer.write(b'POST /mi HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n{"js')
        assert (await read_response(reader)).status == 408


async def test_client_gone_mid_request_does_not_hurt(server: MgmtServer) -> None:
    async with connect(server.port) as (_reader, writer):
        writer.write(b"POST /mi HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n{")
        await writer.drain()
    async with connect(server.port) as (_reader, writer):
        writer.write(b"GET /heal")
        await writer.drain()
    assert (await get(server.port, "/healthz")).status == 200


async def test_expect_100_continue(server: MgmtServer) -> None:
    body = b'{"jsonrpc":"2.0","method":"which","id":1}'
    head = request("POST", "/mi", headers={"Expect": "100-continue"}).replace(
        b"Content-Length: 0", b"Content-Length: %d" % len(body)
    )
    async with connect(server.port) as (reader, writer):
        writer.write(head)
        async with asyncio.timeout(5):
            interim = await reader.readuntil(b"\r\n\r\n")
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(body)
        resp = await read_response(reader)
    assert resp.status == 200 and resp.json()["id"] == 1


async def test_unsupported_expectation_417(server: MgmtServer) -> None:
    resp = await exchange(server.port, request("GET", "/healthz", headers={"Expect": "magic"}))
    assert resp.status == 417


async def test_custom_route_and_handler_errors(server: MgmtServer) -> None:
    async def echo(req: Request) -> Reply:
        return 201, {"Content-Type": "application/octet-stream"}, req.body + req.query.encode()

    async def boom(req: Request) -> Reply:
        raise RuntimeError("secret detail")

    async def hang(req: Request) -> Reply:
        await asyncio.sleep(60)
        raise AssertionError

    server.route("POST", "/echo", echo)
    server.route("GET", "/boom", boom)
    server.route("GET", "/hang", hang)
    resp = await exchange(server.port, request("POST", "/echo?q", b"hi"))
    assert (resp.status, resp.body) == (201, b"hiq")
    resp = await get(server.port, "/boom")
    assert resp.status == 500 and b"secret" not in resp.body
    assert (await get(server.port, "/hang")).status == 503
    assert (await get(server.port, "/healthz")).status == 200


async def test_idle_connections_at_the_cap_make_room_for_a_probe(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """130 idle connections against a cap of 128 made /healthz answer 503 twenty times out
    of twenty (issue 16): a liveness probe would restart a healthy pod. At the cap, the
    connection that has waited longest for a request is closed instead."""
    srv = MgmtServer("127.0.0.1:0", limits=Limits(max_connections=8, read_timeout=30.0))
    await srv.start()
    try:
        idle = [await asyncio.open_connection("127.0.0.1", srv.port) for _ in range(10)]
        await asyncio.sleep(0.1)
        for _ in range(20):
            assert (await get(srv.port, "/healthz")).status == 200
        assert srv.evicted >= 2
        oldest_reader, _ = idle[0]
        assert await read_eof(oldest_reader) == b""  # the longest idle went first
        for _, writer in idle:
            writer.close()
        await asyncio.sleep(0.1)
        assert not [r for r in caplog.records if r.levelname == "ERROR"], "no traceback"
    finally:
        await srv.close()


async def test_connection_limit_503_when_every_connection_is_busy() -> None:
    srv = MgmtServer("127.0.0.1:0", limits=Limits(max_connections=2, read_timeout=2.0))
    release = asyncio.Event()

    async def slow(_request: Request) -> Reply:
        await release.wait()
        return 200, {}, b"done"

    srv.route("GET", "/slow", slow)
    await srv.start()
    try:
        busy = [asyncio.ensure_future(get(srv.port, "/slow")) for _ in range(2)]
        await asyncio.sleep(0.2)
        assert (await get(srv.port, "/healthz")).status == 503
        release.set()
        assert [(await b).status for b in busy] == [200, 200]
        await asyncio.sleep(0.1)
        assert (await get(srv.port, "/healthz")).status == 200
    finally:
        await srv.close()


async def test_close_drops_open_connections() -> None:
    srv = MgmtServer("127.0.0.1:0", limits=Limits(idle_timeout=60, read_timeout=60))
    await srv.start()
    async with connect(srv.port) as (reader, writer):
        writer.write(request("GET", "/healthz"))
        assert (await read_response(reader)).status == 200
        start = time.monotonic()
        await srv.close()
        assert await read_eof(reader) == b""
        assert time.monotonic() - start < 3.0
    with pytest.raises(OSError):
        await get(srv.port, "/healthz")


@pytest.mark.parametrize("listen", ["nohost", "127.0.0.1:", ":80", "127.0.0.1:99999", "h:x"])
def test_parse_listen_rejects(listen: str) -> None:
    with pytest.raises(ValueError):
        parse_listen(listen)


def test_parse_listen_ipv6() -> None:
    assert parse_listen("[::1]:8080") == ("::1", 8080)


def test_response_header_injection_refused() -> None:
    with pytest.raises(ValueError):
        encode_response(200, {"X": "a\r\nSet-Cookie: x"}, b"", keep_alive=False, head_only=False)


_PIECES = [
    b"GET ", b"POST ", b"/mi", b" HTTP/1.1", b" HTTP/1.0", b"\r\n", b"\n", b"Host: x",
    b"Content-Length: ", b"5", b"-", b"Transfer-Encoding: chunked", b":", b" ", b"\t", b"\x00",
    b"Connection: close", b"Expect: 100-continue", b"\xff",
]  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600) | st.lists(st.sampled_from(_PIECES), max_size=30).map(b"".join))
def test_head_parser_never_crashes(data: bytes) -> None:
    """Any input yields a head, a clean 'closed' (None) or an HttpError with a 4xx/5xx."""

    async def run() -> None:
        reader = asyncio.StreamReader(limit=Limits().max_header_bytes)
        reader.feed_data(data)
        reader.feed_eof()
        try:
            head = await read_head(reader, Limits(), wait=1.0)
        except HttpError as exc:
            assert 400 <= exc.status < 600
        else:
            if head is not None:
                assert head.path.startswith("/")
                assert 0 <= head.content_length <= Limits().max_body_bytes

    asyncio.run(run())
