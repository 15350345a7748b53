"""Dwell: the seed's story (six planning loops on one focus), resets, the global count,
and the check against the supervisor's own `dwell=`."""

from __future__ import annotations

from monitor.config import Settings, settings_from_dict
from monitor.dwell import DwellTracker
from monitor.scorer import Scorer
from scorer_streams import Stream, alerts, run

FOCUS = "STUDY-SYNTH-FLY64-DOSE-OVERLAP-001"
HUB = f"plans/active/{FOCUS}/reports/2025-11-12T010000Z"


def planning_turn(s: Stream, n: int, focus: str = FOCUS, code: dict | None = None, dwell: int | None = None) -> None:
    """A supervisor turn that plans, and an engineer turn that only writes evidence (or `code`)."""
    s.brief(f"{focus} — Phase G comparison", mapped=[], none=True, artifacts=HUB, text=str(n))
    s.memory(focus=focus, dwell=dwell)
    s.commit(f"SUPERVISOR AUTO (iter={n:05d}): [{focus}] planning — tests: not run",
             files={"input.md": (20, 18), "docs/fix_plan.md": (6, 2), "galph_memory.md": (4, 0)})
    s.commit(f"RALPH AUTO (iter={n:05d}): [{focus}] reports evidence — tests: not run",
             files=code or {f"{HUB}/analysis_{n}.md": (40, 0)})


def code_turn(s: Stream, n: int, focus: str = FOCUS) -> None:
    planning_turn(s, n, focus, code={"ptycho/raw_data.py": (30, 2), "tests/test_raw_data.py": (25, 0)})


def dwell_alerts(payloads: list) -> list[tuple[str, str]]:
    return [(a.detail["scope"], a.detail["tier"]) for a in alerts(payloads, "dwell_tier")]


def test_six_planning_loops_raise_each_tier_once_and_code_re_arms_them() -> None:
    s = Stream()
    for n in range(296, 302):
        planning_turn(s, n)
    code_turn(s, 302)
    planning_turn(s, 303)
    planning_turn(s, 304)
    s.commit("SUPERVISOR AUTO (iter=00305): plan — tests: not run")
    out = run(Scorer(Settings()), s.envelopes)

    raised = alerts(out, "dwell_tier")
    assert dwell_alerts(out) == [(FOCUS, "1"), (FOCUS, "1.5"), (FOCUS, "2"), (FOCUS, "3"), (FOCUS, "1")]
    assert [a.detail["dwell"] for a in raised] == [2, 3, 4, 6, 2]
    assert [a.severity for a in raised] == ["notice", "warning", "warning", "critical", "notice"]
    tier3 = raised[3]
    assert tier3.detail["iterations"] == [1, 2, 3, 4, 5, 6]
    assert "loop iterations 296–301" in tier3.message and "escalate" in tier3.message
    assert len({a.key for a in raised}) == 5
    values = [d.value for d in out if d.kind == "dwell_changed" and d.focus == FOCUS]
    assert values == [1, 2, 3, 4, 5, 6, 0, 1, 2]


def test_a_micro_nucleus_under_min_code_lines_still_counts_as_dwell() -> None:
    s = Stream()
    planning_turn(s, 1)
    planning_turn(s, 2, code={"tests/test_integration_workflow.py": (1, 1)})
    s.commit("SUPERVISOR AUTO (iter=00003): plan — tests: not run")
    out = run(Scorer(Settings()), s.envelopes)
    assert dwell_alerts(out) == [(FOCUS, "1")]


def test_the_tiers_and_min_code_lines_come_from_settings() -> None:
    settings = settings_from_dict({"dwell": {"tiers": {"soon": 1, "late": 3}, "min_code_lines": 100}})
    s = Stream()
    code_turn(s, 1)  # 57 lines: under this loop's 100
    planning_turn(s, 2)
    planning_turn(s, 3)
    s.commit("SUPERVISOR AUTO (iter=00004): plan — tests: not run")
    out = run(Scorer(settings), s.envelopes)
    assert dwell_alerts(out) == [(FOCUS, "soon"), (FOCUS, "late")]


def test_the_global_count_alerts_only_when_its_streak_spans_foci() -> None:
    s = Stream()
    planning_turn(s, 1, "ALPHA-001")
    planning_turn(s, 2, "ALPHA-001")
    planning_turn(s, 3, "BETA-002")
    planning_turn(s, 4, "BETA-002")
    s.commit("SUPERVISOR AUTO (iter=00005): plan — tests: not run")
    out = run(Scorer(Settings()), s.envelopes)
    assert dwell_alerts(out) == [("ALPHA-001", "1"), ("*", "1.5"), ("BETA-002", "1"), ("*", "2")]
    glob = [d for d in out if d.kind == "dwell_changed" and d.focus == "*"]
    assert glob[-1].value == 4 and glob[-1].iterations == [1, 2, 3, 4]


def test_code_on_another_focus_resets_the_global_count_but_not_the_focus() -> None:
    s = Stream()
    planning_turn(s, 1, "ALPHA-001")
    code_turn(s, 2, "BETA-002")
    planning_turn(s, 3, "ALPHA-001")
    s.commit("SUPERVISOR AUTO (iter=00004): plan — tests: not run")
    scorer = Scorer(Settings())
    out = run(scorer, s.envelopes)
    assert scorer.figures("loop")["dwell"] == {"*": 1, "ALPHA-001": 2, "BETA-002": 0}
    assert dwell_alerts(out) == [("ALPHA-001", "1")]


def test_the_supervisors_own_dwell_is_checked_against_the_diffs() -> None:
    s = Stream()
    for n in range(1, 4):
        planning_turn(s, n)
    # The fourth supervisor turn tallies the three before it, close enough: no alert.
    planning_turn(s, 4, dwell=3)
    # The fifth claims 1 where the diffs show 4 in a row.
    planning_turn(s, 5, dwell=1)
    out = run(Scorer(Settings()), s.envelopes)
    mismatch = alerts(out, "dwell_mismatch")
    assert len(mismatch) == 1
    assert mismatch[0].detail["reported"] == 1 and mismatch[0].detail["measured"] == 4
    reported = [d.reported for d in out if d.kind == "dwell_changed" and d.focus == FOCUS]
    assert reported[-1] == 1


def test_a_supervisor_tally_written_before_its_commit_counts_the_turn_just_finished() -> None:
    s = Stream()
    planning_turn(s, 1)
    planning_turn(s, 2)
    s.memory(focus=FOCUS, dwell=2)  # written after iteration 2's engineer, before iteration 3 opens
    out = run(Scorer(Settings()), s.envelopes)
    assert alerts(out, "dwell_mismatch") == []


def test_dwell_tracker_lists_the_iterations_that_make_up_a_value() -> None:
    tracker = DwellTracker(Settings().dwell)
    for index in (4, 5, 6):
        changes, _ = tracker.close(index, 100 + index, "X-1", landed=False)
    assert changes[0].iterations == [4, 5, 6] and changes[0].tier == "1.5"
    changes, alerts_ = tracker.close(7, 107, "X-1", landed=True)
    assert [c.value for c in changes] == [0, 0] and alerts_ == []
