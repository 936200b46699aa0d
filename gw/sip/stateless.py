"""Stateless answers from a request's raw bytes, for overload (RFC 3261 §8.2.6, §18.2.2).

Beyond capacity, refusing costs as much as serving: a full parse, a server transaction,
the gateway's decision, a 503. `peek` reads only what an answer needs (method, Vias, From,
To, Call-ID, CSeq), and `answer` copies those lines into a final response with no
transaction kept, as a stateless proxy's sl_send_reply does. Anything unusual (a folded,
repeated, missing or malformed header line) makes `peek` return None and the request takes
the normal path, so only plain requests are ever answered here.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

__all__ = ["RawRequest", "answer", "peek"]

# Full and compact names (RFC 3261 §7.3.3), lower-case, of the lines an answer copies.
_VIA = (b"via", b"v")
_FROM = (b"from", b"f")
_TO = (b"to", b"t")
_CALL_ID = (b"call-id", b"i")
_CSEQ = (b"cseq",)


@dataclass(frozen=True, slots=True)
class RawRequest:
    method: str
    vias: tuple[bytes, ...]  # the Via lines, in order, as received
    from_line: bytes
    to_line: bytes
    call_id_line: bytes
    cseq_line: bytes
    from_value: str
    to_value: str
    call_id: str
    to_tagged: bool  # in a dialog (or claiming to be): the To header has a tag

    def reply_port(self, source_port: int) -> int:
        """Where the answer goes (§18.2.2, RFC 3581): the source port with `rport`, else
        the top Via's sent-by port (5060 by default)."""
        top = self.vias[0].split(b",", 1)[0]
        params = top.split(b";")
        if any(p.strip().lower().startswith(b"rport") for p in params[1:]):
            return source_port
        sent_by = params[0].split()[-1] if params[0].split() else b""
        host, _, port = sent_by.rpartition(b":")
        if host and port.isdigit() and not sent_by.endswith(b"]"):
            return int(port)
        return 5060


def peek(data: bytes) -> RawRequest | None:
    """The lines a stateless answer needs, or None when the request is not plain."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return None
    lines = data[:end].split(b"\r\n")
    start = lines[0].split(b" ")
    if len(start) != 3 or not start[2].upper().startswith(b"SIP/2.0"):
        return None
    vias: list[bytes] = []
    found: dict[bytes, bytes] = {}
    for line in lines[1:]:
        if not line or line[0] in b" \t":
            return None  # folded header: leave it to the full parser
        name, colon, _ = line.partition(b":")
        name = name.rstrip(b" \t").lower()
        if not colon or not name or b" " in name or b"\t" in name:
            return None  # not a header line
        if name in _VIA:
            vias.append(line)
            continue
        for names in (_FROM, _TO, _CALL_ID, _CSEQ):
            if name in names:
                if names[0] in found:
                    return None  # repeated: not plain
                found[names[0]] = line
    if not vias or len(found) != 4:
        return None
    try:
        method = start[0].decode("ascii")
        from_value = _value(found[b"from"])
        to_value = _value(found[b"to"])
        call_id = _value(found[b"call-id"])
    except UnicodeDecodeError:
        return None
    if not method.isalpha() or not call_id:
        return None
    return RawRequest(
        method=method,
        vias=tuple(vias),
        from_line=found[b"from"],
        to_line=found[b"to"],
        call_id_line=found[b"call-id"],
        cseq_line=found[b"cseq"],
        from_value=from_value,
        to_value=to_value,
        call_id=call_id,
        to_tagged=_has_tag(to_value),
    )


def answer(
    request: RawRequest,
    status: int,
    reason: str,
    *,
    headers: list[tuple[str, str]] | tuple[tuple[str, str], ...] = (),
) -> bytes:
    """A final response to `request`, its To tagged (§8.2.6.2) with a tag derived from the
    request, so a retransmission gets the same answer."""
    to_line = request.to_line
    if not request.to_tagged:
        seed = (request.call_id + request.from_value).encode("utf-8", "surrogateescape")
        to_line += b";tag=" + hashlib.blake2s(seed, digest_size=6).hexdigest().encode()
    out = [f"SIP/2.0 {status} {reason}".encode(), *request.vias]
    out += [request.from_line, to_line, request.call_id_line, request.cseq_line]
    out += [f"{name}: {value}".encode() for name, value in headers]
    out += [b"Content-Length: 0", b"", b""]
    return b"\r\n".join(out)


def _value(line: bytes) -> str:
    return line.partition(b":")[2].strip().decode("utf-8")


def _has_tag(value: str) -> bool:
    """A `tag` parameter outside the <URI> (or after the URI when there is no <>)."""
    close = value.rfind(">")
    params = value[close + 1 :] if close >= 0 else value.partition(";")[2]
    return any(p.strip().lower().startswith("tag=") for p in params.split(";"))
