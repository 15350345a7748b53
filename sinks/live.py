"""The live terminal view: a rich dashboard of each watched loop, redrawn only on change.

`LiveView.write` folds events into the view state (cheap, any thread); `run` redraws
from the calling thread at most `view.refresh_per_second` times a second and only
when something shown changed (new events, a ticking lease, a resized terminal).
"""

from __future__ import annotations

import io
import sqlite3
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from rich.console import Console, ConsoleOptions, RenderableType, RenderResult
from rich.layout import Layout
from rich.live import Live
from rich.measure import Measurement
from rich.padding import Padding
from rich.segment import Segment
from rich.text import Text

from monitor.config import ViewSettings
from monitor.events import DwellChanged, Envelope, IterationScored, Reason
from sinks import view_panels as panels
from sinks.sqlite import stored_events
from sinks.view_state import RepoState, ViewState, aware

ROTATE_SECONDS = 8.0  # several repos on a narrow terminal: each shown this long in turn
MIN_REPO_WIDTH = 80  # narrower than this per repo, repos take turns instead of sharing
WIDE = 140  # from this width the lower panels sit side by side


class Fixed:
    """Render a layout at exactly width x height, whatever the console's own size."""

    def __init__(self, renderable: RenderableType, width: int, height: int) -> None:
        self.renderable, self.width, self.height = renderable, width, height

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        lines = console.render_lines(self.renderable, options.update(width=self.width, height=self.height), pad=True)
        for i, segments in enumerate(lines):
            if i:
                yield Segment.line()
            yield from segments

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        return Measurement(self.width, self.width)


def titled(name: str, rule: RenderableType, body: RenderableType, *, gap: bool = False, **size) -> Layout:
    """A region with a one-line heading; the body gets exactly the rest of the region.

    `gap` keeps one blank column on the right, between this region and its neighbour.
    """
    if gap:
        rule, body = Padding(rule, (0, 1, 0, 0)), Padding(body, (0, 1, 0, 0))
    region = Layout(name=name, **size)
    region.split_column(Layout(rule, size=1), Layout(body, name=f"{name}_body"))
    return region


def repo_layout(state: RepoState, now: datetime, width: int, height: int, settings: ViewSettings,
                position: str = "") -> Layout:
    """One repo's dashboard sized to the room it has: 80x24 gets every panel, more room more rows."""
    reasons = 1 if height < 30 else 3
    open_it = panels.open_iteration(state, reasons=reasons)
    open_h = len(open_it.plain.splitlines()) or 1
    spare = max(0, height - 24)
    plot_rows = max(3, min(12, 5 + spare // 3 - (1 if height < 24 else 0) * (24 - height)))
    chart_h = plot_rows + 2
    rest = height - (2 + 3 + chart_h + open_h)
    if rest < 4:  # a very small terminal: the chart gives way first
        chart_h = max(3, chart_h - (4 - rest))
        rest = height - (2 + 3 + chart_h + open_h)
    rest = max(2, rest)

    alerts_rule = panels.section("Alerts", Text(str(len(state.alerts)), style="grey50"))
    alerts = panels.alerts_table(state)
    scores = panels.ScoreBars(state.recent_iterations(settings.iterations_shown))
    scores_rule = panels.section("Scores", panels.scores_title(state, settings.iterations_shown))

    root = Layout()
    parts = [
        Layout(panels.header(state, now, position), name="header", size=2),
        Layout(panels.three_questions(state, now), name="now", size=3),
        titled("scores", scores_rule, scores, size=chart_h),
        Layout(open_it, name="open", size=open_h),
    ]
    lower = Layout(name="lower", size=rest)
    dwell_w = min(36, max(26, width // 3))
    dwell = panels.dwell_table(state, dwell_w - 1)
    if width >= WIDE:
        events_h = rest
        lower.split_row(
            titled("dwell", panels.section("Dwell"), dwell, gap=True, size=dwell_w),
            titled("alerts", alerts_rule, alerts, gap=True, ratio=1),
            titled("events", panels.section("Events"), panels.events_table(state, events_h - 1), ratio=1),
        )
    else:
        upper_h = max(2, rest // 2)
        events_h = rest - upper_h
        upper = Layout(name="dwell_alerts", size=upper_h)
        upper.split_row(titled("dwell", panels.section("Dwell"), dwell, gap=True, size=dwell_w),
                        titled("alerts", alerts_rule, alerts, ratio=1))
        lower.split_column(upper, titled("events", panels.section("Events"),
                                         panels.events_table(state, max(1, events_h - 1)), size=events_h))
    root.split_column(*parts, lower)
    return root


class LiveView:
    """The live dashboard: a view state fed by `write`, drawn by `run` or `render`."""

    def __init__(self, settings: ViewSettings | None = None, *, console: Console | None = None,
                 clock: Callable[[], datetime] | None = None) -> None:
        self.settings = settings or ViewSettings()
        self.console = console or Console()
        self.clock = clock or (lambda: datetime.now(timezone.utc))
        self.state = ViewState()
        self._lock = threading.Lock()
        self._version = 0  # bumped by every visible change
        self.draws = 0  # redraws made by `run`
        self._drawn: tuple | None = None  # what the last redraw showed (see _draw_key)

    # ------------------------------------------------------------------ feeding

    def write(self, batch: list[Envelope]) -> None:
        """Fold a batch into the view state; marks the view dirty when something shown changed."""
        with self._lock:
            changed = False
            for env in batch:
                changed = self.state.apply(env) or changed
            if changed:
                self._version += 1

    def close(self) -> None:
        """Nothing to release: `run` ends with its stop event."""

    # ------------------------------------------------------------------ drawing

    def _now(self) -> datetime:
        return aware(self.clock())

    def render(self, width: int | None = None, height: int | None = None) -> RenderableType:
        """The whole view at width x height (default: the console's size)."""
        width = width or self.console.width
        height = height or self.console.height
        now = self._now()
        with self._lock:
            repos = list(self.state.repos.values())
            if not repos:
                return Fixed(Text("loopmon: waiting for the first event…", style="grey50"), width, height)
            side_by_side = min(len(repos), max(1, width // MIN_REPO_WIDTH))
            if side_by_side >= len(repos):
                shown, position = repos, ""
            else:
                turn = self._turn(now, len(repos))
                shown, position = [repos[turn]], f"({turn + 1}/{len(repos)}, in turn)"
            if len(shown) == 1:
                layout = repo_layout(shown[0], now, width, height, self.settings, position)
                return Fixed(layout, width, height)
            root = Layout()
            root.split_row(*[Layout(repo_layout(s, now, width // len(shown), height, self.settings))
                             for s in shown])
            return Fixed(root, width, height)

    @staticmethod
    def _turn(now: datetime, repos: int) -> int:
        return int(now.timestamp() // ROTATE_SECONDS) % repos

    def _draw_key(self) -> tuple:
        """Changes exactly when a redraw would show something different."""
        now = self._now()
        with self._lock:
            repos = list(self.state.repos.values())
            # Leases within the hour are shown to the second (see view_panels.duration).
            ticking = any(r.baton is not None and r.baton.lease_expires_at is not None
                          and abs((aware(r.baton.lease_expires_at) - now).total_seconds()) < 3600 for r in repos)
            version = self._version
        # A lease countdown ticks every second; "5m ago" texts every half minute.
        clock = int(now.timestamp()) if ticking else int(now.timestamp() // 30)
        turn = self._turn(now, len(repos)) if len(repos) > 1 else 0
        return version, self.console.size, clock, turn

    def dirty(self) -> bool:
        """Whether a redraw now would show something the last one did not."""
        return self._draw_key() != self._drawn

    def draw(self, live: Live, height: int | None = None) -> None:
        """Redraw into a running rich Live."""
        self._drawn = self._draw_key()
        self.draws += 1
        live.update(self.render(height=height), refresh=True)

    def run(self, stop: threading.Event) -> None:
        """Draw in the calling thread until `stop` is set; redraw only when something changed."""
        interval = 1.0 / self.settings.refresh_per_second
        screen = self.console.is_terminal and not self.console.is_dumb_terminal
        # Outside the alternate screen, one row short of the terminal so that Live never scrolls.
        height = None if screen else max(1, self.console.height - 1)
        with Live(console=self.console, auto_refresh=False, screen=screen, transient=False,
                  redirect_stdout=False, redirect_stderr=False) as live:
            while True:
                if self.dirty():
                    self.draw(live, height)
                if stop.wait(interval):
                    return

    # ------------------------------------------------------------------ sharing

    def snapshot(self, path: str | Path, width: int | None = None, height: int | None = None) -> None:
        """Write the current view to an .svg or .html file."""
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix not in (".svg", ".html", ".htm"):
            raise ValueError(f"{path}: a snapshot is written as .svg or .html, not {suffix or 'no extension'}")
        width = width or max(self.console.width, 100)
        height = height or max(self.console.height, 30)
        console = Console(record=True, width=width, height=height, file=io.StringIO(), force_terminal=True,
                          color_system="truecolor")
        console.print(self.render(width, height))
        path.parent.mkdir(parents=True, exist_ok=True)
        names = ", ".join(self.state.repos) or "no repo"
        if suffix == ".svg":
            console.save_svg(str(path), title=f"loopmon: {names}")
        else:
            console.save_html(str(path))

    @classmethod
    def from_store(cls, db_path: str | Path, repo: str | None = None, settings: ViewSettings | None = None,
                   **kwargs) -> "LiveView":
        """A view rebuilt from a store: its events replayed, then the stored scores and dwell."""
        view = cls(settings, **kwargs)
        conn = _open_for_reading(Path(db_path))
        try:
            batch: list[Envelope] = []
            for env in stored_events(conn, "repo = ?" if repo is not None else "", (repo,) if repo is not None else ()):
                batch.append(env)
                if len(batch) >= 2000:
                    view.write(batch)
                    batch = []
            view.write(batch)
            where, params = ("WHERE repo = ?", (repo,)) if repo is not None else ("", ())
            _overlay_scores(view, conn, where, params)
        finally:
            conn.close()
        return view


def _open_for_reading(path: Path) -> sqlite3.Connection:
    """The store, upgraded if it is older; refused if newer or not a store."""
    from sinks.sqlite import open_store
    from sinks.store_schema import STORE_SCHEMA_VERSION, StoreError, check_version, schema_version

    if not path.is_file():
        raise StoreError(f"{path}: no such store")
    conn = sqlite3.connect(str(path), timeout=10.0)
    try:
        version = schema_version(conn)
        check_version(path, version, conn)
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise StoreError(f"{path}: cannot be opened as a loopmon store: {exc}") from exc
    except StoreError:
        conn.close()
        raise
    if version < STORE_SCHEMA_VERSION:
        conn.close()
        open_store(path).close()
        conn = sqlite3.connect(str(path), timeout=10.0)
    return conn


def _overlay_scores(view: LiveView, conn: sqlite3.Connection, where: str, params: tuple) -> None:
    """The iterations and dwell tables hold the latest state even where events were deduplicated."""
    import json

    conn.row_factory = sqlite3.Row
    for row in conn.execute(f"SELECT * FROM iterations {where} ORDER BY repo, idx", params):
        it = IterationScored(
            index=row["idx"], number=row["number"], provisional=bool(row["provisional"]),
            summary=row["summary"] or 0, code_diff=row["code_diff"] or 0, semantic=row["semantic"] or 0,
            aggregate=row["aggregate"] or 0, bucket=row["bucket"] or "low", override=row["override"],
            reasons=[Reason(**r) for r in json.loads(row["reasons"] or "[]")], focus=row["focus"],
            started_at=row["started_at"], ended_at=row["ended_at"],
            supervisor_commits=json.loads(row["supervisor_commits"] or "[]"),
            engineer_commits=json.loads(row["engineer_commits"] or "[]"),
            other_commits=json.loads(row["other_commits"] or "[]"), code_lines=row["code_lines"] or 0,
            insertions=row["insertions"] or 0, deletions=row["deletions"] or 0,
            files_touched=row["files_touched"] or 0, brief_digest=row["brief_digest"],
            hubs=json.loads(row["hubs"] or "[]"), evidence=row["evidence"] or "none")
        view.state.set_iteration(view.state.repo(row["repo"]), it)
    for row in conn.execute(f"SELECT * FROM dwell {where}", params):
        view.state.repo(row["repo"]).dwell[row["focus"]] = DwellChanged(
            focus=row["focus"], value=row["value"], tier=row["tier"],
            iterations=json.loads(row["iterations"] or "[]"), reported=row["reported"])
    view._version += 1
