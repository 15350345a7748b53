"""The scorer: iterations from the evidence in the stream, provisional and final scores,
many repos, determinism and restart."""

from __future__ import annotations

from datetime import timedelta

from monitor.config import Settings, settings_from_dict
from monitor.events import Alert, DiffEvidence, DwellChanged, Envelope, Heartbeat, IterationScored
from monitor.notify import Notifier
from monitor.scorer import Scorer
from scorer_streams import Stream, alerts, finals, run

CODE = {"src/app.py": (30, 4), "tests/test_app.py": (40, 0)}


def scored(payloads: list) -> list[IterationScored]:
    return [p for p in payloads if p.kind == "iteration_scored"]


def last_per_index(payloads: list) -> dict[int, IterationScored]:
    out: dict[int, IterationScored] = {}
    for p in scored(payloads):
        out[p.index] = p
    return out


# --------------------------------------------------------------------------- iterations


def test_message_tags_make_iterations_and_each_records_its_turns() -> None:
    s = Stream()
    sup = s.commit("SUPERVISOR AUTO (prompt=supervisor.md) (iter=00033): brief — tests: not run", files={"input.md": (5, 2)})
    eng = s.commit("RALPH AUTO (prompt=main.md) (iter=00033): [ABC-001] parser — tests: pytest tests/test_app.py -q (3 passed)", files=CODE)
    sup2 = s.commit("SUPERVISOR AUTO (prompt=supervisor.md) (iter=00034): review — tests: not run", files={"input.md": (5, 2)})
    out = run(Scorer(Settings()), s.envelopes)
    first = finals(out)[1]
    assert (first.number, first.evidence) == (33, "tag")
    assert first.supervisor_commits == [sup.sha] and first.engineer_commits == [eng.sha]
    assert first.started_at == sup.committed_at and first.ended_at == eng.committed_at
    assert first.code_lines == 74 and first.files_touched == 2
    second = last_per_index(out)[2]
    assert (second.number, second.provisional, second.supervisor_commits) == (34, True, [sup2.sha])


def test_sync_handoff_closes_the_turn_it_ends_and_a_reused_sync_message_counts_as_the_engineers_work() -> None:
    s = Stream()
    s.commit("[SYNC i=301] actor=galph status=running")
    s.commit("SUPERVISOR: Phase L rerun directives - tests: not run", files={"input.md": (3, 1)})
    s.commit("[SYNC i=301] actor=galph → next=ralph status=ok galph_commit=0a595c40")
    work = s.commit("[SYNC i=301] actor=ralph status=running", files=CODE)  # real code under a driver message
    s.commit(f"[SYNC i=302] actor=ralph → next=galph status=ok ralph_commit={work.sha[:8]}")
    s.commit("[SYNC i=302] actor=galph status=running")
    out = run(Scorer(Settings()), s.envelopes)
    it = finals(out)[1]
    assert it.number == 301
    assert work.sha in it.engineer_commits and work.sha not in it.other_commits
    assert it.code_lines == 74  # the diff counts whatever the message says
    assert last_per_index(out)[2].number == 302


def test_a_tagged_supervisor_commit_after_the_engineer_opens_a_new_iteration_even_with_a_repeated_number() -> None:
    s = Stream()
    for n in (1, 1, 34, 33):  # a driver restart repeats 1, and 33 comes after 34
        s.commit(f"SUPERVISOR AUTO (iter={n:05d}): plan — tests: not run", files={"input.md": (1, 1)})
        s.commit(f"RALPH AUTO (iter={n:05d}): work — tests: not run", files=CODE)
    s.commit("SUPERVISOR AUTO (iter=00035): plan — tests: not run")
    out = run(Scorer(Settings()), s.envelopes)
    numbers = [(i, p.number) for i, p in sorted(finals(out).items())]
    assert numbers == [(1, 1), (2, 1), (3, 34), (4, 33)]


def test_turn_numbered_drivers_keep_supervisor_n_and_engineer_n_plus_1_together() -> None:
    s = Stream()
    s.commit("SUPERVISOR AUTO (iter=00033): brief — tests: not run")
    s.commit("RALPH AUTO (iter=00034): work — tests: not run", files=CODE)
    s.commit("SUPERVISOR AUTO (iter=00035): brief — tests: not run")
    out = run(Scorer(Settings()), s.envelopes)
    first = finals(out)[1]
    assert first.number == 33 and len(first.engineer_commits) == 1


def test_the_baton_numbers_untagged_commits() -> None:
    s = Stream()
    s.baton(40, "galph", "running-galph")
    s.commit("SUPERVISOR: plan", files={"input.md": (1, 1)})
    s.baton(40, "ralph", "running-ralph")
    s.commit("[ABC-001] work", files=CODE)
    s.baton(41, "galph", "waiting-galph")
    # Seen after the baton was handed back and its counter advanced: still the engineer's turn of 40.
    s.commit("[ABC-001] late evidence", files={"tests/test_app.py": (3, 0)})
    s.commit("SUPERVISOR: plan again")
    out = run(Scorer(Settings()), s.envelopes)
    it = finals(out)[1]
    assert (it.number, it.evidence) == (40, "baton")
    assert len(it.engineer_commits) == 2 and it.code_lines == 77
    assert last_per_index(out)[2].number == 41


def test_role_alternation_opens_iterations_without_any_number() -> None:
    s = Stream()
    for _ in range(3):
        s.commit("SUPERVISOR: plan - tests: not run", files={"input.md": (1, 1)})
        s.commit("RALPH: work - tests: not run", files=CODE)
        s.commit("Merge branch 'side'")  # no role: joins the open iteration, never alternates
    out = run(Scorer(Settings()), s.envelopes)
    f = finals(out)
    assert sorted(f) == [1, 2]
    assert f[2].evidence == "alternation" and f[2].number is None
    assert len(f[2].other_commits) == 1


def test_single_agent_loop_splits_iterations_at_a_quiet_gap_and_says_no_loop_markers_were_found() -> None:
    settings = settings_from_dict({"iterations": {"quiet_gap_minutes": 10}})
    s = Stream(step=timedelta(minutes=2))
    s.commit("refactor: inline step dispatch", files=CODE)
    s.commit("Fix loop step scoping regression tests", files={"tests/test_app.py": (8, 2)})
    s.advance(timedelta(hours=3))
    s.commit("feat: add cache", files={"src/cache.py": (50, 0)})
    out = run(Scorer(settings), s.envelopes)
    f = finals(out)
    assert list(f) == [1] and len(f[1].engineer_commits) == 2
    assert last_per_index(out)[2].evidence == "gap"
    assert [a.key for a in alerts(out, "no_loop_markers")] == ["no_loop_markers"]


def test_a_brief_written_after_the_engineer_turn_belongs_to_the_next_iteration() -> None:
    s = Stream()
    s.commit("SUPERVISOR AUTO (iter=00001): plan — tests: not run")
    s.commit("RALPH AUTO (iter=00001): work — tests: not run", files=CODE)
    brief = s.brief("NEXT-FOCUS-002.F1 — the next step", mapped=["tests/test_app.py"])
    s.commit("SUPERVISOR AUTO (iter=00002): plan — tests: not run")
    out = run(Scorer(Settings()), s.envelopes)
    assert finals(out)[1].brief_digest is None
    nxt = last_per_index(out)[2]
    assert nxt.brief_digest == brief.digest and nxt.focus == "NEXT-FOCUS-002"


def test_file_events_before_any_commit_open_the_first_iteration() -> None:
    s = Stream()
    s.hub("plans/active/ABC-001/reports/2025-11-13T150000Z", "ABC-001")
    s.commit("SUPERVISOR AUTO (iter=00007): plan — tests: not run")
    out = run(Scorer(Settings()), s.envelopes)
    it = last_per_index(out)[1]
    assert it.number == 7 and it.hubs == ["plans/active/ABC-001/reports/2025-11-13T150000Z"]


# --------------------------------------------------------------------------- scores


def test_scores_are_provisional_while_open_move_with_each_event_and_are_final_when_the_next_opens() -> None:
    s = Stream()
    s.brief("ABC-001", mapped=["tests/test_app.py"], artifacts="plans/active/ABC-001/reports/2025-11-13T150000Z")
    s.commit("SUPERVISOR AUTO (iter=00001): plan — tests: not run", files={"input.md": (4, 0)})
    s.commit("RALPH AUTO (iter=00001): [ABC-001] work — tests: pytest tests/test_app.py -q (4 passed)", files=CODE,
             evidence=DiffEvidence(symbols_changed=["src/app.py::parse"], test_references=["parse"], asserts_added=4, test_functions=["test_parse"]))
    s.hub_summary("plans/active/ABC-001/reports/2025-11-13T150000Z")
    s.commit("SUPERVISOR AUTO (iter=00002): next — tests: not run")
    out = run(Scorer(Settings()), s.envelopes)
    first = [p for p in scored(out) if p.index == 1]
    assert all(p.provisional for p in first[:-1]) and not first[-1].provisional
    aggregates = [p.aggregate for p in first]
    assert aggregates[0] < aggregates[-1]  # the engineer's work moved the provisional score
    final = first[-1]
    assert final.bucket == "high" and final.aggregate >= 75
    texts = [r.text for r in final.reasons]
    assert "hub summary written" in texts
    assert any("tests reported passing (4 passed)" in t for t in texts)
    assert {r.score for r in final.reasons} >= {"summary", "code_diff", "semantic"}


def test_an_unchanged_event_emits_no_new_score() -> None:
    s = Stream()
    s.commit("SUPERVISOR AUTO (iter=00001): plan — tests: not run")
    s.file("notes/scratch.txt", 10)
    s.file("notes/scratch2.txt", 10)
    out = run(Scorer(Settings()), s.envelopes)
    assert len(scored(out)) == 1


def test_planning_only_iteration_is_capped_and_a_git_failure_without_code_scores_5() -> None:
    s = Stream()
    s.brief("ABC-001", mapped=["tests/test_app.py"], artifacts="plans/active/ABC-001/reports/2025-11-13T150000Z")
    s.memory(focus="ABC-001")
    s.commit("SUPERVISOR AUTO (iter=00001): [ABC-001] plan — tests: not run", files={"input.md": (30, 2), "docs/fix_plan.md": (10, 0)})
    s.hub_summary("plans/active/ABC-001/reports/2025-11-13T150000Z")
    s.commit("SUPERVISOR AUTO (iter=00002): [ABC-001] plan — tests: not run", files={"input.md": (3, 2)})
    s.git_state("rebase-merge")
    s.commit("RALPH AUTO (iter=00002): reports evidence — tests: not run", files={"plans/active/ABC-001/reports/x/a.md": (3, 0)})
    s.commit("SUPERVISOR AUTO (iter=00003): plan — tests: not run")
    f = finals(run(Scorer(Settings()), s.envelopes))
    assert (f[1].aggregate, f[1].override, f[1].bucket) == (10, "no_code_cap", "low")
    assert any(r.score == "aggregate" and "capped at 10" in r.text for r in f[1].reasons)
    assert (f[2].aggregate, f[2].override) == (5, "git_failure")


def test_git_failure_does_not_override_an_iteration_that_landed_code() -> None:
    s = Stream()
    s.commit("SUPERVISOR AUTO (iter=00001): plan — tests: not run")
    s.git_state("merge")
    s.commit("RALPH AUTO (iter=00001): work — tests: pytest tests/test_app.py (2 passed)", files=CODE)
    s.commit("SUPERVISOR AUTO (iter=00002): plan — tests: not run")
    f = finals(run(Scorer(Settings()), s.envelopes))
    assert f[1].override is None and f[1].aggregate > 5


def test_a_commit_rewritten_out_of_history_leaves_the_score() -> None:
    from monitor.events import CommitOrphaned

    s = Stream()
    s.commit("SUPERVISOR AUTO (iter=00001): plan — tests: not run")
    work = s.commit("RALPH AUTO (iter=00001): work — tests: not run", files=CODE)
    s.emit(CommitOrphaned(sha=work.sha))
    out = run(Scorer(Settings()), s.envelopes)
    last = last_per_index(out)[1]
    assert last.code_lines == 0 and last.engineer_commits == []


def test_a_commit_seen_twice_counts_once() -> None:
    s = Stream()
    s.commit("SUPERVISOR AUTO (iter=00001): plan — tests: not run")
    s.commit("RALPH AUTO (iter=00001): work — tests: not run", files=CODE)
    s.envelopes.append(s.envelopes[-1])
    out = run(Scorer(Settings()), s.envelopes)
    assert last_per_index(out)[1].code_lines == 74


# --------------------------------------------------------------------------- runtime contract


def test_own_kinds_and_heartbeats_fed_back_are_ignored() -> None:
    scorer = Scorer(Settings())
    feed = [
        IterationScored(index=1),
        DwellChanged(focus="*", value=1),
        Alert(alert="x", key="k", message="m"),
        Heartbeat(),
    ]
    for payload in feed:
        assert scorer.process(Envelope(repo="r", source="scorer", payload=payload)) == []
    assert scorer.figures("r")["iterations"] == 0


def test_one_scorer_keeps_separate_state_per_repo() -> None:
    a, b = Stream("alpha"), Stream("beta")
    a.commit("SUPERVISOR AUTO (iter=00010): plan — tests: not run")
    b.commit("SUPERVISOR AUTO (iter=00500): plan — tests: not run")
    a.commit("RALPH AUTO (iter=00010): work — tests: not run", files=CODE)
    b.commit("RALPH AUTO (iter=00500): work — tests: not run")
    a.commit("SUPERVISOR AUTO (iter=00011): plan — tests: not run")
    scorer = Scorer(Settings())
    mixed = [a.envelopes[0], b.envelopes[0], a.envelopes[1], b.envelopes[1], a.envelopes[2]]
    out = {env.repo: scorer.process(env) for env in mixed}
    assert scorer.figures("alpha")["iterations"] == 1
    assert scorer.figures("beta")["iterations"] == 0
    assert scorer.figures("beta")["open"]["number"] == 500
    assert finals(out["alpha"])[1].code_lines == 74


def _long_stream() -> Stream:
    s = Stream()
    for n in range(1, 13):
        s.brief(f"ABC-00{n % 3}", mapped=["tests/test_app.py"], text=str(n))
        s.commit(f"SUPERVISOR AUTO (iter={n:05d}): plan — tests: not run", files={"input.md": (3, 1)})
        if n % 4 == 0:
            s.commit(f"RALPH AUTO (iter={n:05d}): [ABC-00{n % 3}] work — tests: pytest tests/test_app.py (3 passed)", files=CODE)
        else:
            s.commit(f"RALPH AUTO (iter={n:05d}): evidence — tests: not run", files={f"reports/r/2025-11-1{n % 9}T000000Z/a.md": (4, 0)})
        s.hub(f"reports/r/2025-11-1{n % 9}T00000{n % 10}Z", "r")
    s.file("data/big.bin", 5_000_000)
    return s


def test_the_same_stream_scored_twice_gives_identical_outputs() -> None:
    s = _long_stream()
    one = run(Scorer(Settings()), s.envelopes)
    two = run(Scorer(Settings()), s.envelopes)
    assert [p.model_dump() for p in one] == [p.model_dump() for p in two]
    assert {a.alert for a in alerts(one)} >= {"dwell_tier", "bulky_artifact"}


def test_a_restarted_scorer_rebuilds_its_state_and_raises_no_alert_twice() -> None:
    s = _long_stream()
    cut = len(s.envelopes) * 2 // 3
    uninterrupted = Scorer(Settings())
    whole = run(uninterrupted, s.envelopes)

    first = Scorer(Settings())
    before = run(first, s.envelopes[:cut])
    raised = {a.key for a in alerts(before)}
    restarted = Scorer(Settings())
    restarted.restore(s.envelopes[:cut], raised)
    after = run(restarted, s.envelopes[cut:])

    assert not raised & {a.key for a in alerts(after)}
    assert [p.model_dump() for p in before + after] == [p.model_dump() for p in whole]
    assert restarted.figures("loop") == uninterrupted.figures("loop")


def test_alerts_of_a_backfill_are_stored_but_not_notified(tmp_path) -> None:
    settings = settings_from_dict({"alerts": {"command": ["true"]}})
    notifier = Notifier(settings.alerts)
    delivered: list[str] = []
    notifier.notify = lambda repo, alert: delivered.append(alert.key)  # type: ignore[method-assign]
    s = Stream()
    s.commit("RALPH: big", files={"data/model.h5": (0, 0)}, sizes={"data/model.h5": 3_000_000}, backfill=True)
    s.file("data/other.bin", 3_000_000)
    out = run(Scorer(settings, notifier=notifier), s.envelopes)
    assert len(alerts(out, "bulky_artifact")) == 2
    assert delivered == ["bulky_artifact:file:data/other.bin"]


# --------------------------------------------------------------------------- figures


def test_figures_mean_median_rolling_trend_inflections_and_bucket_shares() -> None:
    s = Stream()
    for n in range(1, 8):
        s.commit(f"SUPERVISOR AUTO (iter={n:05d}): plan — tests: not run")
        if n >= 4:
            s.commit(f"RALPH AUTO (iter={n:05d}): [ABC-001] work — tests: pytest tests/test_app.py (5 passed)", files=CODE,
                     evidence=DiffEvidence(symbols_changed=["src/app.py::parse"], test_references=["parse"], asserts_added=5))
    s.commit("SUPERVISOR AUTO (iter=00008): plan — tests: not run")
    scorer = Scorer(Settings())
    f = finals(run(scorer, s.envelopes))
    aggs = [f[i].aggregate for i in sorted(f)]
    fig = scorer.figures("loop")
    assert fig["iterations"] == 7
    assert fig["mean"] == round(sum(aggs) / 7, 1)
    assert fig["median"] == sorted(aggs)[3]
    assert fig["rolling_mean"] == round(sum(aggs) / 7, 1)
    assert fig["trend"] > 0
    assert fig["inflections"] and fig["inflections"][0]["from"] == "low"
    assert fig["bucket_counts"]["low"] == 3 and abs(sum(fig["buckets"].values()) - 1) < 0.01
    assert fig["open"]["number"] == 8


def test_focus_comes_from_the_brief_then_the_ledger_then_the_ids_the_commits_name() -> None:
    from monitor.events import FocusChanged

    s = Stream()
    s.commit("SUPERVISOR AUTO (iter=00001): refresh PARITY-LOGGER-002 directives — tests: not run")
    s.commit("RALPH AUTO (iter=00001): OVERSAMPLING-001 Phase A: guards — tests: not run", files=CODE)
    s.commit("SUPERVISOR AUTO (iter=00002): reports evidence — tests: not run")
    s.emit(FocusChanged(path="docs/fix_plan.md", old=[], new=["TEST-SUITE-TRIAGE-002"]))
    s.commit("RALPH AUTO (iter=00002): [SIDE-TOOL-009] work — tests: not run", files=CODE)
    s.brief("VECTOR-GAPS-002.F1 — audit", mapped=["tests/test_app.py"])
    s.commit("SUPERVISOR AUTO (iter=00003): plan — tests: not run")
    s.commit("SUPERVISOR AUTO (iter=00004): plan UTF-8 handling — tests: not run")
    out = run(Scorer(Settings()), s.envelopes)
    focus = {i: p.focus for i, p in last_per_index(out).items()}
    assert focus[1] == "OVERSAMPLING-001"  # the engineer's subject before the supervisor's
    assert focus[2] == "TEST-SUITE-TRIAGE-002"  # the ledger's Active Focus before the commit's tag
    assert focus[3] == "VECTOR-GAPS-002"  # the brief first, its sub-item dropped


def test_hubs_found_at_start_up_belong_to_no_iteration() -> None:
    from monitor.events import HubUpdated

    s = Stream()
    old = "plans/active/ABC-001/reports/2025-10-01T000000Z"
    s.hub(old, "ABC-001", existing=True)
    s.emit(HubUpdated(path=old, initiative="ABC-001", files=3, bytes=900))
    s.commit("SUPERVISOR AUTO (iter=00001): plan — tests: not run")
    s.emit(HubUpdated(path=old, initiative="ABC-001", files=4, bytes=1200))  # reused in this turn
    new = "plans/active/ABC-001/reports/2025-11-13T150000Z"
    s.hub(new, "ABC-001")
    out = run(Scorer(Settings()), s.envelopes)
    assert last_per_index(out)[1].hubs == [old, new]
    first = [p for p in out if p.kind == "iteration_scored"][0]
    assert first.hubs == []


def test_a_baton_read_late_or_early_does_not_split_a_tagged_loop() -> None:
    s = Stream()
    s.baton(1, "galph", "waiting-galph")
    s.commit("[SYNC i=1] actor=galph status=running")
    s.commit("SUPERVISOR AUTO (iter=00001): plan — tests: not run", files={"input.md": (2, 1)})
    s.commit("[SYNC i=1] actor=galph → next=ralph status=ok galph_commit=0a595c40")
    s.commit("[SYNC i=1] actor=ralph status=running")
    # The watcher read the baton before the hand-off to ralph and delivers it now.
    s.commit("RALPH AUTO: reports evidence — tests: not run", files={"tests/test_app.py": (9, 0)})
    s.baton(2, "galph", "running-galph")  # and this one ahead of the commits
    s.commit("[ABC-001] more work", files=CODE)
    s.commit("[SYNC i=2] actor=ralph → next=galph status=ok ralph_commit=1d53d543")
    s.commit("[SYNC i=2] actor=galph status=running")
    out = run(Scorer(Settings()), s.envelopes)
    f = finals(out)
    assert list(f) == [1] and f[1].number == 1
    assert len(f[1].engineer_commits) == 2 and f[1].code_lines == 83
