"""docs/tutorial.md's commands, run as written (issue 15 §2): a node, `msrp-gw try` (both ways),
`msrp-gw sessions list` (one active session). Ports are moved off the defaults by environment
variables so the suite can run anywhere; the commands themselves are the tutorial's."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from tests.support.node import GatewayProcess
from tests.support.ports import free_port

ROOT = Path(__file__).parent.parent
TUTORIAL = ROOT / "docs" / "tutorial.md"


def commands() -> list[str]:
    return [c.strip() for c in re.findall(r"```sh\n(.*?)```", TUTORIAL.read_text(), re.S)]


def test_the_tutorial_runs_as_written(tmp_path: Path) -> None:
    assert commands() == [
        "./dev run",
        ".venv/bin/msrp-gw try --hold 60",
        ".venv/bin/msrp-gw sessions list",
    ], "the commands below are these: update both together"
    sip, msrp, mgmt = free_port(), free_port(), free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("MSRPGW_")},
        "MSRPGW_SIP__LISTEN": f"udp:127.0.0.1:{sip},tcp:127.0.0.1:{sip}",
        "MSRPGW_MSRP__LISTEN": f"msrp://127.0.0.1:{msrp};tcp",
        "MSRPGW_MGMT__LISTEN": f"127.0.0.1:{mgmt}",
        "MSRPGW_NODE__STATE_DIR": str(tmp_path / "state"),
    }
    node = GatewayProcess(env=env)  # `./dev run`: msrp-gw run in the venv ./dev made
    node.start()
    try:

        def cli(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "gw.cli", *args],
                capture_output=True,
                text=True,
                env=env,
                timeout=60,
                cwd=tmp_path,
            )

        trying = subprocess.Popen(
            [sys.executable, "-m", "gw.cli", "try", "--hold", "60"],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=tmp_path,
        )
        assert trying.stdout is not None
        lines = []
        for line in trying.stdout:  # until it holds the session
            lines.append(line.rstrip("\n"))
            if line.startswith("holding"):
                break
        out = "\n".join(lines)
        assert "both ways: OK" in lines, out
        assert "received 'hello from page mode' in an MSRP SEND" in out
        assert "received 'hello from session mode' in a SIP MESSAGE" in out
        listed = cli("sessions", "list")
        assert listed.returncode == 0, listed.stderr
        _, row = listed.stdout.splitlines()
        assert row.split()[:3] == ["alice@127.0.0.1-bob@127.0.0.1", "active", "msg_to_msrp"]
        trying.send_signal(signal.SIGINT)  # Ctrl-C while holding: exit 0
        assert trying.wait(30) == 0
    finally:
        assert node.stop() == 0, node.output()
