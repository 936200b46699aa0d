"""Run baresip (Debian `baresip` 1.0.0) as a third-party page-mode SIP client.

One process per `Baresip`, on free loopback ports, with a private config directory
(``baresip -f DIR``): one local account (``regint=0``: it never registers), one contact,
and no audio or video modules. It is driven and observed through three channels:

- **ctrl_tcp** (netstring JSON ``{"command": ..., "params": ..., "token": ...}``) runs
  commands. In 1.0.0, ``message TEXT`` comes from the `contact` module and sends TEXT to the
  *current contact* (the one contact we configure): it takes no URI. Later baresip versions
  take ``message URI TEXT``; given to 1.0.0, the URI becomes the first word of the body.
  Leading blanks of TEXT are dropped. The command line holds 1,023 bytes, so TEXT holds 1,015
  bytes at most; a longer one fails with ``message_send(...) failed (Invalid argument)``.
  ctrl_tcp reports neither the responses to our MESSAGEs nor the MESSAGEs we receive.
- the **console** (`cons` UI module, a TCP connection) is where the client shows a
  received MESSAGE, as `menu` prints it: ``\\r<From URI>: "<text>"\\n``. (The `stdio` UI needs a
  terminal on stdin, and buffers its output when stdout is a file.)
- the **SIP trace** (``-s``) on stdout: every request and response sent or received, which is
  how the response codes the client got (and sent) are seen. A final response >= 300 to a
  MESSAGE we sent is also printed on stderr, as `` <code> <reason>``.

Missing binary: the test is skipped, and fails in CI (``CI=true``), as for Kamailio.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import pytest

from tests.support.ports import free_port
from tests.support.procs import stop_group

_MODULE_DIRS = ("/usr/lib/baresip/modules", "/usr/local/lib/baresip/modules")
# One block of the -s trace: "\x1b[36;1m#\n<TRANSPORT> <src> -> <dst>\n<message>\x1b[;m\n"
_TRACE = re.compile(rb"\x1b\[36;1m#\n(\w+) (\S+) -> (\S+)\n(.*?)\x1b\[;m\n", re.DOTALL)
# menu.so's line for a received MESSAGE, through the cons UI: '\r<peer>: "<text>"\n'
_SHOWN = re.compile(rb'\r([^\r\n]*?): "([^\n]*)"\n')
_BIND_FAILED = "Address already in use"

T = TypeVar("T")


class BaresipNotFound(RuntimeError):
    pass


class BaresipError(RuntimeError):
    """A ctrl_tcp command answered ``"ok": false`` (its ``data`` is the message)."""


def baresip_binary() -> str:
    path = shutil.which("baresip")
    if path is None or not os.access(path, os.X_OK):
        raise BaresipNotFound("baresip not found: install Debian package baresip")
    return path


def module_dir() -> str:
    for candidate in _MODULE_DIRS:
        if os.path.exists(os.path.join(candidate, "ctrl_tcp.so")):
            return candidate
    raise BaresipNotFound(f"baresip modules (ctrl_tcp.so) not found in {_MODULE_DIRS}")


def require_baresip() -> tuple[str, str]:
    """The binary and its module directory; skip without them (fail in CI)."""
    try:
        return baresip_binary(), module_dir()
    except BaresipNotFound as exc:
        _no_peer(str(exc))


def _no_peer(reason: str) -> NoReturn:
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"CI: {reason}", pytrace=False)
    pytest.skip(reason)


@dataclass(frozen=True, slots=True)
class TraceEntry:
    """One SIP message of baresip's -s trace, as it was on the wire."""

    transport: str  # "UDP", "TCP"
    src: str  # "127.0.0.1:5060"
    dst: str
    start_line: str
    headers: tuple[tuple[str, str], ...]
    body: bytes

    @classmethod
    def parse(cls, transport: bytes, src: bytes, dst: bytes, raw: bytes) -> TraceEntry:
        head, _, body = raw.partition(b"\r\n\r\n")
        lines = head.decode("utf-8", "replace").split("\r\n")
        headers = []
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers.append((name.strip(), value.strip()))
        return cls(transport.decode(), src.decode(), dst.decode(), lines[0], tuple(headers), body)

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None

    @property
    def is_request(self) -> bool:
        return not self.start_line.startswith("SIP/2.0 ")

    @property
    def method(self) -> str:
        return self.start_line.split(" ", 1)[0] if self.is_request else ""

    @property
    def status(self) -> int:
        return 0 if self.is_request else int(self.start_line.split(" ", 2)[1])

    @property
    def reason(self) -> str:
        return "" if self.is_request else self.start_line.split(" ", 2)[2]

    @property
    def transaction(self) -> tuple[str, str]:
        """(Call-ID, CSeq): the same for a request, its retransmissions and its responses."""
        return self.header("Call-ID") or "", self.header("CSeq") or ""


@dataclass(frozen=True, slots=True)
class Shown:
    """A received MESSAGE as the client showed it: the sender (From URI) and the text."""

    peer: str
    text: str


@dataclass(frozen=True, slots=True)
class Sent:
    """A MESSAGE the client sent (first transmission) and the final response it got."""

    request: TraceEntry
    response: TraceEntry

    @property
    def status(self) -> int:
        return self.response.status


class Baresip:
    """One baresip UA: account ``sip:<user>@<host>:<port>``, one contact (the peer of
    `send_message`). Use ``async with Baresip(...) as client`` or `start`/`close`.

    `outbound` is the account's outbound proxy (a Route on every request). It is the only way
    to make 1.0.0 send a MESSAGE over TCP: ``outbound="sip:HOST:PORT;transport=tcp"``. A
    ``;transport=tcp`` on the contact is kept in the contact list but dropped from the
    MESSAGE's R-URI, which then goes over UDP (``sip_trans_def tcp`` changes nothing either)."""

    def __init__(
        self, *, user: str = "alice", contact: str = "", outbound: str = "", host: str = "127.0.0.1"
    ) -> None:
        self.user = user
        self.contact = contact
        self.outbound = outbound
        self.host = host
        self.dir = Path(tempfile.mkdtemp(prefix="baresip-"))
        self.log = self.dir / "stdout.log"
        self.err = self.dir / "stderr.log"
        self.sip_port = 0
        self.ctrl_port = 0
        self.cons_port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self._ctrl: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self._cons: asyncio.StreamWriter | None = None
        self._cons_task: asyncio.Task[None] | None = None
        self._console = bytearray()
        self._console_grew = asyncio.Event()
        self._tokens = 0

    # -- identity ---------------------------------------------------------

    @property
    def sip_addr(self) -> str:
        return f"{self.host}:{self.sip_port}"

    @property
    def aor(self) -> str:
        """user@host:port, as MsrpUser.call's `to` wants it."""
        return f"{self.user}@{self.sip_addr}"

    @property
    def uri(self) -> str:
        return f"sip:{self.aor}"

    # -- process ------------------------------------------------------------

    def write_config(self, modules: str) -> None:
        (self.dir / "config").write_text(
            "\n".join(
                [
                    "poll_method\tepoll",
                    f"sip_listen\t{self.sip_addr}",
                    f"module_path\t{modules}",
                    "module\tcons.so",
                    "module_app\taccount.so",
                    "module_app\tcontact.so",
                    "module_app\tmenu.so",
                    "module_app\tctrl_tcp.so",
                    f"ctrl_tcp_listen\t{self.host}:{self.ctrl_port}",
                    f"cons_listen\t{self.host}:{self.cons_port}",
                    "",
                ]
            )
        )
        outbound = f';outbound="{self.outbound}"' if self.outbound else ""
        (self.dir / "accounts").write_text(f"<{self.uri}>;regint=0{outbound}\n")
        contacts = f'"peer" <{self.contact}>\n' if self.contact else ""
        (self.dir / "contacts").write_text(contacts)

    async def start(self, timeout: float = 10.0, attempts: int = 5) -> None:
        """Start on fresh free ports; retry when another program took one meanwhile."""
        binary, modules = require_baresip()
        for _ in range(attempts):
            self.sip_port = free_port(socket.SOCK_DGRAM, self.host)
            self.ctrl_port = free_port(socket.SOCK_STREAM, self.host)
            self.cons_port = free_port(socket.SOCK_STREAM, self.host)
            if len({self.sip_port, self.ctrl_port, self.cons_port}) != 3:
                continue
            self.write_config(modules)
            if await self._spawn(binary, timeout):
                return
            if _BIND_FAILED not in self.output():
                break
        raise RuntimeError(f"baresip did not start:\n{self.output()[-4000:]}")

    async def _spawn(self, binary: str, timeout: float) -> bool:
        with self.log.open("wb") as out, self.err.open("wb") as err:
            self.proc = subprocess.Popen(
                [binary, "-f", str(self.dir), "-s"],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                cwd=self.dir,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.proc = None
                return False
            text = self.output()
            if _BIND_FAILED in text:  # ctrl_tcp/cons failing to bind leave baresip running
                self.stop()
                return False
            if "baresip is ready." in text:
                with contextlib.suppress(OSError):
                    self._ctrl = await asyncio.open_connection(self.host, self.ctrl_port)
                    reader, self._cons = await asyncio.open_connection(self.host, self.cons_port)
                    self._cons_task = asyncio.create_task(self._read_console(reader))
                    return True
            await asyncio.sleep(0.05)
        self.stop()
        return False

    async def _read_console(self, reader: asyncio.StreamReader) -> None:
        while data := await reader.read(65536):
            self._console += data
            self._console_grew.set()

    def stop(self, timeout: float = 5.0) -> None:
        proc, self.proc = self.proc, None
        stop_group(proc, timeout)

    async def close(self) -> None:
        for writer in (self._ctrl[1] if self._ctrl else None, self._cons):
            if writer is not None:
                writer.close()
        self._ctrl = self._cons = None
        if self._cons_task is not None:
            self._cons_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await self._cons_task
        await asyncio.to_thread(self.stop)
        shutil.rmtree(self.dir, ignore_errors=True)

    async def __aenter__(self) -> Baresip:
        try:
            await self.start()
        except BaseException:  # a skip or a failed start: still remove the work dir
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- what it printed ----------------------------------------------------

    def _read(self, path: Path) -> bytes:
        try:
            return path.read_bytes()
        except OSError:
            return b""

    def output(self) -> str:
        """stdout (banner, SIP trace) and stderr, for failure messages."""
        out = self._read(self.log).decode("utf-8", "replace")
        return out + "\n--- stderr ---\n" + self.errors()

    def errors(self) -> str:
        return self._read(self.err).decode("utf-8", "replace")

    def trace(self) -> list[TraceEntry]:
        return [TraceEntry.parse(*m.groups()) for m in _TRACE.finditer(self._read(self.log))]

    def shown(self) -> list[Shown]:
        """Received MESSAGEs as the console showed them, in order (single-line texts only)."""
        return [
            Shown(peer.decode("utf-8", "replace"), text.decode("utf-8", "replace"))
            for peer, text in _SHOWN.findall(bytes(self._console))
        ]

    def _ours(self, entry: TraceEntry) -> bool:
        """A request we sent (its From is our account), or a response to one. Addresses do
        not tell: over TCP our requests leave, and their responses arrive, on a new port."""
        return f"<{self.uri}>" in (entry.header("From") or "")

    def received(self) -> list[TraceEntry]:
        """MESSAGE requests that reached us (first transmissions only), in order."""
        return _unique(e for e in self.trace() if e.method == "MESSAGE" and not self._ours(e))

    def answers(self, request: TraceEntry) -> list[TraceEntry]:
        """Our responses to a `request` we received (with retransmissions)."""
        return [
            e for e in self.trace() if not e.is_request and e.transaction == request.transaction
        ]

    def console(self) -> str:
        return self._console.decode("utf-8", "replace")

    async def wait_shown(self, count: int, timeout: float = 10.0) -> list[Shown]:
        async def _wait() -> list[Shown]:
            while len(shown := self.shown()) < count:
                self._console_grew.clear()
                await self._console_grew.wait()
            return shown

        return await asyncio.wait_for(_wait(), timeout)

    async def wait_error(self, text: str, timeout: float = 5.0) -> str:
        """Wait until stderr (where baresip shows a MESSAGE's failure) contains `text`."""
        deadline = asyncio.get_running_loop().time() + timeout
        while text not in (errors := self.errors()):
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"{text!r} not on baresip's stderr:\n{errors}")
            await asyncio.sleep(0.05)
        return errors

    async def wait_trace(self, find: Callable[[list[TraceEntry]], T | None], timeout: float) -> T:
        """Poll the trace until `find` returns something other than None."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            found = find(self.trace())
            if found is not None:
                return found
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"not in baresip's trace:\n{self.output()[-4000:]}")
            await asyncio.sleep(0.05)

    # -- commands -------------------------------------------------------------

    async def command(self, command: str, params: str = "") -> str:
        """Run one ctrl_tcp command; its ``data``, or BaresipError if it said ``ok: false``."""
        assert self._ctrl is not None, "not started"
        reader, writer = self._ctrl
        self._tokens += 1
        token = str(self._tokens)
        payload = json.dumps({"command": command, "params": params, "token": token}).encode()
        writer.write(b"%d:%s," % (len(payload), payload))
        await writer.drain()
        while True:
            size = int((await reader.readuntil(b":"))[:-1])
            reply: dict[str, Any] = json.loads((await reader.readexactly(size + 1))[:-1])
            if reply.get("response") and reply.get("token") == token:
                break  # anything else is an event (ctrl_tcp sends UA events unasked)
        if not reply.get("ok"):
            raise BaresipError(f"{command} {params!r}: {reply.get('data')!r}")
        return str(reply.get("data", ""))

    async def send_message(self, text: str, timeout: float = 15.0) -> Sent:
        """Send `text` to the contact (``message``) and wait for the final response.

        One at a time: the MESSAGE is the first one in the trace after those sent before."""
        before = {e.transaction for e in self._sent_messages(self.trace())}
        await self.command("message", text)

        def request(trace: list[TraceEntry]) -> TraceEntry | None:
            new = [e for e in self._sent_messages(trace) if e.transaction not in before]
            return new[0] if new else None

        req = await self.wait_trace(request, timeout)

        def final(trace: list[TraceEntry]) -> TraceEntry | None:
            for e in trace:
                if not e.is_request and e.transaction == req.transaction and e.status >= 200:
                    return e
            return None

        return Sent(req, await self.wait_trace(final, timeout))

    def _sent_messages(self, trace: list[TraceEntry]) -> list[TraceEntry]:
        return _unique(e for e in trace if e.method == "MESSAGE" and self._ours(e))


def _unique(entries: Any) -> list[TraceEntry]:
    """First transmissions only: a UDP retransmission repeats (Call-ID, CSeq)."""
    seen: set[tuple[str, str]] = set()
    out = []
    for e in entries:
        if e.transaction not in seen:
            seen.add(e.transaction)
            out.append(e)
    return out
