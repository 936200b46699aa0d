"""MSRP relay client (RFC 4976): AUTH with HTTP Digest, Use-Path, Expires refresh.

`RelayClient` is sans-I/O: feed it responses and the current time, take the
AUTH frames it queues, call `on_timer` by `next_refresh`. It answers 401 with
Digest (RFC 4976 §5: the digest "uri" is the relay's URI, method AUTH), 423 with
the relay's Min-/Max-Expires, and re-AUTHs before the grant expires, reusing
the last nonce (nc+1) so a refresh normally costs one round trip.

The node runs it on one of its MSRP connections (`gw.msrp.endpoint`,
`MsrpEndpoint.use_relay`): that connection is the one the relay delivers
inbound frames on, so the session layer keeps using it. Tests also run it on a
bare stream (tests/support/relay_link.py).

After a 200, advertise `path()` (Use-Path URIs + our URI) in SDP a=path and
send requests with To-Path `outbound_to_path(peer_path)`.
"""

from __future__ import annotations

import enum
import re
import secrets
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from gw.msrp.connection import same_path
from gw.msrp.digest import Challenge, authorization, parse_challenge, supported_algorithm
from gw.msrp.frame import REASONS, Frame, FrameError
from gw.msrp.uri import MsrpUri, MsrpUriError, parse_path

__all__ = [
    "AuthFailed",
    "Authenticated",
    "RelayAuthError",
    "RelayClient",
    "RelayError",
    "RelayEvent",
    "RelayState",
]

AUTH = "AUTH"
_ALGORITHM_PREFERENCE = {"SHA-512-256": 0, "SHA-256": 1, "MD5": 2}
_MAX_STALE_RETRIES = 2
_DELTA_SECONDS_RE = re.compile(r"[0-9]{1,10}")  # ASCII only: str.isdigit() accepts "²"


class RelayError(RuntimeError):
    """Local misuse, e.g. asking for a path before the relay granted one."""


class RelayState(enum.Enum):
    IDLE = "idle"
    AUTHENTICATING = "authenticating"  # first AUTH outstanding, no path yet
    AUTHENTICATED = "authenticated"  # path valid until expires_at
    REFRESHING = "refreshing"  # path still valid, refresh AUTH outstanding
    FAILED = "failed"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class Authenticated:
    """The relay granted (or renewed) a path.

    `path` is what to advertise (a=path); `path_changed` on a refresh means the
    relay handed out a different Use-Path, so live sessions need a re-offer.
    """

    use_path: tuple[MsrpUri, ...]
    path: tuple[MsrpUri, ...]
    expires: int | None
    expires_at: float | None
    refresh: bool = False
    path_changed: bool = False


@dataclass(frozen=True, slots=True)
class AuthFailed:
    """AUTH failed: `status` is the relay's answer, 408 for no answer, None for an
    unusable answer, a lost connection or a grant that lapsed during a refresh.
    The client stays FAILED; `start` tries again."""

    status: int | None
    reason: str
    was_authenticated: bool = False


RelayEvent = Authenticated | AuthFailed


class RelayAuthError(Exception):
    """Raised by the asyncio adapters when AUTH fails (carries the AuthFailed event)."""

    def __init__(self, event: AuthFailed) -> None:
        super().__init__(f"relay AUTH failed: {event.status} {event.reason}")
        self.event = event


class RelayClient:
    """Sans-I/O RFC 4976 client for one relay and one local URI.

    `expires` is the lifetime to ask for (None: let the relay pick). The client
    refreshes at `refresh_ratio` of the granted lifetime, measured from when the
    AUTH was sent (the relay's clock starts later, so this errs early). An AUTH
    unanswered for `response_timeout` seconds fails with 408.
    """

    def __init__(
        self,
        relay_uri: MsrpUri,
        our_uri: MsrpUri,
        username: str,
        password: str,
        expires: int | None = None,
        *,
        refresh_ratio: float = 0.8,
        response_timeout: float = 30.0,
        cnonce: Callable[[], str] = lambda: secrets.token_hex(8),
    ) -> None:
        if not 0.0 < refresh_ratio < 1.0:
            raise ValueError("refresh_ratio must be in (0, 1)")
        if expires is not None and expires < 1:
            raise ValueError("expires must be >= 1")
        if response_timeout <= 0:
            raise ValueError("response_timeout must be > 0")
        if any(c < " " or c == "\x7f" for c in username + password):
            raise ValueError("control character in credentials")
        self.relay_uri = relay_uri
        self.our_uri = our_uri
        self.username = username
        self._password = password
        self.requested_expires = expires
        self.refresh_ratio = refresh_ratio
        self.response_timeout = response_timeout
        self._cnonce = cnonce

        self.state = RelayState.IDLE
        self.use_path: tuple[MsrpUri, ...] = ()
        self.expires: int | None = None
        self.expires_at: float | None = None
        self._refresh_at: float | None = None
        self._outbox: list[Frame] = []
        self._tid: str | None = None  # outstanding AUTH
        self._old_tids: deque[str] = deque(maxlen=8)
        self._sent_at = 0.0
        self._challenge: Challenge | None = None
        self._nc = 0
        # per AUTH cycle (first AUTH or one refresh, with its retries)
        self._answered = False
        self._stale_retries = 0
        self._interval_retried = False

    # -- queries -----------------------------------------------------------

    @property
    def authenticated(self) -> bool:
        """True while the relay's grant is believed valid."""
        return self.state in (RelayState.AUTHENTICATED, RelayState.REFRESHING)

    def path(self, local_uri: MsrpUri | None = None) -> tuple[MsrpUri, ...]:
        """Our path to advertise (a=path): the Use-Path URIs, then `local_uri`
        (default: the URI we AUTHed with). One grant serves every session on
        this connection, so pass each session's own URI."""
        if not self.authenticated:
            raise RelayError(f"no path: relay client is {self.state.value}")
        return (*self.use_path, local_uri or self.our_uri)

    def outbound_to_path(self, peer_path: Sequence[MsrpUri]) -> tuple[MsrpUri, ...]:
        """To-Path for a request to a peer: our relays first, then the peer's a=path."""
        if not self.authenticated:
            raise RelayError(f"no path: relay client is {self.state.value}")
        return (*self.use_path, *peer_path)

    def next_refresh(self, now: float) -> float | None:
        """When `on_timer` must run next (absolute, never before `now`), or None.

        That is the refresh point while authenticated, and the response
        deadline (or the grant's expiry, if sooner) while an AUTH is out.
        """
        deadline: float | None = None
        if self.state == RelayState.AUTHENTICATED:
            deadline = self._refresh_at
        elif self.state in (RelayState.AUTHENTICATING, RelayState.REFRESHING):
            deadline = self._sent_at + self.response_timeout
            if self.state == RelayState.REFRESHING and self.expires_at is not None:
                deadline = min(deadline, self.expires_at)
        return None if deadline is None else max(deadline, now)

    def handles(self, frame: Frame | FrameError) -> bool:
        """True for responses to our AUTHs (also late ones, which `receive` ignores),
        readable or not (a response's `FrameError` goes to `receive_unreadable`)."""
        if isinstance(frame, FrameError):
            head, tid = frame.request, frame.tid
            if tid is None or (head is not None and head.method is not None):
                return False
        elif frame.method is not None:
            return False
        else:
            tid = frame.tid
        return tid == self._tid or tid in self._old_tids

    def frames_to_send(self) -> list[Frame]:
        """Take the AUTH requests queued since the last call, in order."""
        out, self._outbox = self._outbox, []
        return out

    # -- inputs ------------------------------------------------------------

    def start(self, now: float) -> None:
        """Send the first AUTH; after FAILED, start over; while authenticated, refresh now."""
        if self.state == RelayState.CLOSED:
            raise RelayError("relay client is closed")
        if self.state in (RelayState.AUTHENTICATING, RelayState.REFRESHING):
            return
        refresh = self.state == RelayState.AUTHENTICATED
        if not refresh:
            self.use_path, self.expires, self.expires_at, self._refresh_at = (), None, None, None
        self._new_cycle()
        self.state = RelayState.REFRESHING if refresh else RelayState.AUTHENTICATING
        self._send_auth(now)

    def receive(self, frame: Frame, now: float) -> list[RelayEvent]:
        """Feed a frame from the relay connection; frames that are not the
        response to our outstanding AUTH are ignored (see `handles`)."""
        if frame.method is not None or frame.tid != self._tid or frame.status is None:
            return []
        self._old_tids.append(frame.tid)
        self._tid = None
        status = frame.status
        if status == 200:
            return self._granted(frame, now)
        if status == 401:
            return self._challenged(frame, now)
        if status == 423 and not self._interval_retried:
            bound = _int_header(frame, "Min-Expires")
            if bound is None:
                bound = _int_header(frame, "Max-Expires")
            if bound is not None and bound != self.requested_expires:
                self._interval_retried = True
                self.requested_expires = bound
                self._send_auth(now)
                return []
        reason = frame.comment or REASONS.get(status, "AUTH rejected")
        return self._fail(status, reason)

    def receive_unreadable(self, tid: str | None, reason: str) -> list[RelayEvent]:
        """A frame on the relay connection failed to parse (`FrameError`). If it
        was the answer to our AUTH, fail now instead of at the response timeout."""
        if tid is None or tid != self._tid:
            return []
        self._old_tids.append(tid)
        return self._fail(None, f"unreadable answer to AUTH: {reason}")

    def on_timer(self, now: float) -> list[RelayEvent]:
        """Run due work: refresh, or give up on an unanswered AUTH."""
        if self.state == RelayState.AUTHENTICATED:
            if self._refresh_at is not None and now >= self._refresh_at:
                self._new_cycle()
                self.state = RelayState.REFRESHING
                self._send_auth(now)
            return []
        if self.state in (RelayState.AUTHENTICATING, RelayState.REFRESHING):
            if self.state == RelayState.REFRESHING and (
                self.expires_at is not None and now >= self.expires_at
            ):
                return self._fail(None, "grant expired before the refresh was answered")
            if now >= self._sent_at + self.response_timeout:
                return self._fail(408, "no response to AUTH")
        return []

    def connection_lost(self) -> list[RelayEvent]:
        """The relay connection closed: the grant is tied to it, so it is gone."""
        if self.state in (RelayState.FAILED, RelayState.CLOSED, RelayState.IDLE):
            return []
        return self._fail(None, "relay connection lost")

    def close(self) -> None:
        """Stop refreshing; queued frames are dropped."""
        self.state = RelayState.CLOSED
        self._outbox.clear()
        self._tid = None

    # -- internals ---------------------------------------------------------

    def _new_cycle(self) -> None:
        self._answered = False
        self._stale_retries = 0
        self._interval_retried = False

    def _send_auth(self, now: float) -> None:
        headers: list[tuple[str, str]] = []
        if self._challenge is not None:
            self._nc += 1
            headers.append(
                (
                    "Authorization",
                    authorization(
                        self._challenge,
                        username=self.username,
                        password=self._password,
                        method=AUTH,
                        uri=str(self.relay_uri),
                        cnonce=self._cnonce(),
                        nc=self._nc,
                    ),
                )
            )
        if self.requested_expires is not None:
            headers.append(("Expires", str(self.requested_expires)))
        frame = Frame.request(AUTH, [self.relay_uri], [self.our_uri], headers=headers)
        self._tid = frame.tid
        self._sent_at = now
        self._outbox.append(frame)

    def _challenged(self, frame: Frame, now: float) -> list[RelayEvent]:
        offered = [
            c
            for name, value in frame.headers
            if name.lower() == "www-authenticate"
            and (c := parse_challenge(value)) is not None
            and supported_algorithm(c)
        ]
        if not offered:
            return self._fail(401, "no usable Digest challenge")
        challenge = min(offered, key=lambda c: _ALGORITHM_PREFERENCE.get(c.base_algorithm, 9))
        if challenge.stale:
            self._stale_retries += 1
            if self._stale_retries > _MAX_STALE_RETRIES:
                return self._fail(401, "relay keeps reporting a stale nonce")
        elif self._answered:
            return self._fail(401, "credentials rejected")
        self._answered = True
        self._challenge = challenge
        self._nc = 0
        self._send_auth(now)
        return []

    def _granted(self, frame: Frame, now: float) -> list[RelayEvent]:
        raw = frame.header("Use-Path")
        if raw is None:
            return self._fail(None, "200 to AUTH without Use-Path")
        try:
            use_path = parse_path(raw)
        except MsrpUriError:
            return self._fail(None, f"malformed Use-Path {raw!r}")
        expires = _int_header(frame, "Expires")
        if expires is None:
            expires = self.requested_expires  # RFC 4976 wants Expires; assume we got ours
        if expires is not None and expires <= 0:
            return self._fail(None, "relay granted a zero lifetime")
        refresh = self.state == RelayState.REFRESHING
        changed = refresh and not same_path(use_path, self.use_path)
        self.use_path = use_path
        self.expires = expires
        if expires is None:
            self.expires_at = self._refresh_at = None
        else:
            self.expires_at = self._sent_at + expires
            self._refresh_at = self._sent_at + expires * self.refresh_ratio
        self.state = RelayState.AUTHENTICATED
        return [
            Authenticated(
                use_path, (*use_path, self.our_uri), expires, self.expires_at, refresh, changed
            )
        ]

    def _fail(self, status: int | None, reason: str) -> list[RelayEvent]:
        was = self.authenticated
        self.state = RelayState.FAILED
        self._tid = None
        self.expires_at = self._refresh_at = None
        self.use_path = ()
        return [AuthFailed(status, reason, was)]


def _int_header(frame: Frame, name: str) -> int | None:
    raw = frame.header(name)
    if raw is None or not _DELTA_SECONDS_RE.fullmatch(raw.strip()):
        return None
    return int(raw.strip())
