"""docs/events.schema.json (issue 15 §5) describes what nodes publish: the examples in
docs/events.md and the events the gateway core publishes in random runs all validate, and a
malformed envelope does not."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import settings
from hypothesis.stateful import run_state_machine_as_test

from gw.gateway import events as ev
from gw.msrp.events import MessageDelivered
from gw.store.events import EventBus
from gw.store.records import SessionRecord
from tests.gateway.test_core_stateful import CoreMachine
from tests.support.core_world import World, answer_2xx

DOCS = Path(__file__).parent.parent / "docs"
SCHEMA = json.loads((DOCS / "events.schema.json").read_text())
KEY = "alice@page.example-bob@msrp.example"


def validate(envelope: dict[str, Any]) -> None:
    jsonschema.validate(envelope, SCHEMA, cls=jsonschema.Draft202012Validator)


def test_the_schema_is_valid() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


def test_every_example_in_events_md_validates() -> None:
    blocks = re.findall(r"```json\n(.*?)```", (DOCS / "events.md").read_text(), re.S)
    envelopes = [json.loads(b) for b in blocks if '"v": 1' in b]
    assert len(envelopes) >= 6
    for envelope in envelopes:
        validate(envelope)


def test_what_the_core_publishes_validates() -> None:
    published: list[tuple[str, dict[str, Any]]] = []

    class Recording(CoreMachine):
        def teardown(self) -> None:
            super().teardown()
            published.extend(self.world.published)

    run_state_machine_as_test(
        Recording, settings=settings(max_examples=60, stateful_step_count=40, deadline=None)
    )
    world = World()  # a take-over, which the machine (one node) never makes
    world.core.ctx.clustered = True
    world.store[KEY] = SessionRecord(key=KEY, state="active", owner="n2")
    world.invite_answer = answer_2xx
    world.message(b"hi")
    world.msrp_event(world.session(), MessageDelivered("m1"))
    published.extend(world.published)
    bus = EventBus(redis=None, node="n1")  # type: ignore[arg-type]  # no I/O: envelopes only
    names = set()
    for name, data in published:
        validate(json.loads(bus.payload(name, data)))
        names.add(name)
    assert names >= {ev.SETUP_FAILED, ev.SESSION_STARTED, ev.SESSION_ENDED, ev.SESSION_MOVED}


def test_a_malformed_envelope_does_not_validate() -> None:
    good = {"v": 1, "event": "E_MSRP_GW_SESSION_STARTED", "ts": 1.0, "node": "gw1",
            "data": {"key": "k", "origin": "answer"}}  # fmt: skip
    validate(good)
    for bad in (
        {**good, "v": 2},
        {**good, "data": {"key": "k", "origin": "sideways"}},
        {k: v for k, v in good.items() if k != "node"},
    ):
        with pytest.raises(jsonschema.ValidationError):
            validate(bad)
