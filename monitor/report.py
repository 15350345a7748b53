"""`loopmon report`: the iteration audit of shared/seed, written from the store for any window.

The sections follow the hand-written audit: executive summary, iteration-by-iteration
scores with their reasons and key changes, the ASCII aggregate plot, inflection
points and productivity patterns, dwell and git-state findings, and the prompt
changes inside the window with before/after figures where one splits it. Every
figure comes from the store's rows (`iterations`, `commits`, `commit_files`,
`dwell`, `alerts`, `events`), read in one snapshot.

Strings from the watched repo (commit subjects, paths, alert messages) are data:
they go into code spans or are escaped, so they cannot change the Markdown around them.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from monitor.config import Settings
from monitor.scores import Rolling, bucket_of
from monitor.query import (
    CODE_CLASSES,
    GLOBAL_FOCUS,
    IterationRow,
    PathChange,
    QueryError,
    load_dwell,
    load_iterations,
    mean,
    median,
    parse_json,
    parse_time,
    path_changes,
    snapshot,
    stored_time,
)

KEY_CHANGES_SHOWN = 8
PLOT_MAX_COLUMNS = 60
FLAT_SLOPE = 0.5  # points per iteration below which the trend is called flat
NON_CODE_GROUPS = (  # path class -> how the audit names it, in the order listed
    ("docs", "Documentation"), ("plans", "Plans"), ("hub", "Evidence hub"), ("ledger", "Ledger"),
    ("brief", "Brief"), ("memory", "Supervisor memory"), ("baton", "Baton"), ("prompt", "Prompt"),
    ("artifact", "Artifact"), ("other", "Other"),
)


# --------------------------------------------------------------------------- Markdown safety


def md_code(text: str) -> str:
    """Text as an inline code span that no character inside can close early."""
    text = " ".join(str(text).split("\n"))
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") or not text.strip() else ""
    return f"{fence}{pad}{text}{pad}{fence}"


_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()<>#+!|~])")


def md_text(text: str) -> str:
    """Text escaped so Markdown shows it as written (one line)."""
    return _MD_SPECIAL.sub(r"\\\1", " ".join(str(text).split()))


def num(value: float) -> str:
    """51.3, 62 (no trailing .0)."""
    value = round(float(value), 1)
    return str(int(value)) if value == int(value) else f"{value:.1f}"


# --------------------------------------------------------------------------- data


@dataclass
class CommitInfo:
    sha: str
    subject: str
    role: str | None
    committed_at: datetime | None
    tests_status: str | None
    tests_raw: str | None
    evidence: dict[str, Any]


@dataclass
class PromptChange:
    """A prompt file that changed: from a commit that touched it, or seen live in the working tree."""

    path: str
    time: datetime | None
    insertions: int
    deletions: int
    sha: str | None = None
    subject: str | None = None
    created: bool = False  # the file's first appearance: nothing to compare with


@dataclass
class ReportData:
    """Everything the report shows, read from the store in one snapshot."""

    repo: str
    branch: str | None
    settings: Settings
    history: list[IterationRow]  # every iteration of the repo, for rolling means
    window: list[IterationRow]
    starts: dict[int, datetime | None]  # idx -> when the iteration began
    changes: dict[int, list[PathChange]]  # idx -> paths its commits touched
    commits: dict[str, CommitInfo]
    dwell: list[Any]
    alerts: list[dict[str, Any]]  # alerts raised for window iterations (or in its time span)
    git_events: list[dict[str, Any]]
    prompt_changes: list[PromptChange]  # inside the window
    prompt_before: PromptChange | None  # the latest one before the window

    @property
    def as_of(self) -> datetime | None:
        """The latest activity the store knows of: a report of the same store reads the same."""
        times = [t for it in self.history for t in (it.ended_at, it.started_at) if t is not None]
        return max(times) if times else None

    @property
    def labels(self) -> dict[int, str]:
        return {i.idx: i.label for i in self.history}

    def bucket_of(self, score: float) -> str:
        return bucket_of(int(round(score)), self.settings)

    def rolling(self) -> Rolling:
        """The scorer's rolling figures, replayed over every final iteration of the repo."""
        rolling = Rolling(window=self.settings.scores.rolling_window)
        for it in self.history:
            if not it.provisional:
                rolling.add(it.idx, it.number, it.aggregate, it.bucket, self.settings)
        return rolling

    def window_rolling(self) -> list[float]:
        """The rolling mean after each final iteration of the window."""
        rolling = self.rolling()
        at = dict(zip(rolling.indexes, rolling.rolling))
        return [at[it.idx] for it in self.window if it.idx in at]


def select_window(history: list[IterationRow], first: int | None, last: int | None) -> list[IterationRow]:
    """The iterations from the first to the last whose number lies in [first, last].

    Numbers are the loop's own (loopmon's index where the loop gives none). The window
    is a contiguous run of iterations, so unnumbered ones and repeated numbers (a driver
    restart) inside it stay in it.
    """
    if not history:
        raise QueryError("no scored iterations in the store yet (run `loopmon backfill` or `loopmon run` first)")
    inside = [k for k, it in enumerate(history)
              if (first is None or it.key >= first) and (last is None or it.key <= last)]
    if not inside:
        keys = [i.key for i in history]
        raise QueryError(f"--from/--to: no iteration between {first} and {last} "
                         f"(the store has iterations {min(keys)}-{max(keys)})")
    return history[inside[0] : inside[-1] + 1]


def _commit_infos(conn: sqlite3.Connection, repo: str, shas: list[str]) -> dict[str, CommitInfo]:
    out: dict[str, CommitInfo] = {}
    for i in range(0, len(shas), 500):
        chunk = shas[i : i + 500]
        sql = (f"SELECT sha, subject, role, committed_at, tests_status, tests_raw, evidence FROM commits "
               f"WHERE repo = ? AND sha IN ({','.join('?' * len(chunk))})")
        for r in conn.execute(sql, (repo, *chunk)):
            out[r["sha"]] = CommitInfo(r["sha"], r["subject"] or "", r["role"], parse_time(r["committed_at"]),
                                       r["tests_status"], r["tests_raw"], parse_json(r["evidence"], {}) or {})
    return out


def _starts(history: list[IterationRow], commits: dict[str, CommitInfo]) -> dict[int, datetime | None]:
    """When each iteration began: its own start, else its first commit."""
    out: dict[int, datetime | None] = {}
    for it in history:
        times = [commits[s].committed_at for s in it.commits if s in commits and commits[s].committed_at]
        out[it.idx] = it.started_at or (min(times) if times else None)
    return out


def _prompt_changes(conn: sqlite3.Connection, repo: str) -> list[PromptChange]:
    """Every prompt change the store knows: committed ones, then live edits no commit accounts for."""
    found = [
        PromptChange(r["path"], parse_time(r["committed_at"]), r["insertions"] or 0, r["deletions"] or 0,
                     r["sha"], r["subject"])
        for r in conn.execute(
            """SELECT f.path, f.insertions, f.deletions, c.sha, c.subject, c.committed_at
               FROM commit_files f JOIN commits c ON c.repo = f.repo AND c.sha = f.sha
               WHERE f.repo = ? AND f.path_class = 'prompt' AND c.orphaned = 0
               ORDER BY c.committed_at, f.path""", (repo,))
    ]
    seen: set[str] = set()
    for p in found:
        p.created = p.path not in seen and p.deletions == 0
        seen.add(p.path)
    committed = {(p.path, p.insertions, p.deletions) for p in found}
    for r in conn.execute("SELECT time, envelope FROM events WHERE repo = ? AND kind = 'prompt_changed' ORDER BY time",
                          (repo,)):
        p = json.loads(r["envelope"])["payload"]
        # A live edit that was later committed is the same change: keep the commit.
        if (p["path"], p.get("lines_added", 0), p.get("lines_removed", 0)) in committed:
            continue
        found.append(PromptChange(p["path"], parse_time(r["time"]), p.get("lines_added", 0), p.get("lines_removed", 0)))
    found.sort(key=lambda c: (c.time or datetime.min.replace(tzinfo=timezone.utc), c.path))
    return found


def gather(conn: sqlite3.Connection, repo: str, settings: Settings, first: int | None = None,
           last: int | None = None) -> ReportData:
    """Read what the report needs from the store, in one consistent snapshot."""
    with snapshot(conn):
        history = load_iterations(conn, repo)
        window = select_window(history, first, last)
        shas = list(dict.fromkeys(s for it in history for s in it.commits))
        commits = _commit_infos(conn, repo, shas)
        changes = {it.idx: path_changes(conn, repo, it.commits) for it in window}
        starts = _starts(history, commits)
        span_start, span_end = _span(window, history, starts)
        indexes = {it.idx for it in window}
        alerts = [dict(r) for r in conn.execute("SELECT * FROM alerts WHERE repo = ? ORDER BY time, key", (repo,))]
        alerts = [a for a in alerts if a["iteration"] in indexes
                  or (a["iteration"] is None and _within(parse_time(a["time"]), span_start, span_end))]
        git_events = []
        for r in conn.execute("SELECT time, envelope FROM events WHERE repo = ? AND kind = 'git_state_changed' "
                              "AND time >= ? ORDER BY time", (repo, stored_time(span_start) if span_start else "")):
            t = parse_time(r["time"])
            if _within(t, span_start, span_end):
                git_events.append({"time": t, **json.loads(r["envelope"])["payload"]})
        prompts = _prompt_changes(conn, repo)
        window_shas = {s for it in window for s in it.commits}
        inside = [p for p in prompts if (p.sha and p.sha in window_shas) or _within(p.time, span_start, span_end)]
        before = [p for p in prompts if p not in inside and p.time and span_start and p.time < span_start]
        branch_row = conn.execute("SELECT branch FROM repos WHERE id = ?", (repo,)).fetchone()
        return ReportData(
            repo=repo, branch=branch_row["branch"] if branch_row else None, settings=settings, history=history,
            window=window, starts=starts, changes=changes, commits=commits, dwell=load_dwell(conn, repo),
            alerts=alerts, git_events=git_events, prompt_changes=inside, prompt_before=before[-1] if before else None,
        )


def _span(window: list[IterationRow], history: list[IterationRow],
          starts: dict[int, datetime | None]) -> tuple[datetime | None, datetime | None]:
    """The window's time span: from its first iteration's start to the next iteration's start."""
    start = starts.get(window[0].idx)
    after = [i for i in history if i.idx > window[-1].idx]
    end = starts.get(after[0].idx) if after else None
    return start, end


def _within(t: datetime | None, start: datetime | None, end: datetime | None) -> bool:
    if t is None:
        return False
    return (start is None or t >= start) and (end is None or t < end)


# --------------------------------------------------------------------------- the plot


def ascii_plot(labels: list[str], values: list[float]) -> str:
    """Aggregate scores as a column chart: `*` at each score rounded to the nearest ten, `|` below it.

    More iterations than PLOT_MAX_COLUMNS are shown as the mean of equal groups, each
    labelled with its first iteration.
    """
    if len(values) > PLOT_MAX_COLUMNS:
        size = -(-len(values) // PLOT_MAX_COLUMNS)
        groups = [(labels[i], values[i : i + size]) for i in range(0, len(values), size)]
        labels = [g[0] for g in groups]
        values = [sum(g[1]) / len(g[1]) for g in groups]
    width = max(4, *(len(str(label)) for label in labels)) + 1
    levels = [plot_level(v) for v in values]
    lines = []
    for row in range(100, -1, -10):
        cells = []
        fill = "_" if row == 0 else " "
        for level in levels:
            mark = "*" if level == row else "|" if level > row else fill
            cells.append(fill * (width - 1) + mark)
        lines.append(f"{row:>3}|" + "".join(cells).rstrip())
    lines.append("    " + "".join(str(label).rjust(width) for label in labels))
    return "\n".join(lines)


def plot_level(value: float) -> int:
    """The plot row of a score: the nearest multiple of ten (halves round up)."""
    return min(100, max(0, int(float(value) / 10 + 0.5) * 10))


# --------------------------------------------------------------------------- sections


def _labels(its: list[IterationRow]) -> str:
    return ", ".join(str(i.label) for i in its)


def _trend(data: ReportData) -> str:
    """A sentence on the rolling mean over the window."""
    window_n = data.settings.scores.rolling_window
    inside = data.window_rolling()
    if not inside:
        return "none yet: no iteration of the window is final"
    # The scorer's trend is the slope of the rolling mean; here over the window's values.
    s = Rolling(window=len(inside), rolling=list(inside)).trend()
    direction = "flat" if abs(s) < FLAT_SLOPE else "upward" if s > 0 else "downward"
    half = len(data.window) // 2
    halves = ""
    if half:
        first = mean([i.aggregate for i in data.window[:half]])
        second = mean([i.aggregate for i in data.window[half:]])
        halves = f"; mean {num(first)} in the first half, {num(second)} in the second"
    return (f"{direction}: rolling mean (last {window_n}) {num(inside[0])} → {num(inside[-1])}, "
            f"slope {s:+.1f} points per iteration{halves}")


def executive_summary(data: ReportData) -> list[str]:
    w = data.window
    s = data.settings.scores
    aggs = [i.aggregate for i in w]
    by = {b: [i for i in w if i.bucket == b] for b in ("high", "medium", "low")}
    foci = Counter(i.focus for i in w if i.focus)
    focus = (f"{md_code(foci.most_common(1)[0][0])} ({foci.most_common(1)[0][1]} of {len(w)} iterations)"
             if foci else "none recorded")
    provisional = [i for i in w if i.provisional]
    trend = _trend(data)

    def bucket_line(name: str, title: str, edges: str) -> str:
        its = by[name]
        listed = f" ({_labels(its)})" if its else ""
        return f"- **{title} ({edges}):** {len(its)} out of {len(w)}{listed}"

    out = [
        "## Executive Summary", "",
        f"**Analysis Period:** Iterations {w[0].label}-{w[-1].label} ({len(w)} iterations)  ",
        f"**Branch:** {md_code(data.branch) if data.branch else 'unknown'}  ",
        f"**Repository:** {md_code(data.repo)}  ",
        f"**Primary Focus:** {focus}  ",
        "**Source:** the loopmon store" + (f", as of {data.as_of:%Y-%m-%d %H:%M} UTC" if data.as_of else "")
        + (f"; {len(provisional)} iteration(s) still provisional ({_labels(provisional)})" if provisional else ""),
        "",
        "**Aggregate Performance:**",
        bucket_line("high", "High-value iterations", f"≥{s.high}"),
        bucket_line("medium", "Medium-value", f"{s.medium}-{s.high - 1}"),
        bucket_line("low", "Low-value", f"<{s.medium}"),
        f"- **Mean aggregate score:** {num(mean(aggs))}/100",
        f"- **Median aggregate score:** {num(median(aggs))}/100",
        f"- **Trend:** {trend}",
    ]
    return out


def _key_change_lines(it: IterationRow, changes: list[PathChange]) -> list[str]:
    code = [c for c in changes if c.path_class in CODE_CLASSES]
    lines = [f"- {md_code(str(c))}" for c in code[:KEY_CHANGES_SHOWN]]
    if len(code) > KEY_CHANGES_SHOWN:
        lines.append(f"- … and {len(code) - KEY_CHANGES_SHOWN} more production/test paths")
    if not code:
        lines.append("- No production/test code")
        for cls, title in NON_CODE_GROUPS:
            paths = [c for c in changes if c.path_class == cls]
            if paths:
                shown = ", ".join(md_code(str(c)) for c in paths[:3])
                more = f" and {len(paths) - 3} more" if len(paths) > 3 else ""
                lines.append(f"- {title}: {shown}{more}")
    if it.files_touched or it.insertions or it.deletions:
        lines.append(f"- **Total:** {it.files_touched} files touched (+{it.insertions}/-{it.deletions} lines)")
    return lines


def _tests_note(c: CommitInfo) -> str:
    if not c.tests_status or c.tests_status == "absent":
        return ""
    raw = f" {md_code(c.tests_raw)}" if c.tests_raw and c.tests_raw not in c.subject else ""
    return f" (tests {c.tests_status.replace('_', ' ')}{raw})"


def is_git_failure(it: IterationRow) -> bool:
    return bool(it.override) and "git" in (it.override or "")


def assessment(data: ReportData, it: IterationRow) -> str:
    """One sentence on what the iteration amounted to, from its figures."""
    min_lines = data.settings.dwell.min_code_lines
    if is_git_failure(it):
        return "Environment blocker: a git-state failure and no code landed."
    if it.code_lines < min_lines:
        return f"Planning or evidence only: {it.code_lines} production/test lines landed."
    tests = "with tests" if _tests_moved(data, it) else "without test changes"
    failed = any(data.commits[s].tests_status == "failed" for s in it.commits if s in data.commits)
    outcome = "; tests reported failing" if failed else "; passing tests reported" if _passed_tests(data, it) else ""
    word = {"high": "Strong", "medium": "Partial", "low": "Weak"}[it.bucket if it.bucket in ("high", "medium") else "low"]
    return f"{word}: {it.code_lines} production/test lines in {it.files_touched} files, {tests}{outcome}."


def iteration_section(data: ReportData, it: IterationRow) -> list[str]:
    head = (f"### **Iter {it.label}** — Summary: {it.summary}/100 | Code-diff: {it.code_diff}/100 | "
            f"Semantic: {it.semantic}/100 | **Aggregate: {it.aggregate}/100**")
    facts = [f"**Bucket:** {it.bucket}", f"**Focus:** {md_code(it.focus) if it.focus else 'none'}",
             f"**Index:** {it.idx}", f"**Evidence:** {it.evidence or 'none'}"]
    if it.provisional:
        facts.append("**provisional**")
    out = [head, " · ".join(facts) + "  "]
    if it.override:
        out.append(f"**Override:** {md_text(it.override)}  ")
    reasons = sorted(it.reasons, key=lambda r: -abs(float(r.get("delta", 0) or 0)))
    out += ["", "**Rationale:**" + ("" if reasons else " no reasons recorded")]
    out += [f"- {md_text(r.get('score', ''))} {float(r.get('delta', 0) or 0):+g}: {md_text(r.get('text', ''))}"
            for r in reasons]
    out += ["", "**Key changes:**"]
    out += _key_change_lines(it, data.changes.get(it.idx, []))
    commits = [data.commits[s] for s in it.commits if s in data.commits]
    if commits:
        out += ["", "**Commits:**"]
        out += [f"- {md_code(c.sha[:8])} {c.role or 'other'}: {md_code(c.subject)}{_tests_note(c)}" for c in commits]
    out += ["", f"**Assessment:** {assessment(data, it)}", "", "---", ""]
    return out


def plot_section(data: ReportData) -> list[str]:
    labels = [i.label for i in data.window]
    note = []
    if len(labels) > PLOT_MAX_COLUMNS:
        note = ["", f"({len(labels)} iterations: each column is the mean of a group, labelled by its first iteration.)"]
    return ["## ASCII Aggregate Score Plot", "", "```", ascii_plot(labels, [i.aggregate for i in data.window]), "```",
            *note]


def inflection_points(data: ReportData) -> list[dict[str, Any]]:
    """The scorer's inflections (the rolling mean crossing a bucket edge) at iterations of the window."""
    indexes = {it.idx for it in data.window}
    return [p for p in data.rolling().inflections if p["index"] in indexes]


def trend_section(data: ReportData) -> list[str]:
    s = data.settings.scores
    out = ["## Trend Analysis", "", "### Inflection Points", ""]
    points = inflection_points(data)
    inside = data.window_rolling()
    if not points and inside:
        out.append(f"None: the rolling mean (last {s.rolling_window}) stayed {data.bucket_of(inside[0])} "
                   f"throughout ({num(min(inside))}-{num(max(inside))}).")
    by_idx = {it.idx: it for it in data.window}
    order = ("low", "medium", "high")
    for n, p in enumerate(points, 1):
        it = by_idx[p["index"]]
        went = "up" if order.index(p["to"]) > order.index(p["from"]) else "down"
        out.append(f"{n}. **Iter {it.label}:** rolling mean crossed {went} from {p['from']} into {p['to']} "
                   f"(now {num(p['rolling_mean'])}); this iteration scored {it.aggregate}.")
    jumps = [(b.aggregate - a.aggregate, a, b) for a, b in zip(data.window, data.window[1:])]
    if jumps:
        up = max(jumps, key=lambda j: j[0])
        down = min(jumps, key=lambda j: j[0])
        out.append("")
        if up[0] > 0:
            out.append(f"Largest rise: Iter {up[1].label} → {up[2].label} (+{up[0]}).  ")
        if down[0] < 0:
            out.append(f"Largest fall: Iter {down[1].label} → {down[2].label} ({down[0]}).")
    out += ["", "### Productivity Patterns", ""]
    out += _pattern(data, [i for i in data.window if i.bucket == "high"], f"High Productivity (Aggregate ≥{s.high})")
    out += _pattern(data, [i for i in data.window if i.bucket == "low"], f"Low Productivity (Aggregate <{s.medium})")
    return out


def _passed_tests(data: ReportData, it: IterationRow) -> bool:
    return any(data.commits[s].tests_status == "passed" for s in it.commits if s in data.commits)


def _tests_moved(data: ReportData, it: IterationRow) -> bool:
    return any(c.path_class == "test" for c in data.changes.get(it.idx, []))


def _pattern(data: ReportData, its: list[IterationRow], title: str) -> list[str]:
    out = [f"**{title}:**"]
    if not its:
        return out + ["- Iterations: none", ""]
    out.append(f"- Iterations: {_labels(its)}")
    out.append(f"- Code landed: mean {num(mean([i.code_lines for i in its]))} production/test lines per iteration")
    out.append(f"- Tests moved with the code in {sum(_tests_moved(data, i) for i in its)} of {len(its)}; "
               f"passing tests reported in {sum(_passed_tests(data, i) for i in its)} of {len(its)}")
    foci = Counter(i.focus or "none" for i in its)
    out.append("- Foci: " + ", ".join(f"{md_code(f)} ×{n}" for f, n in foci.most_common()))
    causes = Counter()
    for it in its:
        for cause in _low_causes(data, it):
            causes[cause] += 1
    if causes and title.startswith("Low"):
        out.append("- Root causes: " + "; ".join(f"{c} ({n})" for c, n in causes.most_common()))
    out.append("")
    return out


def _low_causes(data: ReportData, it: IterationRow) -> list[str]:
    causes = []
    if is_git_failure(it):
        causes.append("git-state failure")
    elif it.code_lines < data.settings.dwell.min_code_lines:
        causes.append("no code landed (planning or evidence only)")
    kinds = {a["alert"] for a in data.alerts if a["iteration"] == it.idx}
    if any(k.startswith("dwell") for k in kinds):
        causes.append("dwell")
    if "git_state" in kinds and not is_git_failure(it):
        causes.append("git state")
    if any(data.commits[s].tests_status == "failed" for s in it.commits if s in data.commits):
        causes.append("tests failed")
    return causes


def dwell_git_section(data: ReportData) -> list[str]:
    labels = data.labels
    out = ["## Dwell and Git-State Findings", "", "### Dwell", ""]
    no_code = [i for i in data.window if i.code_lines < data.settings.dwell.min_code_lines]
    out.append(f"Iterations landing fewer than {data.settings.dwell.min_code_lines} production/test lines: "
               f"{len(no_code)} of {len(data.window)}" + (f" ({_labels(no_code)})" if no_code else "") + ".")
    if data.dwell:
        out += ["", "Dwell now (the store's current state, not limited to the window):", "",
                "| Focus | Dwell | Tier | Longest streak | Iterations making it up |", "| --- | ---: | --- | ---: | --- |"]
        for d in data.dwell:
            focus = "all foci (global)" if d.focus == GLOBAL_FOCUS else md_code(d.focus)
            its = ", ".join(labels.get(i, f"#{i}") for i in d.iterations) or "—"
            out.append(f"| {focus} | {d.value} | {d.tier or '—'} | {d.peak} | {its} |")
    dwell_alerts = [a for a in data.alerts if a["alert"].startswith("dwell")]
    out += ["", "Dwell alerts in the window:" if dwell_alerts else "No dwell alert in the window."]
    out += [_alert_line(a, labels) for a in dwell_alerts]
    out += ["", "### Git State", ""]
    git_alerts = [a for a in data.alerts if a["alert"] == "git_state"]
    overridden = [i for i in data.window if is_git_failure(i)]
    if not (git_alerts or overridden or data.git_events):
        out.append("No git-state failure seen in the window.")
    out += [_alert_line(a, labels) for a in git_alerts]
    for it in overridden:
        out.append(f"- Iter {it.label} scored {it.aggregate}: {md_text(it.override or '')}")
    for e in data.git_events:
        state = "appeared" if e.get("active") else "cleared"
        detail = f" ({md_text(e['detail'])})" if e.get("detail") else ""
        out.append(f"- {e['time']:%Y-%m-%d %H:%M:%S} {md_code(e.get('state', '?'))} {state}{detail}")
    others = [a for a in data.alerts if a not in dwell_alerts and a not in git_alerts]
    out += ["", "### Other Alerts", ""]
    if not others:
        out.append("None.")
    for kind, n in Counter(a["alert"] for a in others).most_common():
        first = next(a for a in others if a["alert"] == kind)
        out.append(f"- {md_code(kind)} ×{n}, first: {md_text(first['message'])}")
    return out


def _alert_line(a: dict[str, Any], labels: dict[int, str]) -> str:
    where = f"Iter {labels.get(a['iteration'], '#' + str(a['iteration']))}" if a["iteration"] is not None else a["time"][:19]
    focus = f" on {md_code(a['focus'])}" if a.get("focus") else ""
    return f"- {where}{focus} [{a['severity']}]: {md_text(a['message'])}"


def _figures(data: ReportData, its: list[IterationRow]) -> dict[str, str]:
    aggs = [i.aggregate for i in its]
    by = Counter(i.bucket for i in its)
    return {
        "Iterations": str(len(its)),
        "Mean aggregate": num(mean(aggs)) if its else "—",
        "Median aggregate": num(median(aggs)) if its else "—",
        "High / medium / low": f"{by['high']} / {by['medium']} / {by['low']}",
        "Iterations landing code": str(sum(1 for i in its if i.code_lines >= data.settings.dwell.min_code_lines)),
    }


def prompt_section(data: ReportData) -> list[str]:
    w = data.window
    out = ["## Prompt Evolution Analysis", "", f"### Prompt Changes Detected ({w[0].label}-{w[-1].label} Range)", ""]
    if not data.prompt_changes:
        out.append("No prompt change inside the window.")
        if data.prompt_before is not None:
            p = data.prompt_before
            out.append(f"The latest one before it: {_prompt_line(p)}.")
    for p in data.prompt_changes:
        its_after = _after(data, p)
        where = f", in effect from Iter {its_after[0].label}" if its_after else ", after the window's last iteration"
        out.append(f"- {_prompt_line(p)}{' (created)' if p.created else where}")
    out += ["", "### Pre/Post Statistical Analysis", ""]
    splitting = [(p, _after(data, p)) for p in data.prompt_changes if not p.created]
    splitting = [(p, after) for p, after in splitting if after and len(after) < len(w)]
    if not splitting:
        out.append("**Limitation:** no prompt change splits the window, so there is no before/after comparison "
                   "inside it" + (" (the prompts changed before it)." if data.prompt_before else "."))
        return out
    for p, after in splitting:
        before = [i for i in w if i not in after]
        fb, fa = _figures(data, before), _figures(data, after)
        out += [f"**{md_code(p.path)} changed before Iter {after[0].label}** "
                f"(Iter {before[0].label}-{before[-1].label} before, {after[0].label}-{after[-1].label} after):", "",
                "| | before | after |", "| --- | ---: | ---: |"]
        out += [f"| {k} | {fb[k]} | {fa[k]} |" for k in fb]
        out.append("")
    return out


def _after(data: ReportData, p: PromptChange) -> list[IterationRow]:
    """The window's iterations that began after the prompt change."""
    if p.time is None:
        return []
    return [i for i in data.window if (data.starts.get(i.idx) or p.time) > p.time]


def _prompt_line(p: PromptChange) -> str:
    when = f" at {p.time:%Y-%m-%d %H:%M}" if p.time else ""
    src = f" in commit {md_code(p.sha[:8])} {md_code(p.subject or '')}" if p.sha else " (seen in the working tree)"
    return f"{md_code(p.path)} +{p.insertions}/-{p.deletions} lines{when}{src}"


def findings_section(data: ReportData) -> list[str]:
    w = data.window
    min_lines = data.settings.dwell.min_code_lines
    coding = [i for i in w if i.code_lines >= min_lines]
    strengths, weaknesses = [], []
    if coding:
        tested = [i for i in coding if _tests_moved(data, i)]
        passed = [i for i in coding if _passed_tests(data, i)]
        line = (f"**Test discipline:** tests moved with the code in {len(tested)} of {len(coding)} code-landing "
                f"iterations; passing tests reported in {len(passed)}")
        (strengths if len(tested) * 2 >= len(coding) else weaknesses).append(line)
    idle = [i for i in w if i.code_lines < min_lines]
    if idle:
        weaknesses.append(f"**No code landed:** {len(idle)} of {len(w)} iterations ({round(100 * len(idle) / len(w))}%): "
                          f"{_labels(idle)}")
    partial = []
    for it in w:
        added = {f for s in it.commits if s in data.commits for f in data.commits[s].evidence.get("flags_added", [])}
        used = {f for s in it.commits if s in data.commits for f in data.commits[s].evidence.get("flags_consumed", [])}
        if added - used:
            partial.append((it, sorted(added - used)))
    for it, flags in partial:
        weaknesses.append(f"**Incomplete intermediate:** Iter {it.label} exposed "
                          f"{', '.join(md_code(f) for f in flags[:4])} without execution wiring")
    bulky = [a for a in data.alerts if a["alert"].startswith("bulky")]
    if bulky:
        weaknesses.append(f"**Artifact hygiene:** {len(bulky)} bulky artifact alert(s)")
    elif w:
        strengths.append("**Artifact hygiene:** no bulky artifact alert in the window")
    pos = {it.idx: k for k, it in enumerate(w)}
    for it in w:
        if is_git_failure(it) and pos[it.idx] + 1 < len(w):
            nxt = w[pos[it.idx] + 1]
            line = f"**Recovery:** after Iter {it.label} ({md_text(it.override)}), Iter {nxt.label} scored {nxt.aggregate}"
            (strengths if nxt.bucket != "low" else weaknesses).append(line)
    out = ["## Key Findings", "", "### Strengths", ""]
    out += [f"{n}. {s}" for n, s in enumerate(strengths, 1)] or ["None stood out."]
    out += ["", "### Weaknesses", ""]
    out += [f"{n}. {s}" for n, s in enumerate(weaknesses, 1)] or ["None stood out."]
    return out


def appendix(data: ReportData) -> list[str]:
    s = data.settings
    wts = s.scores.weights
    tiers = ", ".join(f"tier {name} at {v}" for name, v in sorted(s.dwell.tiers.items(), key=lambda kv: kv[1]))
    return [
        "## Appendix: Scoring Methodology", "",
        f"- **Summary** ({round(wts['summary'] * 100)}%): what the turn says it did: mapped tests named, artifacts "
        "given, tests reported passing, alignment with the focus.",
        f"- **Code-diff** ({round(wts['code_diff'] * 100)}%): production and test paths of every commit in the "
        "iteration (bookkeeping excluded): files touched, lines, tests moving with the code.",
        f"- **Semantic** ({round(wts['semantic'] * 100)}%): the diff hunks: symbols changed and exercised by tests, "
        "end-to-end wiring, weakened tests, reverts, bulky artifacts.",
        f"- **Aggregate:** the weighted sum, rounded; a git-state failure with no code sets it to "
        f"{s.scores.git_failure_score}; no production/test change caps it at {s.scores.no_code_cap}.",
        f"- **Buckets:** high ≥{s.scores.high}, medium {s.scores.medium}-{s.scores.high - 1}, low <{s.scores.medium}; "
        f"rolling mean over the last {s.scores.rolling_window} iterations.",
        f"- **Dwell:** consecutive iterations on a focus landing fewer than {s.dwell.min_code_lines} production/test "
        f"lines; {tiers}.",
    ]


def render(data: ReportData) -> str:
    """The report as Markdown."""
    w = data.window
    out = [f"# Iteration Analysis Audit Report: {md_text(data.branch or data.repo)} "
           f"(Iterations {w[0].label}-{w[-1].label})", ""]
    out += executive_summary(data) + ["", "---", "", "## Iteration-by-Iteration Scoring", ""]
    for it in w:
        out += iteration_section(data, it)
    out += plot_section(data) + ["", "---", ""]
    out += trend_section(data) + ["---", ""]
    out += dwell_git_section(data) + ["", "---", ""]
    out += prompt_section(data) + ["", "---", ""]
    out += findings_section(data) + ["", "---", ""]
    out += appendix(data)
    return "\n".join(out) + "\n"


def build_report(conn: sqlite3.Connection, repo: str, settings: Settings, first: int | None = None,
                 last: int | None = None, root: Path | None = None) -> str:
    """The audit of iterations `first`..`last` (the loop's numbers; both optional) as Markdown.

    `root`, the repository's folder when at hand, names the branch if no collector did.
    """
    if first is not None and last is not None and first > last:
        raise QueryError(f"--from {first} is after --to {last}")
    data = gather(conn, repo, settings, first, last)
    if data.branch is None and root is not None:
        from collectors.gitrepo import current_branch_and_head

        data.branch = current_branch_and_head(root)[0]
    return render(data)
