"""Assigning commits and file events to iterations.

An iteration is one supervisor turn plus the engineer turn that follows it. The
evidence, strongest first (shared/spec/scoring.md):

1. a tag in the commit message (`iter=00033`, `[SYNC i=301] ...`), read by the
   commit collector into `Commit.iteration` / `Commit.sync`;
2. the `iteration` field of the baton (`sync/state.json`);
3. the alternation of roles: a supervisor commit after an engineer commit opens
   a new iteration; in a single-agent loop (no supervisor ever seen, no number),
   a quiet gap between bursts of commits does.

Iteration numbers are the loop's own and may repeat or go backwards (driver
restarts); `Iteration.index` is ours, 1-based, and never repeats.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from monitor.config import IterationSettings
from monitor.events import BatonChanged, BriefUpdated, Commit, MemoryEntry

# A focus token: a ledger ID such as `INTEGRATE-PYTORCH-001` (a sub-item like `.F1`
# stops at the dot) or a plain word such as `seed`.
_FOCUS_TOKEN = re.compile(r"[\w-]+")

# A ledger ID named without brackets in an engineer's subject: `OVERSAMPLING-001 Phase A: ...`.
_PLAIN_ID = re.compile(r"(?<![\w-])[A-Z][A-Z0-9]*(?:-[A-Z0-9]+)*-\d{2,}(?![\w-])")

Side = str  # "supervisor" | "engineer" | "other"


def normalize_focus(text: str | None) -> str | None:
    """`INTEGRATE-PYTORCH-001.F1 — Phase C` -> `INTEGRATE-PYTORCH-001`; None for nothing usable."""
    if not text:
        return None
    for token in text.strip().split():
        token = token.strip("`*[]()<>,;:'\"")
        match = _FOCUS_TOKEN.match(token)
        if match and match.group(0).strip("-_"):
            return match.group(0)
    return None


@dataclass
class Iteration:
    """One iteration as the scorer knows it: membership, brief, hubs, times."""

    index: int
    number: int | None = None
    evidence: str = "none"  # tag | baton | alternation | gap | none
    started_at: datetime | None = None
    ended_at: datetime | None = None
    closed: bool = False
    commits: dict[str, Commit] = field(default_factory=dict)  # sha -> commit, arrival order
    supervisor_commits: list[str] = field(default_factory=list)
    engineer_commits: list[str] = field(default_factory=list)
    other_commits: list[str] = field(default_factory=list)
    engineer_seen: bool = False  # the engineer's turn has begun (alternation)
    supervisor_seen: bool = False
    tagged: bool = False  # its number came from a message tag
    handed_off: bool = False  # the engineer handed the baton back: the turn is over
    brief: BriefUpdated | None = None
    brief_written: bool = False  # a new brief arrived for this iteration
    memory: list[MemoryEntry] = field(default_factory=list)
    active_focus: str | None = None  # the ledger's Active Focus while the iteration ran
    hubs: list[str] = field(default_factory=list)
    new_hubs: list[str] = field(default_factory=list)
    hub_summary: bool = False
    git_failures: list[str] = field(default_factory=list)
    file_events: int = 0
    bulky_files: list[tuple[str, int]] = field(default_factory=list)  # working-tree files over the gate
    _focus_tagged: str | None = None
    _focus_named_engineer: str | None = None
    _focus_named_supervisor: str | None = None

    def touch(self, when: datetime | None) -> None:
        """Widen the iteration's time span to include `when`."""
        if when is None:
            return
        if self.started_at is None or when < self.started_at:
            self.started_at = when
        if self.ended_at is None or when > self.ended_at:
            self.ended_at = when

    def add_hub(self, path: str, new: bool = False) -> None:
        if path not in self.hubs:
            self.hubs.append(path)
        if new and path not in self.new_hubs:
            self.new_hubs.append(path)

    def focus(self) -> tuple[str | None, str]:
        """(focus, where it came from): brief, memory, ledger, or the engineer's commit tag."""
        if self.brief is not None:
            focus = normalize_focus(self.brief.focus)
            if focus:
                return focus, "brief"
        for entry in reversed(self.memory):
            focus = normalize_focus(entry.focus)
            if focus:
                return focus, "memory"
        if self.active_focus:
            return self.active_focus, "ledger"
        found = self.commit_focus()
        return (found, "commit") if found else (None, "none")

    def commit_focus(self) -> str | None:
        """The ID the engineer's commits tag, else one the engineer's or the supervisor's subjects name."""
        return self._focus_tagged or self._focus_named_engineer or self._focus_named_supervisor

    def note_focus(self, commit: Commit, role: str) -> None:
        """Keep the first ID each kind of commit names (in arrival order), so focus() stays cheap."""
        if role == "engineer" and self._focus_tagged is None and commit.ledger_ids:
            self._focus_tagged = commit.ledger_ids[0]
        attr = {"engineer": "_focus_named_engineer", "supervisor": "_focus_named_supervisor"}.get(role)
        if attr is not None and getattr(self, attr) is None:
            match = _PLAIN_ID.search(commit.subject[:300])
            if match:
                setattr(self, attr, match.group(0))

    def renote_focus(self) -> None:
        self._focus_tagged = self._focus_named_engineer = self._focus_named_supervisor = None
        for role, shas in (("engineer", self.engineer_commits), ("supervisor", self.supervisor_commits)):
            for sha in shas:
                self.note_focus(self.commits[sha], role)

    def is_empty(self) -> bool:
        return not self.commits


class IterationTracker:
    """Per-repo iteration assignment. Feed it events in arrival order."""

    def __init__(self, settings: IterationSettings) -> None:
        self.settings = settings
        self.quiet_gap = timedelta(minutes=settings.quiet_gap_minutes)
        self._supervisor_actors = {a.lower() for a in settings.supervisor_actors}
        self._engineer_actors = {a.lower() for a in settings.engineer_actors}
        self.open: Iteration | None = None
        self.previous: Iteration | None = None
        self.count = 0
        self.baton: BatonChanged | None = None
        self.markers = False  # any loop marker seen: roles, tags, baton
        self.supervisor_ever = False
        self.active_focus: str | None = None
        self.brief: BriefUpdated | None = None  # the brief in force
        self._pending_brief: BriefUpdated | None = None
        self._pending_memory: list[MemoryEntry] = []
        self._last_commit_at: datetime | None = None

    # ----------------------------------------------------------------- helpers

    def actor_side(self, actor: str | None) -> Side:
        if not actor:
            return "other"
        name = actor.lower()
        if name in self._supervisor_actors:
            return "supervisor"
        if name in self._engineer_actors:
            return "engineer"
        return "other"

    def side(self, commit: Commit) -> Side:
        """Which turn a commit belongs to: a driver commit speaks for its actor."""
        if commit.role in ("supervisor", "engineer"):
            return commit.role
        if commit.role == "driver" and commit.sync is not None:
            return self.actor_side(commit.sync.actor)
        return "other"

    def is_handoff_to_supervisor(self, commit: Commit) -> bool:
        """`[SYNC i=N+1] actor=ralph → next=galph`: the engineer's turn of N is over."""
        sync = commit.sync
        return (
            sync is not None
            and self.actor_side(sync.actor) == "engineer"
            and self.actor_side(sync.next_actor) == "supervisor"
        )

    def _new(self, number: int | None, evidence: str) -> Iteration:
        """Open the next iteration; the one open before it is closed and returned via `previous`."""
        if self.open is not None:
            self.open.closed = True
            self.previous = self.open
        self.count += 1
        it = Iteration(index=self.count, number=number, evidence=evidence)
        it.active_focus = self.active_focus
        it.brief = self._pending_brief or self.brief
        it.brief_written = self._pending_brief is not None
        it.memory = list(self._pending_memory)
        self._pending_brief = None
        self._pending_memory = []
        self.open = it
        return it

    def ensure_open(self) -> tuple[Iteration, Iteration | None]:
        """The open iteration, opening the first one if nothing has happened yet."""
        if self.open is None:
            return self._new(None, "none"), None
        return self.open, None

    # ----------------------------------------------------------------- commits

    def _number(self, commit: Commit, side: Side) -> tuple[int | None, str]:
        if commit.sync is not None:
            return commit.sync.iteration, "tag"
        if commit.iteration is not None:
            return commit.iteration, "tag"
        open_ = self.open
        if open_ is not None and open_.tagged:
            # In a tagged loop an untagged work commit sits between tagged ones: the tags
            # say where it is. The baton file, read whenever the watcher gets to it,
            # can lag or run ahead of the commits.
            return None, "none"
        if self.baton is not None and self.baton.iteration is not None:
            number = self.baton.iteration
            if side == "engineer" and self.actor_side(self.baton.expected_actor) == "supervisor":
                # The baton was handed back (and its counter advanced) before this commit was seen.
                number -= 1
            if open_ is not None and open_.number is not None and number < open_.number:
                return None, "none"  # a stale read of the baton
            return number, "baton"
        return None, "none"

    def add_commit(self, commit: Commit) -> tuple[Iteration, Iteration | None]:
        """Assign a commit; returns (its iteration, the iteration this closed or None)."""
        side = self.side(commit)
        number, evidence = self._number(commit, side)
        when = commit.committed_at
        if commit.role in ("supervisor", "driver") or evidence == "tag":
            self.markers = True
        if side == "supervisor":
            self.supervisor_ever = True
        handoff = self.is_handoff_to_supervisor(commit)

        it, closed = self._place(commit, side, number, evidence, handoff, when)
        self._record(it, commit, side, handoff)
        it.touch(when)
        self._last_commit_at = when if self._last_commit_at is None else max(self._last_commit_at, when)
        return it, closed

    def _place(
        self, commit: Commit, side: Side, number: int | None, evidence: str, handoff: bool, when: datetime
    ) -> tuple[Iteration, Iteration | None]:
        open_ = self.open
        if open_ is None:
            if handoff and number is not None:
                number -= 1
            it = self._new(number, evidence)
            it.tagged = evidence == "tag"
            return it, None

        if handoff:
            # The hand-off carries the *next* number: it ends the open turn when it matches.
            if number is None or open_.number is None or open_.number in (number - 1, number) or open_.is_empty():
                self._adopt(open_, None if number is None else number - 1, evidence)
                return open_, None
            return self._open_new(number - 1, evidence)

        if open_.is_empty():
            self._adopt(open_, number, evidence)
            return open_, None

        if number is not None and open_.number is not None and number != open_.number:
            if self._turn_numbered(open_, side, number, evidence):
                return open_, None
            return self._open_new(number, evidence)

        if side == "supervisor" and open_.engineer_seen:
            # A supervisor turn after the engineer's: the next iteration, even when a
            # restarted driver repeats the number.
            repeat = evidence == "tag" and number == open_.number
            if repeat or (number is not None and number != open_.number):
                return self._open_new(number, "tag" if evidence == "tag" else evidence)
            return self._open_new(None, "alternation")

        if (
            number is None
            and not self.supervisor_ever
            and self._last_commit_at is not None
            and when - self._last_commit_at > self.quiet_gap
        ):
            return self._open_new(None, "gap")

        if number is not None and open_.number is None:
            self._adopt(open_, number, evidence)
        return open_, None

    def _turn_numbered(self, open_: Iteration, side: Side, number: int, evidence: str) -> bool:
        """Some drivers number turns, not iterations: supervisor N, engineer N+1 is one iteration."""
        return (
            evidence == "tag"
            and open_.tagged
            and side == "engineer"
            and open_.supervisor_seen
            and not open_.engineer_seen
            and open_.number is not None
            and number == open_.number + 1
        )

    def _adopt(self, it: Iteration, number: int | None, evidence: str) -> None:
        if it.number is None and number is not None:
            it.number = number
            it.evidence = evidence
            it.tagged = evidence == "tag"

    def _open_new(self, number: int | None, evidence: str) -> tuple[Iteration, Iteration | None]:
        closed = self.open
        it = self._new(number, evidence)
        it.tagged = evidence == "tag"
        return it, closed

    def _record(self, it: Iteration, commit: Commit, side: Side, handoff: bool) -> None:
        it.commits[commit.sha] = commit
        if commit.role == "supervisor":
            it.supervisor_commits.append(commit.sha)
        elif commit.role == "engineer":
            it.engineer_commits.append(commit.sha)
        else:
            it.other_commits.append(commit.sha)
        it.note_focus(commit, commit.role)
        if side == "engineer":
            it.engineer_seen = True
        elif side == "supervisor":
            it.supervisor_seen = True
        if handoff:
            it.handed_off = True
        if commit.sync is not None:
            # A driver-message commit the hand-off names as the agent's own carries its work.
            self._claim(it, commit.sync.ralph_commit, it.engineer_commits)
            self._claim(it, commit.sync.galph_commit, it.supervisor_commits)

    @staticmethod
    def _claim(it: Iteration, sha_prefix: str | None, target: list[str]) -> None:
        if not sha_prefix or len(sha_prefix) < 7:
            return
        prefix = sha_prefix.lower()
        for sha in list(it.other_commits):
            if sha.lower().startswith(prefix):
                it.other_commits.remove(sha)
                target.append(sha)
                it.note_focus(it.commits[sha], "engineer" if target is it.engineer_commits else "supervisor")

    def remove_commit(self, sha: str) -> Iteration | None:
        """A commit rewritten out of history: drop it from the open or previous iteration."""
        for it in (self.open, self.previous):
            if it is not None and sha in it.commits:
                del it.commits[sha]
                for bucket in (it.supervisor_commits, it.engineer_commits, it.other_commits):
                    if sha in bucket:
                        bucket.remove(sha)
                it.renote_focus()
                return it
        return None

    # ----------------------------------------------------------------- loop files

    def _supervisor_writing_next(self) -> bool:
        """The engineer's turn has run: what the supervisor writes now is for the next iteration."""
        return self.supervisor_ever and self.open is not None and (self.open.engineer_seen or self.open.handed_off)

    def set_baton(self, baton: BatonChanged) -> None:
        self.baton = baton
        self.markers = True

    def set_active_focus(self, ids: list[str]) -> None:
        self.active_focus = ids[0] if ids else None
        if self.open is not None and not self._supervisor_writing_next():
            self.open.active_focus = self.active_focus

    def add_brief(self, brief: BriefUpdated) -> Iteration | None:
        """A new brief belongs to the iteration whose engineer has not started yet."""
        self.brief = brief
        if self._supervisor_writing_next():
            self._pending_brief = brief
            return None
        it, _ = self.ensure_open()
        it.brief = brief
        it.brief_written = True
        return it

    def add_memory(self, entry: MemoryEntry) -> Iteration | None:
        if self._supervisor_writing_next():
            self._pending_memory.append(entry)
            return None
        it, _ = self.ensure_open()
        it.memory.append(entry)
        return it

    def pending_focus(self) -> str | None:
        """The focus the supervisor has set for the iteration about to open, if any."""
        if self._pending_brief is not None:
            return normalize_focus(self._pending_brief.focus)
        for entry in reversed(self._pending_memory):
            if normalize_focus(entry.focus):
                return normalize_focus(entry.focus)
        return None
