"""The scorer on real repositories: loops played by monitor/simulator.py, read by the real
collectors (commits with their diff evidence, baton, brief, memory, ledger, prompts,
hubs, git state), compared with the simulator's ground truth."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("monitor.simulator", reason="the loop simulator has not landed yet")

from monitor.config import Settings  # noqa: E402
from monitor.simulator import SimulatorError  # noqa: E402
from monitor.scorer import Scorer  # noqa: E402
from monitor.scores import bucket_of  # noqa: E402
from scorer_loop import WatchedLoop  # noqa: E402
from scorer_streams import alerts, finals, run  # noqa: E402
from seed_replica import AUDIT  # noqa: E402
from test_calibration import spearman  # noqa: E402

STUDY, OVERSAMPLING, GOLDEN, TORCH = "STUDY-SYNTH-DOSE-001", "OVERSAMPLING-001", "TEST-GOLDEN-001", "INTEGRATE-PYTORCH-001"

# The audit's ten iterations as engineer turns: (number, focus, engineer_turn arguments).
# Paths and added lines are the audit's; deletions are what the simulator can remove.
SEED_TURNS: list[tuple[int, str, dict]] = [
    (302, STUDY, {}),
    (303, OVERSAMPLING, {"code": {"ptycho/config/config.py": 4, "ptycho/raw_data.py": 40, "scripts/training/train.py": 36, "tests/test_oversampling.py": 122}}),
    (304, GOLDEN, {"code": {"tests/test_integration_workflow.py": 1}}),
    (305, TORCH, {"code": {
        "ptycho_torch/api/base_api.py": 19, "ptycho/custom_layers.py": 32, "ptycho/loader.py": 24, "ptycho/workflows/components.py": 24,
        "scripts/study/run_dose_study.py": 96, "scripts/study/aggregate_study.py": 75, "tests/torch/test_api_persistence.py": 40,
        "ptycho_torch/config_params.py": 12, "ptycho_torch/model.py": 10, "ptycho_torch/train.py": 8, "ptycho/params.py": 6,
        "ptycho/model_manager.py": 18, "ptycho_torch/api/__init__.py": 2, "scripts/study/__init__.py": 1,
        "tests/torch/test_config_bridge.py": 26, "tests/conftest.py": 12}, "deletions": {"ptycho/raw_data.py": 6}}),
    (306, TORCH, {"code": {"scripts/training/train.py": 19, "scripts/inference/inference.py": 9, "tests/scripts/test_training_backend_selector.py": 183,
                           "tests/scripts/test_inference_backend_selector.py": 188, "ptycho/workflows/components.py": 15},
                  "deletions": {"scripts/training/train.py": 4}}),
    (307, TORCH, {"code": {"scripts/inference/inference.py": 13, "tests/scripts/test_inference_backend_selector.py": 84, "scripts/compare_models.py": 56},
                  "consume_flags": False}),
    (308, TORCH, {"code": {"scripts/inference/inference.py": 40, "scripts/compare_models.py": 92, "tests/scripts/test_inference_backend_selector.py": 78},
                  "tests_failed": 1}),
    (309, TORCH, {"code": {"scripts/inference/inference.py": 31, "tests/scripts/test_inference_backend_selector.py": 124, "scripts/compare_models.py": 19},
                  "deletions": {"scripts/inference/inference.py": 8}}),
    (310, TORCH, {"git_failure": "rebase-merge"}),
    (311, TORCH, {"code": {"scripts/training/train.py": 217, "tests/scripts/test_training_backend_selector.py": 127,
                           "ptycho/workflows/backend_selector.py": 8, "ptycho/workflows/components.py": 8},
                  "deletions": {"ptycho/workflows/components.py": 8}}),
]


_CANNOT_DELETE = re.compile(r"cannot delete \d+ lines from (\S+): only (\d+) removable")


def play(loop: WatchedLoop, focus: str, **engineer: Any) -> None:
    """One iteration; deletions shrink to what the simulator can remove without breaking the code."""
    if loop.sim._stuck or loop.sim.git.active_states():
        loop.recover()
    loop.supervisor(focus=focus)
    deletions = dict(engineer.pop("deletions", {}))
    while True:
        try:
            loop.engineer(focus=focus, deletions=deletions, **engineer)
            return
        except SimulatorError as err:  # nothing is written before the turn's code is planned
            match = _CANNOT_DELETE.search(str(err))
            if match is None or match.group(1) not in deletions:
                raise
            deletions[match.group(1)] = int(match.group(2))


def test_the_seed_replica_in_a_simulated_repo_lands_in_the_audits_buckets(tmp_path: Path) -> None:
    loop = WatchedLoop(tmp_path / "loop", seed=1)
    for _, focus, engineer in SEED_TURNS:
        play(loop, focus, **engineer)
    play(loop, TORCH, code={"tests/scripts/test_inference_backend_selector.py": 10})
    loop.close()
    settings = Settings()
    out = run(Scorer(settings), loop.envelopes)
    scored = [finals(out)[i] for i in sorted(finals(out))][: len(SEED_TURNS)]
    mine = {n: it for (n, _, _), it in zip(SEED_TURNS, scored)}

    lines = ["iter | audit: code agg bucket | simulated repo: summ code sem agg bucket | override"]
    for n in sorted(AUDIT):
        a, m = AUDIT[n], mine[n]
        lines.append(f"{n:>4} | {a[1]:>4} {a[3]:>3} {bucket_of(a[3], settings):<6} | {m.summary:>4} {m.code_diff:>4} {m.semantic:>3} {m.aggregate:>3} {m.bucket:<6} | {m.override or ''}")
    rho = spearman([AUDIT[n][1] for n in sorted(AUDIT)], [mine[n].code_diff for n in sorted(AUDIT)])
    lines.append(f"code-diff rank correlation (Spearman): {rho:.3f}")
    print("\n" + "\n".join(lines))

    for n in sorted(AUDIT):
        assert mine[n].bucket == bucket_of(AUDIT[n][3], settings), f"iteration {n}: {[r.text for r in mine[n].reasons]}"
    assert rho >= 0.8
    assert mine[310].override == "git_failure" and mine[302].override == "no_code_cap"
    assert any("without execution wiring" in r.text for r in mine[307].reasons)
    assert any("failures reported" in r.text for r in mine[308].reasons)


def test_the_seed_dwell_story_in_a_simulated_repo(tmp_path: Path) -> None:
    loop = WatchedLoop(tmp_path / "loop", seed=2)
    for _ in range(6):
        play(loop, STUDY)  # planning, evidence only: the supervisor writes its own dwell= each turn
    play(loop, STUDY, code={"ptycho/metrics.py": 30, "tests/study/test_dose_overlap.py": 40})
    for _ in range(2):
        play(loop, STUDY)
    loop.supervisor(focus=STUDY)
    loop.close()
    scorer = Scorer(Settings())
    out: list = []
    measured: list[int] = []
    for env in loop.envelopes:
        derived = scorer.process(env)
        out += derived
        if any(p.kind == "iteration_scored" and not p.provisional for p in derived):
            measured.append(scorer.figures("sim")["dwell"][STUDY])

    tiers = alerts(out, "dwell_tier")
    assert [(a.focus, a.detail["tier"], a.detail["dwell"]) for a in tiers] == [
        (STUDY, "1", 2), (STUDY, "1.5", 3), (STUDY, "2", 4), (STUDY, "3", 6), (STUDY, "1", 2)]
    assert len({a.key for a in tiers}) == 5
    # The supervisor's own tally agrees with the diffs: no mismatch.
    assert alerts(out, "dwell_mismatch") == []
    # After each iteration closes, the measured dwell is the simulator's true one.
    assert measured == [r.dwell for r in loop.sim.records if r.actor == "ralph"] == [1, 2, 3, 4, 5, 6, 0, 1, 2]


def test_mixed_loop_dwell_matches_the_simulators_ground_truth_and_scores_twice_the_same(tmp_path: Path) -> None:
    loop = WatchedLoop(tmp_path / "loop", scenario="mixed", seed=11)
    records = loop.run(16)
    loop.supervisor(focus=loop.sim.focus or STUDY)
    loop.close()
    one_scorer = Scorer(Settings())
    one = run(one_scorer, loop.envelopes)
    two = run(Scorer(Settings()), loop.envelopes)
    assert [p.model_dump() for p in one] == [p.model_dump() for p in two]

    # Every engineer turn is one iteration; its code lines and its focus's dwell are the simulator's.
    engineer = [r for r in records if r.actor == "ralph"]
    f = finals(one)
    scored = [f[i] for i in sorted(f)]
    assert [it.code_lines for it in scored] == [r.code_lines for r in engineer]
    assert [it.focus for it in scored] == [r.focus for r in engineer]
    assert one_scorer.figures("sim")["dwell"][engineer[-1].focus] == engineer[-1].dwell
    assert alerts(one, "dwell_mismatch") == []


def test_real_repo_alerts_git_state_bulky_artifact_prompt_change_and_hub_sprawl(tmp_path: Path) -> None:
    loop = WatchedLoop(tmp_path / "loop", seed=4)
    play(loop, TORCH, code={"scripts/inference/inference.py": 12, "tests/scripts/test_inference_backend_selector.py": 30},
         artifact_bytes=1_500_000)
    loop.sim.prompt_edit("supervisor.md")
    loop.read(loop.sim.records[-1])
    play(loop, TORCH, git_failure="rebase-merge")
    for _ in range(4):
        loop.recover()
        loop.supervisor(focus=GOLDEN, hub_new=True)
        loop.engineer(focus=GOLDEN)
    loop.close()
    out = run(Scorer(Settings()), loop.envelopes)
    found = {a.alert for a in alerts(out)}
    assert {"git_state", "bulky_artifact", "prompt_change", "hub_sprawl"} <= found
    [bulky] = [a for a in alerts(out, "bulky_artifact") if a.detail["sha"]]
    assert bulky.detail["path"].endswith(".npz") and bulky.detail["size"] == 1_500_000
    [git] = alerts(out, "git_state")
    assert git.detail["state"] == "rebase-merge"


def test_a_supervisor_that_misreports_its_dwell_is_caught(tmp_path: Path) -> None:
    loop = WatchedLoop(tmp_path / "loop", seed=5)
    for _ in range(4):
        play(loop, STUDY)
    loop.supervisor(focus=STUDY, memory_dwell=0)
    loop.close()
    out = run(Scorer(Settings()), loop.envelopes)
    [mismatch] = alerts(out, "dwell_mismatch")
    assert mismatch.detail["reported"] == 0 and mismatch.detail["measured"] == 4
