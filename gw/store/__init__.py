"""Session table, expiry notifications and events in Redis; the embedded single-node server."""

from gw.store.client import StoreClient, connect
from gw.store.embedded import EmbeddedRedis, ServerBinaryNotFound, server_binary
from gw.store.events import ENVELOPE_VERSION, EventBus, EventSubscription
from gw.store.expiry import ExpiryListener, ensure_expired_events
from gw.store.keys import KeySpace
from gw.store.records import SessionRecord
from gw.store.sessions import SessionNotFound, SessionStore, scan_batch

__all__ = [
    "ENVELOPE_VERSION",
    "EmbeddedRedis",
    "EventBus",
    "EventSubscription",
    "ExpiryListener",
    "KeySpace",
    "ServerBinaryNotFound",
    "SessionNotFound",
    "SessionRecord",
    "SessionStore",
    "StoreClient",
    "connect",
    "ensure_expired_events",
    "scan_batch",
    "server_binary",
]
