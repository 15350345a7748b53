"""Every alert kind: a stream that makes it happen, and one where it must stay quiet.
Plus the notifier (command with the alert JSON on stdin, timeout, notify-send) and the
empty-selector check on a real repo."""

from __future__ import annotations

import json
import stat
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from monitor.config import Settings, settings_from_dict
from monitor.events import Alert, BriefUpdated, LedgerItem, LedgerItemAdded, LedgerRead, LedgerStatusChanged, PromptChanged
from monitor.notify import Notifier, alert_json, escape_markup
from monitor.scorer import Scorer
from monitor.selectors import check_selectors, selector_args
from scorer_streams import Stream, alerts, run

CODE = {"src/app.py": (30, 4), "tests/test_app.py": (40, 0)}


def iteration(s: Stream, n: int, code: dict | None = None, tests: str = "not run", focus: str = "ABC-001", step: timedelta | None = None) -> None:
    """A supervisor commit and an engineer commit, tagged n."""
    s.commit(f"SUPERVISOR AUTO (iter={n:05d}): [{focus}] plan — tests: not run", files={"input.md": (2, 1)}, when=s.advance(step))
    s.commit(f"RALPH AUTO (iter={n:05d}): [{focus}] work — tests: {tests}", files=code if code is not None else CODE, when=s.advance(step))


def kinds(payloads: list) -> list[str]:
    return [a.alert for a in alerts(payloads)]


# --------------------------------------------------------------------------- dwell tier


def test_dwell_tier_fires_on_planning_streaks_and_stays_quiet_while_code_lands() -> None:
    quiet, streak = Stream(), Stream()
    for n in range(1, 5):
        iteration(quiet, n)
        iteration(streak, n, code={"plans/active/ABC-001/plan.md": (10, 0)})
    iteration(quiet, 5)
    iteration(streak, 5)
    assert "dwell_tier" not in kinds(run(Scorer(Settings()), quiet.envelopes))
    out = run(Scorer(Settings()), streak.envelopes)
    tiers = alerts(out, "dwell_tier")
    assert [a.detail["tier"] for a in tiers] == ["1", "1.5", "2"]
    assert all(a.focus == "ABC-001" and a.iteration is not None for a in tiers)


# --------------------------------------------------------------------------- git state


@pytest.mark.parametrize("state", ["rebase-merge", "rebase-apply", "merge", "index-lock-stale"])
def test_git_state_failures_alert_with_what_to_do(state: str) -> None:
    s = Stream()
    iteration(s, 1)
    s.git_state(state)
    out = run(Scorer(Settings()), s.envelopes)
    [alert] = alerts(out, "git_state")
    assert alert.severity == "critical" and alert.iteration == 1 and alert.focus == "ABC-001"
    assert state.split("-")[0] in alert.message or "index.lock" in alert.message
    assert "abort" in alert.message or "remove" in alert.message


def test_git_state_stays_quiet_for_a_detached_head_and_for_a_state_clearing() -> None:
    s = Stream()
    iteration(s, 1)
    s.git_state("detached-head")
    s.git_state("rebase-merge", active=False)
    assert alerts(run(Scorer(Settings()), s.envelopes)) == []


def test_a_rebase_that_comes_back_in_a_later_iteration_alerts_again() -> None:
    s = Stream()
    iteration(s, 1)
    s.git_state("rebase-merge")
    s.git_state("rebase-merge", active=False)
    iteration(s, 2)
    s.git_state("rebase-merge")
    assert len(alerts(run(Scorer(Settings()), s.envelopes), "git_state")) == 2


# --------------------------------------------------------------------------- bulky artifact


def test_bulky_artifacts_created_or_committed_outside_artifacts_alert() -> None:
    s = Stream()
    iteration(s, 1)
    s.file("plans/active/ABC-001/reports/2025-11-13T150000Z/recon.npz", 4_000_000)
    s.commit("RALPH AUTO (iter=00001): add model — tests: not run", files={"models/weights.pt": (0, 0)}, sizes={"models/weights.pt": 2_500_000})
    out = run(Scorer(Settings()), s.envelopes)
    found = alerts(out, "bulky_artifact")
    assert [a.detail["path"] for a in found] == ["plans/active/ABC-001/reports/2025-11-13T150000Z/recon.npz", "models/weights.pt"]
    assert "4.0 MB" in found[0].message and ".artifacts/" in found[0].message
    assert found[1].detail["sha"] is not None


def test_bulky_artifacts_stay_quiet_under_artifacts_under_the_gate_or_ignored() -> None:
    settings = settings_from_dict({"alerts": {"bulky_ignore": ["data/fixtures/**"]}})
    s = Stream(settings=settings)
    iteration(s, 1)
    s.file(".artifacts/run1/recon.npz", 40_000_000)
    s.file("data/fixtures/golden.h5", 9_000_000)
    s.file("reports/small.json", 900_000)
    s.file("reports/big.json", 5_000_000, change="deleted")
    assert alerts(run(Scorer(settings), s.envelopes), "bulky_artifact") == []


def test_a_committed_bulky_artifact_costs_semantic_points() -> None:
    s = Stream()
    s.commit("SUPERVISOR AUTO (iter=00001): plan — tests: not run")
    s.commit("RALPH AUTO (iter=00001): work — tests: not run", files={**CODE, "out/recon.npz": (0, 0)}, sizes={"out/recon.npz": 3_000_000})
    out = run(Scorer(Settings()), s.envelopes)
    last = [p for p in out if p.kind == "iteration_scored"][-1]
    assert any("bulky artifacts committed: out/recon.npz" in r.text and r.delta < 0 for r in last.reasons)


# --------------------------------------------------------------------------- empty selector (runs pytest in a real repo)


def _repo_with_tests(tmp_path: Path) -> Path:
    root = tmp_path / "watched"
    (root / "tests").mkdir(parents=True)
    (root / "tests" / "test_real.py").write_text("def test_one():\n    assert 1 + 1 == 2\n\ndef test_two():\n    assert True\n")
    return root


def test_an_empty_selector_in_the_brief_raises_an_alert(tmp_path: Path) -> None:
    root = _repo_with_tests(tmp_path)
    settings = settings_from_dict({"alerts": {"check_selectors": True, "selector_timeout_seconds": 60}})
    brief = BriefUpdated(focus="ABC-001", mapped_tests=["pytest tests/test_real.py::test_one -q", "tests/test_real.py::test_missing"], digest="d1")
    alert = check_selectors(root, brief, settings, iteration=4)
    assert alert is not None and alert.alert == "empty_selector"
    assert alert.detail["selectors"] == ["tests/test_real.py::test_missing"]
    assert alert.iteration == 4 and alert.focus == "ABC-001"
    assert not (root / ".pytest_cache").exists()  # the check leaves the watched repo as it was


def test_selectors_that_collect_tests_raise_nothing_and_the_check_is_opt_in(tmp_path: Path) -> None:
    root = _repo_with_tests(tmp_path)
    on = settings_from_dict({"alerts": {"check_selectors": True}})
    good = BriefUpdated(mapped_tests=["tests/test_real.py", "tests/test_real.py -k two"], digest="d2")
    assert check_selectors(root, good, on) is None
    bad = BriefUpdated(mapped_tests=["tests/test_nothing_here.py"], digest="d3")
    assert check_selectors(root, bad, Settings()) is None  # off by default: it runs the repo's code
    assert check_selectors(root, BriefUpdated(mapped_tests_none=True, digest="d4"), on) is None


def test_selector_text_from_a_brief_is_reduced_to_test_ids() -> None:
    assert selector_args("python -m pytest tests/x.py::test_y -q -k fast") == ["tests/x.py::test_y", "-k", "fast"]
    assert selector_args("`pytest tests/t.py -vv --maxfail=1`") == ["tests/t.py"]


# --------------------------------------------------------------------------- stalled loop


def test_stalled_loop_when_the_lease_expires_without_a_commit() -> None:
    s = Stream()
    iteration(s, 1)
    lease = s.now + timedelta(minutes=30)
    s.baton(2, "ralph", "running-ralph", lease=lease)
    scorer = Scorer(Settings())
    run(scorer, s.envelopes)
    assert scorer.tick(lease - timedelta(seconds=1)) == []
    fired = scorer.tick(lease + timedelta(seconds=5))
    assert [(repo, a.alert) for repo, a in fired] == [("loop", "stalled_loop")]
    assert "lease expired" in fired[0][1].message
    assert scorer.tick(lease + timedelta(minutes=1)) == []  # once


def test_no_stall_when_a_commit_came_after_the_baton_or_the_loop_is_complete() -> None:
    s = Stream()
    lease = s.now + timedelta(minutes=10)
    s.baton(1, "ralph", "running-ralph", lease=lease)
    iteration(s, 1)
    scorer = Scorer(Settings())
    run(scorer, s.envelopes)
    assert scorer.tick(lease + timedelta(minutes=5)) == []
    done = Stream("done")
    done.baton(9, "galph", "complete", lease=done.now)
    scorer2 = Scorer(Settings())
    run(scorer2, done.envelopes)
    assert scorer2.tick(done.now + timedelta(days=2)) == []


def test_stalled_loop_when_nothing_happens_while_the_baton_says_running() -> None:
    s = Stream()
    s.baton(3, "galph", "running-galph")
    iteration(s, 3)
    scorer = Scorer(Settings())
    run(scorer, s.envelopes)
    assert scorer.tick(s.now + timedelta(minutes=29)) == []
    [(repo, alert)] = scorer.tick(s.now + timedelta(minutes=31))
    assert alert.key.startswith("stalled_loop:silent:") and "running-galph" in alert.message


# --------------------------------------------------------------------------- score regression


def _good(s: Stream, n: int) -> None:
    s.brief("ABC-001", mapped=["tests/test_app.py"], text=str(n))
    iteration(s, n, tests="pytest tests/test_app.py (6 passed)")


def test_score_regression_when_the_rolling_mean_drops_20_points_within_5_iterations() -> None:
    s = Stream()
    for n in range(1, 6):
        _good(s, n)
    for n in range(6, 11):
        iteration(s, n, code={"docs/notes.md": (5, 0)})
    s.commit("SUPERVISOR AUTO (iter=00011): plan — tests: not run")
    out = run(Scorer(Settings()), s.envelopes)
    [alert] = alerts(out, "score_regression")
    assert alert.detail["drop"] >= 20 and alert.detail["peak_index"] <= 5


def test_a_score_regression_is_raised_once_per_fall_and_again_after_a_recovery() -> None:
    s = Stream()
    n = 0
    for block in (_good, _poor, _good, _poor):
        for _ in range(8):
            n += 1
            block(s, n)
    s.commit(f"SUPERVISOR AUTO (iter={n + 1:05d}): plan — tests: not run")
    out = run(Scorer(Settings()), s.envelopes)
    found = alerts(out, "score_regression")
    assert len(found) == 2
    assert 8 < found[0].iteration <= 16 < 24 < found[1].iteration


def _poor(s: Stream, n: int) -> None:
    iteration(s, n, code={"docs/notes.md": (5, 0)})


def test_no_score_regression_for_a_steady_loop() -> None:
    s = Stream()
    for n in range(1, 12):
        _good(s, n)
    s.commit("SUPERVISOR AUTO (iter=00012): plan — tests: not run")
    assert alerts(run(Scorer(Settings()), s.envelopes), "score_regression") == []


# --------------------------------------------------------------------------- hub sprawl


def test_hub_sprawl_after_more_than_three_new_hubs_with_no_code_between() -> None:
    s = Stream()
    for k in range(1, 6):
        iteration(s, k, code={f"plans/active/ABC-001/reports/2025-11-1{k}T000000Z/summary.md": (9, 0)})
        s.hub(f"plans/active/ABC-001/reports/2025-11-1{k}T000000Z", "ABC-001")
    out = run(Scorer(Settings()), s.envelopes)
    [alert] = alerts(out, "hub_sprawl")
    assert len(alert.detail["hubs"]) == 4 and alert.iteration == 4


def test_no_hub_sprawl_when_code_lands_between_hubs_or_hubs_already_existed() -> None:
    s = Stream()
    for k in range(1, 3):
        s.hub(f"plans/active/ABC-001/reports/2025-10-0{k}T000000Z", "ABC-001", existing=True)
    for k in range(1, 7):
        iteration(s, k)  # lands code every time
        s.hub(f"plans/active/ABC-001/reports/2025-11-1{k}T000000Z", "ABC-001")
    assert alerts(run(Scorer(Settings()), s.envelopes), "hub_sprawl") == []


# --------------------------------------------------------------------------- prompt change


def test_a_prompt_change_is_an_informational_marker_raised_once_per_version() -> None:
    s = Stream()
    iteration(s, 1)
    change = PromptChanged(path="prompts/supervisor.md", digest="abc", previous_digest="123", lines_added=4, lines_removed=1)
    s.emit(change)
    s.emit(change)
    s.emit(PromptChanged(path="prompts/supervisor.md", digest="def", previous_digest="abc", lines_added=1))
    out = run(Scorer(Settings()), s.envelopes)
    found = alerts(out, "prompt_change")
    assert [a.severity for a in found] == ["info", "info"] and "+4/-1" in found[0].message


def test_no_prompt_change_alert_without_a_prompt_event() -> None:
    s = Stream()
    iteration(s, 1)
    s.file("prompts_backup.txt", 10)
    assert alerts(run(Scorer(Settings()), s.envelopes), "prompt_change") == []


# --------------------------------------------------------------------------- runaway loop


def test_runaway_loop_when_iterations_come_faster_than_one_a_minute() -> None:
    s = Stream()
    for n in range(1, 8):
        iteration(s, n, step=timedelta(seconds=10))
    out = run(Scorer(Settings()), s.envelopes)
    found = alerts(out, "runaway_loop")
    assert [a.key for a in found] == ["runaway_loop:fast:1"]


def test_runaway_loop_when_five_iterations_change_nothing_at_all() -> None:
    s = Stream()
    for n in range(1, 7):
        s.commit(f"SUPERVISOR AUTO (iter={n:05d}): plan — tests: not run")
        s.commit(f"RALPH AUTO (iter={n:05d}): nothing to do — tests: not run")
    out = run(Scorer(Settings()), s.envelopes)
    assert [a.key for a in alerts(out, "runaway_loop")] == ["runaway_loop:empty:1"]


def test_no_runaway_for_a_loop_at_a_normal_pace_that_changes_files() -> None:
    s = Stream(step=timedelta(minutes=4))
    for n in range(1, 9):
        iteration(s, n, code={"plans/active/A-1/notes.md": (3, 0)} if n % 2 else None)
    assert alerts(run(Scorer(Settings()), s.envelopes), "runaway_loop") == []


# --------------------------------------------------------------------------- repeated failure


FAILING = "pytest tests/test_app.py::test_parse (3 passed, 1 failed: ValueError: bad header)"


def test_repeated_failure_when_two_engineer_turns_in_a_row_report_the_same_failure() -> None:
    s = Stream()
    iteration(s, 1, tests=FAILING)
    iteration(s, 2, tests=FAILING)
    out = run(Scorer(Settings()), s.envelopes)
    [alert] = alerts(out, "repeated_failure")
    assert "tests/test_app.py::test_parse" in alert.detail["signatures"] and alert.iteration == 2


def test_no_repeated_failure_for_different_failures_or_a_green_turn_between() -> None:
    s = Stream()
    iteration(s, 1, tests=FAILING)
    iteration(s, 2, tests="pytest tests/test_other.py (1 failed: KeyError: x)")
    iteration(s, 3, tests="pytest tests/test_app.py::test_parse (4 passed)")
    iteration(s, 4, tests=FAILING)
    assert alerts(run(Scorer(Settings()), s.envelopes), "repeated_failure") == []


# --------------------------------------------------------------------------- stale brief


def test_stale_brief_when_the_engineer_keeps_going_on_an_unchanged_brief() -> None:
    s = Stream()
    s.brief("ABC-001", mapped=["tests/test_app.py"])
    iteration(s, 1)
    for n in range(2, 6):
        s.commit(f"RALPH AUTO (iter={n:05d}): [ABC-001] more work — tests: not run", files=CODE)
    out = run(Scorer(Settings()), s.envelopes)
    [alert] = alerts(out, "stale_brief")
    assert alert.detail["iterations"] == [2, 3, 4] and "supervisor has dropped out" in alert.message


def test_no_stale_brief_when_the_supervisor_writes_a_new_brief_each_turn() -> None:
    s = Stream()
    for n in range(1, 7):
        s.brief("ABC-001", mapped=["tests/test_app.py"], text=str(n))
        iteration(s, n)
    assert alerts(run(Scorer(Settings()), s.envelopes), "stale_brief") == []


# --------------------------------------------------------------------------- focus stagnation


def test_focus_stagnation_when_the_focus_item_keeps_its_status_while_code_lands() -> None:
    s = Stream()
    s.emit(LedgerItemAdded(path="docs/fix_plan.md", item=LedgerItem(id="ABC-001", status="blocked")))
    for n in range(1, 12):
        s.brief("ABC-001", text=str(n))
        iteration(s, n)
    s.commit("SUPERVISOR AUTO (iter=00012): plan — tests: not run")
    out = run(Scorer(Settings()), s.envelopes)
    [alert] = alerts(out, "focus_stagnation")
    assert alert.focus == "ABC-001" and "'blocked'" in alert.message and len(alert.detail["iterations"]) == 10


def test_no_focus_stagnation_when_the_status_moves() -> None:
    s = Stream()
    s.emit(LedgerItemAdded(path="docs/fix_plan.md", item=LedgerItem(id="ABC-001", status="in_progress")))
    for n in range(1, 14):
        s.brief("ABC-001", text=str(n))
        iteration(s, n)
        if n % 6 == 0:
            s.emit(LedgerStatusChanged(path="docs/fix_plan.md", item_id="ABC-001", old="in_progress", new=f"phase {n}"))
    s.commit("SUPERVISOR AUTO (iter=00014): plan — tests: not run")
    assert alerts(run(Scorer(Settings()), s.envelopes), "focus_stagnation") == []


# --------------------------------------------------------------------------- ledger bloat


def test_ledger_bloat_alerts_on_each_crossing_of_the_limit() -> None:
    s = Stream()
    for chars in (40_000, 60_000, 61_000, 30_000, 70_000):
        s.emit(LedgerRead(path="docs/fix_plan.md", chars=chars, items=120))
    out = run(Scorer(Settings()), s.envelopes)
    found = alerts(out, "ledger_bloat")
    assert [a.detail["chars"] for a in found] == [60_000, 70_000]
    assert "archive" in found[0].message


def test_no_ledger_bloat_under_the_limit() -> None:
    s = Stream()
    s.emit(LedgerRead(path="docs/fix_plan.md", chars=49_999, items=80))
    assert alerts(run(Scorer(Settings()), s.envelopes)) == []


# --------------------------------------------------------------------------- loop markers


def test_no_loop_markers_is_said_once_for_a_plain_repo_and_never_for_a_loop() -> None:
    plain = Stream(step=timedelta(hours=1))
    for k in range(3):
        plain.commit(f"fix: thing {k}", files=CODE)
    assert len(alerts(run(Scorer(Settings()), plain.envelopes), "no_loop_markers")) == 1
    loop = Stream()
    for n in range(1, 4):
        iteration(loop, n)
    assert alerts(run(Scorer(Settings()), loop.envelopes), "no_loop_markers") == []


# --------------------------------------------------------------------------- notifier


def _recorder(tmp_path: Path, body: str) -> Path:
    script = tmp_path / "hook.py"
    script.write_text(f"import sys, pathlib\n{body}\n")
    return script


def test_the_alert_command_gets_the_alert_as_json_on_stdin(tmp_path: Path) -> None:
    out_file = tmp_path / "got.json"
    script = _recorder(tmp_path, f"pathlib.Path({str(out_file)!r}).write_bytes(sys.stdin.buffer.read())")
    settings = settings_from_dict({"alerts": {"command": [sys.executable, str(script)]}})
    notifier = Notifier(settings.alerts)
    scorer = Scorer(settings, notifier=notifier)
    s = Stream()
    iteration(s, 1)
    s.git_state("merge")
    out = run(scorer, s.envelopes)
    scorer.close()
    got = json.loads(out_file.read_text())
    assert got["repo"] == "loop" and got["alert"] == "git_state" and got["key"] == alerts(out)[0].key
    assert [d.returncode for d in notifier.deliveries] == [0]


def test_a_hanging_alert_command_is_stopped_by_its_timeout(tmp_path: Path) -> None:
    script = _recorder(tmp_path, "import time; time.sleep(30)")
    errors: list[str] = []
    settings = settings_from_dict({"alerts": {"command": [sys.executable, str(script)], "command_timeout_seconds": 0.5}})
    notifier = Notifier(settings.alerts, on_error=errors.append)
    [delivery] = notifier.deliver("loop", Alert(alert="x", key="k", message="m"))
    assert delivery.returncode is None and "timed out" in errors[0]


def test_notify_send_gets_the_message_as_literal_text(tmp_path: Path) -> None:
    argv_file = tmp_path / "argv.json"
    fake = tmp_path / "notify-send"
    fake.write_text(f"#!{sys.executable}\nimport sys, json, pathlib\npathlib.Path({str(argv_file)!r}).write_text(json.dumps(sys.argv[1:]))\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    settings = settings_from_dict({"alerts": {"desktop_notify": True}})
    notifier = Notifier(settings.alerts, notify_send=str(fake))
    notifier.deliver("loop", Alert(alert="bulky_artifact", severity="critical", key="k", message="<b>big</b> & $(rm -rf)"))
    argv = json.loads(argv_file.read_text())
    assert argv[-1] == "&lt;b&gt;big&lt;/b&gt; &amp; $(rm -rf)" and "--urgency=critical" in argv and "--" in argv


def test_nothing_is_run_when_no_command_and_no_desktop_notification_are_configured() -> None:
    notifier = Notifier(Settings().alerts)
    notifier.notify("loop", Alert(alert="x", key="k", message="m"))
    notifier.close()
    assert not notifier.enabled and notifier.deliveries == []


def test_alert_json_and_markup_escaping() -> None:
    data = json.loads(alert_json("r", Alert(alert="x", key="k", message="ü")))
    assert data["repo"] == "r" and data["message"] == "ü"
    assert escape_markup("a<b>&") == "a&lt;b&gt;&amp;"
