"""The supervisor's memory (galph_memory.md): entries, self-reported fields, each entry once."""

from __future__ import annotations

import tempfile
from datetime import datetime, timezone
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collectors.memory import MemoryCollector, MemoryTracker, entry_time, key_values, parse_memory
from collectors.watch import Change
from monitor.config import Settings
from monitor.events import Envelope, MemoryEntry, Warning

MEMORY = "galph_memory.md"

# One loop's machine-readable line per turn.
KEYED = """\
# Galph Memory

## 2026-01-22T022725Z
focus=INIT state=gathering_evidence dwell=0 action_type=setup artifacts=none next_action=select focus & sync docs <Action State>=gathering_evidence
notes=Initialized galph_memory with dwell counter; awaiting first focus selection.

## 2026-01-22T024125Z
focus=seed state=ready_for_implementation dwell=0 action_type=planning artifacts=plans/active/seed/reports/2026-01-22T024002Z/ next_action=build photon_grid dose snapshot + maintainer reply <Action State>=ready_for_implementation
notes=Selected the D0 baseline and drafted input for Ralph.
"""

# Another loop's labelled bullets.
LABELLED = """\
# Galph Supervisor Memory

## 2025-10-17T011918Z: Loop Planning Setup
- Focus issue: INTEGRATE-PYTORCH-001 (PyTorch ↔ Ptychodus integration)
- Action type: Review or housekeeping
- Mode: Docs
- Authored phased plan at `plans/active/INTEGRATE-PYTORCH-001/implementation.md`.
- <Action State>: [ready_for_implementation]

## Loop 5 Planning Update
- Focus issue: INTEGRATE-PYTORCH-000 (plan refresh)
- Action type: Planning
"""

NEXT = """
## 2026-01-22T043000Z
focus=seed state=ready_for_implementation dwell=1 action_type=planning artifacts=plans/active/seed/reports/2026-01-22T042640Z/ next_action=ship CLI + tests via Ralph
notes=No production edits this loop.
"""


def test_keyed_entries_carry_the_self_reported_fields() -> None:
    entries = parse_memory(KEYED)

    assert [e.heading for e in entries] == ["2026-01-22T022725Z", "2026-01-22T024125Z"]
    first, second = entries
    assert (first.focus, first.state, first.dwell, first.action_type, first.artifacts) == (
        "INIT",
        "gathering_evidence",
        0,
        "setup",
        None,
    )
    assert first.next_action == "select focus & sync docs"
    assert (second.focus, second.action_type, second.artifacts) == (
        "seed",
        "planning",
        "plans/active/seed/reports/2026-01-22T024002Z/",
    )
    assert second.text.startswith("focus=seed")


def test_labelled_entries_read_focus_action_and_state() -> None:
    first, second = parse_memory(LABELLED)

    assert first.heading == "2025-10-17T011918Z: Loop Planning Setup"
    assert (first.focus, first.action_type, first.state, first.dwell) == (
        "INTEGRATE-PYTORCH-001",
        "review_or_housekeeping",
        "ready_for_implementation",
        None,
    )
    assert (second.focus, second.action_type) == ("INTEGRATE-PYTORCH-000", "planning")


def test_key_values_run_to_the_next_key() -> None:
    assert key_values("focus=A-1 next_action=ship the CLI now dwell=3 state=planning") == {
        "focus": "A-1",
        "next_action": "ship the CLI now",
        "dwell": "3",
        "state": "planning",
    }


def test_entry_time_from_the_heading_stamp() -> None:
    first, _second = parse_memory(LABELLED)
    undated = MemoryEntry(heading="Loop 5 Planning Update")

    assert entry_time(first) == datetime(2025, 10, 17, 1, 19, 18, tzinfo=timezone.utc)
    assert entry_time(undated) is None


def test_headings_in_code_blocks_and_the_preamble_are_not_entries() -> None:
    text = "# Memory\nintro\n## 2026-01-01T000000Z\nfocus=A-1\n```\n## not an entry\n```\n"

    assert [e.heading for e in parse_memory(text)] == ["2026-01-01T000000Z"]


def test_each_entry_is_reported_once_even_when_edited_or_trimmed() -> None:
    tracker = MemoryTracker()

    first = tracker.update(MEMORY, KEYED)
    appended = tracker.update(MEMORY, KEYED + NEXT)
    edited_old = tracker.update(MEMORY, (KEYED + NEXT).replace("dwell=0 action_type=setup", "dwell=5 action_type=setup"))
    trimmed = tracker.update(MEMORY, "# Galph Memory\n" + NEXT)

    assert [e.heading for e in first] == ["2026-01-22T022725Z", "2026-01-22T024125Z"]
    assert [(e.heading, e.dwell) for e in appended] == [("2026-01-22T043000Z", 1)]
    assert edited_old == []
    assert trimmed == []


def test_repeated_headings_are_separate_entries() -> None:
    tracker = MemoryTracker()
    text = "## Focus Declaration\nfocus=A-1\n"

    tracker.update(MEMORY, text)
    again = tracker.update(MEMORY, text + "\n## Focus Declaration\nfocus=B-2\n")

    assert [e.focus for e in again] == ["B-2"]


def test_a_binary_memory_file_is_one_warning() -> None:
    tracker = MemoryTracker()

    events = tracker.update(MEMORY, "\x00\x00## 2026\x00")

    assert [(type(e), e.code) for e in events] == [(Warning, "memory_binary")]


_LINES = st.lists(
    st.one_of(
        st.sampled_from(
            [
                "## 2026-01-22T022725Z",
                "## 2025-13-45T99:99:99Z: bad stamp",
                "## ",
                "###  sub",
                "focus=A-1 state=x dwell=two action_type= next_action=",
                "dwell=999999999999 focus=",
                "- Focus issue:",
                "- <Action State>: []",
                "```",
                "",
            ]
        ),
        st.text(max_size=50),
    ),
    max_size=25,
).map("\n".join)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_LINES)
def test_fuzz_any_text_parses(text: str) -> None:
    for entry in parse_memory(text):
        entry_time(entry)
        assert entry.dwell is None or entry.dwell >= 0


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_LINES, min_size=1, max_size=5))
def test_fuzz_no_entry_is_reported_twice(texts: list[str]) -> None:
    tracker = MemoryTracker()
    reported: list[str] = []
    for text in texts:
        reported.extend(e.heading for e in tracker.update(MEMORY, text) if isinstance(e, MemoryEntry))
    headings_seen = [e.heading for text in texts for e in parse_memory(text)]
    for heading in set(reported):
        # A heading is reported at most as many times as it appears in any one version.
        assert reported.count(heading) <= max(sum(e.heading == heading for e in parse_memory(t)) for t in texts)
    assert set(reported) <= set(headings_seen)


# --------------------------------------------------------------------------- the collector, on a real repo


def collector_for(root: Path, **watch: int) -> tuple[MemoryCollector, list]:
    events: list = []
    collector = MemoryCollector(root, Settings.model_validate({"watch": watch}), lambda p, when: events.append((p, when)))
    return collector, events


def test_collector_dates_old_entries_from_their_stamps_and_new_ones_when_seen(repo) -> None:
    repo.commit("SUPERVISOR AUTO: memory", {MEMORY: KEYED})
    collector, events = collector_for(repo.root)

    collector.scan()
    repo.write(MEMORY, KEYED + NEXT)
    collector.on_changes([Change(MEMORY, "modified")])

    assert [(e.heading, when) for e, when in events] == [
        ("2026-01-22T022725Z", datetime(2026, 1, 22, 2, 27, 25, tzinfo=timezone.utc)),
        ("2026-01-22T024125Z", datetime(2026, 1, 22, 2, 41, 25, tzinfo=timezone.utc)),
        ("2026-01-22T043000Z", None),
    ]


def test_collector_waits_for_an_entry_caught_mid_write(repo) -> None:
    repo.write(MEMORY, KEYED)
    collector, events = collector_for(repo.root, baton_retry_ms=2)
    collector.scan()
    events.clear()
    repo.write(MEMORY, KEYED + "\n## 2026-01-22T043000Z\nfocus=se")  # the append is half done
    pauses: list[float] = []

    def writer_finishes(seconds: float) -> None:
        pauses.append(seconds)
        repo.write(MEMORY, KEYED + NEXT)

    collector.pause = writer_finishes
    collector.on_changes([Change(MEMORY, "modified")])

    assert pauses == [0.002]
    assert [(e.focus, e.dwell) for e, _ in events] == [("seed", 1)]


def test_collector_survives_non_utf8_bytes(repo) -> None:
    repo.write(MEMORY, KEYED.encode() + b"\n## 2026-01-23T000000Z\nfocus=caf\xe9 dwell=2\n")
    collector, events = collector_for(repo.root)

    collector.scan()

    assert [e.dwell for e, _ in events] == [0, 0, 2]
    assert events[-1][0].focus == "caf\ufffd"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(st.binary(max_size=200), _LINES.map(lambda t: t.encode("utf-8", "surrogatepass"))), max_size=4))
def test_fuzz_collector_reads_any_bytes(contents: list[bytes]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        collector, events = collector_for(Path(tmp), baton_retry_ms=0)
        collector.pause = lambda seconds: None
        for data in contents:
            (Path(tmp) / MEMORY).write_bytes(data)
            collector.on_changes([Change(MEMORY, "modified")])
        for payload, _when in events:
            assert Envelope.from_wire(Envelope(repo="r", source="memory", payload=payload).to_wire()).payload == payload
