"""Run SIPp (Debian `sip-tester`) as a third-party SIP peer on free ports."""

from __future__ import annotations

import asyncio
import shutil
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tests.support.ports import free_port

SCENARIOS = Path(__file__).resolve().parent.parent / "sip" / "sipp"


def sipp_binary() -> str:
    path = shutil.which("sipp")
    if path is None:
        raise RuntimeError("sipp not found: install Debian package sip-tester (./dev test does)")
    return path


@dataclass
class SippResult:
    returncode: int
    stdout: str
    stderr: str
    messages: str  # the -trace_msg log
    errors: str  # the -trace_err log


class Sipp:
    """One SIPp process; `start()` returns once it runs, `wait()` collects its result."""

    def __init__(
        self,
        scenario: str,
        *,
        transport: str = "u1",
        remote: tuple[str, int] | None = None,
        service: str = "bob",
        calls: int = 1,
        replace: dict[str, str] | None = None,
        extra: list[str] | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="sipp-"))
        text = (SCENARIOS / scenario).read_text()
        for key, value in (replace or {}).items():
            text = text.replace(f"@{key}@", value)
        self.scenario = self.workdir / scenario
        self.scenario.write_text(text)
        kind = "tcp" if transport.startswith("t") else "udp"
        self.port = free_port(socket.SOCK_STREAM if kind == "tcp" else socket.SOCK_DGRAM, host)
        self.host = host
        args = [
            sipp_binary(),
            "-sf",
            str(self.scenario),
            "-t",
            transport,
            "-i",
            host,
            "-p",
            str(self.port),
            "-m",
            str(calls),
            "-s",
            service,
            "-nostdin",
            "-timeout",
            "30s",
            "-trace_msg",
            "-message_file",
            str(self.workdir / "messages.log"),
            "-trace_err",
            "-error_file",
            str(self.workdir / "errors.log"),
        ]
        if remote is not None:
            args.append(f"{remote[0]}:{remote[1]}")
        self.args = args + (extra or [])
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            *self.args,
            cwd=self.workdir,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        # SIPp binds quickly; give it a moment before the other side sends.
        await asyncio.sleep(0.3)

    async def wait(self, timeout: float = 40.0) -> SippResult:
        assert self.proc is not None
        try:
            out, err = await asyncio.wait_for(self.proc.communicate(), timeout)
        except TimeoutError:
            self.proc.kill()
            out, err = await self.proc.communicate()

        def read(name: str) -> str:
            p = self.workdir / name
            return p.read_text(errors="replace") if p.exists() else ""

        return SippResult(
            self.proc.returncode if self.proc.returncode is not None else -1,
            out.decode(errors="replace"),
            err.decode(errors="replace"),
            read("messages.log"),
            read("errors.log"),
        )

    async def run(self, timeout: float = 40.0) -> SippResult:
        await self.start()
        return await self.wait(timeout)
