"""gw.backoff.Outage: exponential delays with jitter to a cap, one warning per outage."""

from __future__ import annotations

import logging

import pytest

from gw.backoff import Outage


def test_one_warning_per_outage_and_delays_grow_to_the_cap(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = logging.getLogger("test.backoff")
    now = [100.0]
    outage = Outage("rpc inbox", log, first=0.1, cap=5.0, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="test.backoff"):
        delays = [outage.failed(ConnectionError("refused")) for _ in range(12)]
        now[0] += 30.0
        outage.recovered()
        outage.recovered()  # no outage: nothing to say
        outage.failed(ConnectionError("again"))
    assert 0.075 <= delays[0] <= 0.125 and delays[1] > delays[0] * 1.2
    assert all(d <= 5.0 * 1.25 for d in delays) and delays[-1] >= 5.0 * 0.75
    lines = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert lines == [
        ("WARNING", "rpc inbox lost (refused); retrying with backoff up to 5 s"),
        ("INFO", "rpc inbox back after 30.0 s (12 tries)"),
        ("WARNING", "rpc inbox lost (again); retrying with backoff up to 5 s"),
    ]
    assert outage.outages == 2
