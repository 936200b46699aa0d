"""MSRP REPORT requests (RFC 4975 §7.1.2, §9.1.3, §9.1.4): building and reading them.

A REPORT travels end to end (To-Path is the SEND's whole From-Path), carries
the original Message-ID, the Byte-Range it speaks for and a `Status:
000 <code> <comment>` header. It never has Failure-Report or Success-Report
and is never answered with a transaction response.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from gw.msrp.chunks import ByteRange
from gw.msrp.frame import REASONS, Frame
from gw.msrp.uri import MsrpUri

__all__ = ["ReportStatus", "format_status", "make_report", "parse_status"]

_STATUS_RE = re.compile(r"([0-9]{3}) ([0-9]{3})(?: (.*))?")
_CTL_RE = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True, slots=True)
class ReportStatus:
    namespace: str  # "000" is the only one RFC 4975 defines: MSRP status codes
    code: int
    comment: str


def format_status(code: int, comment: str | None = None) -> str:
    """`000 200 OK` style value; the comment defaults to the RFC reason phrase."""
    text = REASONS.get(code, "") if comment is None else _CTL_RE.sub(" ", comment)
    return f"000 {code:03d} {text}".rstrip()


def parse_status(value: str | None) -> ReportStatus | None:
    """Parse a Status header value; None when absent or malformed."""
    if value is None:
        return None
    m = _STATUS_RE.fullmatch(value.strip())
    if m is None:
        return None
    return ReportStatus(m[1], int(m[2]), m[3] or "")


def make_report(
    to_path: Sequence[MsrpUri],
    from_uri: MsrpUri,
    message_id: str,
    byte_range: ByteRange,
    code: int,
    comment: str | None = None,
) -> Frame:
    """Build a REPORT; `to_path` is the From-Path of the SEND being reported on."""
    headers = [
        ("Message-ID", message_id),
        ("Byte-Range", str(byte_range)),
        ("Status", format_status(code, comment)),
    ]
    return Frame.request("REPORT", to_path, [from_uri], headers=headers)
