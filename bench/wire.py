"""On-the-wire SIP response times from a loopback capture (tcpdump), microsecond precision.

SIPp's own response times come from a coarse clock (4 ms steps on this kernel), too coarse
for a 10 ms p99 target. When tcpdump is installed, the harness captures the node's SIP UDP
port during a run and pairs each MESSAGE sent to the node (first transmission) with the
node's final response, by Call-ID and CSeq: that is the gateway's response time as a peer
sees it, independent of the load generator's scheduling.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import struct
import subprocess
import time
from pathlib import Path

__all__ = ["Capture", "response_times"]


def tcpdump_binary() -> str | None:
    return shutil.which("tcpdump")


class Capture:
    """tcpdump on `lo` for UDP to/from one port, written to a pcap file."""

    def __init__(self, path: Path, port: int, snaplen: int = 1024) -> None:
        self.path = path
        binary = tcpdump_binary()
        if binary is None:
            raise RuntimeError("tcpdump not found")
        self.proc = subprocess.Popen(
            [
                binary,
                *("-i", "lo", "-n", "-U", "-B", "32768", "-s", str(snaplen)),
                *("-w", str(path), "udp", "port", str(port)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        # tcpdump prints "listening on lo" once the capture is armed
        assert self.proc.stderr is not None
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line or b"listening on" in line:
                break
        time.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stderr is not None:
            with contextlib.suppress(Exception):
                self.proc.stderr.close()


def _packets(path: Path) -> list[tuple[float, int, int, bytes]]:
    """(timestamp, src port, dst port, UDP payload) for IPv4/UDP frames of a pcap file."""
    data = path.read_bytes()
    if len(data) < 24:
        return []
    magic = data[:4]
    if magic == b"\xd4\xc3\xb2\xa1":
        endian, scale = "<", 1e-6
    elif magic == b"\xa1\xb2\xc3\xd4":
        endian, scale = ">", 1e-6
    elif magic == b"\x4d\x3c\xb2\xa1":
        endian, scale = "<", 1e-9
    elif magic == b"\xa1\xb2\x3c\x4d":
        endian, scale = ">", 1e-9
    else:
        raise ValueError("not a pcap file")
    linktype = struct.unpack(endian + "I", data[20:24])[0]
    link_len = {1: 14, 113: 16, 276: 20, 0: 4}.get(linktype, 14)
    out: list[tuple[float, int, int, bytes]] = []
    off = 24
    rec = struct.Struct(endian + "IIII")
    n = len(data)
    while off + 16 <= n:
        sec, frac, incl, _orig = rec.unpack_from(data, off)
        off += 16
        frame = data[off : off + incl]
        off += incl
        ip = frame[link_len:]
        if len(ip) < 28 or ip[0] >> 4 != 4 or ip[9] != 17:
            continue
        ihl = (ip[0] & 0x0F) * 4
        sport, dport = struct.unpack_from("!HH", ip, ihl)
        out.append((sec + frac * scale, sport, dport, ip[ihl + 8 :]))
    return out


def _header(payload: bytes, names: tuple[bytes, ...]) -> bytes | None:
    for line in payload.split(b"\r\n"):
        if not line:
            return None
        name, sep, value = line.partition(b":")
        if sep and name.strip().lower() in names:
            return value.strip()
    return None


def response_times(
    path: Path, node_port: int, method: bytes = b"MESSAGE", warmup: float = 0.0
) -> list[float]:
    """Milliseconds from the first transmission of each `method` request sent to `node_port`
    to the node's first final response for it; requests sent in the first `warmup` seconds
    of the capture are left out."""
    first_req: dict[tuple[bytes, bytes], float] = {}
    answered: dict[tuple[bytes, bytes], float] = {}
    for ts, sport, dport, payload in _packets(path):
        if dport == node_port and payload.startswith(method + b" "):
            call_id = _header(payload, (b"call-id", b"i"))
            cseq = _header(payload, (b"cseq",))
            if call_id is not None and cseq is not None:
                first_req.setdefault((call_id, cseq), ts)
        elif sport == node_port and payload.startswith(b"SIP/2.0 "):
            status = payload[8:11]
            if status[:1] in (b"1",):
                continue
            call_id = _header(payload, (b"call-id", b"i"))
            cseq = _header(payload, (b"cseq",))
            if call_id is None or cseq is None or not cseq.endswith(method):
                continue
            answered.setdefault((call_id, cseq), ts)
    return [
        (answered[k] - t) * 1000.0
        for k, t in first_req.items()
        if k in answered and answered[k] >= t
    ]
