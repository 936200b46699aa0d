"""INVITE dialogs as UAC and UAS (RFC 3261 §12, §13, §14, §15).

Pure state: which tags, CSeqs, route set and remote target a dialog has, and how
to build in-dialog requests. The endpoint sends what this builds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gw.ids import random_hex
from gw.sip.message import Request, Response
from gw.sip.uri import NameAddr, SipSyntaxError, SipUri

__all__ = ["Dialog", "DialogError", "DialogId", "new_tag"]


def new_tag() -> str:
    """A fresh From/To tag: 48 random bits (§19.3 asks for at least 32)."""
    return random_hex(12)


@dataclass(frozen=True)
class DialogId:
    call_id: str
    local_tag: str
    remote_tag: str


class DialogError(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{code} {reason}")
        self.code = code
        self.reason = reason


@dataclass(slots=True)
class Dialog:
    """One dialog's state (§12). A node keeps one per idle session, so it holds the From/To
    header values as text (what in-dialog requests copy), not parsed name-addrs."""

    call_id: str
    local_tag: str
    remote_tag: str
    local: str  # our From (UAC) / To (UAS) header value, with tag
    remote: str  # the peer's, with tag
    remote_target: SipUri
    route_set: list[NameAddr] = field(default_factory=list)
    local_seq: int = 0
    remote_seq: int | None = None
    secure: bool = False
    confirmed: bool = True
    # CSeq of the INVITE that set the dialog up, for the ACK of its 2xx.
    invite_seq: int = 0

    @property
    def id(self) -> DialogId:
        return DialogId(self.call_id, self.local_tag, self.remote_tag)

    # -- creation ----------------------------------------------------------------
    @classmethod
    def from_uac(cls, invite: Request, response: Response) -> Dialog:
        """The dialog a 2xx (or 1xx with a tag) to our INVITE creates (§12.1.2)."""
        to = response.to
        if to.tag is None:
            raise DialogError(400, "Response Without To Tag")
        contacts = response.contacts
        if not contacts:
            raise DialogError(400, "Response Without Contact")
        frm = invite.from_
        assert frm.tag is not None
        seq, _ = invite.cseq
        return cls(
            call_id=invite.call_id,
            local_tag=frm.tag,
            remote_tag=to.tag,
            local=str(frm),
            remote=str(to),
            remote_target=contacts[0].uri,
            route_set=list(reversed(response.record_routes)),
            local_seq=seq,
            secure=invite.uri.scheme == "sips",
            invite_seq=seq,
        )

    @classmethod
    def from_uas(cls, invite: Request, local_tag: str) -> Dialog:
        """The dialog our 2xx to an INVITE creates (§12.1.1)."""
        frm = invite.from_
        if frm.tag is None:
            raise DialogError(400, "Missing From Tag")
        contacts = invite.contacts
        if len(contacts) != 1 or contacts[0].wildcard:
            raise DialogError(400, "INVITE Needs One Contact")
        seq, _ = invite.cseq
        return cls(
            call_id=invite.call_id,
            local_tag=local_tag,
            remote_tag=frm.tag,
            local=str(invite.to.with_tag(local_tag)),
            remote=str(frm),
            remote_target=contacts[0].uri,
            route_set=list(invite.record_routes),
            local_seq=0,
            remote_seq=seq,
            secure=invite.uri.scheme == "sips",
            invite_seq=seq,
        )

    # -- in-dialog requests we send -------------------------------------------------
    def create_request(
        self, method: str, *, body: bytes = b"", content_type: str | None = None
    ) -> Request:
        """A request inside the dialog (§12.2.1.1), without Via (the endpoint adds it)."""
        if method != "ACK" and method != "CANCEL":
            self.local_seq += 1
        seq = self.invite_seq if method == "ACK" else self.local_seq
        uri, routes = self._request_target()
        req = Request(method=method, uri=uri)
        req.add("Max-Forwards", "70")
        for route in routes:
            req.add("Route", str(route))
        req.add("From", self.local)
        req.add("To", self.remote)
        req.add("Call-ID", self.call_id)
        req.add("CSeq", f"{seq} {method}")
        if content_type is not None:
            req.add("Content-Type", content_type)
        req.body = body
        return req

    def _request_target(self) -> tuple[SipUri, list[NameAddr]]:
        if not self.route_set:
            return self.remote_target, []
        first = self.route_set[0]
        if "lr" in first.uri.params:
            return self.remote_target, list(self.route_set)
        # Strict router (§12.2.1.1): the first route becomes the Request-URI.
        rest = [*self.route_set[1:], NameAddr(uri=self.remote_target)]
        return first.uri.with_params(), rest

    # -- in-dialog requests we receive ----------------------------------------------
    def receive_request(self, request: Request) -> None:
        """CSeq ordering and target refresh (§12.2.2). Raises DialogError(500) on order."""
        seq, method = request.cseq
        if method in ("ACK", "CANCEL"):
            return
        if self.remote_seq is not None and seq <= self.remote_seq:
            raise DialogError(500, "CSeq Out Of Order")
        self.remote_seq = seq
        if method == "INVITE" or method == "UPDATE":
            try:
                contacts = request.contacts
            except SipSyntaxError as exc:
                raise DialogError(400, f"Bad Contact: {exc}") from None
            if contacts:
                self.remote_target = contacts[0].uri

    def refresh_from_response(self, response: Response) -> None:
        """A 2xx to our re-INVITE refreshes the remote target (§12.2.1.2)."""
        contacts = response.contacts
        if contacts:
            self.remote_target = contacts[0].uri

    def matches(self, message: Request | Response, *, incoming: bool) -> bool:
        if message.call_id != self.call_id:
            return False
        frm, to = message.from_.tag, message.to.tag
        if incoming and isinstance(message, Request):
            return frm == self.remote_tag and to == self.local_tag
        return frm == self.local_tag and to == self.remote_tag


def dialog_id_of(message: Request | Response, *, incoming_request: bool) -> DialogId | None:
    """The id a message refers to, or None without a To tag (out of dialog)."""
    to_tag = message.to.tag
    from_tag = message.from_.tag
    if to_tag is None or from_tag is None:
        return None
    if incoming_request:
        return DialogId(message.call_id, to_tag, from_tag)
    return DialogId(message.call_id, from_tag, to_tag)
