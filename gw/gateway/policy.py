"""Routing policy: which gateway function a request runs, with which key and coordinates.

This is the part of an OpenSIPS script that calls `msg_to_msrp()` or
`msrp_gw_answer()`. The default covers the common case; operators override it
with config (key template, content types, R-URI rewrite) or a Python hook.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field

from gw.sip.message import Request
from gw.sip.sdp import SdpError, find_msrp_media, parse_sdp
from gw.sip.uri import SipSyntaxError, SipUri

__all__ = ["Decision", "Policy", "load_hook", "split_types"]

MSG_TO_MSRP = "msg_to_msrp"
ANSWER = "msrp_gw_answer"
OPTIONS = "options"
REJECT = "reject"


@dataclass(slots=True)
class Decision:
    """What to do with one out-of-dialog request.

    For `msg_to_msrp`, `ruri` is where the INVITE goes. For `msrp_gw_answer`,
    `from_uri`/`to_uri`/`ruri` are the coordinates of the MESSAGEs we will send.
    """

    action: str
    key: str = ""
    content_types: list[str] = field(default_factory=list)
    from_uri: str = ""
    to_uri: str = ""
    ruri: str = ""
    code: int = 0
    reason: str = ""
    headers: list[tuple[str, str]] = field(default_factory=list)


Hook = Callable[[Request], "Decision | None"]


def split_types(text: str) -> list[str]:
    return [t for t in text.replace(",", " ").split() if t]


def load_hook(spec: str) -> Hook:
    module_name, _, func_name = spec.partition(":")
    module = importlib.import_module(module_name)
    hook = getattr(module, func_name)
    if not callable(hook):
        raise TypeError(f"{spec} is not callable")
    return hook  # type: ignore[no-any-return]


def _aor_parts(uri: SipUri) -> tuple[str, str, str]:
    if not uri.is_sip:
        return uri.aor, "", uri.opaque or ""
    user = uri.user or ""
    host = uri.host_text.lower()
    return (f"{user}@{host}" if user else host), user, host


class Policy:
    def __init__(
        self,
        *,
        content_types: list[str],
        key_template: str = "{page_aor}-{msrp_aor}",
        ruri_rewrite: str = "",
        hook: Hook | None = None,
    ) -> None:
        self.content_types = content_types
        self.key_template = key_template
        self.ruri_rewrite = ruri_rewrite
        self.hook = hook

    def key(self, page: SipUri, msrp: SipUri) -> str:
        page_aor, page_user, page_host = _aor_parts(page)
        msrp_aor, msrp_user, msrp_host = _aor_parts(msrp)
        return self.key_template.format(
            page_aor=page_aor,
            page_user=page_user,
            page_host=page_host,
            msrp_aor=msrp_aor,
            msrp_user=msrp_user,
            msrp_host=msrp_host,
        )

    def decide(self, request: Request) -> Decision:
        if self.hook is not None:
            decision = self.hook(request)
            if decision is not None:
                return decision
        return self.default(request)

    def default(self, request: Request) -> Decision:
        method = request.method
        if method == "OPTIONS":
            return Decision(OPTIONS)
        try:
            frm, to = request.from_, request.to
        except SipSyntaxError as exc:
            return Decision(REJECT, code=400, reason=str(exc))
        if method == "MESSAGE":
            return Decision(
                MSG_TO_MSRP,
                key=self.key(frm.uri, to.uri),
                content_types=list(self.content_types),
                ruri=self._rewrite(request.uri),
            )
        if method == "INVITE":
            if not request.body:
                return Decision(REJECT, code=488, reason="No SDP Offer")
            try:
                media = find_msrp_media(parse_sdp(request.body))
            except SdpError as exc:
                return Decision(REJECT, code=400, reason=f"Bad SDP: {exc}"[:120])
            if media is None:
                return Decision(
                    REJECT,
                    code=488,
                    reason="No MSRP Stream",
                    headers=[("Warning", '304 msrp-gw "Media type not available"')],
                )
            return Decision(
                ANSWER,
                key=self.key(to.uri, frm.uri),
                content_types=list(self.content_types),
                from_uri=str(frm.uri),
                to_uri=str(to.uri),
                ruri=str(to.uri),
            )
        return Decision(REJECT, code=405, reason="Method Not Allowed")

    def _rewrite(self, uri: SipUri) -> str:
        if not self.ruri_rewrite:
            return str(uri)
        _, user, host = _aor_parts(uri)
        return self.ruri_rewrite.format(user=user, host=host, uri=str(uri))
