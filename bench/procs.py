"""Processes the harness runs: Redis, gateway nodes, the MSRP load endpoint, SIPp.

Everything binds to loopback on OS-picked ports, and every process is ended by its own
pid (process group for SIPp) when its phase is over.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from tests.support.ports import free_port

ROOT = Path(__file__).resolve().parent.parent
SIPP_DIR = Path(__file__).resolve().parent / "sipp"

__all__ = ["free_port"]  # re-exported: bench modules take ports from here


def rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except FileNotFoundError:
        pass
    return 0


def _stat_fields(pid: int | str) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (None if the process is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None


def _cpu(fields: list[str]) -> float:
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def cpu_seconds(pid: int) -> float:
    """user+system CPU time of a process (from /proc/PID/stat)."""
    fields = _stat_fields(pid)
    return _cpu(fields) if fields else 0.0


def session_cpu_seconds(sid: int) -> float:
    """user+system CPU of every live process in session `sid` (a forking server such as
    Kamailio, started with start_new_session=True, so sid = its main pid)."""
    total = 0.0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(entry)
            if fields and int(fields[3]) == sid:  # field 6, the session id
                total += _cpu(fields)
    return total


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs, from /proc/stat."""
    with open("/proc/stat") as f:
        parts = [int(x) for x in f.readline().split()[1:]]
    idle = parts[3] + (parts[4] if len(parts) > 4 else 0)
    return float(sum(parts) - idle), float(sum(parts))


def redis_binary() -> str:
    for name in ("redis-server", "valkey-server"):
        path = shutil.which(name)
        if path:
            return path
    try:
        from gw.store.embedded import server_binary

        return str(server_binary())
    except Exception as exc:  # pragma: no cover - depends on the machine
        raise RuntimeError("no redis-server: apt-get install redis-server") from exc


class RedisProc:
    """A private Redis on a free loopback port, nothing persisted."""

    def __init__(self, workdir: Path) -> None:
        self.dir = workdir / "redis"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.binary = redis_binary()
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        for _ in range(10):
            self.port = free_port(socket.SOCK_STREAM)
            argv = [
                self.binary,
                *("--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.dir)),
                *("--save", "", "--appendonly", "no", "--notify-keyspace-events", "Ex"),
            ]
            log = (self.dir / "redis.log").open("ab")
            self.proc = subprocess.Popen(argv, stdout=log, stderr=log)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break
                try:
                    if self.client().ping():
                        return
                except redis.RedisError:
                    time.sleep(0.05)
            self.stop()
        raise RuntimeError("redis did not start")

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=30)

    def version(self) -> str:
        return str(self.client().info("server").get("redis_version", "?"))

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


class NodeProc:
    """One `msrp-gw run` process configured by environment variables."""

    def __init__(
        self,
        workdir: Path,
        name: str,
        env: dict[str, str],
        wrap: list[str] | None = None,
        module: str = "gw.cli",
    ) -> None:
        self.dir = workdir / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.env = {
            **os.environ,
            "MSRPGW_NODE__ID": name,
            "MSRPGW_NODE__STATE_DIR": str(self.dir / "state"),
            "MSRPGW_SIP__LISTEN": "udp:127.0.0.1:0,tcp:127.0.0.1:0",
            "MSRPGW_MSRP__LISTEN": "msrp://127.0.0.1:0;tcp",
            "MSRPGW_MGMT__LISTEN": "127.0.0.1:0",
            **env,
        }
        self.wrap = wrap or []
        self.argv = [*self.wrap, sys.executable, "-m", module, "run"]
        self.proc: subprocess.Popen[bytes] | None = None
        self.ready: dict[str, Any] = {}
        self.log = self.dir / "node.log"

    def command(self) -> str:
        """The shell-equivalent command line (for the report)."""
        envs = [f"{k}={v}" for k, v in sorted(self.env.items()) if k.startswith("MSRPGW_")]
        return " ".join([*envs, *self.argv[len(self.wrap) :]])

    def start(self, timeout: float = 30.0) -> dict[str, Any]:
        ready = Path(self.env["MSRPGW_NODE__STATE_DIR"]) / "ready.json"
        with contextlib.suppress(FileNotFoundError):
            ready.unlink()
        self.proc = subprocess.Popen(
            self.argv,
            env=self.env,
            cwd=ROOT,
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ready.exists():
                with contextlib.suppress(ValueError):
                    self.ready = json.loads(ready.read_text())
                    return self.ready
            if self.proc.poll() is not None:
                raise RuntimeError(f"node exited {self.proc.returncode}: {self.log.read_text()}")
            time.sleep(0.05)
        raise RuntimeError(f"node not ready: {self.log.read_text()[-2000:]}")

    @property
    def pid(self) -> int:
        """The gateway's own pid (from ready.json: the wrapper, if any, has another)."""
        return int(self.ready["pid"])

    def sip(self, transport: str = "udp") -> tuple[str, int]:
        for item in self.ready["sip"]:
            t, host, port = item.rsplit(":", 2)
            if t == transport.lower():
                return host, int(port)
        raise KeyError(transport)

    def kill(self) -> None:
        """SIGKILL: skip the drain (BYE to every session), for nodes holding many sessions."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    def stop(self, timeout: float = 60.0) -> int | None:
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait()


class PeerProc:
    """The MSRP load endpoint (bench/peer.py), driven by JSON lines."""

    def __init__(self, workdir: Path) -> None:
        self.log = workdir / "peer.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.peer"],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log.open("wb"),
            start_new_session=True,
        )
        self.info = self._read(30)
        self.pid = int(self.info["pid"])
        self.sip_port = int(self.info["sip_port"])

    def _read(self, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            raise TimeoutError(f"peer did not answer in {timeout}s")
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"peer exited: {self.log.read_text()[-2000:]}")
        reply: dict[str, Any] = json.loads(line)
        return reply

    def cmd(self, timeout: float = 120.0, **params: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(params) + "\n").encode())
        self.proc.stdin.flush()
        reply = self._read(timeout)
        if "error" in reply:
            raise RuntimeError(f"peer {params.get('cmd')}: {reply['error']}")
        return reply

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.cmd(timeout=20, cmd="quit")
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def write_inf(path: Path, rows: list[tuple[str, str]]) -> Path:
    with path.open("w") as f:
        f.write("SEQUENTIAL\n")
        for a, b in rows:
            f.write(f"{a};{b};\n")
    return path


def scenario(workdir: Path, name: str, replace: dict[str, str]) -> Path:
    text = (SIPP_DIR / name).read_text()
    for key, value in replace.items():
        text = text.replace(f"@{key}@", value)
    out = workdir / f"{Path(name).stem}-{abs(hash(tuple(sorted(replace.items())))) % 10**8}.xml"
    out.write_text(text)
    return out


@dataclass
class SippRun:
    argv: list[str]
    returncode: int
    wall_s: float
    successful: int
    failed: int
    retransmissions: int
    elapsed_s: float = 0.0
    unfinished: int = 0
    window: dict[str, float] = field(default_factory=dict)
    rtts_ms: list[float] = field(default_factory=list)
    stderr: str = ""
    workdir: Path | None = None

    @property
    def total(self) -> int:
        return self.successful + self.failed


def sipp_binary() -> str:
    path = shutil.which("sipp")
    if path is None:
        raise RuntimeError("sipp not found: apt-get install sip-tester")
    return path


def sipp_version() -> str:
    out = subprocess.run([sipp_binary(), "-v"], capture_output=True, text=True, check=False)
    for line in (out.stdout + out.stderr).splitlines():
        if "SIPp v" in line:
            return line.strip().split()[1].rstrip(",")
    return "?"


def _last_stat(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    with path.open(newline="") as f:
        rows = list(csv.reader(f, delimiter=";"))
    if len(rows) < 2:
        return {}
    return dict(zip(rows[0], rows[-1], strict=False))


def _window(stat: Path, warmup: float, send_s: float) -> dict[str, float]:
    """Calls done in [warmup, send_s] (1 s stat periods), and failures recorded from warmup on
    (a call sent in the window fails seconds later, after its retransmissions)."""
    if not stat.exists():
        return {}
    with stat.open(newline="") as f:
        rows = list(csv.reader(f, delimiter=";"))
    if len(rows) < 2:
        return {}
    head = rows[0]
    try:
        i_t, i_ok, i_fail = (
            head.index("CurrentTime"),
            head.index("SuccessfulCall(P)"),
            head.index("FailedCall(P)"),
        )
        t0 = float(rows[1][head.index("StartTime")].split("\t")[-1])
    except (ValueError, IndexError):
        return {}
    ok = failed = 0
    first = last = None
    for row in rows[1:]:
        with contextlib.suppress(ValueError, IndexError):
            t = float(row[i_t].split("\t")[-1]) - t0
            if t < warmup + 0.5:  # a period ending here started before the window
                continue
            failed += int(row[i_fail] or 0)
            if t <= send_s + 0.5:
                ok += int(row[i_ok] or 0)
                first = t - 1.0 if first is None else first
                last = t
    span = (last - first) if first is not None and last is not None else 0.0
    return {"ok": ok, "failed": failed, "span_s": span}


def run_sipp_uac(
    workdir: Path,
    remote: tuple[str, int],
    inf: Path,
    *,
    calls: int,
    rate: float | None = None,
    users: int | None = None,
    body: str = "hello",
    transport: str = "u1",
    timeout_ms: int = 5000,
    max_seconds: float = 120.0,
    duration: float | None = None,
    warmup: float = 0.0,
    extra: list[str] | None = None,
) -> SippRun:
    """Send `calls` MESSAGEs at `rate`/s (open loop), or keep `users` in flight (closed
    loop) until `calls` are done or `duration` seconds have passed."""
    run_dir = Path(tempfile.mkdtemp(prefix="sipp-", dir=workdir))
    sf = scenario(run_dir, "msg_uac.xml", {"BODY": body, "TIMEOUT": str(timeout_ms)})
    stat = run_dir / "stat.csv"
    port = free_port(socket.SOCK_STREAM if transport.startswith("t") else socket.SOCK_DGRAM)
    argv = [
        sipp_binary(),
        *("-sf", str(sf), "-inf", str(inf), "-t", transport),
        *("-i", "127.0.0.1", "-p", str(port), "-m", str(calls)),
        *("-nostdin", "-nd", "-trace_rtt", "-rtt_freq", "1"),
        *("-trace_stat", "-stf", str(stat), "-fd", "1"),
        *("-max_non_invite_retrans", "3"),
        *("-timeout", f"{int(max_seconds)}s"),
        *("-buff_size", str(4 << 20)),
    ]
    if users:
        argv += ["-users", str(users)]
        if duration is not None:
            argv[argv.index("-timeout") + 1] = f"{int(duration * 1000)}ms"
    else:
        assert rate is not None
        argv += ["-r", str(rate), "-rp", "1000", "-l", str(max(100, int(rate * 2)))]
    argv += extra or []
    argv.append(f"{remote[0]}:{remote[1]}")
    t0 = time.perf_counter()
    proc = subprocess.run(
        argv,
        cwd=run_dir,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=max_seconds + 30,
        check=False,
    )
    wall = time.perf_counter() - t0
    last = _last_stat(stat)
    elapsed = wall
    with contextlib.suppress(KeyError, ValueError, IndexError):
        start = float(last["StartTime"].split("\t")[-1])
        end = float(last["CurrentTime"].split("\t")[-1])
        elapsed = end - start
    rtts: list[float] = []
    for rtt_file in run_dir.glob("*_rtt.csv"):
        with rtt_file.open() as f:
            for line in f:
                parts = line.strip().split(";")
                if len(parts) >= 2 and parts[1] and parts[1][0].isdigit():
                    with contextlib.suppress(ValueError):
                        # Date_ms: ms since SIPp started; keep the measurement window only
                        if float(parts[0]) >= warmup * 1000:
                            rtts.append(float(parts[1]))
    window = _window(stat, warmup, (calls / rate) if rate else (duration or 0.0))
    return SippRun(
        argv=argv,
        returncode=proc.returncode,
        wall_s=wall,
        successful=int(last.get("SuccessfulCall(C)", 0) or 0),
        failed=int(last.get("FailedCall(C)", 0) or 0),
        retransmissions=int(last.get("Retransmissions(C)", 0) or 0),
        elapsed_s=elapsed,
        unfinished=int(last.get("CurrentCall", 0) or 0),
        window=window,
        rtts_ms=rtts,
        stderr=proc.stderr.decode(errors="replace")[-2000:],
        workdir=run_dir,
    )


class SippUas:
    """A SIPp MESSAGE UAS in the background (the page-mode side of SEND -> MESSAGE)."""

    def __init__(self, workdir: Path, transport: str = "u1") -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="sipp-uas-", dir=workdir))
        sf = scenario(self.dir, "msg_uas.xml", {})
        self.stat = self.dir / "stat.csv"
        self.port = free_port()
        self.argv = [
            sipp_binary(),
            *("-sf", str(sf), "-t", transport, "-i", "127.0.0.1", "-p", str(self.port)),
            *("-nostdin", "-nd", "-trace_stat", "-stf", str(self.stat), "-fd", "1"),
            *("-buff_size", str(4 << 20), "-timeout", "900s"),
        ]
        self.proc = subprocess.Popen(
            self.argv,
            cwd=self.dir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=(self.dir / "stderr.log").open("wb"),
            start_new_session=True,
        )
        time.sleep(0.3)
        if self.proc.poll() is not None:
            raise RuntimeError(f"sipp uas exited: {(self.dir / 'stderr.log').read_text()}")

    def counts(self) -> dict[str, int]:
        last = _last_stat(self.stat)
        return {
            "successful": int(last.get("SuccessfulCall(C)", 0) or 0),
            "failed": int(last.get("FailedCall(C)", 0) or 0),
        }

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
