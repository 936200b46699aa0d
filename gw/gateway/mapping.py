"""Status code mapping between the two sides (see docs/protocol-mapping.md for the why)."""

from __future__ import annotations

# MSRP transaction/REPORT status -> the MESSAGE's final response.
_MSRP_TO_SIP = {
    400: (400, "Bad Request (MSRP peer)"),
    403: (403, "Forbidden (MSRP peer)"),
    408: (408, "Request Timeout (MSRP)"),
    413: (413, "Request Entity Too Large (MSRP peer)"),
    415: (415, "Unsupported Media Type (MSRP peer)"),
    481: (480, "MSRP Session Gone"),
    501: (501, "Not Implemented (MSRP peer)"),
    506: (480, "MSRP Session Busy Elsewhere"),
}


def msrp_to_sip(code: int) -> tuple[int, str]:
    """The MESSAGE answer for a failed SEND."""
    if code in _MSRP_TO_SIP:
        return _MSRP_TO_SIP[code]
    if 400 <= code < 500:
        return 403, f"Rejected By MSRP Peer ({code})"
    return 500, f"MSRP Error {code}"


def sip_to_msrp(code: int) -> tuple[int, str]:
    """The failure REPORT status for a MESSAGE that failed on the page-mode side."""
    if code in (408, 480, 503, 504):
        return 408, "Request Timeout"
    if code == 413:
        return 413, "Message Too Large"
    if code == 415 or code == 488 or code == 606:
        return 415, "Unsupported Media Type"
    return 403, "Forbidden"
