"""The score rules one by one: each names its reason and moves its score the right way."""

from __future__ import annotations

from monitor.config import Settings, settings_from_dict
from monitor.events import DiffEvidence, IterationScored
from monitor.scorer import Scorer
from monitor.scores import CodeTally, TurnFacts, bucket_of, code_diff_score, semantic_score
from scorer_streams import Stream, run

PROD_AND_TEST = {"pkg/engine.py": (40, 5), "tests/test_engine.py": (50, 0)}
VERIFIED = DiffEvidence(
    symbols_changed=["pkg/engine.py::Engine.step", "pkg/engine.py::Engine.__init__"],
    test_functions=["tests/test_engine.py::test_step"],
    test_references=["Engine", "step"],
    asserts_added=5,
)


def one_iteration(
    files: dict[str, tuple[int, int]],
    evidence: DiffEvidence | None = None,
    tests: str = "pytest tests/test_engine.py (5 passed)",
    before: list[tuple[dict, DiffEvidence]] | None = None,
    focus: str = "ENG-001",
    tag: str = "[ENG-001]",
    settings: Settings | None = None,
) -> IterationScored:
    """Final score of one engineer turn (after optional earlier turns)."""
    s = Stream()
    n = 0
    for earlier_files, earlier_ev in before or []:
        n += 1
        s.commit(f"SUPERVISOR AUTO (iter={n:05d}): plan — tests: not run")
        s.commit(f"RALPH AUTO (iter={n:05d}): [ENG-001] earlier — tests: not run", files=earlier_files, evidence=earlier_ev)
    n += 1
    s.brief(focus, mapped=["tests/test_engine.py"], text=str(n))
    s.commit(f"SUPERVISOR AUTO (iter={n:05d}): plan — tests: not run")
    s.commit(f"RALPH AUTO (iter={n:05d}): {tag} work — tests: {tests}", files=files, evidence=evidence)
    s.commit(f"SUPERVISOR AUTO (iter={n + 1:05d}): next — tests: not run")
    out = run(Scorer(settings or Settings()), s.envelopes)
    return [p for p in out if p.kind == "iteration_scored" and not p.provisional and p.number == n][-1]


def reason(it: IterationScored, score: str, needle: str) -> float:
    found = [r for r in it.reasons if r.score == score and needle in r.text]
    assert found, f"no {score} reason with {needle!r}: {[r.text for r in it.reasons]}"
    return found[0].delta


def test_verified_work_scores_high_and_every_score_explains_itself() -> None:
    it = one_iteration(PROD_AND_TEST, VERIFIED)
    assert it.bucket == "high"
    assert reason(it, "semantic", "2 of 2 changed production symbols exercised") == 40
    assert reason(it, "summary", "engineer's commit cites the focus ENG-001") > 0
    assert reason(it, "summary", "the brief's mapped tests were run") > 0
    assert reason(it, "code_diff", "100% of production lines in exercised files, 2 of 2 symbols exercised") == 25


def test_code_from_the_tests_folder_alone_is_real_but_lesser_work() -> None:
    both = one_iteration(PROD_AND_TEST, VERIFIED)
    tests_only = one_iteration({"tests/test_engine.py": (50, 0)}, DiffEvidence(asserts_added=5, test_references=["Engine"]))
    assert tests_only.code_diff < both.code_diff
    assert reason(tests_only, "code_diff", "tests only: 50 lines") > 0


def test_production_code_with_no_test_change_loses_semantic_points() -> None:
    it = one_iteration({"pkg/engine.py": (60, 0)}, DiffEvidence(symbols_changed=["pkg/engine.py::Engine.step"]))
    assert reason(it, "semantic", "with no test change") < 0
    assert reason(it, "code_diff", "no test changed with 60 production lines") == 0


def test_a_flag_only_parsed_is_flagged_and_a_flag_consumed_in_a_later_commit_of_the_turn_is_wired() -> None:
    parsed_only = one_iteration(PROD_AND_TEST, VERIFIED.model_copy(update={"flags_added": ["batch_size"]}))
    assert reason(parsed_only, "semantic", "flag exposed without execution wiring: batch_size") < 0

    s = Stream()
    s.commit("SUPERVISOR AUTO (iter=00001): plan — tests: not run")
    s.commit("RALPH AUTO (iter=00001): add flag — tests: not run", files=PROD_AND_TEST, evidence=VERIFIED.model_copy(update={"flags_added": ["--batch-size"]}))
    s.commit("RALPH AUTO (iter=00001): use flag — tests: pytest tests (5 passed)", files={"pkg/run.py": (6, 1)}, evidence=DiffEvidence(flags_consumed=["batch_size"]))
    s.commit("SUPERVISOR AUTO (iter=00002): next — tests: not run")
    wired = [p for p in run(Scorer(Settings()), s.envelopes) if p.kind == "iteration_scored" and not p.provisional][0]
    assert reason(wired, "semantic", "1 of 1 new flags/fields also consumed") > 0
    assert not any("without execution wiring" in r.text for r in wired.reasons)


def test_tests_that_assert_nothing_earn_no_assertion_points() -> None:
    it = one_iteration(PROD_AND_TEST, VERIFIED.model_copy(update={"asserts_added": 0}))
    assert reason(it, "semantic", "changed tests add no assertion") == 0
    assert it.semantic < one_iteration(PROD_AND_TEST, VERIFIED).semantic


def test_reported_failures_cost_points_and_passing_tests_vouch_only_for_what_they_exercise() -> None:
    failing = one_iteration(PROD_AND_TEST, VERIFIED, tests="pytest tests/test_engine.py (4 passed, 2 failed)")
    assert reason(failing, "semantic", "failures reported: 2") < 0
    assert reason(failing, "summary", "tests reported failing (4 passed, 2 failed)") > 0
    unexercised = one_iteration(PROD_AND_TEST, VERIFIED.model_copy(update={"test_references": ["unrelated"]}))
    covered = one_iteration(PROD_AND_TEST, VERIFIED)
    assert reason(unexercised, "semantic", "tests reported passing") < reason(covered, "semantic", "tests reported passing")


def test_weakened_tests_with_untouched_code_cost_the_most() -> None:
    alone = one_iteration({"tests/test_engine.py": (3, 9)}, DiffEvidence(asserts_removed=3, test_weakening=2, test_references=["Engine"]))
    assert reason(alone, "semantic", "while the code under them is untouched") == -16
    with_code = one_iteration(PROD_AND_TEST, VERIFIED.model_copy(update={"test_weakening": 2}))
    assert reason(with_code, "semantic", "tests weakened 2x") == -8


def test_churn_that_undoes_the_previous_iteration_and_reverts_are_penalised() -> None:
    added = [f"h{i}" for i in range(20)]
    first = ({"pkg/engine.py": (20, 0), "tests/test_engine.py": (10, 0)}, DiffEvidence(added_hashes=added))
    undo = VERIFIED.model_copy(update={"removed_hashes": added[:15]})
    it = one_iteration({"pkg/engine.py": (5, 15), "tests/test_engine.py": (10, 0)}, undo, before=[first])
    assert reason(it, "semantic", "churn: removes 15 of 20 lines the previous iteration added") < 0
    reverted = one_iteration(PROD_AND_TEST, VERIFIED.model_copy(update={"revert_of": "0a595c40aa"}))
    assert reason(reverted, "semantic", "reverts: 0a595c40aa") == -15


def test_work_on_another_item_than_the_focus_earns_no_alignment() -> None:
    it = one_iteration(PROD_AND_TEST, VERIFIED, tag="[SIDE-TOOL-009]")
    assert reason(it, "summary", "off focus: engineer cites SIDE-TOOL-009, focus is ENG-001") == 0


def test_weights_and_bucket_edges_come_from_settings() -> None:
    settings = settings_from_dict({"scores": {"weights": {"summary": 0.0, "code_diff": 1.0, "semantic": 0.0}, "high": 90, "medium": 50}})
    it = one_iteration(PROD_AND_TEST, VERIFIED, settings=settings)
    assert it.aggregate == it.code_diff
    assert bucket_of(89, settings) == "medium" and bucket_of(90, settings) == "high" and bucket_of(49, settings) == "low"


def test_the_code_diff_score_ignores_bookkeeping_paths() -> None:
    tally = CodeTally()
    s = Stream()
    c = s.commit("RALPH: evidence", files={"sync/state.json": (3, 3), "plans/active/A/plan.md": (90, 0), "docs/fix_plan.md": (40, 2),
                                          "input.md": (30, 30), "galph_memory.md": (5, 0), ".artifacts/run/log.txt": (900, 0)})
    tally.add(c, lambda path, size: False)
    assert tally.code_lines == 0 and tally.any_files == 6
    assert code_diff_score(tally).result() == 0
    assert semantic_score(tally, TurnFacts(), 5).result() <= 10


def test_exercised_files_are_found_by_test_file_name_when_the_evidence_has_no_references() -> None:
    tally = CodeTally()
    s = Stream()
    c = s.commit("RALPH: go code", files={"pkg/router.go": (40, 0), "pkg/router_test.go": (30, 0), "pkg/cache.go": (40, 0)})
    tally.add(c, lambda path, size: False)
    assert tally.exercised_files() == {"pkg/router.go"}
    assert tally.exercised_line_share() == 0.5
