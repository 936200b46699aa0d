"""Run Kamailio (Debian `kamailio`) as a third-party peer on free ports.

`Kamailio` renders a config template (``@NAME@`` placeholders, filled in one
pass), picks free ports for the placeholders named in `tcp_ports`/`udp_ports`,
runs ``kamailio -DD -E`` in the foreground of its own process group, waits
until it listens, and retries with new ports if another program took one in
between. `stop()` (or leaving the `with` block) ends it. Reusable for any
config: `MsrpRelay` is the RFC 4976 relay in `tests/msrp/kamailio/`.

For SIP on one port over UDP and TCP, name the placeholder in both lists:
``Kamailio(path, values, udp_ports=("SIP_PORT",), tcp_ports=("SIP_PORT",))``;
TCP ports are probed for readiness, UDP-only configs rely on the start-up log.
`defines` are passed as ``-A NAME`` (the config's ``#!ifdef NAME`` blocks).

TLS (`MsrpRelay(..., tls=trustme.CA())`): the relay listens on TLS with a
certificate of that CA written to the work dir, and Kamailio's `tls.cfg` there
makes it verify the peers it connects to against the same CA. Debian ships
`tls.so` in `kamailio-tls-modules`; without it the test is skipped (failed in CI).
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, NoReturn

import pytest

from gw.msrp.uri import MsrpUri
from tests.support.ports import free_port
from tests.support.procs import stop_group

if TYPE_CHECKING:
    import trustme

TEMPLATES = Path(__file__).resolve().parent.parent / "msrp" / "kamailio"
_PLACEHOLDER = re.compile(r"@([A-Z][A-Z0-9_]*)@")
_SAFE_USER = re.compile(r"[A-Za-z0-9._-]+")
_SAFE_PASSWORD = re.compile(r"[A-Za-z0-9._~!#%&*+,:;=?^|/-]+")
_BIND_FAILED = ("Address already in use", "bind(", "cannot bind")


class KamailioNotFound(RuntimeError):
    pass


def kamailio_binary() -> str:
    for candidate in (shutil.which("kamailio"), "/usr/sbin/kamailio"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise KamailioNotFound("kamailio not found: install Debian package kamailio (.ci/run does)")


def require_kamailio() -> str:
    """The binary; skip the test without it (fail in CI, where skips must be loud)."""
    try:
        return kamailio_binary()
    except KamailioNotFound as exc:
        _no_peer(str(exc))


_MODULE_DIRS = (
    "/usr/lib/*/kamailio/modules",
    "/usr/lib/kamailio/modules",
    "/usr/lib64/kamailio/modules",
)


def kamailio_module(name: str) -> str | None:
    """Path of a Kamailio module (`tls.so`) where Debian and others install them, or None."""
    for pattern in _MODULE_DIRS:
        for found in sorted(glob.glob(os.path.join(pattern, name))):
            return found
    return None


def require_kamailio_tls() -> str:
    """The binary, with its tls module; skip without them (fail in CI)."""
    binary = require_kamailio()
    if kamailio_module("tls.so") is None:
        _no_peer("kamailio tls.so not found: install Debian package kamailio-tls-modules")
    return binary


def _no_peer(reason: str) -> NoReturn:
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"CI: {reason}", pytrace=False)
    pytest.skip(reason)


def render(template: str, values: Mapping[str, str]) -> str:
    """Fill every ``@NAME@``; KeyError names a placeholder without a value."""

    def fill(m: re.Match[str]) -> str:
        if m[1] not in values:
            raise KeyError(f"no value for @{m[1]}@")
        return values[m[1]]

    return _PLACEHOLDER.sub(fill, template)


class Kamailio:
    """One Kamailio process from a template; ports are filled in at `start()`."""

    def __init__(
        self,
        template: str | Path,
        values: Mapping[str, str] | None = None,
        *,
        tcp_ports: Sequence[str] = (),
        udp_ports: Sequence[str] = (),
        host: str = "127.0.0.1",
        shm_mb: int = 64,
        pkg_mb: int = 8,
        defines: Sequence[str] = (),
    ) -> None:
        path = Path(template)
        self.template = path if path.is_absolute() else TEMPLATES / path
        self.values = {"HOST": host, "DEBUG": "2", **(values or {})}
        self.tcp_ports = tuple(tcp_ports)
        self.udp_ports = tuple(udp_ports)
        self.host = host
        self.shm_mb = shm_mb
        self.pkg_mb = pkg_mb
        self.defines = tuple(defines)
        self.workdir = Path(tempfile.mkdtemp(prefix="kamailio-"))
        self.config = self.workdir / self.template.name
        self.log = self.workdir / "kamailio.log"
        self.ports: dict[str, int] = {}
        self.proc: subprocess.Popen[bytes] | None = None

    # -- config ------------------------------------------------------------

    def write_config(self, ports: Mapping[str, int] | None = None) -> Path:
        """Render the template with `ports` (placeholder -> port) into the work dir."""
        values = {**self.values, **{k: str(v) for k, v in (ports or self.ports).items()}}
        self.config.write_text(render(self.template.read_text(), values))
        return self.config

    def check(self) -> subprocess.CompletedProcess[str]:
        """``kamailio -c -f`` on the rendered config (placeholder ports if not started)."""
        if not self.ports:
            names = (*self.tcp_ports, *self.udp_ports)
            self.write_config({name: 5 + i for i, name in enumerate(names)})
        return subprocess.run(
            [
                kamailio_binary(),
                "-c",
                "-f",
                str(self.config),
                "-Y",
                str(self.workdir),
                *self._define_args(),
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    def _define_args(self) -> list[str]:
        return [arg for name in self.defines for arg in ("-A", name)]

    # -- process -----------------------------------------------------------

    def start(self, timeout: float = 10.0, attempts: int = 10) -> None:
        """Start with fresh free ports; retry when a port was lost to another program."""
        if self.proc is not None and self.proc.poll() is None:
            return
        binary = require_kamailio()
        for _ in range(attempts):
            # free_port checks UDP and TCP, so a name in both lists gets one port for both
            ports = {n: free_port(socket.SOCK_DGRAM, self.host) for n in self.udp_ports}
            ports |= {
                n: free_port(socket.SOCK_STREAM, self.host)
                for n in self.tcp_ports
                if n not in ports
            }
            if len(set(ports.values())) != len(ports):
                continue
            self.ports = ports
            self.write_config()
            if self._spawn(binary, timeout):
                return
            if not any(s in self.log_text() for s in _BIND_FAILED):
                break
        raise RuntimeError(f"kamailio did not start:\n{self.log_text()[-4000:]}")

    def restart(self, timeout: float = 10.0) -> None:
        """Start again on the same ports after `stop()` (a relay that comes back)."""
        if not self.ports:
            raise RuntimeError("never started: use start()")
        self.stop()
        binary = require_kamailio()
        deadline = time.monotonic() + 3 * timeout
        while not self._spawn(binary, timeout):
            # the old listener may linger a moment; anything else is a real failure
            if time.monotonic() > deadline or not any(s in self.log_text() for s in _BIND_FAILED):
                raise RuntimeError(f"kamailio did not restart:\n{self.log_text()[-4000:]}")
            time.sleep(0.2)

    def _spawn(self, binary: str, timeout: float) -> bool:
        self.log.write_bytes(b"")
        argv = [
            binary,
            "-DD",
            "-E",
            "-f",
            str(self.config),
            "-Y",
            str(self.workdir),
            "-m",
            str(self.shm_mb),
            "-M",
            str(self.pkg_mb),
            *self._define_args(),
        ]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                start_new_session=True,  # its own group: children are ended with it
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.proc = None
                return False
            if self._listening():
                return True
            time.sleep(0.05)
        self.stop()
        return False

    def _listening(self) -> bool:
        text = self.log_text()
        if "Listening on" not in text or "processes (at least)" not in text:
            return False
        for name in self.tcp_ports:
            try:
                with socket.create_connection((self.host, self.ports[name]), timeout=0.5):
                    pass
            except OSError:
                return False
        return True

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM (Kamailio ends and reaps its children); if it hangs, SIGKILL its
        process group while the main process is unreaped, so the group is still ours."""
        proc, self.proc = self.proc, None
        stop_group(proc, timeout)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def port(self, name: str = "PORT") -> int:
        return self.ports[name]

    def __enter__(self) -> Kamailio:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class MsrpRelay(Kamailio):
    """Kamailio's msrp module as an RFC 4976 relay with Digest AUTH (msrp-relay.cfg).

    `credentials` maps user -> password (kept in an htable, no database).
    Expires bounds: 423 outside [min_expires, max_expires]; default_expires when
    the AUTH has none; a binding lives `grace` seconds past its Expires.
    With `tls` (a trustme CA) it listens on TLS and hands out `msrps:` Use-Paths;
    its certificate names `host`, and it verifies peers it connects to by that CA.
    """

    def __init__(
        self,
        credentials: Mapping[str, str],
        *,
        realm: str = "relay.test",
        min_expires: int = 1,
        max_expires: int = 3600,
        default_expires: int = 600,
        grace: int = 2,
        nonce_expire: int = 300,
        debug: int = 2,
        host: str = "127.0.0.1",
        tls: trustme.CA | None = None,
    ) -> None:
        lines = []
        for user, password in credentials.items():
            if not _SAFE_USER.fullmatch(user) or not _SAFE_PASSWORD.fullmatch(password):
                raise ValueError(f"unsupported characters in credentials for {user!r}")
            lines.append(f'\t$sht(cred=>{user}) = "{password}";')
        if not _SAFE_USER.fullmatch(realm):
            raise ValueError(f"unsupported realm {realm!r}")
        super().__init__(
            "msrp-relay.cfg",
            {
                "DEBUG": str(debug),
                "TCP_CHILDREN": "2",
                "REALM": realm,
                "MIN_EXPIRES": str(min_expires),
                "MAX_EXPIRES": str(max_expires),
                "DEFAULT_EXPIRES": str(default_expires),
                "GRACE": str(grace),
                "NONCE_EXPIRE": str(nonce_expire),
                "CREDENTIALS": "\n".join(lines),
                "SCHEME": "msrps" if tls is not None else "msrp",
                "TLS_CFG": "",
            },
            tcp_ports=("PORT",),
            host=host,
            defines=("WITH_TLS",) if tls is not None else (),
        )
        self.realm = realm
        self.tls = tls is not None
        if tls is not None:
            self.values["TLS_CFG"] = str(self._write_tls(tls))

    def _write_tls(self, ca: trustme.CA) -> Path:
        """Certificate, key, CA and Kamailio's tls.cfg in the work dir."""
        cert = ca.issue_cert(self.host)
        cert_file, key_file, ca_file, cfg = (
            self.workdir / name for name in ("relay.pem", "relay.key", "ca.pem", "tls.cfg")
        )
        cert_file.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
        key_file.write_bytes(cert.private_key_pem.bytes())
        ca.cert_pem.write_to_path(str(ca_file))
        cfg.write_text(
            "[server:default]\n"
            "method = TLSv1.2+\n"
            "verify_certificate = no\n"
            "require_certificate = no\n"
            f"private_key = {key_file}\n"
            f"certificate = {cert_file}\n"
            "\n"
            "[client:default]\n"
            "method = TLSv1.2+\n"
            "verify_certificate = yes\n"
            "require_certificate = yes\n"
            f"ca_list = {ca_file}\n"
        )
        return cfg

    def start(self, timeout: float = 10.0, attempts: int = 10) -> None:
        if self.tls:
            require_kamailio_tls()
        super().start(timeout, attempts)

    @property
    def uri(self) -> MsrpUri:
        """The relay's own URI (what AUTH's To-Path and Digest uri carry)."""
        return MsrpUri(scheme="msrps" if self.tls else "msrp", host=self.host, port=self.port())

    def __enter__(self) -> MsrpRelay:
        self.start()
        return self
