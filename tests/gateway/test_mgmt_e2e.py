"""Management end to end: a real `msrp-gw run` process and Redis, a session made by SIPp and
a gw.msrp user, then driven by OpenSIPS's own MI client (`opensips-mi`), by `msrp-gw sessions`
and `msrp-gw events`, and scraped on /metrics."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import sys
import urllib.request
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from tests.support.msrp_user import MsrpUser
from tests.support.node import GatewayProcess
from tests.support.redis_server import RedisServer
from tests.support.sipp import Sipp

pytestmark = pytest.mark.interop

# Policy default key template {page_aor}-{msrp_aor}: SIPp's MESSAGE is alice -> bob.
KEY = "alice@127.0.0.1-bob@127.0.0.1"


def start_gateway(msrp_user: MsrpUser, store_url: str | None, **env: str) -> GatewayProcess:
    settings = {
        "MSRPGW_NODE__ID": "gw-test",
        "MSRPGW_SIP__T1": "0.1",
        "MSRPGW_SIP__T2": "0.4",
        "MSRPGW_GATEWAY__RURI_REWRITE": f"sip:{{user}}@127.0.0.1:{msrp_user.sip_port}",
        "MSRPGW_GATEWAY__SETUP_TIMEOUT": "3",
        "MSRPGW_GATEWAY__DELIVERY_TIMEOUT": "5",
        **env,
    }
    if store_url is not None:
        settings["MSRPGW_STORE__URL"] = store_url
    node = GatewayProcess(env=settings)
    if store_url is None:  # the embedded store: no URL from the environment either
        node.env.pop("MSRPGW_STORE__URL", None)
    node.start()
    return node


async def stop(node: GatewayProcess) -> None:
    code = await asyncio.to_thread(node.stop)
    assert code == 0, node.output()


@pytest.fixture
async def gateway(redis_server: RedisServer, msrp_user: MsrpUser) -> AsyncIterator[GatewayProcess]:
    node = start_gateway(msrp_user, redis_server.url)
    try:
        yield node
    finally:
        await stop(node)


async def create_session(node: GatewayProcess, msrp_user: MsrpUser) -> None:
    """A page-mode MESSAGE from SIPp creates a msg_to_msrp session (confirm mode: the 200
    means the MSRP side has the message)."""
    sipp = Sipp("message_uac.xml", remote=node.sip("udp"), replace={"EXPECT": "200"})
    result = await sipp.run()
    assert result.returncode == 0, result.errors + node.output()
    await msrp_user.wait_for(1)


async def wait_until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.05)


async def run(
    *argv: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=cwd,
        env=env,
    )
    async with asyncio.timeout(30):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def opensips_mi_binary() -> str:
    exe = Path(sys.executable).with_name("opensips-mi")
    found = str(exe) if exe.exists() else shutil.which("opensips-mi")
    if found is None:
        pytest.skip("opensips-mi not installed (PyPI 'opensips', a test dependency)")
    return found


async def opensips_mi(node: GatewayProcess, tmp_path: Path, *args: str) -> tuple[int, str]:
    """`opensips-mi -t http -i HOST -p PORT ARGS...`, away from any ./.env or OPENSIPS_MI_*."""
    host, _, port = node.ready["mgmt"].rpartition(":")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENSIPS_MI_")}
    code, out, err = await run(
        opensips_mi_binary(), "-t", "http", "-i", host, "-p", port, *args, cwd=tmp_path, env=env
    )
    return code, out + err


async def msrp_gw(node: GatewayProcess, *args: str) -> tuple[int, str, str]:
    """`msrp-gw ARGS...` with the node's environment, as an operator on its host runs it."""
    return await run(sys.executable, "-m", "gw.cli", *args, env=node.env)


def metrics(node: GatewayProcess) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """/metrics parsed by prometheus_client: {sample name: {sorted labels: value}}."""
    with urllib.request.urlopen(f"http://{node.ready['mgmt']}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def check_session(session: dict[str, Any], msrp_user: MsrpUser) -> None:
    handle = msrp_user.sessions[0]
    assert session["key"] == KEY
    assert session["state"] == "active"
    assert session["origin"] == "msg_to_msrp"
    assert session["owner"] == "gw-test"
    # The MESSAGEs back to the page-mode user mirror the first MESSAGE: From bob, To alice.
    assert session["from"].startswith("sip:bob@127.0.0.1")
    assert session["to"].startswith("sip:alice@127.0.0.1")
    assert session["ruri"] == session["to"]
    assert session["msrp_session_id"] == handle.peer_path[0].session_id
    assert session["peer_path"] == [str(handle.local_uri)]
    assert session["queued"] == 0
    # OpenSIPS's own field names are there too, for scripts written against msrp_gateway.
    assert session["msg_side_to"] == session["to"]
    assert session["msg_side_ruri"] == session["ruri"]
    assert session["msrp_ua_session_id"] == session["msrp_session_id"]
    assert 0 < session["created"] <= session["last_message"]
    assert session["last_send"] >= session["created"]


async def test_opensips_mi_lists_and_ends_a_session(
    gateway: GatewayProcess, msrp_user: MsrpUser, tmp_path: Path
) -> None:
    await create_session(gateway, msrp_user)
    for command in ("msrp_gw_list_sessions", "msrp_gateway:list_sessions"):
        code, out = await opensips_mi(gateway, tmp_path, command)
        assert code == 0, out
        sessions = json.loads(out)
        assert len(sessions) == 1
        check_session(sessions[0], msrp_user)

    code, out = await opensips_mi(gateway, tmp_path, "msrp_gw_end_session", KEY)
    assert (code, json.loads(out)) == (0, "OK"), out
    await wait_until(lambda: msrp_user.byes == 1)
    code, out = await opensips_mi(gateway, tmp_path, "msrp_gw_list_sessions")
    assert (code, json.loads(out)) == (0, []), out

    code, out = await opensips_mi(gateway, tmp_path, "msrp_gateway:end_session", KEY)
    assert code == 1
    assert "404: Session doesn't exist" in out
    assert msrp_user.byes == 1


async def test_msrp_gw_sessions_list_and_end(gateway: GatewayProcess, msrp_user: MsrpUser) -> None:
    await create_session(gateway, msrp_user)
    code, out, err = await msrp_gw(gateway, "sessions", "list", "--json")
    assert code == 0, err
    sessions = json.loads(out)
    assert len(sessions) == 1
    check_session(sessions[0], msrp_user)

    code, out, err = await msrp_gw(gateway, "sessions", "list")
    assert code == 0, err
    header, row = out.splitlines()
    assert header.split() == [
        "KEY", "STATE", "ORIGIN", "OWNER", "FROM", "TO", "QUEUED", "AGE", "IDLE"
    ]  # fmt: skip
    assert row.split()[:4] == [KEY, "active", "msg_to_msrp", "gw-test"]

    url = f"http://{gateway.ready['mgmt']}/mi"
    code, out, err = await msrp_gw(gateway, "sessions", "end", KEY, "--url", url)
    assert code == 0, err
    assert KEY in out
    await wait_until(lambda: msrp_user.byes == 1)
    code, out, err = await msrp_gw(gateway, "sessions", "list")
    assert (code, out.strip()) == (0, "no sessions")

    code, out, err = await msrp_gw(gateway, "sessions", "end", KEY)
    assert code == 1
    assert err.strip() == "msrp-gw: 404 Session doesn't exist"


class EventsProcess:
    """`msrp-gw events` as a subprocess, read line by line."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, node: GatewayProcess, *args: str) -> EventsProcess:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gw.cli", "events", *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=node.env,
        )  # fmt: skip
        return cls(proc)

    async def wait_subscribed(self, store_url: str) -> None:
        """Pub/sub only delivers what is published while subscribed: wait for it."""
        redis = Redis.from_url(store_url)
        try:
            async with asyncio.timeout(15):
                while True:
                    counts = dict(await redis.pubsub_numsub("msrpgw:events"))
                    if counts.get(b"msrpgw:events", 0) >= 1:
                        return
                    if self.proc.returncode is not None:
                        raise AssertionError(await self.stderr())
                    await asyncio.sleep(0.05)
        finally:
            await redis.aclose()

    async def next_event(self, name: str, timeout: float = 10.0) -> dict[str, Any]:
        assert self.proc.stdout is not None
        async with asyncio.timeout(timeout):
            while True:
                line = await self.proc.stdout.readline()
                assert line, f"events ended: {await self.stderr()}"
                assert line.endswith(b"\n")
                event: dict[str, Any] = json.loads(line)
                if event["event"] == name:
                    return event

    async def stderr(self) -> str:
        assert self.proc.stderr is not None
        return (await self.proc.stderr.read()).decode()

    async def close(self) -> int:
        if self.proc.returncode is None:
            self.proc.terminate()
        return await self.proc.wait()


async def test_msrp_gw_events_prints_session_ended(
    gateway: GatewayProcess, msrp_user: MsrpUser, redis_server: RedisServer
) -> None:
    await create_session(gateway, msrp_user)
    events = await EventsProcess.start(gateway)  # store URL from the config (environment)
    try:
        await events.wait_subscribed(redis_server.url)
        code, _, err = await msrp_gw(gateway, "sessions", "end", KEY)
        assert code == 0, err
        event = await events.next_event("E_MSRP_GW_SESSION_ENDED")
    finally:
        await events.close()
    assert event["v"] == 1
    assert event["node"] == "gw-test"
    assert isinstance(event["ts"], float)
    assert event["data"] == {"key": KEY, "reason": "mi", "origin": "msg_to_msrp"}


async def test_msrp_gw_events_finds_the_embedded_store(msrp_user: MsrpUser, tmp_path: Path) -> None:
    """No store.url: `msrp-gw events` reads the embedded store's URL from ready.json."""
    node = start_gateway(msrp_user, None)
    try:
        store = node.ready["store"]
        assert store.startswith("unix://")
        events = await EventsProcess.start(node, "--count", "2")
        try:
            await events.wait_subscribed(store)
            status, handle = await msrp_user.call(node.sip("udp"), to="alice@127.0.0.1:9")
            assert status == 200 and handle is not None
            started = await events.next_event("E_MSRP_GW_SESSION_STARTED")
            code, out = await opensips_mi(node, tmp_path, "msrp_gw_end_session", KEY)
            assert code == 0, out
            ended = await events.next_event("E_MSRP_GW_SESSION_ENDED")
            async with asyncio.timeout(10):
                assert await events.proc.wait() == 0, "--count 2: exits after two events"
        finally:
            await events.close()
    finally:
        await stop(node)
    assert started["data"] == {"key": KEY, "origin": "answer"}
    assert ended["data"] == {"key": KEY, "reason": "mi", "origin": "answer"}
    assert msrp_user.byes == 1


async def test_metrics_count_sessions_messages_and_errors(
    gateway: GatewayProcess, msrp_user: MsrpUser
) -> None:
    before = await asyncio.to_thread(metrics, gateway)
    assert before["msrpgw_info"] == {(("node", "gw-test"), ("version", _version())): 1.0}
    assert before["msrpgw_sessions_created_total"] == {
        (("origin", "msg_to_msrp"),): 0.0,
        (("origin", "answer"),): 0.0,
    }
    assert before["msrpgw_sip_parse_errors_total"] == {(): 0.0}
    assert before["msrpgw_store_errors_total"] == {(): 0.0}

    await create_session(gateway, msrp_user)
    # One datagram that is not SIP: counted, and the node keeps serving.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(b"this is not SIP\r\n\r\n", gateway.sip("udp"))
    await asyncio.sleep(0.2)
    during = await asyncio.to_thread(metrics, gateway)
    assert during["msrpgw_sessions"][(("state", "active"),)] == 1.0
    assert during["msrpgw_sessions_created_total"][(("origin", "msg_to_msrp"),)] == 1.0
    assert during["msrpgw_page_messages_received_total"] == {(): 1.0}
    translated = during["msrpgw_messages_translated_total"]
    assert translated[(("direction", "page_to_msrp"), ("outcome", "delivered"))] == 1.0
    assert translated[(("direction", "page_to_msrp"), ("outcome", "failed"))] == 0.0
    assert during["msrpgw_page_replies_total"] == {(("code", "200"),): 1.0}
    assert during["msrpgw_sip_requests_received_total"][(("method", "MESSAGE"),)] == 1.0
    assert during["msrpgw_sip_parse_errors_total"] == {(): 1.0}

    code, _, err = await msrp_gw(gateway, "sessions", "end", KEY)
    assert code == 0, err
    after = await asyncio.to_thread(metrics, gateway)
    assert after["msrpgw_sessions"] == {
        (("state", "setup"),): 0.0,
        (("state", "active"),): 0.0,
        (("state", "ending"),): 0.0,
    }
    assert after["msrpgw_sessions_ended_total"] == {(("reason", "mi"),): 1.0}
    assert after["msrpgw_store_errors_total"] == {(): 0.0}


def _version() -> str:
    from gw import __version__

    return __version__
