"""Small renderables that make up the live view, each built from a `RepoState`.

Everything that comes from a watched repo enters through `literal()`: a rich `Text`
with control characters made visible. Markup strings are never built from repo data,
so `[bold red]x[/]` in a commit message is shown as those characters.
"""

from __future__ import annotations

import re
from datetime import datetime

from rich.console import Console, ConsoleOptions, RenderableType, RenderResult
from rich.rule import Rule
from rich.segment import Segment
from rich.style import Style
from rich.table import Table
from rich.text import Text

from monitor.events import IterationScored
from sinks.view_state import BLOCKING_SEVERITIES, RepoState, aware

BUCKET_STYLE = {"high": "green", "medium": "yellow", "low": "red"}
SEVERITY_STYLE = {"info": "blue", "notice": "cyan", "warning": "yellow", "critical": "bold red"}
TIER_STYLE = {"1": "cyan", "1.5": "yellow", "2": "dark_orange", "3": "bold red"}
STOPPED_STATUSES = ("complete", "completed", "done", "stopped", "failed", "error", "blocked", "aborted", "halted")
STALL_ALERTS = ("stalled_loop", "stalled", "runaway_loop", "runaway")
LABEL = "bold"

# C0 controls (escape sequences start here), DEL, C1 controls and the bidi overrides
# that could make shown text read differently from what it is.
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def literal(value: object, style: str | Style = "", *, one_line: bool = True) -> Text:
    """Repo data as Text that shows exactly its characters: no markup, no terminal controls."""
    text = "" if value is None else str(value)
    if one_line:
        text = text.replace("\r\n", " ").replace("\n", " ").replace("\t", " ")
    text = _UNSAFE.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100 else f"\\u{ord(m.group()):04x}",
                       text)
    return Text(text, style=style, no_wrap=one_line, overflow="ellipsis", end="")


def line(*parts: Text | tuple[str, str] | str) -> Text:
    """Join Text parts (or (text, style) pairs of loopmon's own words) into one line."""
    out = Text(no_wrap=True, overflow="ellipsis", end="")
    for part in parts:
        if isinstance(part, Text):
            out.append_text(part)
        elif isinstance(part, tuple):
            out.append(part[0], style=part[1])
        else:
            out.append(part)
    return out


def _lines(lines: list[Text]) -> Text:
    """Several one-line Texts as one Text that never wraps."""
    out = Text("\n", no_wrap=True, overflow="ellipsis", end="").join(lines)
    out.no_wrap, out.overflow = True, "ellipsis"
    return out


def duration(seconds: float) -> str:
    """Compact human duration: 45s, 12m 3s, 3h 12m, 2d 4h."""
    s = int(abs(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 86400}d {s % 86400 // 3600}h"


def ago(when: datetime | None, now: datetime) -> str:
    if when is None:
        return "at an unknown time"
    delta = (now - aware(when)).total_seconds()
    return f"in {duration(delta)}" if delta < 0 else f"{duration(delta)} ago"


def section(title: str, detail: Text | None = None) -> Rule:
    """A one-line section heading (a rule costs one line where a panel costs two)."""
    t = Text(title, style="bold")
    if detail is not None:
        t.append(" ")
        t.append_text(detail)
    return Rule(t, align="left", style="grey37")


# --------------------------------------------------------------------------- header


def lease_text(state: RepoState, now: datetime) -> Text | None:
    b = state.baton
    if b is None or b.lease_expires_at is None:
        return None
    left = (aware(b.lease_expires_at) - now).total_seconds()
    if left >= 0:
        m, s = divmod(int(left), 60)
        style = "green" if left > 300 else "yellow"
        return line(("lease ", ""), (f"{m}:{s:02d}", style), (" left", ""))
    return line(("lease expired ", "bold red"), (duration(left) + " ago", "red"))


def header(state: RepoState, now: datetime, position: str = "") -> Text:
    """Repo, branch, iteration, expected actor, baton status and the lease countdown."""
    b = state.baton
    latest = max(state.iterations.values(), key=lambda it: it.index, default=None)
    iteration = b.iteration if b and b.iteration is not None else (latest.number if latest else None)
    top = line(("loopmon ", "bold cyan"), literal(state.repo, "bold"))
    if position:
        top.append(f" {position}", style="grey50")
    if state.branch:
        top.append("  branch ", style="grey50")
        top.append_text(literal(state.branch, "magenta"))
    top.append("  iter ", style="grey50")
    top.append(str(iteration) if iteration is not None else "?", style="bold")
    if latest is not None:
        top.append(f" (#{latest.index})", style="grey50")
    second = Text(no_wrap=True, overflow="ellipsis", end="")
    second.append("next ", style="grey50")
    second.append_text(literal(b.expected_actor if b and b.expected_actor else "?", "bold"))
    second.append("  baton ", style="grey50")
    second.append_text(literal(b.status if b and b.status else "unknown", status_style(b.status if b else None)))
    lease = lease_text(state, now)
    if lease is not None:
        second.append("  ")
        second.append_text(lease)
    if state.focus:
        second.append("  focus ", style="grey50")
        second.append_text(literal(state.focus, "bold"))
    return _lines([top, second])


def status_style(status: str | None) -> str:
    if not status:
        return "grey50"
    low = status.lower()
    if any(low.startswith(s) for s in ("failed", "error", "blocked", "aborted")):
        return "bold red"
    if any(low.startswith(s) for s in STOPPED_STATUSES):
        return "yellow"
    return "green"


# --------------------------------------------------------------------------- the three questions


def last_change(state: RepoState, now: datetime) -> Text:
    c = state.last_code
    if c is None:
        return line(("no production or test change seen yet", "grey50"))
    return line(literal(c.text), (f"  {ago(c.time, now)}", "cyan"))


def blockers(state: RepoState) -> list[Text]:
    """The active git state, alerts since the last code landed, the focus item marked blocked."""
    found: list[Text] = []
    for st, g in state.git_states.items():
        found.append(line(("git ", "bold red"), literal(st, "bold red"), (" in progress", "red"),
                          literal(f": {g.detail}" if g.detail else "")))
    since = state.last_code.time if state.last_code else None
    for when, a in state.alerts_newest_first():
        if a.severity in BLOCKING_SEVERITIES and (since is None or when is None or when >= since):
            found.append(line(literal(a.alert, SEVERITY_STYLE.get(a.severity, "")), ": ", literal(a.message)))
            break
    focus = state.focus
    item = state.ledger.get(focus) if focus else None
    if item and "block" in (item.get("status") or "").lower():
        found.append(line(literal(focus, "bold"), (" blocked", "red"),
                          literal(f": {item.get('title')}" if item.get("title") else "")))
    return found


def blocker(state: RepoState) -> Text:
    found = blockers(state)
    if not found:
        return line(("none", "green"))
    first = found[0]
    if len(found) > 1:
        first = first.copy()
        first.append(f"  (+{len(found) - 1} more)", style="grey50")
    return first


def stop_reasons(state: RepoState, now: datetime) -> list[Text]:
    """Why the loop is not running, if it is not: gate, lease expiry, git state, stall."""
    reasons: list[Text] = []
    b = state.baton
    for st in state.git_states:
        reasons.append(line(("git state ", "red"), literal(st, "bold red")))
    if b is not None and b.status and any(b.status.lower().startswith(s) for s in STOPPED_STATUSES):
        reasons.append(line(("baton says ", ""), literal(b.status, status_style(b.status))))
    elif b is not None and b.lease_expires_at is not None and aware(b.lease_expires_at) < now:
        reasons.append(line(("lease expired ", "red"), (ago(b.lease_expires_at, now), "red"),
                            (" waiting for ", ""), literal(b.expected_actor or "?", "bold")))
    gate = [d for d in state.dwell.values() if d.tier == "3"]
    for d in gate:
        reasons.append(line(("gate: dwell tier 3 on ", "red"), literal("global" if d.focus == "*" else d.focus, "bold"),
                            (f" ({d.value} iterations without code)", "")))
    for when, a in state.alerts_newest_first():
        if a.alert in STALL_ALERTS and (state.last_code is None or state.last_code.time is None
                                        or when is None or when >= state.last_code.time):
            reasons.append(line(literal(a.alert, "yellow"), ": ", literal(a.message)))
            break
    if state.stopped_streams:
        reasons.append(line(("collectors stopped: ", "yellow"), literal(", ".join(sorted(state.stopped_streams)))))
    return reasons


def loop_status(state: RepoState, now: datetime) -> Text:
    reasons = stop_reasons(state, now)
    if not reasons:
        since = f", last event {ago(state.last_event, now)}" if state.last_event else ""
        return line(("running", "green"), (since, "grey50"))
    out = line(("stopped: ", "bold red"), reasons[0])
    if len(reasons) > 1:
        out.append(f"  (+{len(reasons) - 1} more)", style="grey50")
    return out


def three_questions(state: RepoState, now: datetime) -> Table:
    grid = Table.grid(padding=(0, 1), expand=True)
    grid.add_column(style=LABEL, no_wrap=True, min_width=11)
    grid.add_column(ratio=1, no_wrap=True, overflow="ellipsis")
    grid.add_row(Text("Last change"), last_change(state, now))
    grid.add_row(Text("Blocker"), blocker(state))
    grid.add_row(Text("Loop"), loop_status(state, now))
    return grid


# --------------------------------------------------------------------------- scores

_EIGHTHS = " ▁▂▃▄▅▆▇█"


class ScoreBars:
    """Aggregate scores as vertical bars coloured by bucket: the seed's ASCII plot, live.

    Takes the room it is given: more rows make finer bars, more columns wider ones.
    The open (provisional) iteration is drawn dim.
    """

    def __init__(self, iterations: list[IterationScored]) -> None:
        self.iterations = list(iterations)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        width = options.max_width
        height = max(2, options.height or 7)
        rows = height - 1
        axis = 4
        n_fit = max(1, (width - axis) // 2)
        its = self.iterations[-n_fit:]
        if not its:
            yield Text("no iterations scored yet", style="grey50")
            return
        col = max(2, min(5, (width - axis) // len(its)))
        bar = col - 1
        for r in range(rows - 1, -1, -1):
            label = "100" if r == rows - 1 else ("  0" if r == 0 else (" 50" if r == rows // 2 else "   "))
            yield Segment(f"{label}┤", Style(color="grey50"))
            for it in its:
                eighths = round(max(0, min(100, it.aggregate)) / 100 * rows * 8)
                level = max(0, min(8, eighths - r * 8))
                ch = _EIGHTHS[level] if level else ("·" if r == 0 else " ")
                style = Style.parse(BUCKET_STYLE.get(it.bucket, "white"))
                if it.provisional:
                    style += Style(dim=True)
                yield Segment(ch * bar + " ", style)
            yield Segment.line()
        yield Segment("    ")
        labels = [str(it.number if it.number is not None else it.index) for it in its]
        yield Segment(_label_row(labels, col, width - axis), Style(color="grey50"))
        yield Segment.line()


def _label_row(labels: list[str], col: int, width: int) -> str:
    """Iteration numbers under the bars: every one when they fit, else as many as fit."""
    cells = [" "] * (len(labels) * col)
    end = -1
    for i, label in enumerate(labels):
        start = i * col
        text = label[-max(col - 1, 1):] if col - 1 >= 3 else label
        if start <= end or start + len(text) > len(cells):
            continue
        cells[start : start + len(text)] = list(text)
        end = start + len(text)
    return "".join(cells)[:width]


def scores_title(state: RepoState, shown: int) -> Text:
    its = [it for it in state.iterations.values() if not it.provisional]
    t = Text(f"last {min(shown, len(state.iterations))}", style="grey50")
    if its:
        aggs = sorted(it.aggregate for it in its)
        mean = sum(aggs) / len(aggs)
        t.append(f"  mean {mean:.0f}  median {aggs[len(aggs) // 2]:.0f}", style="grey50")
    return t


def open_iteration(state: RepoState, reasons: int = 2) -> Text:
    """The open iteration's provisional scores and the reasons that moved them most."""
    it = state.open_iteration
    if it is None:
        return Text("no open iteration", style="grey50", end="")
    number = f"iteration {it.number} (#{it.index})" if it.number is not None else f"iteration #{it.index}"
    out = line(("open ", "bold"), (f"{number} ", ""), ("provisional ", "grey50"),
               (f"{it.aggregate} {it.bucket}", BUCKET_STYLE.get(it.bucket, "")),
               (f"  summary {it.summary}  code {it.code_diff}  semantic {it.semantic}", "grey50"))
    if it.focus:
        out.append("  focus ", style="grey50")
        out.append_text(literal(it.focus))
    lines = [out]
    for r in sorted(it.reasons, key=lambda r: abs(r.delta), reverse=True)[:reasons]:
        sign_style = "green" if r.delta > 0 else ("red" if r.delta < 0 else "grey50")
        lines.append(line(("  ", ""), (f"{r.delta:+.0f} ", sign_style), (f"{r.score}: ", "grey50"), literal(r.text)))
    return _lines(lines)


# --------------------------------------------------------------------------- dwell, alerts, events


def dwell_table(state: RepoState, width: int = 80) -> RenderableType:
    """Dwell per focus with its tier in colour; the global count first.

    Where the supervisor's own count disagrees it is shown too, when there is room.
    """
    if not state.dwell:
        return Text("no dwell measured yet", style="grey50")
    table = Table(box=None, show_header=False, padding=(0, 1), expand=True)
    table.add_column(ratio=1, no_wrap=True, overflow="ellipsis", min_width=9)
    table.add_column(justify="right", no_wrap=True)
    table.add_column(no_wrap=True, max_width=8)
    entries = sorted(state.dwell.values(), key=lambda d: (d.focus != "*", -d.value, d.focus))
    disputed = width >= 34 and any(d.reported is not None and d.reported != d.value for d in entries)
    if disputed:  # the supervisor's own count, where it disagrees
        table.add_column(no_wrap=True, overflow="ellipsis", max_width=8)
    for d in entries:
        style = TIER_STYLE.get(d.tier or "", "grey50" if d.value == 0 else "")
        name = Text("global", style="bold") if d.focus == "*" else literal(d.focus)
        cells = [name, Text(str(d.value), style=style), Text(f"tier {d.tier}" if d.tier else "", style=style)]
        if disputed:
            differs = d.reported is not None and d.reported != d.value
            cells.append(Text(f"says {d.reported}" if differs else "", style="grey50"))
        table.add_row(*cells)
    return table


def _clock(when: datetime | None) -> Text:
    return Text(aware(when).strftime("%H:%M:%S") if when else "--:--:--", style="grey50")


def alerts_table(state: RepoState) -> RenderableType:
    """Newest first, severity in colour."""
    if not state.alerts:
        return Text("no alerts", style="grey50")
    table = Table(box=None, show_header=False, padding=(0, 1), expand=True)
    table.add_column(no_wrap=True)
    table.add_column(no_wrap=True)
    table.add_column(ratio=1, no_wrap=True, overflow="ellipsis")
    for when, a in state.alerts_newest_first():
        table.add_row(_clock(when), Text(a.severity[:4], style=SEVERITY_STYLE.get(a.severity, "")),
                      literal(a.message))
    return table


_KIND_STYLE = {"commit": "cyan", "alert": "yellow", "warning": "yellow", "iteration_scored": "green",
               "git_state_changed": "red", "baton_changed": "magenta", "brief_updated": "blue"}


def events_table(state: RepoState, limit: int) -> RenderableType:
    """The newest events, newest at the bottom as in a log tail."""
    events = list(state.events)[-limit:]
    if not events:
        return Text("waiting for events…", style="grey50")
    table = Table(box=None, show_header=False, padding=(0, 1), expand=True)
    table.add_column(no_wrap=True)
    table.add_column(ratio=1, no_wrap=True, overflow="ellipsis")
    for e in events:
        style = SEVERITY_STYLE.get(e.severity or "", "") or _KIND_STYLE.get(e.kind, "")
        table.add_row(_clock(e.time), literal(e.text, style))
    return table
