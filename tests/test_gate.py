"""`loopmon gate`: a loop driver asks between turns; dwell, a broken git state or a stall stop it."""

from __future__ import annotations

import json
import os
import subprocess
from datetime import timedelta

import pytest
from loop_store import LoopStore, Turn

from monitor.cli import main
from monitor.gate import EXIT_DWELL, EXIT_GIT_STATE, EXIT_GO, EXIT_STALLED, evaluate
from monitor.config import Settings
from monitor.query import open_readonly

PLANNING = Turn(0, 8, "PHASE-G-001", (), "planning only")


def gate(capsys, db, *argv) -> tuple[int, str, str]:
    code = main(["gate", "--db", str(db), *argv])
    out, err = capsys.readouterr()
    return code, out, err


def dwelling(db, planning_turns: int, *, focus: str = "PHASE-G-001") -> LoopStore:
    """A loop whose last `planning_turns` iterations on `focus` landed no code."""
    s = LoopStore(db)
    s.iteration(Turn(1, 80, focus, (("ptycho/a.py", 30, 2),)))
    for n in range(planning_turns):
        s.iteration(Turn(2 + n, 8, focus, (), "planning only"))
    return s


# --------------------------------------------------------------------------- dwell


@pytest.mark.parametrize("planning, max_tier, expected", [
    (6, "3", EXIT_DWELL),
    (5, "3", EXIT_GO),
    (4, "2", EXIT_DWELL),
    (3, "2", EXIT_GO),
    (2, "1", EXIT_DWELL),
])
def test_a_dwell_tier_at_or_above_the_limit_stops_the_loop(tmp_path, capsys, planning, max_tier, expected):
    dwelling(tmp_path / "loopmon.db", planning).close()
    code, _, err = gate(capsys, tmp_path / "loopmon.db", "--max-tier", max_tier)
    assert code == expected
    if expected == EXIT_DWELL:
        assert f"dwell {planning} on PHASE-G-001" in err
    else:
        assert err == ""


def test_code_landing_on_the_focus_lets_the_loop_go_on(tmp_path, capsys):
    s = dwelling(tmp_path / "loopmon.db", 6)
    assert gate(capsys, s.path)[0] == EXIT_DWELL
    s.iteration(Turn(9, 85, "PHASE-G-001", (("ptycho/g.py", 40, 0), ("tests/test_g.py", 20, 0))))
    s.close()
    assert gate(capsys, s.path) == (EXIT_GO, "", "")


def test_the_open_iteration_that_landed_code_already_breaks_the_streak(tmp_path, capsys):
    s = dwelling(tmp_path / "loopmon.db", 6)
    s.iteration(Turn(9, 70, "PHASE-G-001", (("ptycho/g.py", 40, 0),)), provisional=True)
    s.close()
    assert gate(capsys, s.path)[0] == EXIT_GO


def test_focus_limits_the_check_to_that_focus_and_the_global_count(tmp_path, capsys):
    s = dwelling(tmp_path / "loopmon.db", 4, focus="PHASE-G-001")
    s.iteration(Turn(20, 90, "OTHER-002", (("ptycho/o.py", 40, 0),)))  # resets the global count, not PHASE-G's
    s.close()
    assert gate(capsys, s.path, "--max-tier", "2")[0] == EXIT_DWELL
    assert gate(capsys, s.path, "--max-tier", "2", "--focus", "OTHER-002")[0] == EXIT_GO
    assert gate(capsys, s.path, "--max-tier", "2", "--focus", "PHASE-G-001")[0] == EXIT_DWELL


def test_an_unknown_tier_is_a_usage_error(tmp_path, capsys):
    dwelling(tmp_path / "loopmon.db", 1).close()
    code, _, err = gate(capsys, tmp_path / "loopmon.db", "--max-tier", "7")
    assert code == 2 and "the tiers are 1, 1.5, 2, 3" in err


def test_json_gives_the_verdict_on_stdout(tmp_path, capsys):
    dwelling(tmp_path / "loopmon.db", 6).close()
    code, out, err = gate(capsys, tmp_path / "loopmon.db", "--json")
    verdict = json.loads(out)
    assert verdict["status"] == code == EXIT_DWELL and verdict["go"] is False and verdict["check"] == "dwell"
    (reason,) = [r for r in verdict["reasons"] if r["detail"]["focus"] == "PHASE-G-001"]
    assert reason["detail"]["value"] == 6 and reason["detail"]["tier"] == "3"
    assert reason["message"] in err


# --------------------------------------------------------------------------- git state


def test_a_rebase_in_progress_in_the_repo_stops_the_loop(repo, capsys):
    repo.commit("init", {"docs/fix_plan.md": "a\n"})
    db = repo.root / ".loopmon" / "loopmon.db"
    dwelling(db, 0).close()  # the repo folder is named loop, as the store's repo
    assert gate(capsys, db, "--repo", str(repo.root))[0] == EXIT_GO
    (repo.root / ".git" / "rebase-merge").mkdir()
    (repo.root / ".git" / "rebase-merge" / "head-name").write_text("refs/heads/main\n")
    code, _, err = gate(capsys, db, "--repo", str(repo.root))
    assert code == EXIT_GIT_STATE
    assert "rebase-merge (rebasing refs/heads/main) in .git now" in err


def test_a_stale_index_lock_stops_the_loop_and_a_fresh_one_does_not(repo, capsys):
    repo.commit("init", {"a.py": "x = 1\n"})
    db = repo.root / ".loopmon" / "loopmon.db"
    dwelling(db, 0).close()
    lock = repo.root / ".git" / "index.lock"
    lock.write_text("")
    assert gate(capsys, db, "--repo", str(repo.root))[0] == EXIT_GO
    old = lock.stat().st_mtime - 600
    os.utime(lock, (old, old))
    assert gate(capsys, db, "--repo", str(repo.root))[0] == EXIT_GIT_STATE


def test_without_the_repo_at_hand_the_last_recorded_git_state_counts(tmp_path, capsys):
    s = dwelling(tmp_path / "loopmon.db", 0)
    s.git_state("merge", True)
    assert gate(capsys, s.path)[0] == EXIT_GIT_STATE
    s.git_state("merge", False)
    s.git_state("detached-head", True)  # a detached HEAD alone does not stop a turn
    s.close()
    assert gate(capsys, s.path)[0] == EXIT_GO


def test_a_real_conflicted_merge_is_seen_live(repo, capsys):
    repo.commit("init", {"docs/fix_plan.md": "status: a\n"})
    repo.git("checkout", "-q", "-b", "side")
    repo.commit("side", {"docs/fix_plan.md": "status: b\n"})
    repo.git("checkout", "-q", "main")
    repo.commit("main", {"docs/fix_plan.md": "status: c\n"})
    subprocess.run(["git", "-C", str(repo.root), "merge", "-q", "side"], capture_output=True)
    db = repo.root / ".loopmon" / "loopmon.db"
    dwelling(db, 0).close()
    code, _, err = gate(capsys, db, "--repo", str(repo.root))
    assert code == EXIT_GIT_STATE and "merge" in err


# --------------------------------------------------------------------------- stalls


def test_a_lease_that_ran_out_with_no_commit_since_is_a_stall(tmp_path, capsys):
    s = dwelling(tmp_path / "loopmon.db", 0)
    s.baton("running-ralph", lease=s.at() + timedelta(minutes=30))  # the store's clock is in 2025: long expired
    s.close()
    code, _, err = gate(capsys, s.path)
    assert code == EXIT_STALLED and "lease expired" in err and "running-ralph" in err


def test_a_commit_after_the_lease_or_a_finished_loop_is_no_stall(tmp_path):
    s = dwelling(tmp_path / "loopmon.db", 0)
    lease = s.at() + timedelta(minutes=30)
    s.baton("running-ralph", lease=lease)
    now = lease + timedelta(minutes=5)
    conn = open_readonly(s.path)
    assert evaluate(conn, "loop", Settings(), now=now).status == EXIT_STALLED
    assert evaluate(conn, "loop", Settings(), now=lease - timedelta(minutes=1)).status == EXIT_GO
    s.minutes += 40  # past the lease
    s.commit("RALPH AUTO: late but alive", [("ptycho/a.py", 3, 0)], role="engineer")
    assert evaluate(conn, "loop", Settings(), now=now + timedelta(minutes=10)).status == EXIT_GO
    s.baton("complete", lease=lease)
    assert evaluate(conn, "loop", Settings(), now=now + timedelta(hours=5)).status == EXIT_GO
    conn.close()
    s.close()


def test_silence_while_the_monitor_hears_its_heartbeats_is_a_stall(tmp_path):
    from monitor.events import Heartbeat

    s = dwelling(tmp_path / "loopmon.db", 0)
    s.baton("running-galph", lease=None)
    last = s.at()
    conn = open_readonly(s.path)
    later = last + timedelta(hours=2)
    assert evaluate(conn, "loop", Settings(), now=later).status == EXIT_GO  # no heartbeat: the monitor may be down
    s.write(Heartbeat(sent=10), minutes=s.minutes + 119)  # the collectors still beat a minute ago
    verdict = evaluate(conn, "loop", Settings(), now=later)
    assert verdict.status == EXIT_STALLED and "nothing from the loop for 2.0 h" in verdict.reasons[0].message
    conn.close()
    s.close()


def test_the_most_urgent_reason_decides_the_status(tmp_path, capsys):
    s = dwelling(tmp_path / "loopmon.db", 6)
    s.baton("running-ralph", lease=s.at())
    s.git_state("rebase-apply", True)
    s.close()
    code, out, err = gate(capsys, s.path, "--json")
    assert code == EXIT_GIT_STATE
    reasons = json.loads(out)["reasons"]
    assert {r["check"] for r in reasons} == {"git_state", "stalled", "dwell"}
    assert err.count("loopmon: gate:") == len(reasons) == 4  # the focus's dwell and the global one


def test_a_missing_store_is_a_usage_error(tmp_path, capsys):
    assert gate(capsys, tmp_path / "none.db")[0] == 2


# --------------------------------------------------------------------------- simulated loops, backfilled


def test_a_simulated_dwell_streak_stops_the_loop_and_code_lets_it_go_on(tmp_path, capsys):
    """The driver's view: the dwell scenario (seed 0) plans 7 iterations in a row, then lands code.

    The gate is asked after the engineer's turn, before the next supervisor turn, as a
    driver asks it; the store is brought up to date by `loopmon backfill` first.
    """
    from monitor.simulator import LoopSimulator

    repo, db = tmp_path / "loop", tmp_path / "loopmon.db"
    verdicts = {}

    def between_turns(record) -> None:
        if record.role != "engineer" or record.iteration not in (5, 7, 8):
            return
        assert main(["backfill", "--repo", str(repo), "--db", str(db), "--quiet"]) == 0
        capsys.readouterr()
        code, out, _ = gate(capsys, db, "--repo", str(repo), "--json")
        assert json.loads(out)["status"] == code
        verdicts[record.iteration] = (code, record.lands_code)

    LoopSimulator(repo, scenario="dwell", seed=0).run(8, on_turn=between_turns)
    assert verdicts[5] == (EXIT_GO, False)  # dwell 4 (tier 2): under the default limit
    assert verdicts[7] == (EXIT_DWELL, False)  # six closed planning iterations: tier 3
    assert verdicts[8] == (EXIT_GO, True)  # the engineer landed code: go on


def test_a_simulated_stuck_rebase_stops_the_loop_until_it_is_cleared(tmp_path, capsys):
    from monitor.simulator import LoopSimulator

    repo, db = tmp_path / "loop", tmp_path / "loopmon.db"
    sim = LoopSimulator(repo, scenario="productive", seed=2)
    sim.run(2)
    assert main(["backfill", "--repo", str(repo), "--db", str(db), "--quiet"]) == 0
    assert gate(capsys, db, "--repo", str(repo))[0] == EXIT_GO
    sim.git_state("rebase-merge", True)
    code, _, err = gate(capsys, db, "--repo", str(repo))
    assert code == EXIT_GIT_STATE and "rebase-merge" in err
    sim.recover()
    assert gate(capsys, db, "--repo", str(repo))[0] == EXIT_GO
