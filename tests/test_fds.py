"""The open-files budget of a real node (issue 16): raised to the hard limit at start,
watched, and the node says so when it runs short."""

from __future__ import annotations

import shutil
import socket
import time

import pytest

from tests.support.node import GatewayProcess


@pytest.fixture(autouse=True)
def _prlimit() -> None:
    assert shutil.which("prlimit"), "prlimit (util-linux) is needed"


def test_the_soft_limit_is_raised_to_the_hard_one_at_start_and_logged() -> None:
    node = GatewayProcess(wrap=["prlimit", "--nofile=256:2048", "--"])
    node.start()
    try:
        assert "open files limit: 2048 (was 256, hard limit 2048)" in node.output()
        assert node.metric("process_max_fds") == 2048
        assert 0 < node.metric("process_open_fds") < 256
    finally:
        assert node.stop() == 0


def test_near_the_limit_the_node_logs_and_counts() -> None:
    node = GatewayProcess(wrap=["prlimit", "--nofile=100:100", "--"])
    node.start()
    conns: list[socket.socket] = []
    try:
        baseline = node.metric("process_open_fds")
        for _ in range(int(95 - baseline)):  # past 90 %, with room for the scrape itself
            conns.append(socket.create_connection(node.sip("tcp"), timeout=2))
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and node.metric("msrpgw_fds_near_limit_total") == 0:
            time.sleep(0.2)
        assert node.metric("msrpgw_fds_near_limit_total") >= 1
        assert "open files near the limit" in node.output()
    finally:
        for conn in conns:
            conn.close()
        assert node.stop() == 0
