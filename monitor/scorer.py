"""The live scorer: events in, iteration scores, dwell counts and alerts out.

One `Scorer` serves many repos (state per repo id). It is deterministic: it reads
only event payloads and event times (never the clock, except `tick(now)`), so the
same stream scored twice gives the same outputs, and `restore` can rebuild its
state after a restart by replaying the stored input events silently, raising no
alert twice. It never runs git or reads files: everything it judges was extracted
by the collectors.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Iterable

from monitor.alerts import GIT_FAILURES, AlertRules, ClosedIteration, no_loop_markers
from monitor.config import Settings
from monitor.dwell import DwellTracker
from monitor.events import (
    Alert,
    BatonChanged,
    BriefUpdated,
    Commit,
    CommitOrphaned,
    Envelope,
    FileChanged,
    FilesBurst,
    FocusChanged,
    GitStateChanged,
    HubOpened,
    HubSummaryChanged,
    HubUpdated,
    IterationScored,
    LedgerItemAdded,
    LedgerRead,
    LedgerStatusChanged,
    MemoryEntry,
    PromptChanged,
)
from monitor.iterations import Iteration, IterationTracker, normalize_focus
from monitor.notify import Notifier
from monitor.scores import CodeTally, Rolling, TurnFacts, score

OWN_KINDS = frozenset({"iteration_scored", "dwell_changed", "alert"})
IGNORED_KINDS = frozenset({"heartbeat", "collector_started", "warning"})
_SIGNATURE_EXCLUDE = {"ended_at"}


@dataclass
class RepoState:
    """Everything the scorer knows about one repo."""

    tracker: IterationTracker
    dwell: DwellTracker
    rules: AlertRules
    rolling: Rolling
    tally: CodeTally = field(default_factory=CodeTally)  # of the open iteration
    previous_tally: CodeTally | None = None  # of the iteration before it
    emitted: dict[int, dict[str, Any]] = field(default_factory=dict)  # index -> last emitted signature
    seen: set[str] = field(default_factory=set)  # commit shas already assigned
    opened: int = 0  # iterations the scorer has set up
    landed_open: bool = False  # the open iteration has landed code
    git_active: set[str] = field(default_factory=set)
    baton: BatonChanged | None = None
    committed_since_baton: bool = False  # a commit arrived after the last baton change
    last_event_at: datetime | None = None
    last_engineer_failures: tuple[int, set[str]] | None = None
    brief_seen: bool = False
    scanned_hubs: set[str] = field(default_factory=set)  # hubs found at start-up, first measurement pending
    last_scored: IterationScored | None = None
    dirty: bool = False


class Scorer:
    """Scores iterations, counts dwell and raises alerts, for any number of repos."""

    def __init__(self, settings: Settings, *, notifier: Notifier | None = None) -> None:
        self.settings = settings
        self.notifier = notifier if notifier is not None else Notifier(settings.alerts)
        self._repos: dict[str, RepoState] = {}
        self._raised: set[str] = set()  # "repo/key", and bare keys handed to restore
        self._silent = False
        self._stamp = re.compile(settings.files.hub_stamp_pattern)
        self._deferred: set[str] = set()  # repos whose provisional score waits for `settle`

    # ----------------------------------------------------------------- public

    def process(self, env: Envelope, *, defer: bool = False) -> list[Any]:
        """Score one input event; returns the derived payloads (scores, dwell, alerts).

        `defer`: leave the open iteration's provisional score to `settle`, so a batch
        of events rescores it once instead of once per event. Final scores, dwell and
        alerts still come with the event that causes them.
        """
        kind = env.kind
        if kind in OWN_KINDS:
            if isinstance(env.payload, Alert):
                self._raised.add(f"{env.repo}/{env.payload.key}")
            return []
        if kind in IGNORED_KINDS:
            return []
        st = self._state(env.repo)
        if st.last_event_at is None or env.time > st.last_event_at:
            st.last_event_at = env.time
        out: list[Any] = []
        handler = getattr(self, f"_on_{kind}", None)
        if handler is not None:
            handler(st, env, out)
        self._setup_opened(st)
        backfill = isinstance(env.payload, Commit) and env.payload.backfill
        if st.dirty and not self._silent and (not backfill or self._worth_emitting(st)):
            if defer:
                self._deferred.add(env.repo)
            else:
                st.dirty = False
                self._emit_open(st, out)
        return self._filter(env.repo, out, not backfill)

    def settle(self) -> list[tuple[str, Any]]:
        """The provisional scores `process(defer=True)` left waiting, as (repo, payload): one per repo."""
        out: list[tuple[str, Any]] = []
        for repo in sorted(self._deferred):
            st = self._repos[repo]
            if st.dirty and not self._silent:
                st.dirty = False
                scored: list[Any] = []
                self._emit_open(st, scored)
                out.extend((repo, p) for p in scored)
        self._deferred.clear()
        return out

    @staticmethod
    def _worth_emitting(st: RepoState) -> bool:
        """In a replayed history, a big open iteration is rescored at 32 commits, 64, 128, ...

        Its provisional scores are history nobody watched move; rescoring it on each of
        thousands of commits would make a backfill quadratic. Its final score is exact.
        """
        it = st.tracker.open
        n = len(it.commits) if it is not None else 0
        return n <= 32 or n & (n - 1) == 0

    def tick(self, now: datetime) -> list[tuple[str, Any]]:
        """Time-based alerts (stalled loop), for every repo, as (repo, payload)."""
        out: list[tuple[str, Any]] = []
        for repo in sorted(self._repos):
            st = self._repos[repo]
            it = st.tracker.open
            focus = it.focus()[0] if it is not None else None
            alerts = st.rules.stalled(
                now, st.baton, st.committed_since_baton, st.last_event_at,
                it.index if it else None, it.number if it else None, focus,
            )
            out.extend((repo, a) for a in self._filter(repo, alerts, True))
        return out

    def restore(self, envelopes: Iterable[Envelope], raised_alert_keys: set[str]) -> None:
        """Rebuild state from stored input events, silently; the given alert keys are never raised again.

        Keys may be bare `Alert.key`s (they then hold for every repo) or `repo/key`.
        """
        self._raised.update(raised_alert_keys)
        self._silent = True
        try:
            for env in envelopes:
                self.process(env)
        finally:
            self._silent = False
        # The open iterations' scores as last emitted: the next event emits only a change.
        for st in self._repos.values():
            if st.dirty and st.tracker.open is not None:
                st.dirty = False
                self._emit_open(st, [])

    def figures(self, repo: str) -> dict:
        """Rolling figures for one repo: mean, median, rolling mean, trend, inflections, bucket shares."""
        st = self._repos.get(repo)
        if st is None:
            return Rolling(window=self.settings.scores.rolling_window).figures() | {"open": None, "dwell": {}, "loop_markers": False}
        figures = st.rolling.figures()
        last = st.last_scored
        figures["open"] = None if last is None else {
            "index": last.index, "number": last.number, "aggregate": last.aggregate, "bucket": last.bucket, "focus": last.focus,
        }
        figures["dwell"] = {focus: c.value for focus, c in sorted(st.dwell.counts.items())}
        figures["loop_markers"] = st.tracker.markers
        return figures

    def current_iteration(self, repo: str) -> int | None:
        """The open iteration's index (for alerts raised outside the scorer, e.g. empty selectors)."""
        st = self._repos.get(repo)
        it = st.tracker.open if st is not None else None
        return it.index if it is not None else None

    def close(self) -> None:
        """Deliver queued notifications and stop the notifier's worker."""
        self.notifier.close(timeout=self.settings.alerts.command_timeout_seconds + 1)

    # ----------------------------------------------------------------- state

    def _state(self, repo: str) -> RepoState:
        st = self._repos.get(repo)
        if st is None:
            s = self.settings
            st = self._repos[repo] = RepoState(
                tracker=IterationTracker(s.iterations),
                dwell=DwellTracker(s.dwell),
                rules=AlertRules(s),
                rolling=Rolling(window=s.scores.rolling_window),
            )
        return st

    def _open(self, st: RepoState) -> Iteration:
        it, _ = st.tracker.ensure_open()
        self._setup_opened(st)
        return it

    def _setup_opened(self, st: RepoState) -> None:
        """A newly opened iteration inherits git failures still in progress."""
        it = st.tracker.open
        if it is not None and it.index != st.opened:
            st.opened = it.index
            st.landed_open = False
            for state in sorted(st.git_active):
                if state not in it.git_failures:
                    it.git_failures.append(state)
            st.dirty = True

    def _filter(self, repo: str, payloads: list[Any], notify: bool) -> list[Any]:
        """Drop alerts raised before (by key); notify about new ones."""
        out = []
        for p in payloads:
            if isinstance(p, Alert):
                qualified = f"{repo}/{p.key}"
                if qualified in self._raised or p.key in self._raised:
                    continue
                self._raised.add(qualified)
                if notify and not self._silent:
                    self.notifier.notify(repo, p)
            out.append(p)
        return out

    def _location(self, st: RepoState) -> tuple[int | None, int | None, str | None]:
        it = st.tracker.open
        if it is None:
            return None, None, None
        return it.index, it.number, it.focus()[0]

    # ----------------------------------------------------------------- scoring

    def _facts(self, st: RepoState, it: Iteration) -> TurnFacts:
        brief = it.brief
        return TurnFacts(
            supervisor_commits=len(it.supervisor_commits),
            engineer_commits=len(it.engineer_commits),
            other_commits=len(it.other_commits),
            mapped_tests=list(brief.mapped_tests) if brief else [],
            mapped_tests_none=bool(brief and brief.mapped_tests_none),
            brief_present=brief is not None,
            artifacts=brief.artifacts if brief else None,
            hub_summary=it.hub_summary,
            memory=list(it.memory),
            focus=it.focus()[0],
            git_failures=list(it.git_failures),
        )

    def _scored(self, st: RepoState, it: Iteration, tally: CodeTally, provisional: bool) -> IterationScored:
        s = score(tally, self._facts(st, it), self.settings)
        focus, _ = it.focus()
        return IterationScored(
            index=it.index,
            number=it.number,
            provisional=provisional,
            summary=s.summary,
            code_diff=s.code_diff,
            semantic=s.semantic,
            aggregate=s.aggregate,
            bucket=s.bucket,  # type: ignore[arg-type]
            override=s.override,
            reasons=s.reasons,
            focus=focus,
            started_at=it.started_at,
            ended_at=it.ended_at,
            supervisor_commits=list(it.supervisor_commits),
            engineer_commits=list(it.engineer_commits),
            other_commits=list(it.other_commits),
            code_lines=tally.code_lines,
            insertions=tally.insertions,
            deletions=tally.deletions,
            files_touched=len(tally.files),
            brief_digest=it.brief.digest if it.brief else None,
            hubs=list(it.hubs),
            evidence=it.evidence,  # type: ignore[arg-type]
        )

    def _emit_if_changed(self, st: RepoState, scored: IterationScored, out: list[Any]) -> None:
        signature = scored.model_dump(exclude=_SIGNATURE_EXCLUDE)
        if st.emitted.get(scored.index) == signature:
            return
        st.emitted[scored.index] = signature
        out.append(scored)

    def _emit_open(self, st: RepoState, out: list[Any]) -> None:
        it = st.tracker.open
        if it is None:
            return
        scored = self._scored(st, it, st.tally, provisional=True)
        st.last_scored = scored
        self._emit_if_changed(st, scored, out)

    def _close(self, st: RepoState, it: Iteration, next_started: datetime | None, out: list[Any]) -> None:
        """Final scores, rolling figures, dwell and close-time alerts for an iteration that just closed."""
        tally = st.tally
        scored = self._scored(st, it, tally, provisional=False)
        self._emit_if_changed(st, scored, out)
        focus = scored.focus
        landed = tally.code_lines >= self.settings.dwell.min_code_lines
        # Scores.
        mean = st.rolling.add(it.index, it.number, scored.aggregate, scored.bucket, self.settings)
        alert = st.rules.regression(st.rolling.regression(self.settings.alerts.regression_window), it.index, it.number, focus, mean)
        # Dwell.
        changes, alerts = st.dwell.close(it.index, it.number, focus, landed)
        out.extend(changes)
        out.extend(alerts)
        if alert is not None:
            out.append(alert)
        out.extend(st.rules.closed(ClosedIteration(
            index=it.index,
            number=it.number,
            started_at=it.started_at,
            next_started_at=next_started,
            focus=focus,
            landed=landed,
            changed_nothing=bool(it.commits) and tally.any_files == 0,
            engineer_commits=len(it.engineer_commits),
            brief_seen=st.brief_seen,
            brief_written=it.brief_written,
            brief_digest=it.brief.digest if it.brief else None,
        )))
        if it.engineer_commits:
            st.last_engineer_failures = (it.index, tally.failure_signatures())
        if not st.tracker.markers and it.commits:
            out.append(no_loop_markers(it.index))
        st.emitted.pop(it.index - 2, None)
        st.previous_tally = tally
        st.tally = CodeTally(baseline=frozenset(tally.added_hashes))

    # ----------------------------------------------------------------- handlers

    def _on_commit(self, st: RepoState, env: Envelope, out: list[Any]) -> None:
        c: Commit = env.payload  # type: ignore[assignment]
        if c.sha in st.seen:
            return
        st.seen.add(c.sha)
        it, closed = st.tracker.add_commit(c)
        if closed is not None:
            self._close(st, closed, it.started_at, out)
        self._setup_opened(st)
        st.tally.add(c, st.rules.is_bulky)
        st.dirty = True
        st.committed_since_baton = True
        focus = it.focus()[0]
        for f in c.files:
            if f.path_class in ("hub", "plans") and f.path.rsplit("/", 1)[-1] == "summary.md":
                it.hub_summary = True
            hub = self._hub_of(f.path) if f.path_class == "hub" else None
            if hub is not None:
                it.add_hub(hub)
            if f.size is not None and st.rules.is_bulky(f.path, f.size) and not (f.insertions == 0 and (f.deletions or 0) > 0):
                out.append(st.rules.bulky(f.path, f.size, "commit", it.index, it.number, focus, c.sha))
        if not st.landed_open and st.tally.code_lines >= self.settings.dwell.min_code_lines:
            st.landed_open = True
            st.rules.code_landed()
        if c.tests.status == "failed" and st.tracker.side(c) != "supervisor":
            alert = st.rules.repeated_failure(it.index, it.number, focus, st.tally.failure_signatures(), st.last_engineer_failures)
            if alert is not None:
                out.append(alert)

    def _hub_of(self, path: str) -> str | None:
        """`plans/active/X/reports/2025-11-13T150000Z/green/log.txt` -> the hub folder."""
        parts = path.split("/")
        for i, part in enumerate(parts[:-1]):
            if self._stamp.match(part):
                return "/".join(parts[: i + 1])
        return None

    def _on_commit_orphaned(self, st: RepoState, env: Envelope, out: list[Any]) -> None:
        p: CommitOrphaned = env.payload  # type: ignore[assignment]
        it = st.tracker.remove_commit(p.sha)
        st.seen.discard(p.sha)
        if it is None:
            return
        if it is st.tracker.open:
            st.tally = CodeTally.of(it.commits.values(), st.rules.is_bulky, st.tally.baseline)
            st.dirty = True
        else:
            before = st.previous_tally.baseline if st.previous_tally is not None else ()
            st.previous_tally = CodeTally.of(it.commits.values(), st.rules.is_bulky, before)
            self._emit_if_changed(st, self._scored(st, it, st.previous_tally, provisional=False), out)
            if st.tracker.open is not None:
                # Churn in the open iteration is measured against what the previous one added.
                st.tally = CodeTally.of(st.tracker.open.commits.values(), st.rules.is_bulky, st.previous_tally.added_hashes)
                st.dirty = True

    def _on_file_changed(self, st: RepoState, env: Envelope, out: list[Any]) -> None:
        p: FileChanged = env.payload  # type: ignore[assignment]
        it = self._open(st)
        it.file_events += 1
        it.touch(env.time)
        path = p.dest_path if p.change == "moved" and p.dest_path else p.path
        if p.change != "deleted" and p.size is not None and st.rules.is_bulky(path, p.size):
            it.bulky_files.append((path, p.size))
            out.append(st.rules.bulky(path, p.size, "file", it.index, it.number, it.focus()[0]))

    def _on_files_burst(self, st: RepoState, env: Envelope, out: list[Any]) -> None:
        p: FilesBurst = env.payload  # type: ignore[assignment]
        it = self._open(st)
        it.file_events += p.count
        it.touch(env.time)
        if p.largest_path and p.largest_size is not None and st.rules.is_bulky(p.largest_path, p.largest_size):
            it.bulky_files.append((p.largest_path, p.largest_size))
            out.append(st.rules.bulky(p.largest_path, p.largest_size, "file", it.index, it.number, it.focus()[0]))

    def _on_brief_updated(self, st: RepoState, env: Envelope, out: list[Any]) -> None:
        p: BriefUpdated = env.payload  # type: ignore[assignment]
        st.brief_seen = True
        self._open(st)
        it = st.tracker.add_brief(p)
        if it is not None:
            it.touch(env.time)
            st.dirty = True

    def _on_memory_entry(self, st: RepoState, env: Envelope, out: list[Any]) -> None:
        p: MemoryEntry = env.payload  # type: ignore[assignment]
        open_ = self._open(st)
        pending = st.tracker.add_memory(p) is None
        if not pending:
            open_.touch(env.time)
            st.dirty = True
        if p.dwell is None:
            return
        focus = normalize_focus(p.focus) or (st.tracker.pending_focus() if pending else open_.focus()[0])
        change, alert = st.dwell.self_report(p.dwell, focus, open_.index, self._unclosed(st, open_, focus) if pending else None)
        out.append(change)
        if alert is not None:
            out.append(alert)

    def _unclosed(self, st: RepoState, it: Iteration, focus: str | None) -> bool | None:
        """The turn that just ran, not closed yet: did it land code on `focus` (None: not on it)?"""
        if not it.commits or (focus is not None and it.focus()[0] != focus):
            return None
        return st.tally.code_lines >= self.settings.dwell.min_code_lines

    def _on_baton_changed(self, st: RepoState, env: Envelope, out: list[Any]) -> None:
        p: BatonChanged = env.payload  # type: ignore[assignment]
        st.tracker.set_baton(p)
        st.baton = p
        st.committed_since_baton = False

    def _on_focus_changed(self, st: RepoState, env: Envelope, out: list[Any]) -> None:
        p: FocusChanged = env.payload  # type: ignore[assignment]
        self._open(st)
        st.tracker.set_active_focus([f for f in (normalize_focus(x) for x in p.new) if f])
        st.dirty = True

    def _on_ledger_status_changed(self, st: RepoState, env: Envelope, out: list[Any]) -> None:
        p: LedgerStatusChanged = env.payload  # type: ignore[assignment]
        it = self._open(st)
        st.rules.status_changed(p.item_id, p.new, it.index)

    def _on_ledger_item_added(self, st: RepoState, env: Envelope, out: list[Any]) -> None:
        p: LedgerItemAdded = env.payload  # type: ignore[assignment]
        it = self._open(st)
        st.rules.status_changed(p.item.id, p.item.status, it.index)

    def _on_ledger_read(self, st: RepoState, env: Envelope, out: list[Any]) -> None:
        p: LedgerRead = env.payload  # type: ignore[assignment]
        index, number, focus = self._location(st)
        alert = st.rules.ledger_read(p, index, number, focus)
        if alert is not None:
            out.append(alert)

    def _on_hub_opened(self, st: RepoState, env: Envelope, out: list[Any]) -> None:
        p: HubOpened = env.payload  # type: ignore[assignment]
        if p.existing:
            # Found at start-up: no iteration's work. Its first measurement comes with it.
            st.scanned_hubs.add(p.path)
            return
        it = self._open(st)
        it.add_hub(p.path, new=not p.existing)
        it.touch(env.time)
        st.dirty = True
        alert = st.rules.hub_opened(p, it.index, it.number, it.focus()[0])
        if alert is not None:
            out.append(alert)

    def _on_hub_updated(self, st: RepoState, env: Envelope, out: list[Any]) -> None:
        p: HubUpdated = env.payload  # type: ignore[assignment]
        if p.path in st.scanned_hubs:
            st.scanned_hubs.discard(p.path)
            return
        it = self._open(st)
        it.add_hub(p.path)
        st.dirty = True

    def _on_hub_summary_changed(self, st: RepoState, env: Envelope, out: list[Any]) -> None:
        p: HubSummaryChanged = env.payload  # type: ignore[assignment]
        it = self._open(st)
        it.add_hub(p.path)
        it.hub_summary = True
        it.touch(env.time)
        st.dirty = True

    def _on_git_state_changed(self, st: RepoState, env: Envelope, out: list[Any]) -> None:
        p: GitStateChanged = env.payload  # type: ignore[assignment]
        if p.state not in GIT_FAILURES:
            return
        if not p.active:
            st.git_active.discard(p.state)
            return
        st.git_active.add(p.state)
        it = self._open(st)
        if p.state not in it.git_failures:
            it.git_failures.append(p.state)
            st.dirty = True
        alert = st.rules.git_state(p, it.index, it.number, it.focus()[0])
        if alert is not None:
            out.append(alert)

    def _on_prompt_changed(self, st: RepoState, env: Envelope, out: list[Any]) -> None:
        p: PromptChanged = env.payload  # type: ignore[assignment]
        it = self._open(st)
        out.append(st.rules.prompt_changed(p, it.index, it.number, it.focus()[0]))
