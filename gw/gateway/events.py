"""Gateway event names (published on `msrpgw:events`, schema in docs/events.md)."""

from __future__ import annotations

SETUP_FAILED = "E_MSRP_GW_SETUP_FAILED"
SESSION_STARTED = "E_MSRP_GW_SESSION_STARTED"
SESSION_ENDED = "E_MSRP_GW_SESSION_ENDED"
DELIVERY_FAILED = "E_MSRP_GW_DELIVERY_FAILED"
SESSION_MOVED = "E_MSRP_GW_SESSION_MOVED"
