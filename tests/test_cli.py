"""The `msrp-gw` command as a user runs it."""

from __future__ import annotations

import asyncio
import subprocess
import sys

from gw.sip.endpoint import EndpointConfig, SipEndpoint
from gw.sip.transaction import Address
from gw.sip.transport import ListenSpec
from tests.support.node import GatewayProcess


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gw.cli", *args], capture_output=True, text=True, env=env, timeout=30
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
