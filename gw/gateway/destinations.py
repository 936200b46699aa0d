"""Where the gateway may send requests it originates (INVITEs for msg_to_msrp, MESSAGEs for
sessions it answered): with no outbound proxy, the hosts come from R-URIs and From headers of
anyone's requests, so an open gateway is a port scanner and a relay (issue 16). An allow-list
of domains and networks bounds it; `*` allows any host knowingly.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from gw.sip.uri import SipSyntaxError, parse_uri

__all__ = ["Destinations", "DestinationsError"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class DestinationsError(ValueError):
    """An allow-list entry that is neither a domain, a wildcard domain nor a network."""


class Destinations:
    """`example.com` (that host), `*.example.com` (its subdomains, not itself), an address
    or a network (`10.0.0.0/8`, `2001:db8::/32`), or `*` (any). Host names are matched as
    written: no DNS lookup is made for the check (list the domains you trust)."""

    def __init__(self, entries: Sequence[str]) -> None:
        self.any = False
        self.hosts: set[str] = set()
        self.suffixes: list[str] = []
        self.networks: list[Network] = []
        for raw in entries:
            entry = raw.strip().lower()
            if not entry:
                continue
            if entry == "*":
                self.any = True
            elif entry.startswith("*."):
                self._domain(entry[2:], raw)
                self.suffixes.append("." + entry[2:])
            else:
                try:
                    self.networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
                    continue
                except ValueError:
                    if "/" in entry or ":" in entry:
                        raise DestinationsError(f"not a network or address: {raw!r}") from None
                self._domain(entry, raw)
                self.hosts.add(entry)

    @staticmethod
    def _domain(name: str, raw: str) -> None:
        labels = name.split(".")
        if not all(label and all(c.isalnum() or c == "-" for c in label) for label in labels):
            raise DestinationsError(f"not a domain, *.domain or network: {raw!r}")

    @property
    def restricted(self) -> bool:
        """Whether any check is made (an empty list or `*` allows every host)."""
        return not self.any and bool(self.hosts or self.suffixes or self.networks)

    def allows(self, uri: str) -> bool:
        """Whether a request to `uri` (a SIP URI) may go out."""
        if not self.restricted:
            return True
        try:
            host = parse_uri(uri).host_text.lower().strip("[]")
        except SipSyntaxError:
            return False
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return host in self.hosts or any(host.endswith(s) for s in self.suffixes)
        return any(address in net for net in self.networks)
