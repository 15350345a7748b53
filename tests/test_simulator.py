"""The loop simulator builds real git repositories whose ground truth tests can trust."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from monitor.paths import PathClassifier
from monitor.simulator import GIT_STATES, SCENARIOS, START_TIME, LoopSimulator, SimulatorError, TurnRecord

CLASSIFIER = PathClassifier()
GIT_ENV = {**{k: v for k, v in os.environ.items() if not k.startswith("GIT_")},
           "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull}

SUPERVISOR_RE = re.compile(r"^(SUPERVISOR AUTO \(prompt=supervisor\.md\) \(iter=\d{5}\): .+ — tests: not run"
                           r"|SUPERVISOR: .+ - tests: not run)$")
ENGINEER_RE = re.compile(r"^(RALPH AUTO \(prompt=main\.md\) \(iter=\d{5}\): .+ — tests: .+"
                         r"|RALPH AUTO: reports evidence — tests: .+"
                         r"|\[[A-Z][A-Z0-9]*(?:-[A-Z0-9]+)+\] .+"
                         r"|\[SYNC i=\d+\] actor=ralph status=running)$")
SYNC_RE = re.compile(r"^\[SYNC i=(\d+)\] actor=(galph|ralph)"
                     r"(?: status=running| → next=(galph|ralph) status=(ok|failed) (galph|ralph)_commit=([0-9a-f]{8}|none))$")
OPERATOR_RE = re.compile(r"^update prompts/(supervisor|main)\.md: .+$")


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, env=GIT_ENV, capture_output=True, text=True, check=True).stdout


def code_numstat(repo: Path) -> dict[str, dict[str, tuple[int, int]]]:
    """sha -> {production/test path: (insertions, deletions)}, read back from git."""
    out: dict[str, dict[str, tuple[int, int]]] = defaultdict(dict)
    sha = ""
    for line in git(repo, "log", "--numstat", "--format=@%H").splitlines():
        if line.startswith("@"):
            sha = line[1:]
        elif line.strip():
            added, deleted, path = line.split("\t")
            if CLASSIFIER.classify(path) in ("production", "test"):
                out[sha][path] = (int(added), int(deleted))
    return out


def code_of(record: TurnRecord, numstat: dict) -> dict[str, tuple[int, int]]:
    """What git says a turn's commits changed in production and test paths."""
    total: dict[str, tuple[int, int]] = {}
    for sha in record.shas:
        for path, (a, d) in numstat.get(sha, {}).items():
            old = total.get(path, (0, 0))
            total[path] = (old[0] + a, old[1] + d)
    return total


@pytest.fixture(scope="module")
def mixed(tmp_path_factory) -> tuple[LoopSimulator, list[TurnRecord]]:
    sim = LoopSimulator(tmp_path_factory.mktemp("mixed") / "loop", scenario="mixed", seed=5)
    return sim, sim.run(16)


# ----------------------------------------------------------------------------- ground truth


def assert_records_match_git(sim: LoopSimulator, records: list[TurnRecord]) -> None:
    numstat = code_numstat(sim.repo)
    for record in records:
        assert code_of(record, numstat) == record.code, (record.iteration, record.actor, record.intent)
        if record.actor == "galph":
            assert record.code == {}  # planning turns touch no production or test file


@pytest.mark.parametrize("scenario", [s for s in SCENARIOS if s != "mixed"])
def test_every_turn_record_matches_git_numstat(tmp_path, scenario):
    sim = LoopSimulator(tmp_path / "loop", scenario=scenario, seed=1)
    assert_records_match_git(sim, sim.run(8))


def test_mixed_records_match_git_numstat_including_deletions(mixed):
    sim, records = mixed
    assert_records_match_git(sim, records)
    assert any(r.deletions for r in records)


def test_mixed_run_shows_the_promised_blend(mixed):
    _, records = mixed
    intents = {r.intent for r in records}
    assert {"planning", "code", "incomplete", "failure", "prompt-edit", "micro", "refactor"} <= intents
    foci = [r.focus for r in records if r.actor == "galph"]
    assert len(set(foci)) >= 2  # a focus switch
    hubs = [r for r in records if r.actor == "galph"]
    assert any(r.hub_new for r in hubs[1:]) and any(not r.hub_new for r in hubs)  # new hubs and hub reuse
    assert any(r.tests_failed and "failed" in r.tests_tail for r in records)


def test_dwell_scenario_streaks_then_code_then_streak(tmp_path):
    sim = LoopSimulator(tmp_path / "loop", scenario="dwell", seed=4)
    records = sim.run(18)
    numstat = code_numstat(sim.repo)
    engineer = [r for r in records if r.actor == "ralph"]
    landed = [r.iteration for r in engineer if sum(a + d for a, d in code_of(r, numstat).values()) >= 5]
    assert landed == [r.iteration for r in engineer if r.intent == "code"]
    assert len(landed) >= 2
    first = engineer[0].iteration
    assert landed[0] - first >= 6 and landed[1] - landed[0] - 1 >= 6  # streaks of >= 6 planning iterations
    assert len({r.focus for r in records}) == 1
    # the true dwell climbs through the streak and resets on the landing
    dwell = {r.iteration: r.dwell for r in engineer}
    assert dwell[landed[0] - 1] == landed[0] - first and dwell[landed[0]] == 0
    # and the supervisor writes it into its memory, machine-readably
    memory = (sim.repo / "galph_memory.md").read_text()
    claimed = [int(m) for m in re.findall(r"^focus=\S+ state=\S+ dwell=(\d+) action_type=(?:planning|review) ", memory, re.M)]
    assert claimed == [r.dwell for r in records if r.actor == "galph"]
    assert max(claimed) >= 6


def test_productive_engineer_always_lands_tested_code(tmp_path):
    sim = LoopSimulator(tmp_path / "loop", scenario="productive", seed=2)
    records = [r for r in sim.run(6) if r.actor == "ralph"]
    for r in records:
        assert r.lands_code and r.tests and r.asserts > 0 and r.symbols
        assert any(CLASSIFIER.classify(p) == "test" for p in r.code)
        assert re.search(r"\(\d+ passed\)|\d+ passed|^test_\w+$", r.tests_tail)


def test_generated_tests_really_import_call_and_pass(mixed):
    sim, _ = mixed
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x"],
                          cwd=sim.repo, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert re.search(r"\d+ passed", proc.stdout)


def test_incomplete_turn_parses_flags_that_a_later_turn_wires(mixed):
    sim, records = mixed
    incomplete = next(r for r in records if r.intent == "incomplete")
    unwired = set(incomplete.flags_added) - set(incomplete.flags_consumed)
    assert unwired
    later = [r for r in records if r.actor == "ralph" and r.iteration > incomplete.iteration]
    wired = {flag for r in later for flag in r.flags_consumed}
    assert unwired <= wired
    script = next(p for p in incomplete.code if p.startswith("scripts/"))
    text = (sim.repo / script).read_text()
    for flag in unwired:
        dest = flag[2:].replace("-", "_")
        assert f'add_argument("{flag}"' in text and f"args.{dest}" in text


# ----------------------------------------------------------------------------- determinism


def test_same_seed_gives_the_same_shas_and_another_seed_does_not(tmp_path):
    def history(name: str, seed: int) -> list[str]:
        sim = LoopSimulator(tmp_path / name, scenario="mixed", seed=seed)
        sim.run(4)
        return git(sim.repo, "log", "--format=%H %ad %s", "--date=iso-strict").splitlines()

    first, again, other = history("a", 9), history("b", 9), history("c", 10)
    assert first == again
    assert first != other


def test_virtual_clock_starts_on_the_fixed_date_and_moves_forward(tmp_path):
    sim = LoopSimulator(tmp_path / "loop", scenario="productive", seed=0)
    sim.run(3)
    stamps = [int(t) for t in git(sim.repo, "log", "--reverse", "--format=%ct").split()]
    assert datetime.fromtimestamp(stamps[0], timezone.utc) == START_TIME
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    authors = set(git(sim.repo, "log", "--format=%an <%ae>|%cn <%ce>").splitlines())
    assert authors == {"Loop Operator <loop@example.invalid>|Loop Operator <loop@example.invalid>"}


# ----------------------------------------------------------------------------- messages and files


def test_commit_messages_follow_the_spec_shapes(mixed):
    sim, records = mixed
    subjects = git(sim.repo, "log", "--reverse", "--format=%s").splitlines()[1:]  # after the scaffold
    for subject in subjects:
        assert any(rx.match(subject) for rx in (SUPERVISOR_RE, ENGINEER_RE, SYNC_RE, OPERATOR_RE)), subject
    tails = " | ".join(r.tests_tail for r in records if r.actor == "ralph")
    assert "not run" in tails and "::test_" in tails and "passed" in tails and "failed" in tails


def test_sync_handoffs_name_the_turns_work_commit_and_the_next_iteration(mixed):
    _, records = mixed
    for r in records:
        if r.actor not in ("galph", "ralph") or r.git_state:
            continue
        handoff = SYNC_RE.match(r.messages[-1])
        assert handoff and handoff.group(4) == "ok"
        expected_i = r.iteration if r.actor == "galph" else r.iteration + 1
        assert int(handoff.group(1)) == expected_i
        assert handoff.group(6) == r.work_shas[-1][:8]
        assert set(r.work_shas) < set(r.shas) and r.sha == r.work_shas[0]
        assert r.messages[0] == f"[SYNC i={r.iteration}] actor={r.actor} status=running"


def test_loop_files_have_the_spec_shapes(mixed):
    sim, records = mixed
    repo = sim.repo
    baton = json.loads((repo / "sync/state.json").read_text())
    assert list(baton)[:9] == ["iteration", "expected_actor", "status", "last_update", "lease_expires_at",
                               "galph_commit", "ralph_commit", "last_prompt", "last_prompt_actor"]
    assert baton["iteration"] == records[-1].iteration + 1 and baton["expected_actor"] == "galph"
    last_engineer = [r for r in records if r.actor == "ralph"][-1]
    assert baton["ralph_commit"] == last_engineer.work_shas[-1]
    brief = (repo / "input.md").read_text()
    for key in ("Summary:", "Mode:", "Focus:", "Branch:", "Mapped tests:", "Artifacts:", "Do Now:", "If Blocked:",
                "How-To Map", "Pitfalls To Avoid"):
        assert key in brief
    focus = records[-1].focus
    assert re.search(rf"^Focus: {re.escape(focus)} — ", brief, re.M)
    ledger = (repo / "docs/fix_plan.md").read_text()
    assert "**Active Focus:**" in ledger and "## Index" in ledger and f"## [{focus}]" in ledger
    assert re.search(r"^  \* \[\d{4}-\d{2}-\d{2}\] Attempt #\d+ — Result: ", ledger, re.M)
    hub = records[-1].hub
    assert re.fullmatch(rf"plans/active/{re.escape(focus)}/reports/\d{{4}}-\d{{2}}-\d{{2}}T\d{{6}}Z", hub)
    assert (repo / hub / "summary.md").exists()
    assert any((repo / r.hub / "green").is_dir() for r in records if r.actor == "ralph" and r.tests)


# ----------------------------------------------------------------------------- failures the monitor must see


def test_stuck_rebase_leaves_a_real_rebase_merge_that_the_next_turn_recovers(tmp_path):
    sim = LoopSimulator(tmp_path / "loop", scenario="stuck-rebase", seed=3)
    seen: list[tuple[str, bool, str]] = []

    def watch(record: TurnRecord) -> None:
        rebase = sim.repo / ".git" / "rebase-merge"
        seen.append((record.intent, rebase.is_dir(), (rebase / "head-name").read_text().strip() if rebase.is_dir() else ""))

    records = sim.run(4, on_turn=watch)
    stuck = next(r for r in records if r.intent == "git-failure")
    assert ("git-failure", True, "refs/heads/loopmon-sim/main") in seen
    assert stuck.sha is None and stuck.code == {} and stuck.git_state == "rebase-merge"
    assert stuck.messages[-1].startswith(f"[SYNC i={stuck.iteration + 1}] actor=ralph → next=galph status=failed")
    recovery = next(r for r in records if r.actor == "ralph" and r.iteration == stuck.iteration + 1)
    assert recovery.lands_code
    assert not (sim.repo / ".git" / "rebase-merge").exists()
    assert git(sim.repo, "symbolic-ref", "--short", "HEAD").strip() == "main"
    assert git(sim.repo, "status", "--porcelain") == ""
    assert git(sim.repo, "branch", "--list", "loopmon-sim/*") == ""
    assert "upstream sync notes" not in git(sim.repo, "log", "--format=%s")  # main never saw the scratch commits


@pytest.mark.parametrize("state,marker", [("rebase-merge", "rebase-merge"), ("rebase-apply", "rebase-apply"),
                                          ("merge", "MERGE_HEAD"), ("index.lock", "index.lock")])
def test_git_state_makes_and_clears_each_broken_state(tmp_path, state, marker):
    sim = LoopSimulator(tmp_path / "loop", scenario="productive", seed=0)
    sim.supervisor_turn(focus="OVERSAMPLING-001")
    head = git(sim.repo, "rev-parse", "HEAD")
    sim.git_state(state, True)
    path = sim.repo / ".git" / marker
    assert path.exists()
    if state == "index.lock":
        assert datetime.now().timestamp() - path.stat().st_mtime > 60  # already stale
    else:
        assert "<<<<<<<" in (sim.repo / "docs/fix_plan.md").read_text()  # a real conflict
    with pytest.raises(SimulatorError, match="git state in progress"):
        sim.engineer_turn(focus="OVERSAMPLING-001", code={"ptycho/raw_data.py": 10})
    sim.git_state(state, False)
    assert not path.exists()
    assert git(sim.repo, "rev-parse", "HEAD") == head
    assert git(sim.repo, "status", "--porcelain") == ""
    assert sim.engineer_turn(focus="OVERSAMPLING-001", code={"ptycho/raw_data.py": 10})


def test_bulky_artifact_is_a_committed_file_over_one_megabyte_outside_dot_artifacts(tmp_path):
    sim = LoopSimulator(tmp_path / "loop", scenario="bulky-artifact", seed=6)
    records = sim.run(2)
    bulky = next(r for r in records if r.intent == "bulky")
    assert not bulky.artifact.startswith(".artifacts/")
    size = int(git(sim.repo, "cat-file", "-s", f"{bulky.sha}:{bulky.artifact}"))
    assert size == bulky.artifact_bytes > 1_000_000
    assert bulky.artifact in git(sim.repo, "show", "--name-only", "--format=", bulky.sha).split()


# ----------------------------------------------------------------------------- building blocks


def test_building_blocks_craft_an_exact_iteration(tmp_path):
    sim = LoopSimulator(tmp_path / "loop", scenario="mixed", seed=0, start_iteration=307)
    sim.supervisor_turn(focus="INTEGRATE-PYTORCH-001", hub_new=True, memory_dwell=9,
                        brief={"Mapped tests": "pytest tests/test_missing.py::test_nothing -q"})
    sha = sim.engineer_turn(focus="INTEGRATE-PYTORCH-001", consume_flags=False,
                            code={"scripts/inference/inference.py": 13, "tests/scripts/test_inference_backend_selector.py": 20})
    sup, eng = sim.records
    assert (sup.iteration, eng.iteration) == (307, 307)
    assert "Mapped tests: pytest tests/test_missing.py::test_nothing -q" in (sim.repo / "input.md").read_text()
    memory = (sim.repo / "galph_memory.md").read_text()
    assert f"focus=INTEGRATE-PYTORCH-001 state=in_progress dwell=9 action_type=planning artifacts={sup.hub}/ next_action=" in memory
    assert eng.sha == sha and eng.intent == "incomplete" and eng.flags_added and not eng.flags_consumed
    assert eng.code == {"scripts/inference/inference.py": (13, 0), "tests/scripts/test_inference_backend_selector.py": (20, 0)}
    diff = git(sim.repo, "show", sha, "--", "scripts/inference/inference.py")
    assert "+    parser.add_argument(\"--" in diff and "args." not in "".join(
        line for line in diff.splitlines() if line.startswith("+"))
    assert code_of(eng, code_numstat(sim.repo)) == eng.code


def test_assertion_free_tests_and_weakened_tests(tmp_path):
    sim = LoopSimulator(tmp_path / "loop", scenario="productive", seed=0)
    sim.supervisor_turn(focus="TEST-GOLDEN-001")
    sha = sim.engineer_turn(focus="TEST-GOLDEN-001", with_asserts=False,
                            code={"ptycho/loader.py": 20, "tests/test_loader.py": 12})
    added = [l for l in git(sim.repo, "show", sha, "--", "tests/test_loader.py").splitlines() if l.startswith("+")]
    assert any("def test_" in l for l in added) and not any("assert" in l for l in added)
    sim.supervisor_turn(focus="TEST-GOLDEN-001")
    sha = sim.engineer_turn(focus="TEST-GOLDEN-001", deletions={"tests/test_loader.py": 2})
    removed = [l for l in git(sim.repo, "show", sha, "--", "tests/test_loader.py").splitlines()
               if l.startswith("-") and not l.startswith("---")]
    assert len(removed) == 2 and all(l.startswith("-    assert ") for l in removed)
    assert sim.records[-1].code == {"tests/test_loader.py": (0, 2)}
    with pytest.raises(SimulatorError, match="cannot delete"):
        sim.engineer_turn(focus="TEST-GOLDEN-001", deletions={"ptycho/loader.py": 10_000})


def test_config_fields_are_added_and_used_by_the_script(tmp_path):
    sim = LoopSimulator(tmp_path / "loop", scenario="productive", seed=8)
    sim.supervisor_turn(focus="OVERSAMPLING-001")
    sim.engineer_turn(focus="OVERSAMPLING-001", code={"scripts/training/train.py": 12, "ptycho/config/config.py": 2,
                                                      "tests/test_oversampling.py": 25})
    record = sim.records[-1]
    assert len(record.fields_added) == 2 and record.fields_added[0].startswith("TrainingConfig.")
    script = (sim.repo / "scripts/training/train.py").read_text()
    for field_name in record.fields_added:
        name = field_name.split(".")[1]
        assert f"config.{name} = args.{name}" in script
    assert set(record.flags_added) <= set(record.flags_consumed)


# ----------------------------------------------------------------------------- repositories


def test_reusing_a_repo_continues_from_the_baton(tmp_path):
    repo = tmp_path / "loop"
    LoopSimulator(repo, scenario="productive", seed=1).run(3)
    again = LoopSimulator(repo, scenario="dwell", seed=2)
    assert again.iteration == 4
    records = again.run(2)
    assert sorted({r.iteration for r in records}) == [4, 5]
    assert json.loads((repo / "sync/state.json").read_text())["iteration"] == 6
    assert "[SYNC i=4] actor=galph status=running" in git(repo, "log", "--format=%s")
    stamps = [int(t) for t in git(repo, "log", "--reverse", "--format=%ct").split()]
    assert stamps == sorted(set(stamps))  # the virtual clock carried on from the last commit


def test_run_recovers_a_stuck_state_left_by_an_earlier_process(tmp_path):
    repo = tmp_path / "loop"
    sim = LoopSimulator(repo, scenario="productive", seed=1)
    sim.supervisor_turn(focus="OVERSAMPLING-001")
    sim.engineer_turn(focus="OVERSAMPLING-001", git_failure="merge")
    assert (repo / ".git" / "MERGE_HEAD").exists()
    records = LoopSimulator(repo, scenario="productive", seed=1).run(1)
    assert not (repo / ".git" / "MERGE_HEAD").exists()
    assert records[0].iteration == 2
    assert "[SYNC i=2] actor=ralph → next=galph status=failed" in git(repo, "log", "--format=%s")


def test_refuses_to_write_into_a_repository_that_is_not_a_simulated_loop(tmp_path):
    repo = tmp_path / "project"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "app.py").write_text("print('hi')\n")
    git(repo, "add", "app.py")
    git(repo, "-c", "user.name=Dev", "-c", "user.email=dev@example.invalid", "commit", "-q", "-m", "init")
    with pytest.raises(SimulatorError, match="not a simulated loop"):
        LoopSimulator(repo)
    with pytest.raises(ValueError, match="unknown scenario"):
        LoopSimulator(tmp_path / "new", scenario="chaos")


def test_without_sync_commits_the_baton_rides_in_the_work_commits(tmp_path):
    sim = LoopSimulator(tmp_path / "loop", scenario="productive", seed=1, sync_commits=False)
    records = sim.run(2)
    assert "[SYNC" not in git(sim.repo, "log", "--format=%s")
    assert all(len(r.shas) == 1 and "sync/state.json" in r.files for r in records)
    assert json.loads((sim.repo / "sync/state.json").read_text())["iteration"] == 3
    assert git(sim.repo, "status", "--porcelain") == ""


def test_live_pace_uses_real_time_stops_between_turns_and_a_rerun_resumes(tmp_path):
    stop = threading.Event()
    sim = LoopSimulator(tmp_path / "loop", scenario="productive", seed=1, pace=0.01)
    records = sim.run(50, stop=stop, on_turn=lambda r: stop.set())
    assert len(records) == 1 and records[0].actor == "galph"
    committed = datetime.fromtimestamp(int(git(sim.repo, "log", "-1", "--format=%ct")), timezone.utc)
    assert abs(datetime.now(timezone.utc) - committed) < timedelta(hours=1)
    # the baton expects the engineer: the next run plays that turn first
    resumed = LoopSimulator(tmp_path / "loop", scenario="productive", seed=1).run(2)
    assert [(r.iteration, r.actor) for r in resumed] == [(1, "ralph"), (2, "galph"), (2, "ralph")]


def test_a_watchers_momentary_index_lock_is_waited_out_not_reported(tmp_path):
    sim = LoopSimulator(tmp_path / "loop", scenario="productive", seed=1)
    lock = sim.repo / ".git" / "index.lock"
    lock.write_bytes(b"")  # as `git status` in another process holds it
    releaser = threading.Timer(0.2, lock.unlink)
    releaser.start()
    try:
        assert sim.supervisor_turn(focus="OVERSAMPLING-001")
    finally:
        releaser.join()
    assert not lock.exists()
