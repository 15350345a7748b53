"""Event streams for the sink tests: envelopes as collectors and the scorer publish them."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta, timezone

from monitor.events import (
    Alert,
    BatonChanged,
    BriefUpdated,
    CollectorStarted,
    Commit,
    CommitOrphaned,
    DwellChanged,
    Envelope,
    FileChanged,
    FileStat,
    FocusChanged,
    GitStateChanged,
    Heartbeat,
    HubOpened,
    HubSummaryChanged,
    HubUpdated,
    InitiativeArchived,
    IterationScored,
    LedgerAttempt,
    LedgerAttemptAdded,
    LedgerItem,
    LedgerItemAdded,
    LedgerItemRemoved,
    LedgerStatusChanged,
    MemoryEntry,
    Reason,
    Warning,
)
from monitor.events import TestsReport as _TestsReport  # a Test* name would be collected by pytest

T0 = datetime(2025, 11, 13, 15, 0, tzinfo=timezone.utc)
_seq = itertools.count(1)


def env(payload, *, repo="loop", source=None, stream="s1", seq=None, minutes=0) -> Envelope:
    """An envelope as a collector (or the scorer) would publish it."""
    source = source or ("scorer" if payload.kind in ("iteration_scored", "dwell_changed", "alert") else "test")
    t = T0 + timedelta(minutes=minutes)
    return Envelope(repo=repo, source=source, stream=stream, seq=next(_seq) if seq is None else seq,
                    time=t, observed=t, payload=payload)


def commit(sha: str, message: str, files: list[FileStat], minutes: int = 0, **kw) -> Envelope:
    t = T0 + timedelta(minutes=minutes)
    return env(Commit(sha=sha, authored_at=t, committed_at=t, message=message, files=files, **kw),
               source="commits", minutes=minutes)


def loop_history() -> list[Envelope]:
    """Two iterations of a galph/ralph loop touching every kind the store keeps a table for."""
    prod = FileStat(path="ptycho/raw_data.py", insertions=40, deletions=2, path_class="production")
    test = FileStat(path="tests/test_oversampling.py", insertions=122, deletions=0, path_class="test")
    ledger_file = FileStat(path="docs/fix_plan.md", insertions=3, deletions=1, path_class="ledger")
    item = LedgerItem(id="STUDY-001", title="Oversampling guardrails", priority="High", status="in_progress",
                      attempts=[LedgerAttempt(number=1, result="failure", text="smoke failed")])
    return [
        env(CollectorStarted(path="/repos/loop", branch="main", head="a" * 40, host="box", pid=42, version="0.1.0")),
        env(BatonChanged(iteration=303, expected_actor="ralph", status="running-ralph",
                         lease_expires_at=T0 + timedelta(minutes=30))),
        env(BriefUpdated(summary="Wire oversampling guards", mode="Code", focus="STUDY-001", branch="main",
                         mapped_tests=["tests/test_oversampling.py::test_guard"], artifacts="plans/active/STUDY-001/reports/2025-11-13T150000Z",
                         digest="b1")),
        env(LedgerItemAdded(path="docs/fix_plan.md", item=item)),
        env(FocusChanged(path="docs/fix_plan.md", old=[], new=["STUDY-001"])),
        env(HubOpened(path="plans/active/STUDY-001/reports/2025-11-13T150000Z", initiative="STUDY-001",
                      stamp="2025-11-13T150000Z")),
        env(HubUpdated(path="plans/active/STUDY-001/reports/2025-11-13T150000Z", initiative="STUDY-001",
                       files=3, bytes=4096)),
        env(HubSummaryChanged(path="plans/active/STUDY-001/reports/2025-11-13T150000Z", initiative="STUDY-001",
                              excerpt="guards green")),
        env(MemoryEntry(heading="2025-11-13T15:00", focus="STUDY-001", dwell=0)),
        env(FileChanged(path="ptycho/raw_data.py", change="modified", size=2048, path_class="production")),
        commit("c" * 40, "SUPERVISOR AUTO (prompt=supervisor.md) (iter=00303): plan — tests: not run",
               [ledger_file], minutes=1, role="supervisor", iteration=303),
        commit("d" * 40, "RALPH AUTO (prompt=main.md) (iter=00303): oversampling guards — tests: pytest tests/test_oversampling.py -q (2 passed)",
               [prod, test], minutes=5, role="engineer", iteration=303,
               tests=_TestsReport(status="passed", passed=2, raw="pytest tests/test_oversampling.py -q (2 passed)")),
        env(LedgerStatusChanged(path="docs/fix_plan.md", item_id="STUDY-001", old="in_progress", new="done")),
        env(LedgerAttemptAdded(path="docs/fix_plan.md", item_id="STUDY-001",
                               attempt=LedgerAttempt(number=2, result="success", text="guards green"))),
        env(IterationScored(index=1, number=303, provisional=True, summary=60, code_diff=70, semantic=65,
                            aggregate=65, bucket="medium", focus="STUDY-001", started_at=T0)),
        env(IterationScored(index=1, number=303, provisional=False, summary=75, code_diff=82, semantic=78,
                            aggregate=78, bucket="high", focus="STUDY-001", started_at=T0,
                            ended_at=T0 + timedelta(minutes=6), code_lines=164, insertions=162, deletions=2,
                            files_touched=2, engineer_commits=["d" * 40], supervisor_commits=["c" * 40],
                            reasons=[Reason(score="code_diff", delta=30, text="tests moved with the code")],
                            evidence="tag")),
        env(DwellChanged(focus="STUDY-001", value=0, iterations=[])),
        env(DwellChanged(focus="*", value=0, iterations=[])),
        env(GitStateChanged(state="rebase-merge", active=True, detail=".git/rebase-merge exists")),
        env(Alert(alert="git_state", severity="critical", key="git_state:rebase-merge:1", iteration=1,
                  message="A rebase is in progress: resolve it before the next turn")),
        env(Warning(code="ledger_unparsed", message="ledger line 12 could not be read")),
        env(InitiativeArchived(initiative="STUDY-001", path="plans/archive/STUDY-001")),
        env(LedgerItemRemoved(path="docs/fix_plan.md", item_id="STUDY-001", title="Oversampling guardrails")),
        commit("e" * 40, "wip", [FileStat(path="scratch.py", insertions=1, deletions=0, path_class="production")],
               minutes=7, role="other"),
        env(CommitOrphaned(sha="e" * 40, reason="history rewritten")),
        env(Heartbeat(sent=24, dropped=0)),
    ]


# The seed audit's aggregates for iterations 302-311.
SEED_AGGREGATES = [10, 78, 8, 72, 86, 42, 52, 83, 5, 93]


def bucket(aggregate: int) -> str:
    return "high" if aggregate >= 75 else "medium" if aggregate >= 40 else "low"


def scored_iterations(aggregates: list[int] = SEED_AGGREGATES, first_number: int = 302, *,
                      open_last: bool = False, repo: str = "loop") -> list[Envelope]:
    """Final scores, one per aggregate, ten minutes apart; optionally the last one still open."""
    out = []
    for i, agg in enumerate(aggregates):
        provisional = open_last and i == len(aggregates) - 1
        out.append(env(IterationScored(
            index=i + 1, number=first_number + i, provisional=provisional, summary=agg, code_diff=agg,
            semantic=agg, aggregate=agg, bucket=bucket(agg), focus="STUDY-001",
            started_at=T0 + timedelta(minutes=10 * i), ended_at=T0 + timedelta(minutes=10 * i + 9),
            code_lines=120 if agg >= 40 else 0, insertions=100 if agg >= 40 else 0, deletions=20 if agg >= 40 else 0,
            files_touched=3 if agg >= 40 else 0,
            reasons=[Reason(score="semantic", delta=25, text="changed symbols exercised by changed tests"),
                     Reason(score="code_diff", delta=-8, text="no test moved with the code"),
                     Reason(score="summary", delta=3, text="tests reported passing")],
        ), repo=repo, minutes=10 * i + 9))
    return out


def observe(root, settings, run: str, scan_time) -> list[Envelope]:
    """Backfill the commits and scan the loop files as a collector run would, then score, in-process.

    Events a collector stamps "now" get `scan_time`, so that two runs over the same repo
    report the same facts.
    """
    from collectors.commits import backfill
    from monitor.runtime import default_collector_classes
    from monitor.scorer import Scorer

    collected: list[Envelope] = []
    seqs: dict[str, int] = {}

    def emitter(source: str):
        stream = f"{run}-{source}"

        def emit(payload, when) -> None:
            seqs[stream] = seqs.get(stream, 0) + 1
            collected.append(Envelope(repo="sim", source=source, stream=stream, seq=seqs[stream],
                                      time=when or scan_time, payload=payload))
        return emit

    backfill(root, settings, emitter("backfill"))
    for cls in default_collector_classes():
        if cls.name not in ("commits", "files"):  # commits came from the backfill; files report only changes
            collector = cls(root, settings, emitter(cls.name))
            collector.scan()
            collector.close()
    scorer, out = Scorer(settings), []
    for e in collected:
        out.append(e)
        for payload in scorer.process(e):
            out.append(Envelope(repo=e.repo, source="scorer", stream=f"{run}-scorer", seq=len(out), time=e.time,
                                payload=payload))
    return out
