"""msrp-gw: a gateway between page-mode (SIP MESSAGE) and session-mode (MSRP) IM."""

__version__ = "0.2.0"
