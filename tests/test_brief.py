"""The brief (input.md): header fields, mapped test selectors, change detection, reading the file."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collectors.brief import BriefCollector, BriefTracker, focus_id, parse_brief, selector_of
from collectors.watch import Change
from monitor.config import Settings
from monitor.events import BriefUpdated, Envelope, Warning, digest

# Plain header lines, an evidence-only turn.
PLAIN = """\
Summary: Capture and log a fresh 4096² profiler trace so Phase B of the vectorization-gap audit can resume.
Mode: Perf
Focus: [VECTOR-GAPS-002] Vectorization gap audit
Branch: feature/spec-based-2
Mapped tests: none — evidence-only
Artifacts: reports/2026-01-vectorization-gap/phase_b/$STAMP/profile/
Do Now: [VECTOR-GAPS-002] Phase B1 — export STAMP=$(date -u +%Y%m%dT%H%M%SZ) && python scripts/benchmarks/run.py
If Blocked: log the failure in docs/fix_plan.md before stopping.
How-To Map:
1. export STAMP=$(date -u +%Y%m%dT%H%M%SZ)
Pitfalls To Avoid:
- Do not touch production code during this evidence loop.
"""

# Bold header lines with a bullet list of pytest commands.
BOLD = """\
# FNO-STABILITY-OVERHAUL-001 — Phase 6 Task 6.3 (WarmupCosine Stage A rerun)

**Summary:** Execute the stable_hybrid Stage A arm with the new Warmup+Cosine scheduler.

**Focus:** FNO-STABILITY-OVERHAUL-001 — Phase 6 (Training dynamics / WarmupCosine scheduler)

**Branch:** fno2

**Mapped tests:**
- `pytest tests/torch/test_fno_generators.py::TestStablePtychoBlock::test_layerscale_grad_flow -v`
- `pytest tests/test_grid_lines_compare_wrapper.py::test_wrapper_handles_stable_hybrid -v`
- KMP_DUPLICATE_LIB_OK=TRUE pytest --collect-only -q -k "DB_AT_001 or DB_AT_002"
- pytest tests/test_vi_mosaic.py::test_amortized_trainer_recovers_per_image_spread -v (new)

**Artifacts:** `plans/active/FNO-STABILITY-OVERHAUL-001/reports/2026-01-29T235959Z/`

---

## Do Now — Phase 6 plan_training_dynamics.md Task 6.3

1. **Re-read Phase 6 instructions.** Focus: the scheduler, not the data.
"""


def test_plain_brief_fields_and_an_evidence_only_turn() -> None:
    brief = parse_brief(PLAIN)

    assert brief.summary.startswith("Capture and log a fresh 4096² profiler trace")
    assert (brief.mode, brief.focus, brief.branch) == ("Perf", "VECTOR-GAPS-002", "feature/spec-based-2")
    assert brief.mapped_tests == [] and brief.mapped_tests_none
    assert brief.artifacts == "reports/2026-01-vectorization-gap/phase_b/$STAMP/profile/"
    assert brief.digest == digest(PLAIN)


def test_bold_brief_with_a_list_of_selectors() -> None:
    brief = parse_brief(BOLD)

    assert brief.summary == "Execute the stable_hybrid Stage A arm with the new Warmup+Cosine scheduler."
    assert brief.focus == "FNO-STABILITY-OVERHAUL-001"  # the later "Focus:" in Do Now is prose
    assert brief.mode is None
    assert brief.branch == "fno2"
    assert brief.mapped_tests == [
        "tests/torch/test_fno_generators.py::TestStablePtychoBlock::test_layerscale_grad_flow",
        "tests/test_grid_lines_compare_wrapper.py::test_wrapper_handles_stable_hybrid",
        "-k 'DB_AT_001 or DB_AT_002'",
        "tests/test_vi_mosaic.py::test_amortized_trainer_recovers_per_image_spread",
    ]
    assert not brief.mapped_tests_none
    assert brief.artifacts == "plans/active/FNO-STABILITY-OVERHAUL-001/reports/2026-01-29T235959Z/"


def test_inline_selectors_separated_by_semicolons() -> None:
    brief = parse_brief(
        "Summary: Capture decoder shape evidence\n"
        "Mode: TDD\n"
        "Focus: INTEGRATE-PYTORCH-001-D1E — Resolve Lightning decoder shape mismatch (Phase D1e)\n"
        "Mapped tests: pytest tests/torch/test_workflow.py::TestCycle::test_train_save_load -vv; "
        "pytest tests/torch/test_components.py::TestDecoder::test_probe_big_shape -vv | tee out.log\n"
    )

    assert brief.focus == "INTEGRATE-PYTORCH-001-D1E"
    assert brief.mapped_tests == [
        "tests/torch/test_workflow.py::TestCycle::test_train_save_load",
        "tests/torch/test_components.py::TestDecoder::test_probe_big_shape",
    ]


def test_selectors_keep_what_selects_and_drop_what_reports() -> None:
    assert selector_of("`NB_RUN_PARALLEL=1 pytest -vv tests/a.py::test_b --smoke-size=small`") == (
        "tests/a.py::test_b --smoke-size=small"
    )
    assert selector_of("python -m pytest -x -q tests/unit -m 'not slow'") == "tests/unit -m 'not slow'"
    assert selector_of("tests/tools/test_cli.py::test_flags") == "tests/tools/test_cli.py::test_flags"
    assert selector_of("pytest --collect-only -q") is None  # the whole suite: no selector
    assert selector_of("See docs/TESTING_GUIDE.md for the list") is None


def test_focus_names_the_ledger_id() -> None:
    assert focus_id("[VECTOR-GAPS-002] Vectorization gap audit") == "VECTOR-GAPS-002"
    assert focus_id("DEBUG-SIM-LINES-DOSE-001.F1 — Await Maintainer <2> acknowledgement") == "DEBUG-SIM-LINES-DOSE-001.F1"
    assert focus_id("SOURCE-WEIGHT-001 / Correct weighted source normalization") == "SOURCE-WEIGHT-001"
    assert focus_id("seed — Inbox monitoring") == "seed"
    assert focus_id("finish the parser") == "finish the parser"


def test_a_brief_without_headers_has_no_fields() -> None:
    brief = parse_brief("Just do the thing.\n")

    assert (brief.summary, brief.focus, brief.mapped_tests, brief.mapped_tests_none) == (None, None, [], False)


def test_tracker_emits_only_when_content_changes() -> None:
    tracker = BriefTracker()

    first = tracker.update("input.md", PLAIN)
    same = tracker.update("input.md", PLAIN)
    edited = tracker.update("input.md", PLAIN.replace("Mode: Perf", "Mode: Code"))
    back = tracker.update("input.md", PLAIN)

    assert [b.mode for b in first] == ["Perf"]
    assert same == []
    assert [b.mode for b in edited] == ["Code"]
    assert [b.digest for b in back] == [digest(PLAIN)]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.one_of(
            st.sampled_from(
                [
                    "Summary: x",
                    "**Mapped tests:**",
                    "Mapped tests: none",
                    "Mapped tests: pytest tests/a.py::b -v; pytest 'unbalanced",
                    "- `pytest tests/x.py -k \"a or\"`",
                    "Focus: [A-1] x",
                    "**Focus:**",
                    "```",
                    "## Mapped tests",
                    "- ",
                    "",
                ]
            ),
            st.text(max_size=60),
        ),
        max_size=20,
    ).map("\n".join)
)
def test_fuzz_any_text_parses(text: str) -> None:
    brief = parse_brief(text)
    assert brief.digest == digest(text)
    assert all(selector.strip() for selector in brief.mapped_tests)


# --------------------------------------------------------------------------- the collector, on a real repo


def collector_for(root: Path, **watch: int) -> tuple[BriefCollector, list]:
    events: list = []
    collector = BriefCollector(root, Settings.model_validate({"watch": watch}), lambda payload, when: events.append(payload))
    return collector, events


def test_collector_reports_the_brief_at_start_and_on_each_rewrite(repo) -> None:
    repo.commit("SUPERVISOR: brief", {"input.md": PLAIN})
    collector, events = collector_for(repo.root)

    collector.scan()
    repo.write("input.md", BOLD)
    collector.on_changes([Change("input.md", "modified")])
    collector.on_changes([Change("input.md", "modified")])  # an event with no new content

    assert [(type(e), e.focus) for e in events] == [
        (BriefUpdated, "VECTOR-GAPS-002"),
        (BriefUpdated, "FNO-STABILITY-OVERHAUL-001"),
    ]
    assert collector.wants("input.md") and not collector.wants("docs/input.md")


def test_collector_rereads_a_brief_caught_empty(repo) -> None:
    repo.write("input.md", PLAIN)
    collector, events = collector_for(repo.root, baton_retry_ms=5)
    collector.scan()
    repo.write("input.md", "")  # truncated by the writer, contents not yet written
    pauses: list[float] = []

    def writer_finishes(seconds: float) -> None:
        pauses.append(seconds)
        repo.write("input.md", BOLD)

    collector.pause = writer_finishes
    collector.on_changes([Change("input.md", "modified")])

    assert pauses == [0.005]
    assert [e.focus for e in events] == ["VECTOR-GAPS-002", "FNO-STABILITY-OVERHAUL-001"]


def test_collector_handles_non_utf8_and_binary_briefs(repo) -> None:
    repo.write("input.md", b"Summary: caf\xe9 \xff\nFocus: [A-001] x\n")
    collector, events = collector_for(repo.root)
    collector.scan()
    repo.write("input.md", b"\x00\x01\x02 not a brief\n")
    collector.on_changes([Change("input.md", "modified")])

    assert isinstance(events[0], BriefUpdated) and events[0].focus == "A-001"
    assert "\ufffd" in events[0].summary
    assert [(type(e), e.code) for e in events[1:]] == [(Warning, "brief_binary")]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(st.binary(max_size=200), st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass"))), max_size=4))
def test_fuzz_collector_reads_any_bytes(contents: list[bytes]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        collector, events = collector_for(Path(tmp), baton_retry_ms=0)
        collector.pause = lambda seconds: None
        for data in contents:
            (Path(tmp) / "input.md").write_bytes(data)
            collector.on_changes([Change("input.md", "modified")])
        for payload in events:
            assert Envelope.from_wire(Envelope(repo="r", source="brief", payload=payload).to_wire()).payload == payload
