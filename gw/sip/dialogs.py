"""Sans-I/O dialog layer: the RFC 3261 rules between an INVITE, its 2xx and the ACK.

`dialog.py` holds one dialog's state (tags, CSeqs, route set, target). `DialogLayer`
keeps an endpoint's table of dialogs and the rules that span messages and time, which
the transaction layer leaves to its user (the 2xx to an INVITE ends the client and
server transactions, §17.1.1.2, §17.2.1):

- §12.2.2: a request whose To tag matches no dialog is refused with 481; one inside a
  dialog is checked for CSeq order (500) and may refresh the target; BYE ends the dialog.
- UAS, §12.1.1 and §13.3.1.4: the 2xx we send to an INVITE creates the dialog and is
  retransmitted, on unreliable transports, after T1, 2*T1, ... capped at T2, until its
  ACK arrives. With no ACK 64*T1 after the 2xx, `AckMissing` is reported: the dialog is
  to be ended with a BYE.
- UAC, §12.1.2 and §13.2.2.4: a 2xx to our INVITE creates the dialog (or, to a
  re-INVITE, refreshes its target, §12.2.1.2) and gets an ACK built here. Once the
  adapter has routed it (`send_ack`), the ACK is kept and sent again for every
  retransmission of that 2xx, which the transaction layer reports as a `StrayResponse`.

Like `TransactionLayer`, it never touches sockets or clocks: calls get `now` and return
events (`Send`, `AckMissing`); timers are deadlines the caller waits for
(`next_deadline`) before calling `on_timer`. One timer per endpoint serves both layers.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from dataclasses import dataclass

from gw.sip.dialog import Dialog, DialogError, DialogId, new_tag
from gw.sip.message import Request, Response
from gw.sip.timers import TimerQueue, Timers
from gw.sip.transaction import Address, Send
from gw.sip.uri import SipSyntaxError

__all__ = ["AckMissing", "DialogEvent", "DialogLayer", "Refusal"]

# ACKs kept for re-sending on a retransmitted 2xx: one per dialog set up (or re-INVITE),
# oldest dropped first. The far end stops retransmitting 64*T1 after its 2xx.
MAX_ACKS = 4096


@dataclass(frozen=True, slots=True)
class Refusal:
    """A request the dialog layer refuses: answer it with `status` and `reason`."""

    status: int
    reason: str


@dataclass(frozen=True, slots=True)
class AckMissing:
    """§13.3.1.4: no ACK came within 64*T1 for our 2xx to the INVITE of `call_id`.

    `dialog` is the dialog to end with a BYE, None when it has already ended.
    """

    call_id: str
    dialog: Dialog | None


DialogEvent = Send | AckMissing


class _Pending2xx:
    """A 2xx to an INVITE, retransmitted until its ACK (§13.3.1.4)."""

    __slots__ = ("deadlines", "dest", "dialog_id", "interval", "key", "response")

    def __init__(
        self,
        key: tuple[str, int],
        response: Response,
        dest: Address,
        dialog_id: DialogId | None,
    ) -> None:
        self.key = key
        self.response = response
        self.dest = dest
        self.dialog_id = dialog_id
        self.interval = 0.0
        self.deadlines: dict[str, float] = {}


class DialogLayer:
    """The dialogs of one endpoint and the INVITE/2xx/ACK rules (see the module doc).

    `dialogs` maps each dialog's id to it; only this layer adds to it or removes from it.
    """

    def __init__(self, timers: Timers | None = None, *, max_acks: int = MAX_ACKS) -> None:
        self.timers = timers or Timers()
        self.dialogs: dict[DialogId, Dialog] = {}
        self._max_acks = max_acks
        # 2xx we retransmit, by (Call-ID, CSeq number) of the INVITE, which its ACK repeats.
        self._pending: dict[tuple[str, int], _Pending2xx] = {}
        self._queue: TimerQueue[_Pending2xx] = TimerQueue()
        # ACKs we sent for 2xx, by (Call-ID, remote tag, CSeq number), with where they went.
        self._acks: OrderedDict[tuple[str, str, int], tuple[Request, Address]] = OrderedDict()

    # -- queries -------------------------------------------------------------------------
    def awaiting_ack(self, invite: Request) -> bool:
        """True while our 2xx to `invite` is retransmitted, waiting for its ACK."""
        return (invite.call_id, invite.cseq[0]) in self._pending

    def next_deadline(self) -> float | None:
        return self._queue.next_deadline() if self._pending else None

    # -- requests received (§12.2.2) -----------------------------------------------------
    def receive_request(self, request: Request) -> Dialog | Refusal | None:
        """The dialog a request (not ACK or CANCEL) belongs to; None without a To tag
        (out of dialog); a `Refusal` for an unknown dialog (481) or a CSeq out of order
        (500). A BYE ends its dialog here (§15.1.2)."""
        to_tag = request.to.tag
        if to_tag is None:
            return None
        dialog = self.dialogs.get(DialogId(request.call_id, to_tag, request.from_.tag or ""))
        if dialog is None:
            return Refusal(481, "Call/Transaction Does Not Exist")
        try:
            dialog.receive_request(request)
        except DialogError as exc:
            return Refusal(exc.code, exc.reason)
        if request.method == "BYE":
            self.dialogs.pop(dialog.id, None)
        return dialog

    def end(self, dialog: Dialog) -> None:
        """Forget a dialog: we sent its BYE (§15.1.1, whatever the answer)."""
        self.dialogs.pop(dialog.id, None)

    # -- UAS: our 2xx to an INVITE (§12.1.1, §13.3.1.4) -----------------------------------
    def send_2xx(
        self,
        invite: Request,
        response: Response,
        dest: Address,
        now: float,
        dialog: Dialog | None = None,
    ) -> Dialog | None:
        """Our 2xx to `invite` is being sent to `dest` (by its server transaction): return
        the dialog (`dialog` for a re-INVITE; for an INVITE without To tag, the one the 2xx
        creates, None when the INVITE cannot make one: no From tag, not one Contact), and
        retransmit the 2xx until `receive_ack` or 64*T1 (`on_timer`)."""
        if dialog is None and invite.to.tag is None:
            try:
                dialog = Dialog.from_uas(invite, response.to.tag or new_tag())
            except (DialogError, SipSyntaxError):
                dialog = None
            if dialog is not None:
                self.dialogs[dialog.id] = dialog
        key = (invite.call_id, invite.cseq[0])
        old = self._pending.pop(key, None)
        if old is not None:
            self._queue.cancel_all(old)
        pending = _Pending2xx(key, response, dest, dialog.id if dialog is not None else None)
        self._pending[key] = pending
        if not dest.reliable:
            pending.interval = self.timers.t1
            self._queue.arm(pending, "retransmit", now + pending.interval)
        self._queue.arm(pending, "give_up", now + 64 * self.timers.t1)
        return dialog

    def receive_ack(self, ack: Request) -> bool:
        """An ACK for a 2xx (the transaction layer's `AckReceived`): stop retransmitting
        the 2xx it acknowledges. False when it acknowledges none we are retransmitting."""
        try:
            key = (ack.call_id, ack.cseq[0])
        except SipSyntaxError:
            return False
        pending = self._pending.pop(key, None)
        if pending is None:
            return False
        self._queue.cancel_all(pending)
        return True

    # -- UAC: a 2xx to our INVITE (§12.1.2, §13.2.2.4) -------------------------------------
    def receive_2xx(
        self, invite: Request, response: Response, dialog: Dialog | None = None
    ) -> tuple[Dialog, Request]:
        """A 2xx to our `invite`: the dialog it creates (or, for a re-INVITE in `dialog`,
        refreshes: §12.2.1.2) and the ACK to send for it, without Via; route it, add the
        Via and hand it to `send_ack`. DialogError when the 2xx cannot make a dialog (no
        To tag or Contact): the caller should hang up rather than keep the call."""
        if dialog is None:
            try:
                dialog = Dialog.from_uac(invite, response)
            except SipSyntaxError as exc:
                raise DialogError(400, f"Bad 2xx: {exc}") from None
            self.dialogs[dialog.id] = dialog
        else:
            # An unreadable Contact keeps the old target; the 2xx is still ACKed.
            with contextlib.suppress(SipSyntaxError):
                dialog.refresh_from_response(response)
        dialog.invite_seq = invite.cseq[0]
        return dialog, dialog.create_request("ACK")

    def send_ack(self, ack: Request, dest: Address) -> list[DialogEvent]:
        """Send the ACK for a 2xx (from `receive_2xx`, routed to `dest`) and keep it for
        the retransmissions of that 2xx."""
        seq = ack.cseq[0]
        tag = ack.to.tag or ""
        self._acks[(ack.call_id, tag, seq)] = (ack, dest)
        while len(self._acks) > self._max_acks:
            self._acks.popitem(last=False)
        return [Send(ack, dest)]

    def receive_stray(self, response: Response) -> list[DialogEvent]:
        """A response no client transaction matches: a retransmitted 2xx to our INVITE
        gets its ACK again (§13.2.2.4); anything else is dropped."""
        try:
            seq, method = response.cseq
            tag = response.to.tag
            call_id = response.call_id
        except SipSyntaxError:
            return []
        if method != "INVITE" or not 200 <= response.status < 300 or tag is None:
            return []
        kept = self._acks.get((call_id, tag, seq))
        if kept is None:
            return []
        return [Send(*kept)]

    # -- timers ----------------------------------------------------------------------------
    def on_timer(self, now: float) -> list[DialogEvent]:
        events: list[DialogEvent] = []
        while (due := self._queue.pop_due(now)) is not None:
            pending, name = due
            if name == "retransmit":
                pending.interval = min(pending.interval * 2, self.timers.t2)
                self._queue.arm(pending, "retransmit", now + pending.interval)
                events.append(Send(pending.response, pending.dest))
                continue
            # give_up: the dialog is confirmed, then torn down (§13.3.1.4).
            self._queue.cancel_all(pending)
            del self._pending[pending.key]
            dialog_id = pending.dialog_id
            dialog = self.dialogs.get(dialog_id) if dialog_id is not None else None
            events.append(AckMissing(pending.key[0], dialog))
        return events
