"""Stores for the query, report, gate and metrics tests: a loop's history written as the monitor writes it.

`LoopStore` publishes envelopes through the real `SqliteSink`: collector events
(commits with their files, ledger, hubs, baton, git state, prompt edits) and, for
each iteration, what the scorer would say (scores with reasons, dwell, alerts).
The tests then read the store back through loopmon's read-only views and compare
with the rows.
"""

from __future__ import annotations

import hashlib
import itertools
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from monitor.events import (
    Alert,
    BatonChanged,
    CollectorStarted,
    Commit,
    DwellChanged,
    Envelope,
    FileStat,
    GitStateChanged,
    HubOpened,
    HubUpdated,
    IterationScored,
    LedgerAttempt,
    LedgerAttemptAdded,
    LedgerItem,
    LedgerItemAdded,
    LedgerStatusChanged,
    PromptChanged,
    Reason,
)
from monitor.events import TestsReport as _TestsReport  # a Test* name would be collected by pytest
from sinks.sqlite import SqliteSink

T0 = datetime(2025, 11, 13, 15, 0, tzinfo=timezone.utc)
CLASSES = {"ptycho/": "production", "scripts/": "production", "tests/": "test", "docs/fix_plan.md": "ledger",
           "docs/": "docs", "plans/": "plans", "input.md": "brief", "prompts/": "prompt"}


def path_class(path: str) -> str:
    return next((c for prefix, c in CLASSES.items() if path.startswith(prefix)), "other")


def bucket(aggregate: int) -> str:
    return "high" if aggregate >= 75 else "medium" if aggregate >= 40 else "low"


@dataclass
class Turn:
    """One iteration as a test describes it."""

    number: int
    aggregate: int
    focus: str = "FOCUS-001"
    code: tuple[tuple[str, int, int], ...] = ()  # (path, insertions, deletions) landed by the engineer
    message: str = "implement the next step"
    tests: str = "passed"
    override: str | None = None


class LoopStore:
    """Writes a loop's history into a real store, through SqliteSink, one batch per call."""

    def __init__(self, path: Path, repo: str = "loop", *, branch: str = "feature/parity") -> None:
        self.path = Path(path)
        self.repo = repo
        self.sink = SqliteSink(self.path)
        self._seq = itertools.count(1)
        self.minutes = 0
        self.index = 0
        self.dwell: dict[str, list[int]] = {}
        self.peak: dict[str, int] = {}
        self.write(CollectorStarted(path=f"/repos/{repo}", branch=branch, head="0" * 40, host="box", pid=7, version="0.1.0"))

    # ------------------------------------------------------------------ writing

    def at(self, minutes: float | None = None) -> datetime:
        return T0 + timedelta(minutes=self.minutes if minutes is None else minutes)

    def envelope(self, payload, *, minutes: float | None = None, source: str | None = None) -> Envelope:
        source = source or ("scorer" if payload.kind in ("iteration_scored", "dwell_changed", "alert") else "test")
        t = self.at(minutes)
        return Envelope(repo=self.repo, source=source, stream=f"{source}-1", seq=next(self._seq), time=t, observed=t,
                        payload=payload)

    def write(self, *payloads, minutes: float | None = None) -> None:
        self.sink.write([self.envelope(p, minutes=minutes) for p in payloads])

    def commit(self, message: str, files: list[tuple[str, int, int]], *, role: str, iteration: int | None = None,
               tests: str = "absent", tests_raw: str | None = None, evidence: dict | None = None) -> str:
        self.minutes += 1
        sha = hashlib.sha1(f"{self.repo}:{message}:{self.minutes}".encode()).hexdigest()
        stats = [FileStat(path=p, insertions=i, deletions=d, path_class=path_class(p)) for p, i, d in files]
        c = Commit(sha=sha, authored_at=self.at(), committed_at=self.at(), message=message, role=role,
                   iteration=iteration, files=stats, tests=_TestsReport(status=tests, raw=tests_raw),
                   **({"evidence": evidence} if evidence else {}))
        self.sink.write([self.envelope(c, source="commits")])
        return sha

    def iteration(self, turn: Turn, *, provisional: bool = False) -> int:
        """A supervisor commit, an engineer commit, then the scorer's verdict: scores, dwell, alerts."""
        self.index += 1
        idx = self.index
        started = self.at(self.minutes + 1)
        sup = self.commit(f"SUPERVISOR AUTO (prompt=supervisor.md) (iter={turn.number:05d}): plan {turn.focus}",
                          [("docs/fix_plan.md", 3, 1), ("input.md", 12, 10)], role="supervisor",
                          iteration=turn.number)
        tail = "not run" if not turn.code else f"pytest tests -q ({'1 failed' if turn.tests == 'failed' else '3 passed'})"
        eng = self.commit(f"RALPH AUTO (prompt=main.md) (iter={turn.number:05d}): {turn.message} — tests: {tail}",
                          list(turn.code) or [(f"plans/active/{turn.focus}/reports/2025-11-13T150000Z/summary.md", 5, 0)],
                          role="engineer", iteration=turn.number, tests=turn.tests if turn.code else "not_run",
                          tests_raw=tail)
        code = [(p, i, d) for p, i, d in turn.code if path_class(p) in ("production", "test")]
        code_lines = sum(i + d for _, i, d in code)
        s = turn.aggregate
        scored = IterationScored(
            index=idx, number=turn.number, provisional=provisional, summary=min(100, s + 5), code_diff=s,
            semantic=max(0, s - 3), aggregate=s, bucket=bucket(s), override=turn.override, focus=turn.focus,
            started_at=started, ended_at=self.at(), supervisor_commits=[sup], engineer_commits=[eng],
            code_lines=code_lines, insertions=sum(i for _, i, _ in code), deletions=sum(d for _, _, d in code),
            files_touched=len(code), evidence="tag",
            reasons=[Reason(score="code_diff", delta=float(s - 50), text=f"{len(code)} code files, {code_lines} lines"),
                     Reason(score="summary", delta=5.0, text="tests reported passing")],
        )
        payloads: list = [scored]
        if not provisional:
            for key in (turn.focus, "*"):
                streak = self.dwell.setdefault(key, [])
                if code_lines >= 5:
                    streak.clear()
                else:
                    streak.append(idx)
                self.peak[key] = max(self.peak.get(key, 0), len(streak))
                payloads.append(DwellChanged(focus=key, value=len(streak), tier=tier(len(streak)),
                                             iterations=list(streak)))
                if key != "*" and len(streak) in (2, 3, 4, 6):
                    payloads.append(Alert(alert="dwell_tier", severity="warning", key=f"dwell:{key}:{len(streak)}:{streak[0]}",
                                          iteration=idx, focus=key,
                                          message=f"Dwell tier {tier(len(streak))}: {len(streak)} iterations without code"))
        self.write(*payloads)
        return idx

    def alert(self, kind: str, message: str, *, iteration: int | None = None, severity: str = "warning",
              focus: str | None = None, key: str | None = None) -> None:
        self.write(Alert(alert=kind, severity=severity, key=key or f"{kind}:{self.minutes}:{message[:20]}",
                         iteration=iteration, focus=focus, message=message))

    def prompt_commit(self, path: str = "prompts/main.md", added: int = 7, removed: int = 2) -> str:
        return self.commit(f"update {path.rsplit('/', 1)[-1]}", [(path, added, removed)], role="other")

    def git_state(self, state: str, active: bool) -> None:
        self.write(GitStateChanged(state=state, active=active, detail=f".git/{state}"))

    def baton(self, status: str, lease: datetime | None, iteration: int = 1) -> None:
        self.write(BatonChanged(iteration=iteration, expected_actor="ralph", status=status, last_update=self.at(),
                                lease_expires_at=lease))

    def ledger(self, item_id: str, title: str, status: str, attempts: int = 0) -> None:
        item = LedgerItem(id=item_id, title=title, priority="High", status=status,
                          attempts=[LedgerAttempt(number=n + 1, result="failure") for n in range(attempts)])
        self.write(LedgerItemAdded(path="docs/fix_plan.md", item=item))

    def ledger_status(self, item_id: str, old: str, new: str) -> None:
        self.write(LedgerStatusChanged(path="docs/fix_plan.md", item_id=item_id, old=old, new=new))

    def ledger_attempt(self, item_id: str, number: int, result: str) -> None:
        self.write(LedgerAttemptAdded(path="docs/fix_plan.md", item_id=item_id,
                                      attempt=LedgerAttempt(number=number, result=result, text="smoke")))

    def hub(self, initiative: str, stamp: str, files: int, size: int) -> None:
        path = f"plans/active/{initiative}/reports/{stamp}"
        self.write(HubOpened(path=path, initiative=initiative, stamp=stamp))
        self.write(HubUpdated(path=path, initiative=initiative, files=files, bytes=size))

    def live_prompt_edit(self, path: str, added: int, removed: int) -> None:
        self.minutes += 1
        self.write(PromptChanged(path=path, digest="d" * 16, lines_added=added, lines_removed=removed))

    def close(self) -> None:
        self.sink.close()


def tier(value: int) -> str | None:
    reached = [name for name, threshold in (("1", 2), ("1.5", 3), ("2", 4), ("3", 6)) if value >= threshold]
    return reached[-1] if reached else None


def rows(db: Path, sql: str, params: tuple = ()) -> list[dict]:
    """Rows straight from the store, for comparing with what loopmon shows."""
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute(sql, params)]
    finally:
        conn.close()


SEED_TURNS = [
    # The seed audit's ten iterations, with their aggregates and code paths (302-311).
    Turn(302, 10, "STUDY-SYNTH-001", (), "dwell escalation report", override="no_code_cap"),
    Turn(303, 78, "STUDY-SYNTH-001", (("ptycho/config/config.py", 4, 0), ("ptycho/raw_data.py", 40, 0),
                                      ("scripts/training/train.py", 36, 0), ("tests/test_oversampling.py", 122, 0))),
    Turn(304, 8, "INTEGRATE-PYTORCH-001", (("tests/test_integration_workflow.py", 1, 0),), "pivot", override="no_code_cap"),
    Turn(305, 72, "INTEGRATE-PYTORCH-001", (("ptycho/custom_layers.py", 32, 0), ("ptycho/loader.py", 24, 0),
                                            ("ptycho/workflows/components.py", 24, 0), ("scripts/study/run.py", 171, 0))),
    Turn(306, 86, "INTEGRATE-PYTORCH-001", (("scripts/training/train.py", 20, 4),
                                            ("tests/scripts/test_training_backend_selector.py", 183, 0))),
    Turn(307, 42, "INTEGRATE-PYTORCH-001", (("scripts/inference/inference.py", 13, 0),
                                            ("tests/scripts/test_inference_backend_selector.py", 84, 0))),
    Turn(308, 52, "INTEGRATE-PYTORCH-001", (("scripts/inference/inference.py", 40, 0),
                                            ("scripts/compare_models.py", 92, 0)), tests="failed"),
    Turn(309, 83, "INTEGRATE-PYTORCH-001", (("scripts/inference/inference.py", 31, 17),
                                            ("tests/scripts/test_inference_backend_selector.py", 124, 0))),
    Turn(310, 5, "INTEGRATE-PYTORCH-001", (), "fatal rebase-merge", override="git_failure"),
    Turn(311, 93, "INTEGRATE-PYTORCH-001", (("scripts/training/train.py", 217, 0),
                                            ("tests/scripts/test_training_backend_selector.py", 127, 0),
                                            ("ptycho/workflows/backend_selector.py", 8, 8))),
]
