"""Issue 16's attacks, measured on a node of any commit: what it holds and how long it takes
to answer. Run it for two commits and compare (docs/benchmarks.md, "Hardening").

    python -m bench.hardening [--code DIR] [--skip-idle]

`--code DIR`: a checkout (a worktree of another commit) whose `gw` the node runs; the
attacking clients are this checkout's. Each figure is taken on a fresh node with an embedded
store; nothing else should run meanwhile for the memory figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench.procs import rss_bytes
from gw.msrp.frame import Frame, serialize
from gw.msrp.uri import new_transaction_id, parse_msrp_uri
from tests.support.msrp_user import MsrpUser

HERE = Path(__file__).resolve().parent.parent


class Node:
    def __init__(self, code: Path, **env: str) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="msrpgw-hard-"))
        state = self.dir / "state"
        self.env = {
            **os.environ,
            "MSRPGW_NODE__STATE_DIR": str(state),
            "MSRPGW_SIP__LISTEN": "udp:127.0.0.1:0,tcp:127.0.0.1:0",
            "MSRPGW_MSRP__LISTEN": "msrp://127.0.0.1:0;tcp",
            "MSRPGW_MGMT__LISTEN": "127.0.0.1:0",
            "MSRPGW_LOG__LEVEL": "warning",
            **env,
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gw.cli", "run"],
            cwd=code,
            env=self.env,
            stdout=(self.dir / "node.log").open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        ready = state / "ready.json"
        deadline = time.monotonic() + 30
        while not ready.exists():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError((self.dir / "node.log").read_text()[-2000:])
            time.sleep(0.05)
        time.sleep(0.1)
        self.ready: dict[str, Any] = json.loads(ready.read_text())

    def sip(self, transport: str) -> tuple[str, int]:
        for item in self.ready["sip"]:
            t, host, port = item.rsplit(":", 2)
            if t == transport:
                return host, int(port)
        raise KeyError(transport)

    @property
    def rss_mib(self) -> float:
        return rss_bytes(int(self.ready["pid"])) / 2**20

    def mi(self, method: str) -> Any:
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method}).encode()
        request = urllib.request.Request(
            f"http://{self.ready['mgmt']}/mi", body, {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=10) as reply:
            return json.loads(reply.read()).get("result")

    def healthz(self) -> int:
        try:
            with urllib.request.urlopen(f"http://{self.ready['mgmt']}/healthz", timeout=3) as r:
                return int(r.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)
        except OSError:
            return 0

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


def sessions_listed(node: Node) -> int:
    result = node.mi("msrp_gw_list_sessions")
    items = result.get("Sessions", []) if isinstance(result, dict) else result
    return len(items or [])


async def replacement(code: Path) -> dict[str, Any]:
    """A's SIP side is silent (its Contact swallows the BYE), B INVITEs for the same key:
    seconds until B is answered."""
    node = Node(code)
    user = MsrpUser()
    await user.start()
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    try:
        contact = f"sip:bob@127.0.0.1:{silent.getsockname()[1]}"
        status, _ = await user.call(node.sip("udp"), to="alice@127.0.0.1:9", contact=contact)
        started = time.monotonic()
        offered = await asyncio.wait_for(
            user.offer(node.sip("udp"), to="alice@127.0.0.1:9", contact=contact), 60
        )
        return {"first": status, "second": offered.status, "answer_s": time.monotonic() - started}
    finally:
        silent.close()
        await user.close()
        node.stop()


async def bad_path(code: Path) -> dict[str, Any]:
    node = Node(code)
    user = MsrpUser()
    await user.start()
    try:
        assert user.sip is not None
        sdp = (
            b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            b"m=message 7 TCP/MSRP *\r\na=accept-types:text/plain\r\na=path:garbage!!\r\n"
        )
        from gw.sip.transaction import Address

        req = user.sip.new_request(
            "INVITE",
            f"sip:alice@127.0.0.1:{node.sip('udp')[1]}",
            from_=f"<sip:bob@127.0.0.1:{user.sip_port}>",
            to="<sip:alice@127.0.0.1:9>",
            body=sdp,
            content_type="application/sdp",
            headers=[("Contact", f"<{user.sip.contact_uri('UDP')}>")],
        )
        try:
            response, _ = await asyncio.wait_for(
                user.sip.invite(req, Address("UDP", *node.sip("udp"))), 10
            )
            answer = f"{response.status} {response.reason}"
        except TimeoutError:
            answer = "no final answer in 10 s"
        log = (node.dir / "node.log").read_text()
        return {
            "answer": answer,
            "sessions_listed": sessions_listed(node),
            "traceback": "Traceback" in log,
        }
    finally:
        await user.close()
        node.stop()


async def reassembly(code: Path, sessions: int) -> dict[str, Any]:
    """`sessions` sessions, each sending 64 one-byte chunks that declare `1-1/65536`."""
    node = Node(code)
    user = MsrpUser()
    await user.start()
    conns = []
    try:
        before = node.rss_mib
        sent = 0
        for i in range(sessions):
            offered = await user.offer(node.sip("udp"), to="alice@127.0.0.1:9", from_user=f"a{i}")
            assert offered.media is not None, offered.response
            gw_uri = parse_msrp_uri(offered.media.path[-1])
            reader, writer = await asyncio.open_connection(gw_uri.host, gw_uri.port)
            conns.append(writer)
            frames = [Frame.request("SEND", [gw_uri], [offered.local_uri])]
            for _ in range(64):
                frames.append(
                    Frame.request(
                        "SEND",
                        [gw_uri],
                        [offered.local_uri],
                        headers=[("Message-ID", new_transaction_id()), ("Byte-Range", "1-1/65536")],
                        body=b"x",
                        content_type="text/plain",
                        flag="+",
                    )
                )
            writer.write(b"".join(serialize(f) for f in frames))
            await writer.drain()
            sent += len(frames) - 1
            data = b""
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    while data.count(b"\r\n-------") < len(frames):
                        chunk = await reader.read(65536)
                        if not chunk:
                            break
                        data += chunk
        await asyncio.sleep(1.0)
        return {
            "sessions": sessions,
            "bytes_sent": sent,
            "rss_growth_mib": round(node.rss_mib - before, 1),
        }
    finally:
        for w in conns:
            w.close()
        await user.close()
        node.stop()


async def idle_connections(code: Path, count: int, wait: float) -> dict[str, Any]:
    """`count` idle SIP TCP connections and one that sends a header a byte a second: how
    many the node still holds after `wait` seconds, and /healthz under 130 idle management
    connections."""
    node = Node(code)
    held: list[asyncio.StreamWriter] = []
    readers: list[asyncio.StreamReader] = []
    try:
        for _ in range(count):
            try:
                r, w = await asyncio.open_connection(*node.sip("tcp"))
            except OSError:
                break
            readers.append(r)
            held.append(w)
        # from another address: the per-address share must not be what closes it
        slow_r, slow_w = await asyncio.open_connection(
            *node.sip("tcp"), local_addr=("127.0.0.2", 0)
        )
        host, port = node.ready["mgmt"].rsplit(":", 1)
        mgmt = [await asyncio.open_connection(host, int(port)) for _ in range(130)]
        await asyncio.sleep(0.2)
        health = [await asyncio.to_thread(node.healthz) for _ in range(20)]
        head = b"MESSAGE sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1;branch=z9hG4bKx\r\n"
        slow_closed_at = None
        started = time.monotonic()
        i = 0
        while time.monotonic() - started < wait:
            if slow_closed_at is None:
                try:
                    slow_w.write(head[i % len(head) : i % len(head) + 1])
                    await slow_w.drain()
                except ConnectionError:
                    slow_closed_at = time.monotonic() - started
                if slow_r.at_eof() or slow_w.is_closing():
                    slow_closed_at = slow_closed_at or time.monotonic() - started
            i += 1
            await asyncio.sleep(1.0)
        still = 0
        for r in readers:
            with contextlib.suppress(TimeoutError, ConnectionError):
                async with asyncio.timeout(0.01):
                    if await r.read(1) == b"":
                        continue
            if not r.at_eof():
                still += 1
        for _, w in mgmt:
            w.close()
        return {
            "opened": len(held),
            "held_after_s": wait,
            "still_held": still,
            "slowloris_closed_after_s": None if slow_closed_at is None else round(slow_closed_at),
            "healthz_ok_of_20_with_130_idle": sum(1 for h in health if h == 200),
        }
    finally:
        for w in held:
            w.close()
        node.stop()


async def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.hardening")
    ap.add_argument("--code", type=Path, default=HERE)
    ap.add_argument("--idle-wait", type=float, default=125.0)
    ap.add_argument("--skip-idle", action="store_true")
    args = ap.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    code = args.code.resolve()
    out: dict[str, Any] = {"code": str(code)}
    out["bad_path"] = await bad_path(code)
    out["replacement"] = await replacement(code)
    out["reassembly_40"] = await reassembly(code, 40)
    out["reassembly_150"] = await reassembly(code, 150)
    if not args.skip_idle:
        out["connections"] = await idle_connections(code, 2000, args.idle_wait)
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
