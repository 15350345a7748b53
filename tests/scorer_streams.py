"""Building synthetic event streams for scorer tests, the way the collectors would.

Commit messages go through the commit collector's own `MessageParser` and paths
through `PathClassifier`, so a stream here carries what a real collector emits.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta, timezone
from typing import Any

from collectors.commit_message import MessageParser
from monitor.config import Settings
from monitor.events import (
    BatonChanged,
    BriefUpdated,
    Commit,
    DiffEvidence,
    Envelope,
    FileChanged,
    FileStat,
    GitStateChanged,
    HubOpened,
    HubSummaryChanged,
    MemoryEntry,
    digest,
)
from monitor.paths import PathClassifier

T0 = datetime(2025, 11, 13, 8, 0, tzinfo=timezone.utc)


class Stream:
    """Appends envelopes for one repo with an advancing event clock."""

    def __init__(self, repo: str = "loop", settings: Settings | None = None, start: datetime = T0, step: timedelta = timedelta(minutes=3)) -> None:
        self.repo = repo
        self.settings = settings or Settings()
        self.parser = MessageParser(self.settings)
        self.classifier = PathClassifier(self.settings.paths)
        self.now = start
        self.step = step
        self.seq = 0
        self.envelopes: list[Envelope] = []
        self._shas = 0

    def advance(self, delta: timedelta | None = None) -> datetime:
        self.now += delta if delta is not None else self.step
        return self.now

    def emit(self, payload: Any, source: str = "test", when: datetime | None = None) -> Envelope:
        self.seq += 1
        when = when or self.advance()
        env = Envelope(repo=self.repo, source=source, stream="s1", seq=self.seq, time=when, observed=when, payload=payload)
        self.envelopes.append(env)
        return env

    def commit(
        self,
        message: str,
        files: dict[str, tuple[int, int]] | None = None,
        evidence: DiffEvidence | None = None,
        sizes: dict[str, int] | None = None,
        when: datetime | None = None,
        backfill: bool = False,
    ) -> Commit:
        """One commit; `files` maps path -> (insertions, deletions)."""
        self._shas += 1
        sha = hashlib.sha1(f"{self.repo}:{self._shas}:{message}".encode()).hexdigest()
        when = when or self.advance()
        info = self.parser.parse(message)
        stats = [
            FileStat(path=p, insertions=i, deletions=d, path_class=self.classifier.classify(p), size=(sizes or {}).get(p))
            for p, (i, d) in (files or {}).items()
        ]
        c = Commit(
            sha=sha,
            authored_at=when,
            committed_at=when,
            message=message,
            role=info.role,
            iteration=info.iteration,
            sync=info.sync,
            ledger_ids=info.ledger_ids,
            tests=info.tests,
            files=stats,
            evidence=evidence or DiffEvidence(revert_of=info.revert_of),
            backfill=backfill,
        )
        self.emit(c, source="commits", when=when)
        return c

    def brief(self, focus: str | None, mapped: list[str] | None = None, artifacts: str | None = None, text: str = "", none: bool = False) -> BriefUpdated:
        b = BriefUpdated(focus=focus, mapped_tests=mapped or [], mapped_tests_none=none, artifacts=artifacts,
                         digest=digest(f"{focus}|{mapped}|{artifacts}|{text}"))
        self.emit(b, source="brief")
        return b

    def memory(self, focus: str | None = None, dwell: int | None = None, heading: str | None = None) -> MemoryEntry:
        m = MemoryEntry(heading=heading or self.now.isoformat(), focus=focus, dwell=dwell, action_type="planning")
        self.emit(m, source="memory")
        return m

    def hub(self, path: str, initiative: str | None = None, existing: bool = False) -> HubOpened:
        h = HubOpened(path=path, initiative=initiative, stamp=path.rsplit("/", 1)[-1], existing=existing)
        self.emit(h, source="hubs")
        return h

    def hub_summary(self, path: str, initiative: str | None = None) -> HubSummaryChanged:
        h = HubSummaryChanged(path=path, initiative=initiative, excerpt="Turn summary")
        self.emit(h, source="hubs")
        return h

    def git_state(self, state: str, active: bool = True) -> GitStateChanged:
        g = GitStateChanged(state=state, active=active)  # type: ignore[arg-type]
        self.emit(g, source="gitstate")
        return g

    def baton(self, iteration: int, actor: str, status: str, lease: datetime | None = None) -> BatonChanged:
        b = BatonChanged(iteration=iteration, expected_actor=actor, status=status, last_update=self.now, lease_expires_at=lease)
        self.emit(b, source="baton")
        return b

    def file(self, path: str, size: int, change: str = "created") -> FileChanged:
        f = FileChanged(path=path, change=change, size=size, path_class=self.classifier.classify(path))  # type: ignore[arg-type]
        self.emit(f, source="files")
        return f


def run(scorer: Any, envelopes: list[Envelope]) -> list[Any]:
    """Feed envelopes to a scorer; all derived payloads in order."""
    out: list[Any] = []
    for env in envelopes:
        out.extend(scorer.process(env))
    return out


def finals(payloads: list[Any]) -> dict[int, Any]:
    """The final IterationScored per index."""
    return {p.index: p for p in payloads if p.kind == "iteration_scored" and not p.provisional}


def alerts(payloads: list[Any], kind: str | None = None) -> list[Any]:
    return [p for p in payloads if p.kind == "alert" and (kind is None or p.alert == kind)]
