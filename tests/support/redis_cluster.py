"""A real Redis Cluster (and a Sentinel) for tests: N primaries, no replicas, free ports.

Each primary is a `RedisServer` with `--cluster-enabled yes`; `redis-cli --cluster create`
assigns the slots. The cluster bus listens on port + 10000, so ports are picked with both
free. `add_primary()` grows the cluster (`--cluster add-node` + `--cluster reshard`), for tests
that follow topology changes. `LocalSentinel` runs `redis-server --sentinel` for one master.
"""

from __future__ import annotations

import contextlib
import random
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

import redis

from tests.support.redis_server import RedisServer, find_binary, no_server

HOST = "127.0.0.1"
BUS_OFFSET = 10000


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def cluster_port() -> int:
    """A port free for the server and for its cluster bus (port + 10000)."""
    for _ in range(200):
        port = random.randint(20000, 45000)
        if _bindable(port) and _bindable(port + BUS_OFFSET):
            return port
    raise RuntimeError("no free port pair for a cluster node")


def redis_cli() -> str | None:
    return shutil.which("redis-cli") or shutil.which("valkey-cli")


class LocalCluster:
    """`primaries` cluster-enabled servers; `options` as for RedisServer (None removes one)."""

    def __init__(
        self,
        primaries: int = 3,
        *,
        binary: str | None = None,
        options: Mapping[str, str | None] | None = None,
    ) -> None:
        found = binary or find_binary()
        cli = redis_cli()
        if found is None or cli is None:
            no_server("a Redis Cluster needs redis-server (or valkey-server) and redis-cli")
        self.binary: str = found
        self.cli: str = cli
        self.count = primaries
        self.options: dict[str, str | None] = {
            "cluster-enabled": "yes",
            "cluster-config-file": "nodes.conf",
            "cluster-node-timeout": "3000",
            **(options or {}),
        }
        self.dir = Path(tempfile.mkdtemp(prefix="redis-cluster-test-"))
        self.servers: list[RedisServer] = []

    # -- lifecycle -------------------------------------------------------------------------

    def _spawn(self, options: Mapping[str, str | None] | None = None) -> RedisServer:
        for attempt in range(10):
            port = cluster_port()
            server = RedisServer(
                binary=self.binary,
                options={**self.options, **(options or {})},
                dir=self.dir / f"n{port}",
                host=HOST,
            )
            server.dir.mkdir()
            server.port = port  # kept: RedisServer.start does not pick another
            try:
                server.start()
            except RuntimeError:
                server.close()
                shutil.rmtree(server.dir, ignore_errors=True)
                if attempt == 9:
                    raise
                continue
            return server
        raise AssertionError("unreachable")

    def start(self, timeout: float = 30.0) -> None:
        try:
            self.servers = [self._spawn() for _ in range(self.count)]
            self._cli(
                "--cluster", "create", *self.addresses, "--cluster-replicas", "0", "--cluster-yes"
            )  # fmt: skip
            self.wait_stable(timeout)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for server in self.servers:
            server.stop()
        self.servers = []
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> LocalCluster:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- views -----------------------------------------------------------------------------

    @property
    def addresses(self) -> list[str]:
        return [f"{HOST}:{s.port}" for s in self.servers]

    @property
    def url(self) -> str:
        """A `redis+cluster://` URL with every node as a startup node."""
        return "redis+cluster://" + ",".join(self.addresses)

    def url_for(self, index: int) -> str:
        """A `redis+cluster://` URL with one startup node (the client discovers the rest)."""
        return f"redis+cluster://{self.addresses[index]}"

    def client(self, index: int) -> redis.Redis:
        """A plain (sync) client to one node."""
        return self.servers[index].client()

    def node_id(self, index: int) -> str:
        with self.client(index) as c:
            return str(c.execute_command("CLUSTER MYID").decode())

    def slots_of(self, index: int) -> list[tuple[int, int]]:
        """Slot ranges served by node `index` (as it reports them)."""
        with self.client(index) as c:
            reply = c.execute_command("CLUSTER SLOTS")
        port = self.servers[index].port
        out = []
        for entry in reply:
            start, end, primary = entry[0], entry[1], entry[2]
            if int(primary[1]) == port:
                out.append((int(start), int(end)))
        return out

    def wait_stable(self, timeout: float = 30.0) -> None:
        """Until every node says cluster_state:ok, knows every node, and all agree on the
        slot map (so a client may start from any node)."""
        deadline = time.monotonic() + timeout
        while True:
            if self._stable():
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"cluster not stable: {self._describe()}")
            time.sleep(0.05)

    def _stable(self) -> bool:
        maps = []
        for server in self.servers:
            try:
                with server.client() as c:
                    info = c.execute_command("CLUSTER INFO")
                    if info["cluster_state"] != "ok":
                        return False
                    if int(info["cluster_known_nodes"]) != len(self.servers):
                        return False
                    slots = c.execute_command("CLUSTER SLOTS")
            except redis.RedisError:
                return False
            maps.append(sorted((int(e[0]), int(e[1]), int(e[2][1])) for e in slots))
        return all(m == maps[0] for m in maps)

    def _describe(self) -> str:
        out = []
        for server in self.servers:
            with contextlib.suppress(redis.RedisError), server.client() as c:
                out.append(repr(c.execute_command("CLUSTER NODES")))
        return "\n".join(out)

    def _cli(self, *args: str, timeout: float = 60.0) -> str:
        proc = subprocess.run(
            [self.cli, *args], capture_output=True, text=True, timeout=timeout, check=False
        )
        if proc.returncode != 0:
            raise RuntimeError(f"redis-cli {' '.join(args)} failed:\n{proc.stdout}{proc.stderr}")
        return proc.stdout

    # -- topology changes ------------------------------------------------------------------

    def add_primary(
        self,
        *,
        slots: int = 100,
        source: int = 0,
        options: Mapping[str, str | None] | None = None,
    ) -> RedisServer:
        """Start one more primary, join it, and move `slots` slots (with their keys) to it
        from node `source`. Returns the new server (index len(servers) - 1)."""
        server = self._spawn(options)
        self.servers.append(server)
        new_addr = f"{HOST}:{server.port}"
        self._cli("--cluster", "add-node", new_addr, self.addresses[source])
        self.wait_known()
        # redis-cli refuses to reshard until every node's view agrees ("Nodes don't agree
        # about configuration"); gossip takes a moment after add-node, so wait for that.
        self.wait_stable()
        self.wait_agreed()
        self._cli(
            "--cluster", "reshard", self.addresses[source],
            "--cluster-from", self.node_id(source),
            "--cluster-to", self.node_id(len(self.servers) - 1),
            "--cluster-slots", str(slots),
            "--cluster-yes",
        )  # fmt: skip
        self.wait_stable()
        return server

    def wait_agreed(self, timeout: float = 30.0) -> None:
        """Until `redis-cli --cluster check` passes (the same test reshard makes first)."""
        deadline = time.monotonic() + timeout
        while True:
            proc = subprocess.run(
                [self.cli, "--cluster", "check", self.addresses[0]],
                capture_output=True, text=True, timeout=timeout, check=False,
            )  # fmt: skip
            if proc.returncode == 0 and "[ERR]" not in proc.stdout:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"cluster check never passed:\n{proc.stdout}{proc.stderr}")
            time.sleep(0.1)

    def wait_known(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            ok = True
            for server in self.servers:
                with server.client() as c:
                    info = c.execute_command("CLUSTER INFO")
                if int(info["cluster_known_nodes"]) != len(self.servers):
                    ok = False
            if ok:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"nodes never met: {self._describe()}")
            time.sleep(0.05)


class LocalSentinel:
    """One `redis-server --sentinel` watching `master_port` as `service` (quorum 1)."""

    def __init__(
        self, master_port: int, *, service: str = "mymaster", binary: str | None = None
    ) -> None:
        found = binary or find_binary()
        if found is None:
            no_server("a Sentinel needs redis-server (or valkey-server)")
        self.binary: str = found
        self.service = service
        self.master_port = master_port
        self.dir = Path(tempfile.mkdtemp(prefix="redis-sentinel-test-"))
        self.port: int | None = None
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis+sentinel://{HOST}:{self.port}/{self.service}"

    def client(self) -> redis.Redis:
        return redis.Redis(host=HOST, port=self.port or 0, socket_timeout=2.0)

    def start(self, timeout: float = 10.0) -> None:
        for _ in range(10):
            port = cluster_port()
            conf = self.dir / "sentinel.conf"
            conf.write_text(
                f"port {port}\nbind {HOST}\ndir {self.dir}\n"
                f"sentinel monitor {self.service} {HOST} {self.master_port} 1\n"
                f"sentinel down-after-milliseconds {self.service} 2000\n"
                f"sentinel failover-timeout {self.service} 10000\n"
            )
            with (self.dir / "sentinel.log").open("ab") as out:
                self.proc = subprocess.Popen(
                    [self.binary, str(conf), "--sentinel"], stdout=out, stderr=out
                )
            deadline = time.monotonic() + timeout
            self.port = port
            while self.proc.poll() is None and time.monotonic() < deadline:
                with contextlib.suppress(redis.RedisError), self.client() as c:
                    if c.sentinel_get_master_addr_by_name(self.service):
                        return
                time.sleep(0.05)
            self.stop()
        raise RuntimeError("sentinel did not start")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> LocalSentinel:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
