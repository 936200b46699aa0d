"""Start real `msrp-gw run` processes, as operators do, on free ports."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any


class GatewayProcess:
    def __init__(
        self,
        config: str = "",
        env: dict[str, str] | None = None,
        wrap: list[str] | None = None,
        code: Path | None = None,
    ) -> None:
        self.wrap = wrap or []  # argv before the node's own (e.g. prlimit)
        self.code = code  # a directory holding another `gw` package to run (an older release)
        self.dir = Path(tempfile.mkdtemp(prefix="msrpgw-node-"))
        self.config = self.dir / "gw.toml"
        self.config.write_text(config)
        self.env = {**os.environ, **(env or {})}
        self.env.setdefault("MSRPGW_NODE__STATE_DIR", str(self.dir / "state"))
        self.env.setdefault("MSRPGW_SIP__LISTEN", "udp:127.0.0.1:0,tcp:127.0.0.1:0")
        self.env.setdefault("MSRPGW_MGMT__LISTEN", "127.0.0.1:0")
        self.env.setdefault("MSRPGW_MSRP__LISTEN", "msrp://127.0.0.1:0;tcp")
        self.log = self.dir / "node.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.ready: dict[str, Any] = {}

    def start(self, timeout: float = 20.0) -> dict[str, Any]:
        ready = Path(self.env["MSRPGW_NODE__STATE_DIR"]) / "ready.json"
        self.proc = subprocess.Popen(
            [*self.wrap, sys.executable, "-m", "gw.cli", "run", "--config", str(self.config)],
            env=self.env,
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
            cwd=self.code,  # `python -m` puts the working directory first on sys.path
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ready.exists():
                self.ready = json.loads(ready.read_text())
                return self.ready
            if self.proc.poll() is not None:
                raise RuntimeError(f"node exited {self.proc.returncode}: {self.log.read_text()}")
            time.sleep(0.05)
        raise RuntimeError(f"node not ready: {self.log.read_text()}")

    def sip(self, transport: str) -> tuple[str, int]:
        for item in self.ready["sip"]:
            t, host, port = item.rsplit(":", 2)
            if t == transport.lower():
                return host, int(port)
        raise KeyError(transport)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

    def metric(self, name: str) -> float:
        """The value of the unlabelled series `name` on the node's /metrics."""
        with urllib.request.urlopen(f"http://{self.ready['mgmt']}/metrics", timeout=5) as r:
            text = r.read().decode()
        found = re.search(rf"^{name} (\S+)$", text, re.M)
        assert found, f"{name} not in /metrics"
        return float(found.group(1))

    def mi(self, method: str) -> Any:
        """An MI command's result, over the management API's JSON-RPC."""
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method}).encode()
        request = urllib.request.Request(
            f"http://{self.ready['mgmt']}/mi", body, {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=5) as reply:
            return json.loads(reply.read())["result"]

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def start_test_node(
    store_url: str, node_id: str, route_to: int | None, code: Path | None = None, **env: str
) -> GatewayProcess:
    """A node as the end-to-end tests run it: short SIP timers (T1 0.1 s), 3 s set-up and
    5 s delivery timeouts, its INVITEs routed to 127.0.0.1:`route_to` (an MSRP user or
    another gateway) when given; `code`: another release's source tree to run. `env`
    overrides any of it."""
    base = {
        "MSRPGW_STORE__URL": store_url,
        "MSRPGW_NODE__ID": node_id,
        "MSRPGW_SIP__T1": "0.1",
        "MSRPGW_SIP__T2": "0.4",
        "MSRPGW_GATEWAY__SETUP_TIMEOUT": "3",
        "MSRPGW_GATEWAY__DELIVERY_TIMEOUT": "5",
    }
    if route_to is not None:
        base["MSRPGW_GATEWAY__RURI_REWRITE"] = f"sip:{{user}}@127.0.0.1:{route_to}"
    node = GatewayProcess(env={**base, **env}, code=code)
    node.start()
    return node


async def stop_nodes(*nodes: GatewayProcess) -> None:
    """SIGTERM each node; each must drain and exit 0."""
    for node in nodes:
        code = await asyncio.to_thread(node.stop)
        assert code == 0, node.output()
