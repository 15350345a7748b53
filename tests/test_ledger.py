"""The ledger: parsing both shapes of fix_plan.md, diffing successive reads, reading the file."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collectors.ledger import (
    LedgerCollector,
    LedgerTracker,
    attempt_result,
    focus_entry,
    looks_truncated,
    parse_ledger,
    split_status,
)
from collectors.watch import Change
from monitor.config import Settings
from monitor.events import (
    Envelope,
    FocusChanged,
    LedgerAttemptAdded,
    LedgerItemAdded,
    LedgerItemRemoved,
    LedgerRead,
    LedgerStatusChanged,
    Warning,
)

LEDGER = "docs/fix_plan.md"

# The spec's first shape: an index table and one section per item.
INDEXED = """\
# Fix Plan Ledger

**Last Updated:** 2025-10-15 (ralph loop i=510, Phase M synthesis complete)
**Active Focus:**
- CRITICAL: `[TEST-SUITE-TRIAGE-002]` — Phase M synthesis COMPLETE ...
- MONITOR: `[DETERMINISM-001]` — watch the nightly reruns

## Index
| ID | Title | Priority | Status |
| --- | --- | --- | --- |
| [TEST-SUITE-TRIAGE-002](#anchor) | Run full pytest rerun and triage refresh | Critical | in_progress |
| [VECTOR-GAPS-002](#anchor) | Vectorization gap audit | High | blocked |
| [DETERMINISM-001](#anchor) | Determinism watch | Medium | pending |

## [TEST-SUITE-TRIAGE-002] Full pytest rerun and triage refresh
- Priority: Critical
- Status: in_progress
- Owner/Date: galph/2025-10-15
- Plan References: `plans/active/TEST-SUITE-TRIAGE-002/plan.md`
- Attempts History:
  * [2025-10-15] Attempt #1 — Result: ✅ success (Phase A preflight complete). Collected 1,842 tests.
    Metrics: 1842 collected, 0 errors
    Artifacts: plans/active/TEST-SUITE-TRIAGE-002/reports/2025-10-15T101500Z/
  * [2025-10-15] Attempt #2 — Result: partial. Phase B rerun hit 3 timeouts.
- Next Actions:
  * Rerun the timed-out shards with --timeout=900.

## [VECTOR-GAPS-002] Vectorization gap audit
- Priority: High
- Status: blocked — waiting on the 4096² profiler trace
- Attempts History:
  * [2025-10-14] Attempt #1 — Result: ❌ failed (profiler OOM on 4096²).
"""

# The spec's second shape: bare sections, free text after the status.
BARE = """\
# Fix plan

### [seed] Inbox monitoring
- Status: in_progress — 2026-01-22: Triaging D0 parity response request
- Plan: `plans/active/seed/implementation.md`

### [DEBUG-SIM-LINES-DOSE-001] Dose experiments ground truth
- Status: ready_for_implementation
- Plan: `plans/active/DEBUG-SIM-LINES-DOSE-001/implementation.md`
"""


def changed(tracker: LedgerTracker, text: str, path: str = LEDGER) -> list:
    """The item/focus events of one update, without the ledger_read bookkeeping."""
    return [e for e in tracker.update(path, text) if not isinstance(e, LedgerRead)]


# --------------------------------------------------------------------------- parsing


def test_indexed_ledger_yields_items_with_section_fields_and_attempts() -> None:
    ledger = parse_ledger(INDEXED)

    assert list(ledger.items) == ["TEST-SUITE-TRIAGE-002", "VECTOR-GAPS-002", "DETERMINISM-001"]
    triage = ledger.items["TEST-SUITE-TRIAGE-002"]
    assert triage.title == "Full pytest rerun and triage refresh"
    assert (triage.priority, triage.status) == ("Critical", "in_progress")
    assert [(a.number, a.date, a.result) for a in triage.attempts] == [
        (1, "2025-10-15", "success"),
        (2, "2025-10-15", "partial"),
    ]
    gaps = ledger.items["VECTOR-GAPS-002"]
    assert (gaps.status, gaps.status_text) == ("blocked", "waiting on the 4096² profiler trace")
    assert gaps.attempts[0].result == "failure"
    # An item only in the index still counts, with the index's fields.
    determinism = ledger.items["DETERMINISM-001"]
    assert (determinism.title, determinism.priority, determinism.status) == ("Determinism watch", "Medium", "pending")
    assert ledger.focus == ["TEST-SUITE-TRIAGE-002", "DETERMINISM-001"]
    assert ledger.duplicate_ids == []
    assert ledger.chars == len(INDEXED)


def test_bare_sections_split_status_word_from_free_text() -> None:
    ledger = parse_ledger(BARE)

    seed = ledger.items["seed"]
    assert seed.title == "Inbox monitoring"
    assert seed.status == "in_progress"
    assert seed.status_text == "2026-01-22: Triaging D0 parity response request"
    assert ledger.items["DEBUG-SIM-LINES-DOSE-001"].status == "ready_for_implementation"
    assert ledger.focus == []


def test_section_status_wins_over_the_index_row() -> None:
    text = INDEXED.replace("- Status: in_progress\n", "- Status: done\n")

    assert parse_ledger(text).items["TEST-SUITE-TRIAGE-002"].status == "done"


def test_duplicated_ids_are_reported_and_the_first_copy_is_the_item() -> None:
    text = INDEXED.replace(
        "| [DETERMINISM-001](#anchor) | Determinism watch | Medium | pending |\n",
        "| [DETERMINISM-001](#anchor) | Determinism watch | Medium | pending |\n"
        "| [DETERMINISM-001](#anchor) | Determinism watch (old row) | Low | done |\n",
    )
    text += "\n## [VECTOR-GAPS-002] Vectorization gap audit (archived copy)\n- Status: done\n"

    ledger = parse_ledger(text)

    assert ledger.duplicate_ids == ["DETERMINISM-001", "VECTOR-GAPS-002"]
    assert ledger.items["DETERMINISM-001"].status == "pending"
    assert ledger.items["VECTOR-GAPS-002"].status == "blocked"


def test_statuses_as_written_in_real_ledgers() -> None:
    assert split_status("in_progress — 2026-01-22: Triaging") == ("in_progress", "2026-01-22: Triaging")
    assert split_status("done (Phase H CUDA parity archived)") == ("done", "Phase H CUDA parity archived")
    assert split_status("**In Progress**") == ("in_progress", None)
    assert split_status("✅ COMPLETE") == ("done", "✅ COMPLETE")
    assert split_status("pending (investigation)") == ("pending", "investigation")
    assert split_status("ready for implementation") == ("ready_for_implementation", None)
    assert split_status("Phase 6 in progress — Tasks 6.1/6.2 complete") == (
        "in_progress",
        "Phase 6 in progress — Tasks 6.1/6.2 complete",
    )
    assert split_status("awaiting maintainer reply") == ("awaiting maintainer reply", None)
    assert split_status("") == (None, None)


def test_attempt_results_come_from_the_words_after_result() -> None:
    assert attempt_result("[2025-10-15] Attempt #1 — Result: ✅ success (Phase A ...)") == "success"
    assert attempt_result("Attempt #3 — Result: 3 passed, 1 failed") == "failure"
    assert attempt_result("Attempt #2 — Result: partial. Added the rule") == "partial"
    assert attempt_result("Attempt #4 — Result: reopened (supervisor audit)") == "unknown"
    assert attempt_result("*2026-01-26T00:00:00Z (planning kickoff):* Inspected the notebook") == "unknown"


def test_focus_lines_name_ids_not_their_wording() -> None:
    assert focus_entry("CRITICAL: `[TEST-SUITE-TRIAGE-002]` — Phase M synthesis") == "TEST-SUITE-TRIAGE-002"
    assert focus_entry("FNO-STABILITY-OVERHAUL-001 — FNO/Hybrid stability overhaul (planning)") == "FNO-STABILITY-OVERHAUL-001"
    assert focus_entry("AT-012: Plan archived; monitor for regressions") == "AT-012"
    assert focus_entry("ROUTING: Close the reopened guard plan") == "ROUTING"
    assert focus_entry("[seed] Inbox monitoring") == "seed"


def test_inline_active_focus_and_timestamped_attempt_bullets() -> None:
    text = """\
# Fix Plan Ledger (Condensed)

**Active Focus:** FNO-STABILITY-OVERHAUL-001 — FNO/Hybrid stability overhaul (planning)

## Active / Pending Initiatives

-### [FNO-STABILITY-OVERHAUL-001] FNO/Hybrid Stability Overhaul
- Priority: **Critical** (Main strategy execution)
- Status: Phase 6 in progress — Tasks 6.1/6.2 complete
- Attempts History:
  - *2026-01-28T01:00:00Z (planning):* Created implementation plan.
-  - *2026-01-28T05:00:00Z (supervisor review):* Phase 1 COMPLETE.
  - *2026-01-29T12:00:00Z (Stage A complete):* All three arms executed.
"""
    ledger = parse_ledger(text)

    item = ledger.items["FNO-STABILITY-OVERHAUL-001"]
    assert ledger.focus == ["FNO-STABILITY-OVERHAUL-001"]
    assert item.priority == "Critical"
    assert item.status == "in_progress"
    assert item.section == "Active / Pending Initiatives"
    assert [a.date for a in item.attempts] == ["2026-01-28T01:00:00Z", "2026-01-28T05:00:00Z", "2026-01-29T12:00:00Z"]


def test_headings_inside_code_blocks_are_not_items() -> None:
    text = BARE + "\n```bash\n## [NOT-AN-ITEM-001] from a pasted script\n```\n"

    assert "NOT-AN-ITEM-001" not in parse_ledger(text).items


def test_a_binary_file_has_no_items() -> None:
    ledger = parse_ledger("\x00\x01PK\x03\x04" + "x" * 100)

    assert ledger.binary and ledger.items == {}


def test_truncation_signs() -> None:
    assert looks_truncated("")
    assert looks_truncated("## [A-1] x\n- Status: in_pro")
    assert looks_truncated("## [A-1] x\n```\ncode\n")
    assert not looks_truncated(BARE)


# --------------------------------------------------------------------------- tracking


def test_first_read_adds_every_item_and_sets_the_focus() -> None:
    events = LedgerTracker().update(LEDGER, INDEXED)

    added = [e.item.id for e in events if isinstance(e, LedgerItemAdded)]
    assert added == ["TEST-SUITE-TRIAGE-002", "VECTOR-GAPS-002", "DETERMINISM-001"]
    focus = [e for e in events if isinstance(e, FocusChanged)]
    assert [(f.old, f.new) for f in focus] == [([], ["TEST-SUITE-TRIAGE-002", "DETERMINISM-001"])]
    read = events[-1]
    assert isinstance(read, LedgerRead)
    assert (read.chars, read.items, read.duplicate_ids) == (len(INDEXED), 3, [])


def test_a_sequence_of_edits_emits_one_event_per_change() -> None:
    tracker = LedgerTracker()
    tracker.update(LEDGER, INDEXED)

    # Same text again: nothing at all.
    assert tracker.update(LEDGER, INDEXED) == []

    # A new item.
    v2 = INDEXED + "\n## [PERF-PYTORCH-004] Fuse physics kernels\n- Priority: High\n- Status: in_planning\n"
    events = changed(tracker, v2)
    assert [(type(e), e.item.id, e.item.status) for e in events] == [(LedgerItemAdded, "PERF-PYTORCH-004", "in_planning")]

    # A status change, old -> new.
    v3 = v2.replace("- Status: in_planning", "- Status: in_progress")
    assert [(e.item_id, e.old, e.new) for e in changed(tracker, v3) if isinstance(e, LedgerStatusChanged)] == [
        ("PERF-PYTORCH-004", "in_planning", "in_progress")
    ]

    # A new attempt, with its result.
    v4 = v3.replace(
        "  * [2025-10-14] Attempt #1 — Result: ❌ failed (profiler OOM on 4096²).\n",
        "  * [2025-10-14] Attempt #1 — Result: ❌ failed (profiler OOM on 4096²).\n"
        "  * [2025-10-16] Attempt #2 — Result: ✅ success (trace captured on a bigger node).\n",
    )
    events = changed(tracker, v4)
    assert len(events) == 1 and isinstance(events[0], LedgerAttemptAdded)
    assert (events[0].item_id, events[0].attempt.number, events[0].attempt.result) == ("VECTOR-GAPS-002", 2, "success")

    # Rewording an attempt or the status text is not a change.
    v5 = v4.replace("trace captured on a bigger node", "trace captured on node gpu-7").replace(
        "waiting on the 4096² profiler trace", "waiting on a profiler trace"
    )
    assert changed(tracker, v5) == []

    # The focus changes.
    v6 = v5.replace("- MONITOR: `[DETERMINISM-001]` — watch the nightly reruns\n", "- PERF: `[PERF-PYTORCH-004]` — fuse\n")
    events = changed(tracker, v6)
    assert [(e.old, e.new) for e in events if isinstance(e, FocusChanged)] == [
        (["TEST-SUITE-TRIAGE-002", "DETERMINISM-001"], ["TEST-SUITE-TRIAGE-002", "PERF-PYTORCH-004"])
    ]

    # An item removed (its index row and section both go).
    v7 = v6.replace("| [DETERMINISM-001](#anchor) | Determinism watch | Medium | pending |\n", "")
    events = changed(tracker, v7)
    assert [(type(e), e.item_id, e.title) for e in events] == [(LedgerItemRemoved, "DETERMINISM-001", "Determinism watch")]


def test_an_item_moving_between_sections_is_not_removed_and_added() -> None:
    text = "## Active\n\n### [A-001] Alpha\n- Status: in_progress\n\n## Done\n\n### [B-002] Beta\n- Status: done\n"
    moved = "## Active\n\n## Done\n\n### [B-002] Beta\n- Status: done\n\n### [A-001] Alpha\n- Status: done\n"
    tracker = LedgerTracker()
    tracker.update(LEDGER, text)

    events = changed(tracker, moved)

    assert [(type(e), e.item_id) for e in events] == [(LedgerStatusChanged, "A-001")]
    assert tracker.items(LEDGER)["A-001"].section == "Done"


def test_duplicated_ids_raise_no_phantom_changes_and_are_reported() -> None:
    text = BARE + "\n### [seed] Inbox monitoring (stale copy)\n- Status: done\n"
    tracker = LedgerTracker()

    first = tracker.update(LEDGER, text)
    again = tracker.update(LEDGER, text + "\nA note at the end.\n")

    assert [e.item.id for e in first if isinstance(e, LedgerItemAdded)] == ["seed", "DEBUG-SIM-LINES-DOSE-001"]
    assert first[-1].duplicate_ids == ["seed"]
    assert [e for e in again if not isinstance(e, LedgerRead)] == []


def test_a_ledger_cut_mid_write_keeps_its_items() -> None:
    tracker = LedgerTracker()
    tracker.update(LEDGER, INDEXED)
    in_status_line = INDEXED[: INDEXED.index("- Status: in_progress") + 12]
    in_index_row = INDEXED[: INDEXED.index("| [VECTOR-GAPS-002]") + 25]  # the row is the cut item

    quiet = tracker.update(LEDGER, in_status_line)
    cut = tracker.update(LEDGER, in_index_row)

    assert [e.kind for e in quiet] == ["ledger_read"]
    assert not [e for e in cut if isinstance(e, (LedgerItemRemoved, LedgerStatusChanged, FocusChanged))]
    warnings = [e for e in cut if isinstance(e, Warning)]
    assert [(w.code, w.detail["missing"]) for w in warnings] == [("ledger_truncated", ["DETERMINISM-001"])]
    # The whole file again: still nothing changed.
    assert changed(tracker, INDEXED) == []


def test_every_cut_of_an_edited_ledger_is_quiet_and_the_edit_still_lands() -> None:
    tracker = LedgerTracker()
    tracker.update(LEDGER, INDEXED)
    edited = INDEXED.replace("- Status: in_progress\n", "- Status: done\n")
    assert [e.new for e in changed(tracker, edited)] == ["done"]

    for end in range(len(edited)):
        cut = edited[:end]
        if not looks_truncated(cut):
            continue  # a cut at a line end is what the collector's re-read is for
        kinds = {e.kind for e in tracker.update(LEDGER, cut)} | {e.kind for e in tracker.update(LEDGER, edited)}
        assert kinds <= {"ledger_read", "warning"}, (end, kinds)


def test_a_vanishing_status_line_is_not_a_change_to_no_status() -> None:
    tracker = LedgerTracker()
    tracker.update(LEDGER, BARE)

    events = changed(tracker, BARE.replace("- Status: ready_for_implementation\n", ""))

    assert events == []
    assert tracker.items(LEDGER)["DEBUG-SIM-LINES-DOSE-001"].status == "ready_for_implementation"


def test_a_thousand_item_ledger_parses_and_diffs() -> None:
    rows = "".join(f"| [ITEM-{i:04d}](#a) | Item {i} | High | in_progress |\n" for i in range(1000))
    sections = "".join(
        f"\n## [ITEM-{i:04d}] Item {i}\n- Priority: High\n- Status: in_progress — note {i}\n- Attempts History:\n"
        f"  * [2025-10-10] Attempt #1 — Result: ✅ success (x)\n    Metrics: n/a\n"
        f"  * [2025-10-11] Attempt #2 — Result: partial (y)\n- Next Actions:\n  * keep going\n"
        for i in range(1000)
    )
    text = "# Fix Plan Ledger\n\n## Index\n| ID | Title | Priority | Status |\n| --- | --- | --- | --- |\n" + rows + sections
    tracker = LedgerTracker()

    first = tracker.update(LEDGER, text)
    second = changed(tracker, text.replace("Status: in_progress — note 777", "Status: blocked — note 777"))

    assert sum(isinstance(e, LedgerItemAdded) for e in first) == 1000
    assert first[-1].items == 1000 and first[-1].chars > 200_000
    assert [(e.item_id, e.old, e.new) for e in second] == [("ITEM-0777", "in_progress", "blocked")]


def test_a_binary_ledger_is_one_warning_and_no_items() -> None:
    tracker = LedgerTracker()
    data = "\x00\x00\x00binary" * 10

    events = tracker.update(LEDGER, data)

    assert [(type(e), e.code) for e in events] == [(Warning, "ledger_binary")]
    assert tracker.update(LEDGER, data) == []
    assert tracker.items(LEDGER) == {}


# --------------------------------------------------------------------------- fuzzing

_FRAGMENTS = st.sampled_from(
    [
        "# Fix Plan Ledger",
        "**Active Focus:**",
        "**Active Focus:** [A-001] — x",
        "- CRITICAL: `[A-001]` — go",
        "## Index",
        "| ID | Title | Priority | Status |",
        "| --- | --- | --- | --- |",
        "| [A-001](#a) | Alpha | High | in_progress |",
        "| [A-001](#a) | Alpha again | Low | done |",
        "| [seed] | | |",
        "## [A-001] Alpha",
        "### [seed] Inbox",
        "-### [B-2] Beta",
        "## Done",
        "- Status: in_progress — 2026-01-22: triaging",
        "- Status: done",
        "- Status:",
        "- Priority: **High**",
        "- Attempts History:",
        "  * [2025-10-15] Attempt #1 — Result: ✅ success (x)",
        "  * [2025-10-15] Attempt #1 — Result: ❌",
        "-  - *2026-01-28T05:00:00Z (review):* done",
        "    Metrics: n/a",
        "#### Attempts History",
        "```",
        "",
        "|",
        "- ",
        "*",
    ]
)
_LINES = st.lists(st.one_of(_FRAGMENTS, st.text(max_size=40)), max_size=30)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(max_size=400), _LINES.map("\n".join)))
def test_fuzz_any_text_parses(text: str) -> None:
    ledger = parse_ledger(text)
    assert ledger.chars == len(text)
    assert set(ledger.duplicate_ids) <= set(ledger.items) | set(ledger.duplicate_ids)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_LINES.map("\n".join), min_size=1, max_size=6))
def test_fuzz_any_sequence_of_texts_tracks(texts: list[str]) -> None:
    tracker = LedgerTracker()
    for text in texts:
        events = tracker.update(LEDGER, text)
        assert tracker.update(LEDGER, text) == []  # the same text twice: never a second event
        for event in events:
            if isinstance(event, LedgerRead):
                assert event.items == len(tracker.items(LEDGER))


# --------------------------------------------------------------------------- the collector, on a real repo


def collector_for(root: Path, **watch: int) -> tuple[LedgerCollector, list]:
    events: list = []
    settings_ = Settings.model_validate({"watch": watch} if watch else {})
    collector = LedgerCollector(root, settings_, lambda payload, when: events.append(payload))
    return collector, events


def test_collector_scans_then_follows_edits(repo) -> None:
    repo.commit("seed the ledger", {LEDGER: INDEXED})
    collector, events = collector_for(repo.root)

    collector.scan()
    assert [e.item.id for e in events if isinstance(e, LedgerItemAdded)] == [
        "TEST-SUITE-TRIAGE-002",
        "VECTOR-GAPS-002",
        "DETERMINISM-001",
    ]
    events.clear()

    repo.write(LEDGER, INDEXED.replace("- Status: blocked — waiting", "- Status: in_progress — unblocked,"))
    collector.on_changes([Change(LEDGER, "modified")])

    assert [(e.item_id, e.old, e.new) for e in events if isinstance(e, LedgerStatusChanged)] == [
        ("VECTOR-GAPS-002", "blocked", "in_progress")
    ]
    assert collector.wants("fix_plan.md") and not collector.wants("docs/other.md")


def test_collector_rereads_a_ledger_caught_half_written(repo) -> None:
    repo.write(LEDGER, INDEXED)
    collector, events = collector_for(repo.root, baton_retry_ms=1)
    collector.scan()
    events.clear()
    # The writer has flushed the first part, cut at a line end (so it does not look cut).
    repo.write(LEDGER, INDEXED[: INDEXED.index("## Index")])
    finished = INDEXED.replace("- Status: in_progress\n", "- Status: done\n")
    pauses: list[float] = []

    def writer_finishes(seconds: float) -> None:
        pauses.append(seconds)
        repo.write(LEDGER, finished)

    collector.pause = writer_finishes
    collector.on_changes([Change(LEDGER, "modified")])

    assert pauses == [0.001]
    assert [(type(e), getattr(e, "new", None)) for e in events if not isinstance(e, LedgerRead)] == [
        (LedgerStatusChanged, "done")
    ]


def test_collector_believes_a_removal_that_stays(repo) -> None:
    repo.write(LEDGER, INDEXED)
    collector, events = collector_for(repo.root, baton_retry_ms=0)
    collector.scan()
    events.clear()
    pauses: list[float] = []
    collector.pause = pauses.append
    without_section = INDEXED[: INDEXED.index("## [VECTOR-GAPS-002]")]

    # The section goes but the index row still names the item: it stays, nothing is re-read.
    repo.write(LEDGER, without_section)
    collector.on_changes([Change(LEDGER, "modified")])
    assert [e for e in events if not isinstance(e, LedgerRead)] == []
    assert pauses == []

    # The row goes too: read again, the same text again, so the removal is real.
    repo.write(LEDGER, without_section.replace("| [VECTOR-GAPS-002](#anchor) | Vectorization gap audit | High | blocked |\n", ""))
    collector.on_changes([Change(LEDGER, "modified")])
    assert pauses == [0.0]
    assert [e.item_id for e in events if isinstance(e, LedgerItemRemoved)] == ["VECTOR-GAPS-002"]


def test_collector_reads_an_atomic_rewrite_and_ignores_a_deletion(repo) -> None:
    repo.write(LEDGER, BARE)
    collector, events = collector_for(repo.root)
    collector.scan()
    events.clear()

    repo.write("docs/.fix_plan.md.tmp", BARE.replace("ready_for_implementation", "in_progress"))
    (repo.root / "docs/.fix_plan.md.tmp").replace(repo.root / LEDGER)
    collector.on_changes([Change("docs/.fix_plan.md.tmp", "moved", dest=LEDGER)])
    (repo.root / LEDGER).unlink()
    collector.on_changes([Change(LEDGER, "deleted")])

    assert [(e.item_id, e.new) for e in events if isinstance(e, LedgerStatusChanged)] == [
        ("DEBUG-SIM-LINES-DOSE-001", "in_progress")
    ]
    assert not [e for e in events if isinstance(e, LedgerItemRemoved)]


def test_collector_survives_non_utf8_and_binary_ledgers(repo) -> None:
    repo.write(LEDGER, BARE.encode() + b"\n- Note: caf\xe9 \xff\xfe\n")
    repo.write("fix_plan.md", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    collector, events = collector_for(repo.root)

    collector.scan()

    assert [e.item.id for e in events if isinstance(e, LedgerItemAdded)] == ["seed", "DEBUG-SIM-LINES-DOSE-001"]
    assert [(e.code, e.detail["path"]) for e in events if isinstance(e, Warning)] == [("ledger_binary", "fix_plan.md")]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.one_of(st.binary(max_size=300), _LINES.map(lambda lines: "\n".join(lines).encode("utf-8", "surrogatepass"))),
        min_size=1,
        max_size=4,
    )
)
def test_fuzz_collector_reads_any_bytes(contents: list[bytes]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "docs").mkdir()
        collector, events = collector_for(root, baton_retry_ms=0)
        collector.pause = lambda seconds: None
        for data in contents:
            (root / LEDGER).write_bytes(data)
            collector.on_changes([Change(LEDGER, "modified")])
        for payload in events:  # everything emitted travels on the wire
            wire = Envelope(repo="r", source="ledger", payload=payload).to_wire()
            assert Envelope.from_wire(wire).payload == payload
