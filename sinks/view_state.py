"""What the live view knows about each repo, updated event by event (no rich here).

`ViewState.apply(env)` is cheap and returns whether anything visible changed, so the
view redraws only when it must. Text from a watched repo is kept as it came; making
it safe to show is the panels' job (`view_panels.literal`).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from monitor.events import (
    Alert,
    BatonChanged,
    DwellChanged,
    Envelope,
    GitStateChanged,
    IterationScored,
)

ALERTS_KEPT = 50
ALL_REPOS = "*"  # the repo id of monitor-wide events (bus and scorer trouble)
BLOCKING_SEVERITIES = ("warning", "critical")


def aware(dt: datetime | None) -> datetime | None:
    """Naive timestamps are UTC: compare everything as aware times."""
    if dt is not None and dt.tzinfo is None:
        return dt.replace(tzinfo=timezone.utc)
    return dt


@dataclass
class EventLine:
    time: datetime
    kind: str
    text: str
    severity: str | None = None


@dataclass
class CodeChange:
    """The last change that landed production or test code."""

    time: datetime | None
    text: str
    iteration: IterationScored | None = None


@dataclass
class RepoState:
    repo: str
    path: str | None = None
    branch: str | None = None
    head: str | None = None
    baton: BatonChanged | None = None
    iterations: dict[int, IterationScored] = field(default_factory=dict)
    dwell: dict[str, DwellChanged] = field(default_factory=dict)
    alerts: deque[tuple[datetime, Alert]] = field(default_factory=lambda: deque(maxlen=ALERTS_KEPT))
    alert_keys: set[str] = field(default_factory=set)
    git_states: dict[str, GitStateChanged] = field(default_factory=dict)  # active only
    ledger: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> title, status
    ledger_focus: list[str] = field(default_factory=list)
    brief_focus: str | None = None
    last_code: CodeChange | None = None
    last_event: datetime | None = None
    stopped_streams: set[str] = field(default_factory=set)  # sources that said goodbye
    warnings: int = 0
    events: deque[EventLine] = field(default_factory=lambda: deque(maxlen=200))

    @property
    def focus(self) -> str | None:
        """The brief's Focus:, else the ledger's Active Focus, else the last iteration's."""
        if self.brief_focus:
            return self.brief_focus
        if self.ledger_focus:
            return self.ledger_focus[0]
        for idx in sorted(self.iterations, reverse=True):
            if self.iterations[idx].focus:
                return self.iterations[idx].focus
        return None

    @property
    def open_iteration(self) -> IterationScored | None:
        provisional = [it for it in self.iterations.values() if it.provisional]
        return max(provisional, key=lambda it: it.index) if provisional else None

    def alerts_newest_first(self) -> list[tuple[datetime, Alert]]:
        """By the time each alert is about: a backfill raises old alerts late."""
        return sorted(self.alerts, key=lambda pair: pair[0], reverse=True)

    def recent_iterations(self, n: int) -> list[IterationScored]:
        return [self.iterations[i] for i in sorted(self.iterations)[-n:]]


def describe(env: Envelope) -> str | None:
    """One line for the events tail, or None for events not worth a line."""
    p = env.payload
    k = p.kind
    if k == "commit":
        return f"{p.sha[:8]} {p.role}: {p.subject}"
    if k == "commit_orphaned":
        return f"{p.sha[:8]} no longer reachable ({p.reason})"
    if k == "file_changed":
        return f"{p.change} {p.path}" + (f" -> {p.dest_path}" if p.dest_path else "")
    if k == "files_burst":
        return f"{p.count} files changed at once ({p.bytes:,} bytes)"
    if k == "ledger_item_added":
        return f"ledger + {p.item.id}: {p.item.title} ({p.item.status or 'no status'})"
    if k == "ledger_item_removed":
        return f"ledger - {p.item_id}: {p.title}"
    if k == "ledger_status_changed":
        return f"ledger {p.item_id}: {p.old or '?'} -> {p.new or '?'}"
    if k == "ledger_attempt_added":
        return f"ledger {p.item_id}: attempt {p.attempt.number or '?'} {p.attempt.result}"
    if k == "focus_changed":
        return f"active focus: {', '.join(p.new) or 'none'}"
    if k == "ledger_read":
        return f"ledger read: {p.items} items, {p.chars:,} chars"
    if k == "brief_updated":
        return f"brief: focus {p.focus or '?'}, mode {p.mode or '?'}" + (f": {p.summary}" if p.summary else "")
    if k == "memory_entry":
        return f"memory: {p.heading}" + (f" focus={p.focus}" if p.focus else "") + (
            f" dwell={p.dwell}" if p.dwell is not None else "")
    if k == "baton_changed":
        return f"baton: iter {p.iteration} {p.status or '?'}, next {p.expected_actor or '?'}"
    if k == "hub_opened":
        return f"hub opened {p.path}"
    if k == "hub_updated":
        return f"hub {p.path}: {p.files} files, {p.bytes:,} bytes"
    if k == "hub_summary_changed":
        return f"hub summary {p.path}: {p.excerpt}"
    if k == "initiative_archived":
        return f"initiative archived: {p.initiative}"
    if k == "git_state_changed":
        return f"git {p.state} {'appeared' if p.active else 'cleared'}" + (f": {p.detail}" if p.detail else "")
    if k == "prompt_changed":
        return f"prompt {'deleted' if p.deleted else 'changed'} {p.path} +{p.lines_added}/-{p.lines_removed}"
    if k == "collector_started":
        return f"{env.source} collector started" + (f" on {p.branch}" if p.branch else "")
    if k == "warning":
        return f"{p.code}: {p.message}"
    if k == "iteration_scored":
        if p.provisional:
            return None  # restated on every event while open; the scores panel shows it
        return f"iteration {p.number if p.number is not None else '?'} (#{p.index}) scored {p.aggregate} {p.bucket}"
    if k == "dwell_changed":
        name = "global" if p.focus == "*" else p.focus
        return f"dwell {name} = {p.value}" + (f" (tier {p.tier})" if p.tier else "")
    if k == "alert":
        return f"{p.alert}: {p.message}"
    return None


def _code_lines(files) -> tuple[int, int, int]:
    code = [f for f in files if f.path_class in ("production", "test")]
    return len(code), sum(f.insertions or 0 for f in code), sum(f.deletions or 0 for f in code)


def _later(when: datetime | None, last: CodeChange | None, ties: bool = False) -> bool:
    """Whether a change at `when` is newer than the one shown (backfills arrive oldest first)."""
    if last is None or last.time is None or when is None:
        return True
    return when >= last.time if ties else when > last.time


class ViewState:
    """Every repo's state, in the order the repos were first seen."""

    def __init__(self, events_kept: int = 200) -> None:
        self.repos: dict[str, RepoState] = {}
        self.events_kept = events_kept
        # Monitor-wide lines seen before any repo: shown in each repo's tail once it appears.
        self.pending_global: deque[EventLine] = deque(maxlen=20)

    def repo(self, name: str) -> RepoState:
        state = self.repos.get(name)
        if state is None:
            state = self.repos[name] = RepoState(repo=name, events=deque(self.pending_global, maxlen=self.events_kept))
        return state

    def apply(self, env: Envelope) -> bool:
        """Fold one event into the state; True when something shown changed."""
        p = env.payload
        if p.kind == "heartbeat":
            if getattr(p, "final", False):
                self.repo(env.repo).stopped_streams.add(env.source)
                return True
            return False
        if env.repo == ALL_REPOS:
            return self._apply_to_all(env)
        s = self.repo(env.repo)
        when = aware(env.time)
        s.last_event = max(s.last_event, when) if s.last_event else when
        handler = getattr(self, f"_on_{p.kind}", None)
        if handler is not None:
            handler(s, env, p)
        line = describe(env)
        if line is not None:
            severity = p.severity if p.kind == "alert" else ("warning" if p.kind == "warning" else None)
            s.events.append(EventLine(when, p.kind, line, severity))
        return True

    def _apply_to_all(self, env: Envelope) -> bool:
        """Monitor-wide news (a malformed message, a scorer failure) goes to every repo's tail."""
        line = describe(env)
        if line is None:
            return False
        self.pending_global.append(EventLine(aware(env.time), env.kind, line, "warning"))
        for s in self.repos.values():
            s.events.append(self.pending_global[-1])
            if env.kind == "warning":
                s.warnings += 1
        return True

    # ------------------------------------------------------------------ per kind

    def _on_collector_started(self, s: RepoState, env: Envelope, p) -> None:
        s.path, s.branch, s.head = p.path or s.path, p.branch or s.branch, p.head or s.head
        s.stopped_streams.discard(env.source)

    def _on_baton_changed(self, s: RepoState, env: Envelope, p) -> None:
        s.baton = p

    def _on_commit(self, s: RepoState, env: Envelope, p) -> None:
        files, ins, dels = _code_lines(p.files)
        when = aware(p.committed_at)
        if files and _later(when, s.last_code):
            plural = "s" if files != 1 else ""
            s.last_code = CodeChange(when, f"{p.sha[:8]} +{ins}/-{dels} in {files} file{plural}: {p.subject}")

    def _on_iteration_scored(self, s: RepoState, env: Envelope, p) -> None:
        self.set_iteration(s, p)

    def set_iteration(self, s: RepoState, it: IterationScored) -> None:
        old = s.iterations.get(it.index)
        if old is not None and not old.provisional and it.provisional:
            return  # a late provisional never replaces a final score
        s.iterations[it.index] = it
        while len(s.iterations) > 200:
            del s.iterations[min(s.iterations)]
        when = aware(it.ended_at or it.started_at)
        if it.code_lines > 0 and _later(when, s.last_code, ties=True):
            number = f"iteration {it.number} (#{it.index})" if it.number is not None else f"iteration #{it.index}"
            plural = "s" if it.files_touched != 1 else ""
            s.last_code = CodeChange(when, f"{number}: +{it.insertions}/-{it.deletions} in "
                                           f"{it.files_touched} file{plural}, scored {it.aggregate} {it.bucket}", it)

    def _on_dwell_changed(self, s: RepoState, env: Envelope, p) -> None:
        s.dwell[p.focus] = p

    def _on_alert(self, s: RepoState, env: Envelope, p) -> None:
        if p.key in s.alert_keys:
            return
        s.alert_keys.add(p.key)
        s.alerts.appendleft((aware(env.time), p))

    def _on_git_state_changed(self, s: RepoState, env: Envelope, p) -> None:
        if p.active:
            s.git_states[p.state] = p
        else:
            s.git_states.pop(p.state, None)

    def _on_ledger_item_added(self, s: RepoState, env: Envelope, p) -> None:
        s.ledger[p.item.id] = {"title": p.item.title, "status": p.item.status}

    def _on_ledger_item_removed(self, s: RepoState, env: Envelope, p) -> None:
        s.ledger.pop(p.item_id, None)

    def _on_ledger_status_changed(self, s: RepoState, env: Envelope, p) -> None:
        s.ledger.setdefault(p.item_id, {"title": ""})["status"] = p.new

    def _on_focus_changed(self, s: RepoState, env: Envelope, p) -> None:
        s.ledger_focus = list(p.new)

    def _on_brief_updated(self, s: RepoState, env: Envelope, p) -> None:
        s.brief_focus = p.focus
        if p.branch and not s.branch:
            s.branch = p.branch

    def _on_warning(self, s: RepoState, env: Envelope, p) -> None:
        s.warnings += 1
