"""`loopmon gate`: may the loop start its next turn? For a loop driver to call between turns.

Exit statuses (a driver can tell them apart):

    0  go on
    2  usage error (bad arguments, no store)
    3  dwell: a dwell tier at or above --max-tier is active (on any focus, the given
       --focus, or across all foci), unless the open iteration has landed code since
    4  git state broken: a rebase or merge in progress, or a stale index.lock
    5  stalled: the baton's lease ran out with no commit since, or the monitor hears
       nothing from a loop whose baton says it is running

When several hold, the status is the first of 4, 5, 3 (the git state blocks the next
turn outright; a stall means nobody is driving; dwell is a judgement on the work).
Every reason is printed to stderr, and with --json the verdict is a JSON object on
stdout.

The dwell and stall checks read the store; the git state is read live from the
repository's `.git` when the repository is at hand (the same checks as the git-state
collector), else from the last git-state events in the store.
"""

from __future__ import annotations

import json
import re
import sqlite3
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from monitor.config import Settings
from monitor.dwell import DwellTracker
from monitor.query import GLOBAL_FOCUS, QueryError, load_dwell, parse_time, snapshot

EXIT_GO = 0
EXIT_DWELL = 3
EXIT_GIT_STATE = 4
EXIT_STALLED = 5
PRECEDENCE = (EXIT_GIT_STATE, EXIT_STALLED, EXIT_DWELL)
CHECK_NAMES = {EXIT_DWELL: "dwell", EXIT_GIT_STATE: "git_state", EXIT_STALLED: "stalled"}

# Git states that stop a turn; a detached HEAD alone does not (a rebase shows as rebase-*).
BROKEN_GIT_STATES = ("rebase-merge", "rebase-apply", "merge", "index-lock-stale")
# Baton statuses of a loop that is not running.
_IDLE_STATUS = re.compile(r"^(complete|completed|done|stopped|idle|finished|paused)\b", re.IGNORECASE)


@dataclass
class Reason:
    check: str  # dwell | git_state | stalled
    status: int
    message: str
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class Verdict:
    repo: str
    reasons: list[Reason]

    @property
    def status(self) -> int:
        found = {r.status for r in self.reasons}
        return next((s for s in PRECEDENCE if s in found), EXIT_GO)

    def to_json(self) -> str:
        return json.dumps({
            "repo": self.repo, "status": self.status, "go": self.status == EXIT_GO,
            "check": CHECK_NAMES.get(self.status), "reasons": [r.__dict__ for r in self.reasons],
        }, ensure_ascii=False, default=str)


def check_max_tier(max_tier: str, settings: Settings) -> int:
    """The dwell value at which `max_tier` starts; an unknown tier is a usage error."""
    tiers = settings.dwell.tiers
    if str(max_tier) not in tiers:
        names = ", ".join(sorted(tiers, key=lambda t: tiers[t]))
        raise QueryError(f"--max-tier {max_tier}: unknown tier; the tiers are {names}")
    return tiers[str(max_tier)]


def broken_streaks(conn: sqlite3.Connection, repo: str, settings: Settings) -> set[str]:
    """Dwell keys the open iteration has already reset by landing code.

    Dwell counts closed iterations only, and an iteration closes when the next one
    opens; between the engineer's turn and the next supervisor turn (when a driver
    calls the gate) the stored dwell still holds the streak that the turn just broke.
    """
    row = conn.execute("SELECT provisional, focus, code_lines FROM iterations WHERE repo = ? ORDER BY idx DESC LIMIT 1",
                       (repo,)).fetchone()
    if row is None or not row["provisional"] or (row["code_lines"] or 0) < settings.dwell.min_code_lines:
        return set()
    return {GLOBAL_FOCUS} | ({row["focus"]} if row["focus"] else set())


def dwell_reasons(conn: sqlite3.Connection, repo: str, settings: Settings, limit: int,
                  focus: str | None) -> list[Reason]:
    """Foci (and the global count) whose active tier starts at or above `limit`."""
    reasons = []
    tier_of = DwellTracker(settings.dwell).tier_of
    reset = broken_streaks(conn, repo, settings)
    for d in load_dwell(conn, repo):
        if focus is not None and d.focus not in (focus, GLOBAL_FOCUS):
            continue
        if d.focus in reset:
            continue
        tier = d.tier if d.tier in settings.dwell.tiers else tier_of(d.value)
        if tier is None or settings.dwell.tiers[tier] < limit:
            continue
        where = "across all foci" if d.focus == GLOBAL_FOCUS else f"on {d.focus}"
        reasons.append(Reason("dwell", EXIT_DWELL,
                              f"dwell {d.value} {where} (tier {tier}): {d.value} iterations in a row landed no "
                              "production or test change; land code or change focus before the next turn",
                              {"focus": d.focus, "value": d.value, "tier": tier, "iterations": d.iterations}))
    return reasons


def live_git_state(root: Path, settings: Settings) -> dict[str, tuple[bool, str]] | None:
    """The repository's git state read now, as the git-state collector reads it (None: not a repo here)."""
    from collectors.gitrepo import git_dir
    from collectors.gitstate import GitStateCollector

    if not git_dir(root).exists():
        return None
    return GitStateCollector(root, settings, lambda payload, time: None)._observe()


def stored_git_state(conn: sqlite3.Connection, repo: str) -> dict[str, tuple[bool, str]]:
    """The last git-state event of each state in the store."""
    states: dict[str, tuple[bool, str]] = {}
    for r in conn.execute(
        """SELECT json_extract(envelope, '$.payload.state') AS state,
                  json_extract(envelope, '$.payload.active') AS active,
                  json_extract(envelope, '$.payload.detail') AS detail
           FROM events WHERE repo = ? AND kind = 'git_state_changed' ORDER BY time, id""", (repo,)):
        states[r["state"]] = (bool(r["active"]), r["detail"] or "")
    return states


def git_reasons(states: dict[str, tuple[bool, str]], live: bool) -> list[Reason]:
    source = "in .git now" if live else "as last recorded in the store"
    return [Reason("git_state", EXIT_GIT_STATE,
                   f"git state broken: {state}{f' ({detail})' if detail else ''} {source}; "
                   "finish or abort it before the next turn", {"state": state, "live": live})
            for state, (active, detail) in states.items() if active and state in BROKEN_GIT_STATES]


def stall_reasons(conn: sqlite3.Connection, repo: str, settings: Settings, now: datetime) -> list[Reason]:
    """The baton says the loop runs, but its lease ran out with no commit since, or the monitor hears nothing."""
    row = conn.execute("SELECT baton_status, lease_expires_at, baton_updated FROM repos WHERE id = ?",
                       (repo,)).fetchone()
    if row is None or not row["baton_status"] or _IDLE_STATUS.match(row["baton_status"]):
        return []
    status = row["baton_status"]
    reasons = []
    lease = parse_time(row["lease_expires_at"])
    if lease is not None and lease < now:
        last_commit = parse_time(conn.execute("SELECT max(committed_at) FROM commits WHERE repo = ? AND orphaned = 0",
                                              (repo,)).fetchone()[0])
        renewed = parse_time(row["baton_updated"])
        if (last_commit is None or last_commit <= lease) and (renewed is None or renewed <= lease):
            age = _age(now - lease)
            reasons.append(Reason("stalled", EXIT_STALLED,
                                  f"stalled: the baton's lease expired {age} ago ({lease:%Y-%m-%d %H:%M:%S} UTC) "
                                  f"with no commit since, baton status {status!r}",
                                  {"lease_expires_at": lease.isoformat(), "baton_status": status}))
    quiet = timedelta(seconds=settings.alerts.stalled_seconds)
    heard = parse_time(conn.execute(
        "SELECT max(last_heartbeat) FROM streams WHERE repo = ? AND final = 0", (repo,)).fetchone()[0])
    if not reasons and heard is not None and now - heard < quiet:
        # The monitor is alive: silence from the loop itself is a fact, not a monitor outage.
        # Newest first along the (repo, time) index: stops at the first event from the loop.
        row = conn.execute("SELECT time FROM events WHERE repo = ? AND source NOT IN ('scorer', 'bus') "
                           "ORDER BY time DESC LIMIT 1", (repo,)).fetchone()
        last = parse_time(row[0]) if row else None
        if last is not None and now - last > quiet:
            reasons.append(Reason("stalled", EXIT_STALLED,
                                  f"stalled: nothing from the loop for {_age(now - last)} while its baton says "
                                  f"{status!r}", {"last_event": last.isoformat(), "baton_status": status}))
    return reasons


def _age(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds / 3600:.1f} h"


def evaluate(conn: sqlite3.Connection, repo: str, settings: Settings, *, focus: str | None = None,
             max_tier: str = "3", root: Path | None = None, now: datetime | None = None) -> Verdict:
    """Every reason the loop should not start its next turn (none: go on)."""
    limit = check_max_tier(max_tier, settings)
    now = now or datetime.now(timezone.utc)
    live = live_git_state(root, settings) if root is not None else None
    with snapshot(conn):
        reasons = git_reasons(live if live is not None else stored_git_state(conn, repo), live is not None)
        reasons += stall_reasons(conn, repo, settings, now)
        reasons += dwell_reasons(conn, repo, settings, limit, focus)
    return Verdict(repo, reasons)
