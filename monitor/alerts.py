"""Alert rules (shared/spec/scoring.md, "Alerts"), apart from dwell tiers (monitor/dwell.py)
and empty selectors (monitor/selectors.py, which runs outside the scorer).

Each rule keeps the little state it needs per repo and returns `Alert` payloads.
Every key is built from facts of the event stream (iteration indexes, paths,
digests, event times), never from the clock, so a replay builds the same keys and
the scorer can refuse to raise one twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from monitor.config import Settings
from monitor.events import Alert, BatonChanged, GitStateChanged, HubOpened, LedgerRead, PromptChanged
from monitor.paths import compile_globs

GIT_FAILURES = ("rebase-merge", "rebase-apply", "merge", "index-lock-stale")

_GIT_ADVICE = {
    "rebase-merge": "a rebase stopped half-way (.git/rebase-merge): finish it (git rebase --continue) or abort it (git rebase --abort) before the next turn.",
    "rebase-apply": "a rebase or `git am` stopped half-way (.git/rebase-apply): continue or abort it before the next turn.",
    "merge": "a merge is in progress (MERGE_HEAD): commit or abort it (git merge --abort) before the next turn.",
    "index-lock-stale": "a stale .git/index.lock blocks every git command: make sure no git process runs, then remove it.",
}


@dataclass
class ClosedIteration:
    """What the close-time rules need to know about an iteration that just closed."""

    index: int
    number: int | None
    started_at: datetime | None
    next_started_at: datetime | None
    focus: str | None
    landed: bool
    changed_nothing: bool  # its commits touched no file at all
    engineer_commits: int
    brief_seen: bool  # the loop has a brief
    brief_written: bool  # a new brief arrived for this iteration
    brief_digest: str | None


def label(index: int | None, number: int | None) -> str:
    if number is not None:
        return f"iteration {number} (#{index})"
    return f"iteration #{index}" if index is not None else "before the first iteration"


@dataclass
class AlertRules:
    settings: Settings
    git_seen: dict[str, int] = field(default_factory=dict)  # state -> times it became active
    ledger_over: dict[str, int] = field(default_factory=dict)  # path -> crossings so far
    ledger_is_over: dict[str, bool] = field(default_factory=dict)
    hubs_since_code: dict[str, list[str]] = field(default_factory=dict)  # initiative -> new hubs
    fast_run: list[int] = field(default_factory=list)
    empty_run: list[int] = field(default_factory=list)
    stale_run: list[int] = field(default_factory=list)
    status: dict[str, str | None] = field(default_factory=dict)  # ledger id -> status
    status_epoch: dict[str, int] = field(default_factory=dict)  # ledger id -> index of last status change
    stagnant: dict[str, list[int]] = field(default_factory=dict)  # ledger id -> landing iterations since
    regression_trough: float | None = None  # lowest rolling mean since the last regression alert

    def __post_init__(self) -> None:
        a = self.settings.alerts
        self._bulky_ignore = compile_globs(list(a.bulky_ignore) + list(self.settings.watch.ignore))

    # ----------------------------------------------------------------- immediate rules

    def git_state(self, ev: GitStateChanged, index: int | None, number: int | None, focus: str | None) -> Alert | None:
        if not ev.active or ev.state not in GIT_FAILURES:
            return None
        n = self.git_seen[ev.state] = self.git_seen.get(ev.state, 0) + 1
        return Alert(
            alert="git_state",
            severity="critical",
            key=f"git_state:{ev.state}:{index}:{n}",
            iteration=index,
            focus=focus,
            message=f"Git state failure in {label(index, number)}: {_GIT_ADVICE[ev.state]}" + (f" ({ev.detail})" if ev.detail else ""),
            detail={"state": ev.state, "detail": ev.detail},
        )

    def is_bulky(self, path: str, size: int | None) -> bool:
        if size is None or size <= self.settings.alerts.bulky_bytes:
            return False
        if path.startswith(".artifacts/") or path == ".artifacts":
            return False
        return not (self._bulky_ignore is not None and self._bulky_ignore.match(path))

    def bulky(self, path: str, size: int, how: str, index: int | None, number: int | None, focus: str | None, sha: str | None = None) -> Alert:
        mb = size / 1_000_000
        where = f"committed in {sha[:10]}" if sha else "created in the working tree"
        return Alert(
            alert="bulky_artifact",
            severity="warning",
            key=f"bulky_artifact:{how}:{path}",
            iteration=index,
            focus=focus,
            message=(
                f"Bulky artifact {path} ({mb:.1f} MB) {where} in {label(index, number)}: "
                f"move it under .artifacts/ or link it externally" + (", and drop it from history." if sha else ".")
            ),
            detail={"path": path, "size": size, "sha": sha, "limit": self.settings.alerts.bulky_bytes},
        )

    def prompt_changed(self, ev: PromptChanged, index: int | None, number: int | None, focus: str | None) -> Alert:
        what = "deleted" if ev.deleted else f"+{ev.lines_added}/-{ev.lines_removed} lines"
        return Alert(
            alert="prompt_change",
            severity="info",
            key=f"prompt_change:{ev.path}:{ev.digest}",
            iteration=index,
            focus=focus,
            message=f"Prompt {ev.path} changed ({what}) in {label(index, number)}: scores from here on compare against a new prompt.",
            detail={"path": ev.path, "digest": ev.digest, "previous_digest": ev.previous_digest},
        )

    def ledger_read(self, ev: LedgerRead, index: int | None, number: int | None, focus: str | None) -> Alert | None:
        limit = self.settings.alerts.ledger_bloat_chars
        over = ev.chars > limit
        was = self.ledger_is_over.get(ev.path, False)
        self.ledger_is_over[ev.path] = over
        if not over or was:
            return None
        n = self.ledger_over[ev.path] = self.ledger_over.get(ev.path, 0) + 1
        return Alert(
            alert="ledger_bloat",
            severity="notice",
            key=f"ledger_bloat:{ev.path}:{n}",
            iteration=index,
            focus=focus,
            message=f"Ledger {ev.path} has grown to {ev.chars:,} characters (limit {limit:,}): archive finished items.",
            detail={"path": ev.path, "chars": ev.chars, "items": ev.items, "limit": limit},
        )

    def hub_opened(self, ev: HubOpened, index: int | None, number: int | None, focus: str | None) -> Alert | None:
        if ev.existing:
            return None
        initiative = ev.initiative or "(no initiative)"
        hubs = self.hubs_since_code.setdefault(initiative, [])
        if ev.path in hubs:
            return None
        hubs.append(ev.path)
        limit = self.settings.alerts.hub_sprawl
        if len(hubs) != limit + 1:
            return None
        return Alert(
            alert="hub_sprawl",
            severity="notice",
            key=f"hub_sprawl:{initiative}:{hubs[0]}",
            iteration=index,
            focus=focus,
            message=(
                f"Hub sprawl in {initiative}: {len(hubs)} new hubs with no code landed between them "
                f"(first {hubs[0]}): reuse one hub until a real milestone lands."
            ),
            detail={"initiative": initiative, "hubs": list(hubs)},
        )

    def code_landed(self) -> None:
        self.hubs_since_code.clear()

    def repeated_failure(self, index: int, number: int | None, focus: str | None, current: set[str], previous: tuple[int, set[str]] | None) -> Alert | None:
        """The same failing test or error reported by two consecutive engineer turns.

        `previous` is (index, signatures) of the last earlier iteration with an engineer turn.
        """
        if not current or previous is None:
            return None
        same = sorted(previous[1] & current)
        if not same:
            return None
        return Alert(
            alert="repeated_failure",
            severity="warning",
            key=f"repeated_failure:{index}",
            iteration=index,
            focus=focus,
            message=(
                f"The same failure in {label(index, number)} as in the engineer's turn before (#{previous[0]}): "
                f"{', '.join(same[:3])}. The fix being retried does not work: change the approach or mark the item blocked."
            ),
            detail={"signatures": same, "previous_iteration": previous[0]},
        )

    # ----------------------------------------------------------------- ledger status

    def status_changed(self, item_id: str, new: str | None, index: int) -> None:
        if self.status.get(item_id) != new:
            self.status[item_id] = new
            self.status_epoch[item_id] = index
            self.stagnant.pop(item_id, None)

    # ----------------------------------------------------------------- close-time rules

    def closed(self, c: ClosedIteration) -> list[Alert]:
        out: list[Alert] = []
        out += self._runaway(c)
        out += self._stale_brief(c)
        out += self._stagnation(c)
        return out

    def _runaway(self, c: ClosedIteration) -> list[Alert]:
        a = self.settings.alerts
        out: list[Alert] = []
        fast = (
            c.started_at is not None
            and c.next_started_at is not None
            and c.next_started_at - c.started_at < timedelta(seconds=a.runaway_seconds)
        )
        self.fast_run = self.fast_run + [c.index] if fast else []
        self.empty_run = self.empty_run + [c.index] if c.changed_nothing else []
        if len(self.fast_run) == a.runaway_count:
            out.append(Alert(
                alert="runaway_loop",
                severity="critical",
                key=f"runaway_loop:fast:{self.fast_run[0]}",
                iteration=c.index,
                focus=c.focus,
                message=(
                    f"Runaway loop: {a.runaway_count} iterations in a row each under {a.runaway_seconds:.0f} s "
                    f"(#{self.fast_run[0]}–#{c.index}): the agent may be failing instantly; stop the driver and read its log."
                ),
                detail={"iterations": list(self.fast_run)},
            ))
        if len(self.empty_run) == a.runaway_count:
            out.append(Alert(
                alert="runaway_loop",
                severity="critical",
                key=f"runaway_loop:empty:{self.empty_run[0]}",
                iteration=c.index,
                focus=c.focus,
                message=(
                    f"Runaway loop: {a.runaway_count} iterations in a row changed nothing at all "
                    f"(#{self.empty_run[0]}–#{c.index}): stop the driver before it burns more turns."
                ),
                detail={"iterations": list(self.empty_run)},
            ))
        return out

    def _stale_brief(self, c: ClosedIteration) -> list[Alert]:
        n = self.settings.alerts.stale_brief_iterations
        if c.brief_written or not c.brief_seen or not c.engineer_commits:
            self.stale_run = []
            return []
        self.stale_run.append(c.index)
        if len(self.stale_run) != n:
            return []
        return [Alert(
            alert="stale_brief",
            severity="warning",
            key=f"stale_brief:{c.brief_digest}:{self.stale_run[0]}",
            iteration=c.index,
            focus=c.focus,
            message=(
                f"Stale brief: input.md unchanged for {n} iterations (#{self.stale_run[0]}–#{c.index}) while the engineer "
                "keeps committing: the supervisor has dropped out; check that its turn still runs."
            ),
            detail={"iterations": list(self.stale_run), "brief_digest": c.brief_digest},
        )]

    def _stagnation(self, c: ClosedIteration) -> list[Alert]:
        if not c.focus or not c.landed or c.focus not in self.status:
            return []
        n = self.settings.alerts.stagnation_iterations
        run = self.stagnant.setdefault(c.focus, [])
        run.append(c.index)
        if len(run) != n:
            return []
        status = self.status.get(c.focus)
        return [Alert(
            alert="focus_stagnation",
            severity="warning",
            key=f"focus_stagnation:{c.focus}:{self.status_epoch.get(c.focus, 0)}",
            iteration=c.index,
            focus=c.focus,
            message=(
                f"Focus stagnation: {c.focus} has kept status '{status}' for {n} iterations while code landed "
                f"(#{run[0]}–#{c.index}): busywork around a blocked task? Check what the item waits on."
            ),
            detail={"status": status, "iterations": list(run)},
        )]

    def regression(self, drop_peak: tuple[float, int] | None, index: int, number: int | None, focus: str | None, rolling: float) -> Alert | None:
        """One alert per fall: re-armed once the rolling mean recovers half the alert's points."""
        a = self.settings.alerts
        if self.regression_trough is not None:
            self.regression_trough = min(self.regression_trough, rolling)
            if rolling < self.regression_trough + a.regression_points / 2:
                return None
            self.regression_trough = None
        if drop_peak is None or drop_peak[0] < a.regression_points:
            return None
        drop, peak = drop_peak
        self.regression_trough = rolling
        return Alert(
            alert="score_regression",
            severity="warning",
            key=f"score_regression:{index}",
            iteration=index,
            focus=focus,
            message=(
                f"Score regression: the rolling mean fell {drop:.0f} points to {rolling:.0f} within "
                f"{a.regression_window} iterations (peak at #{peak}): compare the briefs and any prompt change since."
            ),
            detail={"drop": round(drop, 1), "peak_index": peak, "rolling_mean": round(rolling, 1)},
        )

    # ----------------------------------------------------------------- time-based

    def stalled(
        self,
        now: datetime,
        baton: BatonChanged | None,
        committed_since: bool,
        last_event_at: datetime | None,
        index: int | None,
        number: int | None,
        focus: str | None,
    ) -> list[Alert]:
        out: list[Alert] = []
        if baton is None:
            return out
        status = (baton.status or "").lower()
        finished = any(w in status for w in ("complete", "done", "stopped", "idle"))
        lease = baton.lease_expires_at
        if lease is not None and not finished and now > lease:
            # "Since" by arrival, not by clock: commit times are the author's, the baton's the watcher's.
            if not committed_since:
                out.append(Alert(
                    alert="stalled_loop",
                    severity="warning",
                    key=f"stalled_loop:lease:{lease.isoformat()}",
                    iteration=index,
                    focus=focus,
                    message=(
                        f"Stalled loop: the baton's lease expired at {lease.isoformat()} with no new commit "
                        f"(expected actor {baton.expected_actor or '?'}, status {baton.status or '?'}): check that the driver still runs."
                    ),
                    detail={"lease_expires_at": lease.isoformat(), "expected_actor": baton.expected_actor, "status": baton.status},
                ))
        quiet = self.settings.alerts.stalled_seconds
        if "running" in status and last_event_at is not None and (now - last_event_at).total_seconds() > quiet:
            out.append(Alert(
                alert="stalled_loop",
                severity="warning",
                key=f"stalled_loop:silent:{last_event_at.isoformat()}",
                iteration=index,
                focus=focus,
                message=(
                    f"Stalled loop: nothing has happened since {last_event_at.isoformat()} "
                    f"({(now - last_event_at).total_seconds() / 60:.0f} min) while the baton says '{baton.status}': "
                    "the agent may hang; check its process."
                ),
                detail={"last_event": last_event_at.isoformat(), "status": baton.status},
            ))
        return out


def no_loop_markers(index: int) -> Alert:
    return Alert(
        alert="no_loop_markers",
        severity="info",
        key="no_loop_markers",
        iteration=index,
        message=(
            "No loop markers found (no supervisor or driver commits, iteration tags or baton): every commit is scored "
            "as the engineer's, and a quiet gap between bursts of commits ends an iteration."
        ),
    )
