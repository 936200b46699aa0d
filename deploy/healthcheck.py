#!/usr/bin/env python3
"""Health check of an msrp-gw node for containers: GET a management path, exit 0 on 200.

Usage: msrp-gw-healthcheck [PATH]    (default /healthz; /readyz for readiness)

Standard library only: the slim image has no curl. The management address is the one the
running node wrote to <state_dir>/ready.json (its bound address, even when the port was 0),
else MSRPGW_MGMT__LISTEN, else 127.0.0.1:8080. A wildcard host (0.0.0.0, ::) is reached on
loopback. The state directory is MSRPGW_NODE__STATE_DIR, else /var/lib/msrp-gw (the image's).
/healthz and /readyz never need the management token.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import sys
from pathlib import Path

DEFAULT_STATE_DIR = "/var/lib/msrp-gw"
DEFAULT_MGMT = "127.0.0.1:8080"
WILDCARDS = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1", "[::]": "::1"}


def mgmt_address() -> tuple[str, int]:
    listen = ""
    state_dir = Path(os.environ.get("MSRPGW_NODE__STATE_DIR") or DEFAULT_STATE_DIR)
    with contextlib.suppress(OSError, ValueError, AttributeError):
        listen = str(json.loads((state_dir / "ready.json").read_text()).get("mgmt") or "")
    if not listen:
        listen = os.environ.get("MSRPGW_MGMT__LISTEN") or DEFAULT_MGMT
    host, _, port = listen.rpartition(":")
    host = WILDCARDS.get(host, host).strip("[]")
    return host, int(port)


def check(path: str = "/healthz", timeout: float = 3.0) -> tuple[bool, str]:
    try:
        host, port = mgmt_address()
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            body = response.read(200).decode("utf-8", "replace").strip()
        finally:
            conn.close()
    except (OSError, ValueError, http.client.HTTPException) as exc:
        return False, f"{path}: {exc}"
    return response.status == 200, f"{path}: {response.status} {body}"


def main(argv: list[str]) -> int:
    ok, detail = check(argv[1] if len(argv) > 1 else "/healthz")
    print(detail)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
