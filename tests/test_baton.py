"""The driver's baton (sync/state.json): fields, change detection, a baton caught mid-write."""

from __future__ import annotations

import json
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collectors.baton import BatonCollector, BatonError, BatonTracker, parse_baton
from collectors.watch import Change
from monitor.config import Settings
from monitor.events import BatonChanged, Envelope, Warning

BATON = "sync/state.json"

RUNNING_GALPH = b"""{
  "iteration": 345,
  "expected_actor": "galph",
  "status": "running-galph",
  "last_update": "2025-10-11T05:22:44Z",
  "lease_expires_at": "2025-10-11T05:32:44Z",
  "galph_commit": "7285460f",
  "ralph_commit": "35266980"
}
"""


def baton(**fields: object) -> bytes:
    data = json.loads(RUNNING_GALPH)
    data.update(fields)
    return json.dumps(data, indent=2).encode()


def test_fields_of_a_real_baton() -> None:
    parsed = parse_baton(RUNNING_GALPH)

    assert (parsed.iteration, parsed.expected_actor, parsed.status) == (345, "galph", "running-galph")
    assert parsed.last_update == datetime(2025, 10, 11, 5, 22, 44, tzinfo=timezone.utc)
    assert parsed.lease_expires_at == datetime(2025, 10, 11, 5, 32, 44, tzinfo=timezone.utc)
    assert (parsed.galph_commit, parsed.ralph_commit, parsed.last_prompt) == ("7285460f", "35266980", None)


def test_odd_fields_are_absent_not_fatal() -> None:
    parsed = parse_baton(
        baton(iteration="346", lease_expires_at="next tuesday", last_update=1760160164, status=["x"], last_prompt="main.md")
    )

    assert parsed.iteration == 346
    assert parsed.lease_expires_at is None
    assert parsed.last_update == datetime(2025, 10, 11, 5, 22, 44, tzinfo=timezone.utc)
    assert parsed.status is None
    assert parsed.last_prompt == "main.md"


@pytest.mark.parametrize(
    ("data", "said"),
    [
        (b"", "empty file"),
        (b'{\n  "iteration": 345,\n  "expected_ac', "not valid JSON"),
        (b"[1, 2]", "not an object"),
        (b"\xff\xfe\x00garbage", "not valid JSON"),
    ],
)
def test_invalid_batons_raise_a_clear_error(data: bytes, said: str) -> None:
    with pytest.raises(BatonError, match=said):
        parse_baton(data)


def test_tracker_emits_only_when_a_field_changed() -> None:
    tracker = BatonTracker()

    first = tracker.update(BATON, RUNNING_GALPH)
    reformatted = tracker.update(BATON, json.dumps(json.loads(RUNNING_GALPH)).encode())  # same fields, other bytes
    handed_off = tracker.update(BATON, baton(expected_actor="ralph", status="running-ralph"))

    assert [(b.iteration, b.expected_actor) for b in first] == [(345, "galph")]
    assert reformatted == []
    assert [(b.expected_actor, b.status) for b in handed_off] == [("ralph", "running-ralph")]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        st.binary(max_size=200),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
            lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=20), inner, max_size=4),
            max_leaves=10,
        ).map(lambda v: json.dumps(v).encode()),
        st.dictionaries(
            st.sampled_from(["iteration", "expected_actor", "status", "last_update", "lease_expires_at", "galph_commit"]),
            st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
        ).map(lambda v: json.dumps(v).encode()),
    )
)
def test_fuzz_any_bytes_give_a_baton_or_a_baton_error(data: bytes) -> None:
    try:
        parsed = parse_baton(data)
    except BatonError as exc:
        assert str(exc)
        return
    assert isinstance(parsed, BatonChanged)
    for when in (parsed.last_update, parsed.lease_expires_at):
        assert when is None or when.tzinfo is not None


# --------------------------------------------------------------------------- the collector, on a real repo


def collector_for(root: Path, **watch: int) -> tuple[BatonCollector, list]:
    events: list = []
    collector = BatonCollector(root, Settings.model_validate({"watch": watch}), lambda payload, when: events.append(payload))
    return collector, events


def test_collector_follows_hand_offs(repo) -> None:
    repo.commit("[SYNC i=345] actor=galph status=running", {BATON: RUNNING_GALPH})
    collector, events = collector_for(repo.root)

    collector.scan()
    repo.write(BATON, baton(expected_actor="ralph", status="waiting-ralph", galph_commit="0a595c40"))
    collector.on_changes([Change(BATON, "modified")])
    collector.on_changes([Change(BATON, "modified")])  # touched, not changed

    assert [(e.iteration, e.expected_actor, e.status, e.galph_commit) for e in events] == [
        (345, "galph", "running-galph", "7285460f"),
        (345, "ralph", "waiting-ralph", "0a595c40"),
    ]


def test_collector_reads_again_a_baton_caught_mid_write(repo) -> None:
    repo.write(BATON, RUNNING_GALPH)
    collector, events = collector_for(repo.root, baton_retry_ms=7)
    collector.scan()
    events.clear()
    repo.write(BATON, b'{\n  "iteration": 346,\n  "expected_')
    pauses: list[float] = []

    def driver_finishes(seconds: float) -> None:
        pauses.append(seconds)
        repo.write(BATON, baton(iteration=346))

    collector.pause = driver_finishes
    collector.on_changes([Change(BATON, "modified")])

    assert pauses == [0.007]
    assert [(type(e), e.iteration) for e in events] == [(BatonChanged, 346)]


def test_collector_warns_once_about_a_baton_that_stays_invalid(repo) -> None:
    repo.write(BATON, b"{ this is not json")
    collector, events = collector_for(repo.root, baton_retry_ms=3)
    pauses: list[float] = []
    collector.pause = pauses.append

    collector.scan()
    collector.on_changes([Change(BATON, "modified")])  # same bytes: no second warning
    repo.write(BATON, RUNNING_GALPH)
    collector.on_changes([Change(BATON, "modified")])

    assert pauses == [0.003, 0.003, 0.003, 0.003]
    warnings = [e for e in events if isinstance(e, Warning)]
    assert [w.code for w in warnings] == ["baton_invalid"]
    assert "not valid JSON" in warnings[0].message and "{ this is not json" in warnings[0].message
    assert [e.iteration for e in events if isinstance(e, BatonChanged)] == [345]


def test_collector_reads_an_atomic_replace(repo) -> None:
    collector, events = collector_for(repo.root)
    repo.write("sync/state.json.tmp", RUNNING_GALPH)
    (repo.root / "sync/state.json.tmp").replace(repo.root / BATON)

    collector.on_changes([Change("sync/state.json.tmp", "moved", dest=BATON)])

    assert [e.status for e in events] == ["running-galph"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(st.binary(max_size=120), st.builds(baton, iteration=st.integers(0, 10**6))), min_size=1, max_size=4))
def test_fuzz_collector_turns_any_bytes_into_a_baton_or_a_warning(contents: list[bytes]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "sync").mkdir()
        collector, events = collector_for(Path(tmp), baton_retry_ms=0)
        collector.pause = lambda seconds: None
        for data in contents:
            (Path(tmp) / BATON).write_bytes(data)
            collector.on_changes([Change(BATON, "modified")])
        for payload in events:
            assert isinstance(payload, (BatonChanged, Warning))
            assert Envelope.from_wire(Envelope(repo="r", source="baton", payload=payload).to_wire()).payload == payload
