"""Run linphone-daemon (Debian `linphone-cli` 5.1) as a third-party page-mode SIP client.

One process per `Linphone`, with a private linphonerc, HOME (its SQLite databases) and
command socket (``--pipe NAME`` listens on ``/tmp/NAME``; one client at a time: a second
connection is refused with "Cannot accept two client at the same time"). Facts about 5.1:

- ``message <sip_address> <text>`` answers ``Id: <Call-ID of the MESSAGE>``. The MESSAGE's
  R-URI is the address **without its port** (``sip:bob@127.0.0.1:5070`` goes out as
  ``sip:bob@127.0.0.1`` to port 5060; linphonec's ``chat`` does the same). So the gateway is
  reached only through an outbound proxy: `route` becomes the account's ``reg_proxy`` /
  ``reg_route`` (``reg_sendregister=0``), and every MESSAGE goes there.
- Without an account its From is ``sip:<user>@<first interface address>`` (an IPv6 one here);
  with the account, the account's identity.
- In a basic (non-conference) chat room it sends ``Content-Type: text/plain`` with the text
  verbatim: no CPIM, no IMDN request ("Chat room doesn't support CPIM, skipping this
  modifier" in its log), even with ``cpim_in_basic_chat_rooms_enabled=1`` in the account.
- ``pop-event`` returns queued events: ``message-state-changed`` (``Id``, ``State``:
  LinphoneChatMessageStateInProgress, then Delivered on a 2xx or NotDelivered) and
  ``message-received`` (``From``/``To`` without ports, ``Id`` = Call-ID,
  ``Content: "<text>"``).
- Its log (``--log``) holds every SIP message sent or received; the status codes are read
  from there (`response_to`).

Missing binary: the test is skipped, and fails in CI (``CI=true``), as for Kamailio.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest

from tests.support.ports import free_port
from tests.support.procs import stop_group

DELIVERED = "LinphoneChatMessageStateDelivered"
NOT_DELIVERED = "LinphoneChatMessageStateNotDelivered"
_FINAL_STATES = (DELIVERED, NOT_DELIVERED)
# belle-sip's dump of a SIP response in the log, after "received [N] new bytes from [...]:"
# or "message sent to [...], size: [N] bytes": status line, then headers up to a blank line.
_RESPONSE = re.compile(
    r"(received \[\d+\] new bytes from|message sent to) \[[^\]]*\][^\n]*\n"
    r"SIP/2\.0 (\d{3}) ([^\r\n]*)\r?\n((?:[^\r\n]+\r?\n)*)"
)


class LinphoneNotFound(RuntimeError):
    pass


class LinphoneError(RuntimeError):
    """A daemon command answered ``Status: Error``."""


def linphone_binary() -> str:
    path = shutil.which("linphone-daemon")
    if path is None:
        raise LinphoneNotFound("linphone-daemon not found: install Debian package linphone-cli")
    return path


def require_linphone() -> str:
    try:
        return linphone_binary()
    except LinphoneNotFound as exc:
        _no_peer(str(exc))


def _no_peer(reason: str) -> NoReturn:
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"CI: {reason}", pytrace=False)
    pytest.skip(reason)


@dataclass(frozen=True, slots=True)
class Received:
    """A ``message-received`` event."""

    peer: str  # From, without its port
    text: str
    call_id: str


@dataclass(frozen=True, slots=True)
class Status:
    """A SIP final response seen in the log: received (to our request) or sent by us."""

    code: int
    reason: str
    sent: bool


class Linphone:
    """One linphone-daemon UA, ``sip:<user>@<host>:<port>`` over UDP."""

    def __init__(self, *, user: str = "carol", route: str = "", host: str = "127.0.0.1"):
        self.user = user
        self.route = route
        self.host = host
        self.dir = Path(tempfile.mkdtemp(prefix="linphone-"))
        self.rc = self.dir / "linphonerc"
        self.log = self.dir / "linphone.log"
        self.out = self.dir / "stdout.log"
        self.pipe = f"msrpgw-linphone-{uuid.uuid4().hex[:12]}"
        self.sip_port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self._conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self.events: list[dict[str, str]] = []

    @property
    def aor(self) -> str:
        """user@host:port, as MsrpUser.call's `to` wants it."""
        return f"{self.user}@{self.host}:{self.sip_port}"

    @property
    def socket_path(self) -> str:
        return f"/tmp/{self.pipe}"

    def write_config(self) -> None:
        identity = f"sip:{self.user}@{self.host}"
        lines = [
            "[sip]",
            f"sip_port={self.sip_port}",
            "sip_tcp_port=0",
            "sip_tls_port=0",
            "use_ipv6=0",
            f"bind_address={self.host}",
            f'contact="{self.user}" <{identity}>',
            f"default_proxy={0 if self.route else -1}",
            "[net]",
            "firewall_policy=0",
            "[misc]",
            "enable_lime=0",
        ]
        if self.route:
            lines += [
                "[proxy_0]",
                f"reg_proxy=<{self.route}>",
                f"reg_route=<{self.route};lr>",
                f'reg_identity="{self.user}" <{identity}>',
                "reg_sendregister=0",
                "publish=0",
            ]
        self.rc.write_text("\n".join(lines) + "\n")

    async def start(self, timeout: float = 15.0, attempts: int = 5) -> None:
        """Start on a fresh free port; retry if the port was lost to another program."""
        binary = require_linphone()
        for _ in range(attempts):
            self.sip_port = free_port(socket.SOCK_DGRAM, self.host)
            self.write_config()
            if await self._spawn(binary, timeout):
                return
        raise RuntimeError(f"linphone-daemon did not start:\n{self.output()[-4000:]}")

    async def _spawn(self, binary: str, timeout: float) -> bool:
        home = self.dir / "home"
        (home / ".local" / "share" / "linphone").mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "HOME": str(home),
            "XDG_DATA_HOME": str(home / ".local" / "share"),
            "XDG_CONFIG_HOME": str(home / ".config"),
        }
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path)
        with self.out.open("wb") as out:
            self.proc = subprocess.Popen(
                [binary, "--config", str(self.rc), "--pipe", self.pipe, "--log", str(self.log)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.dir,
                env=env,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.proc = None
                return False
            if os.path.exists(self.socket_path):
                with contextlib.suppress(OSError):
                    self._conn = await asyncio.open_unix_connection(self.socket_path)
                    await self.command("version")
                    if self._holds_sip_port():
                        return True
                    break
            await asyncio.sleep(0.1)
        await self._disconnect()
        self.stop()
        return False

    def _holds_sip_port(self) -> bool:
        """True if the SIP port is taken (by linphone: it logs nothing when its bind fails)."""
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.bind((self.host, self.sip_port))
            except OSError:
                return True
        return False

    async def _disconnect(self) -> None:
        if self._conn is not None:
            self._conn[1].close()
            self._conn = None

    def stop(self, timeout: float = 5.0) -> None:
        proc, self.proc = self.proc, None
        stop_group(proc, timeout)

    async def close(self) -> None:
        await self._disconnect()
        await asyncio.to_thread(self.stop)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path)
        shutil.rmtree(self.dir, ignore_errors=True)

    async def __aenter__(self) -> Linphone:
        try:
            await self.start()
        except BaseException:  # a skip or a failed start: still remove the work dir
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- commands -------------------------------------------------------------

    async def command(self, line: str, timeout: float = 10.0) -> dict[str, str]:
        """One command; the ``Key: value`` lines of its answer. Status: Error raises."""
        assert self._conn is not None, "not started"
        reader, writer = self._conn
        writer.write(line.encode() + b"\n")
        await writer.drain()
        # One answer is one write: "Status: Ok\n" [Reason] ["\n" body "\n"]; read until quiet.
        data = await asyncio.wait_for(reader.read(65536), timeout)
        while True:
            try:
                more = await asyncio.wait_for(reader.read(65536), 0.05)
            except TimeoutError:
                break
            if not more:
                break
            data += more
        fields = _fields(data.decode("utf-8", "replace"))
        if fields.get("Status") != "Ok":
            raise LinphoneError(f"{line!r}: {data!r}")
        return fields

    async def send_message(self, to: str, text: str) -> str:
        """Send `text` to `to`; the daemon's message Id (the MESSAGE's Call-ID)."""
        return (await self.command(f"message {to} {text}"))["Id"]

    async def poll_events(self) -> None:
        while True:
            fields = await self.command("pop-event")
            if "Event-type" in fields:
                self.events.append(fields)
            if fields.get("Size", "0") == "0":
                return

    async def wait_state(self, message_id: str, timeout: float = 15.0) -> str:
        """The final state of an outgoing message (Delivered or NotDelivered)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            await self.poll_events()
            for event in self.events:
                if event.get("Id") == message_id and event.get("State") in _FINAL_STATES:
                    return event["State"]
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"no final state for {message_id}: {self.events}")
            await asyncio.sleep(0.05)

    def received(self) -> list[Received]:
        return [
            Received(e.get("From", ""), _unquote(e.get("Content", "")), e.get("Id", ""))
            for e in self.events
            if e.get("Event-type") == "message-received"
        ]

    async def wait_received(self, count: int, timeout: float = 10.0) -> list[Received]:
        deadline = asyncio.get_running_loop().time() + timeout
        while len(self.received()) < count:
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"{len(self.received())} of {count} received: {self.events}")
            await asyncio.sleep(0.05)
            await self.poll_events()
        return self.received()

    # -- what it logged -------------------------------------------------------

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def output(self) -> str:
        try:
            out = self.out.read_text(errors="replace")
        except OSError:
            out = ""
        return out + "\n--- log ---\n" + self.log_text()[-8000:]

    def responses(self, call_id: str) -> list[Status]:
        """SIP responses of the transaction with `call_id`, received or sent, in log order."""
        found = []
        for m in _RESPONSE.finditer(self.log_text()):
            headers = _fields(m[4].replace("\r", ""), lower=True)
            if headers.get("call-id") == call_id:
                found.append(Status(int(m[2]), m[3], m[1] == "message sent to"))
        return found


def _fields(text: str, *, lower: bool = False) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in text.split("\n"):
        name, sep, value = line.partition(":")
        if sep and name and " " not in name:
            fields.setdefault(name.lower() if lower else name, value.strip())
    return fields


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value
