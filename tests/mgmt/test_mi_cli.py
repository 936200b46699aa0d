"""OpenSIPS's own MI client (`opensips-mi -t http`, PyPI `opensips`) works unchanged against /mi.

The MI commands are a fake with the gateway's names and reply shapes; the real ones are
registered by the gateway on `MgmtServer.mi`.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gw.mgmt import MgmtServer, MiError, MiRegistry, param_str
from gw.mgmt.mi import MiParams

KEY = "alice@opensips.org-bob@opensips.org"


def _opensips_mi() -> str:
    exe = Path(sys.executable).with_name("opensips-mi")
    found = str(exe) if exe.exists() else shutil.which("opensips-mi")
    if found is None:
        pytest.skip("opensips-mi not installed (PyPI 'opensips', a test dependency)")
    return found


def register_fake_gateway(mi: MiRegistry, sessions: dict[str, str]) -> None:
    async def list_sessions(params: MiParams) -> dict[str, Any]:
        return {"Sessions": [{"key": k, "state": s} for k, s in sessions.items()]}

    async def end_session(params: MiParams) -> str:
        key = param_str(params, "key")
        if sessions.pop(key, None) is None:
            raise MiError(404, "Session doesn't exist")
        return "OK"

    mi.register(
        "msrp_gw_list_sessions", list_sessions, aliases=["msrp_gateway:list_sessions"], params=[()]
    )
    mi.register(
        "msrp_gw_end_session", end_session, aliases=["msrp_gateway:end_session"], params=[("key",)]
    )


@pytest.fixture
async def gw_server() -> AsyncIterator[tuple[MgmtServer, dict[str, str]]]:
    sessions = {KEY: "established", "carol@x-dave@y": "pending"}
    srv = MgmtServer("127.0.0.1:0")
    register_fake_gateway(srv.mi, sessions)
    await srv.start()
    try:
        yield srv, sessions
    finally:
        await srv.close()


async def run_cli(srv: MgmtServer, tmp_path: Path, *args: str) -> tuple[int, str]:
    """`opensips-mi -t http -i HOST -p PORT ARGS...` (it POSTs to http://HOST:PORT/mi)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENSIPS_MI_")}
    proc = await asyncio.create_subprocess_exec(
        _opensips_mi(),
        "-t", "http", "-i", srv.host, "-p", str(srv.port), *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=tmp_path,  # it reads ./.env: keep a stray one out
        env=env,
    )  # fmt: skip
    async with asyncio.timeout(30):
        out, _ = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode()


@pytest.mark.parametrize("command", ["msrp_gw_list_sessions", "msrp_gateway:list_sessions"])
async def test_list_sessions(
    gw_server: tuple[MgmtServer, dict[str, str]], tmp_path: Path, command: str
) -> None:
    srv, _ = gw_server
    code, out = await run_cli(srv, tmp_path, command)
    assert code == 0, out
    assert json.loads(out) == {
        "Sessions": [
            {"key": KEY, "state": "established"},
            {"key": "carol@x-dave@y", "state": "pending"},
        ]
    }


async def test_end_session_positional_key(
    gw_server: tuple[MgmtServer, dict[str, str]], tmp_path: Path
) -> None:
    srv, sessions = gw_server
    code, out = await run_cli(srv, tmp_path, "msrp_gw_end_session", KEY)
    assert (code, json.loads(out)) == (0, "OK")
    assert KEY not in sessions
    code, out = await run_cli(srv, tmp_path, "msrp_gw_list_sessions")
    assert [s["key"] for s in json.loads(out)["Sessions"]] == ["carol@x-dave@y"]


async def test_end_session_named_key_via_alias(
    gw_server: tuple[MgmtServer, dict[str, str]], tmp_path: Path
) -> None:
    srv, sessions = gw_server
    code, out = await run_cli(
        srv, tmp_path, "msrp_gateway:end_session", "-j", json.dumps({"key": "carol@x-dave@y"})
    )
    assert (code, json.loads(out)) == (0, "OK")
    assert list(sessions) == [KEY]


async def test_end_unknown_session_reports_mi_error(
    gw_server: tuple[MgmtServer, dict[str, str]], tmp_path: Path
) -> None:
    srv, sessions = gw_server
    code, out = await run_cli(srv, tmp_path, "msrp_gw_end_session", "no-such-key")
    assert code == 1
    assert "404: Session doesn't exist" in out
    assert len(sessions) == 2


async def test_cli_errors_for_bad_calls(
    gw_server: tuple[MgmtServer, dict[str, str]], tmp_path: Path
) -> None:
    srv, _ = gw_server
    code, out = await run_cli(srv, tmp_path, "msrp_gw_no_such_command")
    assert code == 1 and "-32601: Method not found" in out
    code, out = await run_cli(srv, tmp_path, "msrp_gw_end_session")
    assert code == 1 and "-32602: Invalid params (Too few or too many parameters)" in out


async def test_library_client(gw_server: tuple[MgmtServer, dict[str, str]]) -> None:
    """The `opensips.mi.OpenSIPSMI` class the CLI is built on, used as a library."""
    from opensips.mi import OpenSIPSMI, OpenSIPSMIException  # type: ignore[import-untyped]

    srv, _ = gw_server
    mi = OpenSIPSMI("http", url=f"http://{srv.host}:{srv.port}/mi")
    reply = await asyncio.to_thread(mi.execute, "msrp_gw_list_sessions")
    assert len(reply["Sessions"]) == 2
    assert await asyncio.to_thread(mi.execute, "msrp_gw_end_session", {"key": KEY}) == "OK"
    with pytest.raises(OpenSIPSMIException, match="404: Session doesn't exist"):
        await asyncio.to_thread(mi.execute, "msrp_gw_end_session", [KEY])
