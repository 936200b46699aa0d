"""A rolling upgrade: a node of the previous release and a node of this one share one store.

The previous release is a commit of this repository from before records and RPC maps carried
a version (`OLD`), run from its own source tree (`git archive`) on the same venv. Each node
must read the other's records and serve the other's forwarded MESSAGEs, in both directions.
"""

from __future__ import annotations

import subprocess
import tarfile
from pathlib import Path

import pytest

from gw.sip.endpoint import SipEndpoint
from tests.cluster.test_multinode import send_message, stop_all
from tests.support.msrp_user import MsrpUser
from tests.support.node import start_test_node
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.interop

REPO = Path(__file__).resolve().parents[2]
OLD = "333d988"  # the last commit before versioned records and RPC (issue 15 §5)


def old_release(where: Path) -> Path:
    """`OLD`'s `gw` package, extracted under `where`."""
    archive = where / "old.tar"
    done = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", "-o", str(archive), OLD, "gw"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, f"this test needs the repository's history: {done.stderr}"
    code = where / "old"
    with tarfile.open(archive) as tar:
        tar.extractall(code, filter="data")
    assert "RPC_VERSION" not in (code / "gw" / "cluster" / "messages.py").read_text()
    return code


async def test_old_and_new_nodes_share_sessions_both_ways(
    tmp_path: Path, redis_server: RedisServer, msrp_user: MsrpUser, page_ua: SipEndpoint
) -> None:
    old = start_test_node(redis_server.url, "old", msrp_user.sip_port, old_release(tmp_path))
    new = start_test_node(redis_server.url, "new", msrp_user.sip_port)
    try:
        # A session the new node owns; the old node forwards to it (an unversioned map).
        assert await send_message(page_ua, new, "n1", user="carol") == 200
        assert await send_message(page_ua, old, "n2", user="carol") == 200
        # A session the old node owns; the new node forwards to it (a versioned map).
        assert await send_message(page_ua, old, "o1", user="dave") == 200
        assert await send_message(page_ua, new, "o2", user="dave") == 200
        received = await msrp_user.wait_for(4)
        assert sorted(r.body for r in received) == [b"n1", b"n2", b"o1", b"o2"]
        assert len(msrp_user.invites) == 2, "one session per key, whichever node got it"
        assert new.metric("msrpgw_forwarded_to_owner_total") == 1
        # Each node ran its own code: only the new one writes a record's version.
        with redis_server.client() as client:
            versions = {
                client.hget(name, "owner"): client.hget(name, "version")
                for name in client.scan_iter("msrpgw:sess:*")
            }
        assert versions == {b"new": b"1", b"old": None}, versions
        # Each lists both sessions: each reads the records the other wrote.
        for gateway in (old, new):
            sessions = gateway.mi("msrp_gw_list_sessions")
            assert len(sessions) == 2, (gateway.ready["node"], sessions)
    finally:
        await stop_all([old, new])
