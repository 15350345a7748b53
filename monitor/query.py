"""Read-only views of the store: what `loopmon query` shows, and what report, gate and metrics read.

Every reader opens the store read-only (a `mode=ro` URI, `PRAGMA query_only`, and an
authorizer that refuses anything but reading), so a view can never change the
store, and reads one consistent snapshot (`snapshot`) while the monitor goes on
writing beside it: SQLite's write-ahead log keeps readers and the writer apart.

A view is a `View`: columns and rows of plain values. The same rows become a rich
table (every cell a `Text`, so a commit message such as `[bold red]x[/]` shows as
written), JSON or CSV, both exact.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import re
import sqlite3
import statistics
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from monitor.config import Settings
from monitor.dwell import GLOBAL
from sinks.store_schema import STORE_SCHEMA_VERSION, StoreError, check_version

GLOBAL_FOCUS = GLOBAL  # the dwell row counting across all foci
CODE_CLASSES = ("production", "test")
_IN_CHUNK = 500  # stays under SQLite's host-parameter limit


class QueryError(Exception):
    """A query that cannot be answered; the message says why and what to do."""


class ReadOnlyRefused(QueryError):
    """A statement that would change something: the store is only ever read here."""


# --------------------------------------------------------------------------- the connection

# Authorizer action codes that only read. Everything else (INSERT, ATTACH, CREATE TEMP
# TABLE, a PRAGMA that sets a value, ...) is denied, even though `mode=ro` already
# protects the file: ATTACH and VACUUM INTO could still create other files.
_READ_ACTIONS = {
    sqlite3.SQLITE_SELECT,
    sqlite3.SQLITE_READ,
    sqlite3.SQLITE_FUNCTION,
    sqlite3.SQLITE_RECURSIVE,
    sqlite3.SQLITE_TRANSACTION,
    sqlite3.SQLITE_SAVEPOINT,
}
# PRAGMAs that read whatever their argument (table_info(x) names a table, sets nothing).
_READ_PRAGMAS_WITH_ARG = frozenset({
    "table_info", "table_xinfo", "table_list", "index_list", "index_info", "index_xinfo",
    "foreign_key_list", "foreign_key_check", "integrity_check", "quick_check",
})
# PRAGMAs that do something even without an argument.
_ACTING_PRAGMAS = frozenset({"optimize", "wal_checkpoint", "incremental_vacuum", "shrink_memory"})
_ACTION_NAMES = {getattr(sqlite3, f"SQLITE_{n}"): n for n in (
    "CREATE_INDEX", "CREATE_TABLE", "CREATE_TEMP_INDEX", "CREATE_TEMP_TABLE", "CREATE_TEMP_TRIGGER",
    "CREATE_TEMP_VIEW", "CREATE_TRIGGER", "CREATE_VIEW", "DELETE", "DROP_INDEX", "DROP_TABLE",
    "DROP_TEMP_INDEX", "DROP_TEMP_TABLE", "DROP_TEMP_TRIGGER", "DROP_TEMP_VIEW", "DROP_TRIGGER", "DROP_VIEW",
    "INSERT", "PRAGMA", "UPDATE", "ATTACH", "DETACH", "ALTER_TABLE", "REINDEX", "ANALYZE",
    "CREATE_VTABLE", "DROP_VTABLE")}
# Statements `loopmon query sql` runs: the ones that can only read.
_READ_STATEMENT = re.compile(r"^\s*(?:(?:--[^\n]*\n|/\*.*?\*/)\s*)*(SELECT|WITH|VALUES|EXPLAIN|PRAGMA)\b",
                             re.IGNORECASE | re.DOTALL)


class _ReadOnlyGuard:
    """An authorizer that lets reads through and remembers the first thing it refused."""

    def __init__(self) -> None:
        self.refused: str | None = None

    def __call__(self, action: int, arg1: str | None, arg2: str | None, dbname: str | None, source: str | None) -> int:
        if action in _READ_ACTIONS:
            return sqlite3.SQLITE_OK
        if action == sqlite3.SQLITE_UPDATE and arg1 in ("sqlite_master", "sqlite_schema") and source is None:
            # Asked when a table-valued PRAGMA function (pragma_table_info) is first set up;
            # the read-only file and query_only refuse any real write to the schema anyway.
            return sqlite3.SQLITE_OK
        if action == sqlite3.SQLITE_PRAGMA:
            name = (arg1 or "").lower()
            if name in _READ_PRAGMAS_WITH_ARG or (arg2 is None and name not in _ACTING_PRAGMAS):
                return sqlite3.SQLITE_OK
            what = f"PRAGMA {arg1}" + (f" = {arg2}" if arg2 is not None else "")
        else:
            what = _ACTION_NAMES.get(action, f"action {action}").replace("_", " ")
            if arg1:
                what += f" {arg1}"
        if self.refused is None:
            self.refused = what
        return sqlite3.SQLITE_DENY


class ReadOnlyConnection(sqlite3.Connection):
    """A connection that carries its guard, so a refusal can say what it refused."""

    guard: _ReadOnlyGuard


def open_readonly(db: str | Path, timeout: float = 10.0) -> ReadOnlyConnection:
    """Open a loopmon store for reading only; a missing, foreign or too-new file is refused.

    The connection is in autocommit mode: wrap a multi-query read in `snapshot`.
    """
    path = Path(db)
    if not path.is_file():
        raise QueryError(f"--db {path}: no such database (run `loopmon run` or `loopmon backfill` first)")
    uri = f"{path.resolve().as_uri()}?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=timeout, isolation_level=None, check_same_thread=False,
                               factory=ReadOnlyConnection)
        conn.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
        conn.execute("PRAGMA query_only = 1")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        check_version(path, version, conn)
    except StoreError as exc:
        raise QueryError(str(exc)) from None
    except sqlite3.DatabaseError as exc:
        raise QueryError(f"--db {path}: cannot be read as a loopmon store: {exc}") from None
    if version == 0:
        raise QueryError(f"--db {path}: an empty file, not a loopmon store yet")
    if version < STORE_SCHEMA_VERSION:
        raise QueryError(
            f"--db {path}: the store has schema version {version}; this loopmon reads version "
            f"{STORE_SCHEMA_VERSION}. Any writing command (`loopmon backfill`, `loopmon run`) upgrades it in place."
        )
    conn.guard = _ReadOnlyGuard()
    conn.set_authorizer(conn.guard)
    conn.row_factory = sqlite3.Row
    return conn


@contextmanager
def snapshot(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One read transaction: every query inside sees the same state of the store."""
    conn.execute("BEGIN")
    try:
        yield conn
    finally:
        conn.execute("COMMIT")


def resolve_repo_id(conn: sqlite3.Connection, folder: Path | None, given: str | None, settings: Settings) -> str:
    """The repo id the views are about.

    A folder names its repo as the monitor does (`repo_id_for`); a `--repo` value that is
    not a folder may be a repo id of the store. With no `--repo` at all and a store
    holding a single repo, that repo.
    """
    from monitor.runtime import repo_id_for

    ids = [r[0] for r in conn.execute("SELECT id FROM repos ORDER BY id")]
    candidate = repo_id_for(folder, settings) if folder is not None else None
    if candidate is not None and candidate in ids:
        return candidate
    if folder is None and given:
        if given in ids:
            return given
        raise QueryError(f"--repo {given}: neither a folder nor a repo of this store ({_listed(ids)})")
    if not ids:
        return candidate or ""
    if not given and len(ids) == 1:
        return ids[0]
    raise QueryError(f"the store holds no repo {candidate!r} ({_listed(ids)}); pass --repo with one of them")


def _listed(ids: list[str]) -> str:
    return "it holds: " + ", ".join(ids) if ids else "it holds no repo yet"


# --------------------------------------------------------------------------- values


def parse_json(text: str | None, default: Any = None) -> Any:
    if text is None or text == "":
        return default
    try:
        return json.loads(text)
    except ValueError:
        return default


def parse_time(text: str | None) -> datetime | None:
    """A stored timestamp back as an aware datetime (None stays None)."""
    if not text:
        return None
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


def stored_time(dt: datetime) -> str:
    """A datetime in the store's sortable text form, for comparisons in SQL."""
    from sinks.sqlite import iso

    return iso(dt)  # type: ignore[return-value]


_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """`--since`: an ISO-8601 date or time (UTC unless it says), or an age such as 30m, 2h, 1d."""
    now = now or datetime.now(timezone.utc)
    match = _RELATIVE.match(text)
    if match:
        return now - timedelta(**{_UNITS[match.group(2).lower()]: float(match.group(1))})
    try:
        dt = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise QueryError(f"--since {text!r}: give an ISO date or time (2025-11-13, 2025-11-13T15:00) "
                         "or an age (30m, 2h, 1d)") from None
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


# --------------------------------------------------------------------------- views


@dataclass
class View:
    """A titled table of plain values: str, int, float, bool, None, bytes, or lists of them."""

    title: str
    columns: list[str]
    rows: list[dict[str, Any]]
    caption: str | None = None
    headers: dict[str, str] = field(default_factory=dict)  # column -> heading shown in the table
    numeric: frozenset[str] = frozenset()  # columns right-aligned in the table
    nowrap: frozenset[str] = frozenset()  # short columns kept on one line (numeric ones too)
    times: frozenset[str] = frozenset()  # stored timestamps, shown to the second in the table

    def heading(self, column: str) -> str:
        return self.headers.get(column, column)


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _visible(text: str) -> str:
    # A terminal would act on escape sequences inside repo text: show them as escapes.
    return _CONTROL.sub(lambda m: repr(m.group(0))[1:-1], text)


def cell_text(value: Any) -> str:
    """A value as the table shows it (never interpreted as markup)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.1f}"
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    if isinstance(value, (list, tuple)):
        return "\n".join(cell_text(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False)
    return _visible(str(value))


def _short_time(value: Any) -> str:
    dt = parse_time(value) if isinstance(value, str) else None
    return f"{dt:%Y-%m-%d %H:%M:%S}" if dt else cell_text(value)


def render_table(view: View, console: Console) -> None:
    """Print a view as a rich table. Cells are `Text`: repo strings are data, never markup."""
    table = Table(title=Text(view.title), caption=Text(view.caption) if view.caption else None,
                  show_lines=False, expand=False)
    for col in view.columns:
        table.add_column(Text(_visible(view.heading(col))), justify="right" if col in view.numeric else "left",
                         overflow="fold", no_wrap=col in view.numeric or col in view.nowrap)
    for row in view.rows:
        table.add_row(*(Text(_short_time(row.get(col)) if col in view.times else cell_text(row.get(col)))
                        for col in view.columns))
    console.print(table)
    if not view.rows:
        console.print(Text("(no rows)", style="dim"))


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def to_json(view: View) -> str:
    """The rows as a JSON array of objects (bytes as base64), exactly as stored."""
    rows = [{col: row.get(col) for col in view.columns} for row in view.rows]
    return json.dumps(rows, ensure_ascii=False, default=_json_default, indent=2)


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, bool):
        return int(value)
    return value


def to_csv(view: View) -> str:
    """The rows as CSV with a header line (lists as JSON text, bytes as base64)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(view.columns)
    for row in view.rows:
        writer.writerow([_csv_value(row.get(col)) for col in view.columns])
    return out.getvalue()


# --------------------------------------------------------------------------- iterations


@dataclass
class IterationRow:
    """One stored iteration with its JSON columns parsed."""

    idx: int
    number: int | None
    provisional: bool
    summary: int
    code_diff: int
    semantic: int
    aggregate: int
    bucket: str
    override: str | None
    reasons: list[dict[str, Any]]
    focus: str | None
    started_at: datetime | None
    ended_at: datetime | None
    supervisor_commits: list[str]
    engineer_commits: list[str]
    other_commits: list[str]
    code_lines: int
    insertions: int
    deletions: int
    files_touched: int
    hubs: list[str]
    evidence: str | None

    @property
    def label(self) -> str:
        """How people name it: the loop's own number, or `#index` where the loop gives none."""
        return str(self.number) if self.number is not None else f"#{self.idx}"

    @property
    def key(self) -> int:
        """What --from/--to compare: the loop's number, else loopmon's index."""
        return self.number if self.number is not None else self.idx

    @property
    def commits(self) -> list[str]:
        return [*self.supervisor_commits, *self.engineer_commits, *self.other_commits]


def load_iterations(conn: sqlite3.Connection, repo: str) -> list[IterationRow]:
    """Every iteration of a repo in order."""
    rows = conn.execute("SELECT * FROM iterations WHERE repo = ? ORDER BY idx", (repo,)).fetchall()
    return [
        IterationRow(
            idx=r["idx"], number=r["number"], provisional=bool(r["provisional"]),
            summary=r["summary"] or 0, code_diff=r["code_diff"] or 0, semantic=r["semantic"] or 0,
            aggregate=r["aggregate"] or 0, bucket=r["bucket"] or "low", override=r["override"],
            reasons=parse_json(r["reasons"], []), focus=r["focus"],
            started_at=parse_time(r["started_at"]), ended_at=parse_time(r["ended_at"]),
            supervisor_commits=parse_json(r["supervisor_commits"], []),
            engineer_commits=parse_json(r["engineer_commits"], []),
            other_commits=parse_json(r["other_commits"], []),
            code_lines=r["code_lines"] or 0, insertions=r["insertions"] or 0, deletions=r["deletions"] or 0,
            files_touched=r["files_touched"] or 0, hubs=parse_json(r["hubs"], []), evidence=r["evidence"],
        )
        for r in rows
    ]


@dataclass
class PathChange:
    """One path's lines over a set of commits."""

    path: str
    path_class: str
    insertions: int
    deletions: int
    binary: bool = False

    @property
    def lines(self) -> int:
        return self.insertions + self.deletions

    def __str__(self) -> str:
        if self.binary:
            return f"{self.path} (binary)"
        return f"{self.path}:+{self.insertions}/-{self.deletions}"


def _chunks(items: Sequence[str]) -> Iterator[Sequence[str]]:
    for i in range(0, len(items), _IN_CHUNK):
        yield items[i : i + _IN_CHUNK]


def path_changes(conn: sqlite3.Connection, repo: str, shas: Iterable[str]) -> list[PathChange]:
    """Every path the commits touched, lines summed per path, largest first."""
    shas = list(dict.fromkeys(shas))
    acc: dict[str, PathChange] = {}
    for chunk in _chunks(shas):
        sql = (f"SELECT path, path_class, insertions, deletions, binary FROM commit_files "
               f"WHERE repo = ? AND sha IN ({','.join('?' * len(chunk))})")
        for r in conn.execute(sql, (repo, *chunk)):
            pc = acc.setdefault(r["path"], PathChange(r["path"], r["path_class"] or "other", 0, 0))
            pc.insertions += r["insertions"] or 0
            pc.deletions += r["deletions"] or 0
            pc.binary = pc.binary or bool(r["binary"])
    return sorted(acc.values(), key=lambda c: (-c.lines, c.path))


def key_changes(changes: list[PathChange], limit: int | None = None) -> list[PathChange]:
    """The production and test paths among the changes (what the code-diff score reads)."""
    code = [c for c in changes if c.path_class in CODE_CLASSES]
    return code[:limit] if limit else code


def iterations_view(conn: sqlite3.Connection, repo: str, *, last: int | None = None, bucket: str | None = None,
                    focus: str | None = None, key_limit: int = 4) -> View:
    """Scores, bucket, focus and key changes of each iteration (filters first, then the last N)."""
    its = load_iterations(conn, repo)
    if bucket:
        its = [i for i in its if i.bucket == bucket]
    if focus:
        its = [i for i in its if i.focus == focus]
    if last is not None:
        its = its[-last:] if last > 0 else []
    rows = []
    for it in its:
        changes = key_changes(path_changes(conn, repo, it.commits))
        rows.append({
            "iteration": it.number, "index": it.idx, "final": not it.provisional,
            "summary": it.summary, "code_diff": it.code_diff, "semantic": it.semantic,
            "aggregate": it.aggregate, "bucket": it.bucket, "focus": it.focus, "override": it.override,
            "code_lines": it.code_lines,
            "key_changes": [str(c) for c in changes[:key_limit]] + ([f"(+{len(changes) - key_limit} more)"]
                                                                    if len(changes) > key_limit else []),
            "reasons": [f"{r.get('score')} {r.get('delta', 0):+g}: {r.get('text', '')}" for r in it.reasons],
            "started_at": stored_time(it.started_at) if it.started_at else None,
            "commits": it.commits,
        })
    filters = ", ".join(f for f in (f"bucket {bucket}" if bucket else "", f"focus {focus}" if focus else "",
                                    f"last {last}" if last is not None else "") if f)
    return View(
        title=f"Iterations of {repo}" + (f" ({filters})" if filters else ""),
        columns=["iteration", "index", "final", "summary", "code_diff", "semantic", "aggregate", "bucket",
                 "focus", "override", "code_lines", "key_changes", "reasons", "started_at", "commits"],
        rows=rows,
        headers={"iteration": "Iter", "index": "#", "summary": "sum", "code_diff": "code", "semantic": "sem",
                 "aggregate": "agg", "code_lines": "code lines", "key_changes": "key changes"},
        numeric=frozenset({"iteration", "index", "summary", "code_diff", "semantic", "aggregate", "code_lines"}),
        nowrap=frozenset({"final", "bucket"}),
        caption="scores 0-100 (sum: summary, code: code-diff, sem: semantic, agg: aggregate)",
    )


TABLE_COLUMNS = {
    # The columns a terminal table shows; JSON and CSV carry every column.
    "iterations": ["iteration", "index", "final", "summary", "code_diff", "semantic", "aggregate", "bucket",
                   "focus", "override", "key_changes"],
}


def table_columns(name: str, view: View) -> View:
    """The view narrowed to what fits a terminal, where the view names such a subset."""
    cols = TABLE_COLUMNS.get(name)
    if not cols:
        return view
    return View(view.title, cols, view.rows, view.caption, view.headers, view.numeric, view.nowrap, view.times)


# --------------------------------------------------------------------------- dwell


@dataclass
class DwellRow:
    focus: str
    value: int
    tier: str | None
    iterations: list[int]
    reported: int | None
    peak: int
    updated_at: str | None


def load_dwell(conn: sqlite3.Connection, repo: str) -> list[DwellRow]:
    """Every focus's dwell (and the global count, focus "*"): global first, then highest first."""
    rows = conn.execute("SELECT * FROM dwell WHERE repo = ? ORDER BY focus != ?, value DESC, focus",
                        (repo, GLOBAL_FOCUS)).fetchall()
    return [DwellRow(r["focus"], r["value"], r["tier"], parse_json(r["iterations"], []), r["reported"],
                     max(r["peak"] or 0, r["value"]), r["updated_at"]) for r in rows]


def dwell_view(conn: sqlite3.Connection, repo: str) -> View:
    """Per focus and global: the current dwell, its tier, the longest streak seen."""
    labels = {i.idx: i.label for i in load_iterations(conn, repo)}
    rows = [{
        "focus": d.focus, "value": d.value, "tier": d.tier, "longest": d.peak, "reported": d.reported,
        "iterations": [labels.get(i, f"#{i}") for i in d.iterations], "indexes": d.iterations,
        "updated_at": d.updated_at,
    } for d in load_dwell(conn, repo)]
    return View(
        title=f"Dwell of {repo}",
        columns=["focus", "value", "tier", "longest", "reported", "iterations", "indexes", "updated_at"],
        rows=rows,
        headers={"value": "dwell", "longest": "longest streak", "reported": "self-reported",
                 "iterations": "iterations making it up", "updated_at": "updated"},
        numeric=frozenset({"value", "longest", "reported"}), times=frozenset({"updated_at"}),
        caption='dwell: consecutive iterations on a focus with no production/test change; focus "*" counts all foci',
    )


# --------------------------------------------------------------------------- alerts


def alerts_view(conn: sqlite3.Connection, repo: str, *, since: datetime | None = None, kind: str | None = None) -> View:
    """Alerts in the order they were raised."""
    sql = "SELECT * FROM alerts WHERE repo = ?"
    params: list[Any] = [repo]
    if since is not None:
        sql += " AND time >= ?"
        params.append(stored_time(since))
    if kind:
        sql += " AND alert = ?"
        params.append(kind)
    numbers = {i.idx: i.number for i in load_iterations(conn, repo)}
    rows = [{
        "time": r["time"], "kind": r["alert"], "severity": r["severity"],
        "iteration": numbers.get(r["iteration"]), "index": r["iteration"], "focus": r["focus"],
        "message": r["message"], "key": r["key"], "detail": parse_json(r["detail"], {}),
    } for r in conn.execute(sql + " ORDER BY time, key", params)]
    return View(title=f"Alerts of {repo}", columns=["time", "kind", "severity", "iteration", "index", "focus", "message",
                                                    "key", "detail"],
                rows=rows, headers={"iteration": "iter", "index": "#"}, numeric=frozenset({"iteration", "index"}),
                nowrap=frozenset({"severity", "time"}),
                times=frozenset({"time"}))


TABLE_COLUMNS["alerts"] = ["time", "kind", "severity", "iteration", "index", "focus", "message"]
TABLE_COLUMNS["dwell"] = ["focus", "value", "tier", "longest", "reported", "iterations", "updated_at"]


# --------------------------------------------------------------------------- ledger and hubs


def ledger_view(conn: sqlite3.Connection, repo: str) -> View:
    """Ledger items with their status and their last change."""
    last_change = {}
    for r in conn.execute(
        """SELECT item_id, change, old, new, result, time FROM (
             SELECT *, row_number() OVER (PARTITION BY item_id ORDER BY time DESC, key DESC) AS n
             FROM ledger_changes WHERE repo = ? AND item_id IS NOT NULL) WHERE n = 1""", (repo,)):
        what = r["change"].replace("_", " ")
        if r["change"] == "status_changed":
            what += f": {r['old'] or '?'} -> {r['new'] or '?'}"
        elif r["change"] == "attempt_added":
            what += f" #{r['new']}" + (f" ({r['result']})" if r["result"] else "")
        last_change[r["item_id"]] = (what, r["time"])
    rows = []
    for r in conn.execute("SELECT * FROM ledger_items WHERE repo = ? ORDER BY present DESC, first_seen, item_id",
                          (repo,)):
        change, when = last_change.get(r["item_id"], (None, None))
        rows.append({
            "item": r["item_id"], "title": r["title"], "status": r["status"], "priority": r["priority"],
            "attempts": r["attempts"], "last_result": r["last_result"], "present": bool(r["present"]),
            "last_change": change, "changed_at": when or r["updated_at"], "section": r["section"],
            "status_text": r["status_text"], "path": r["path"],
        })
    focus = conn.execute("SELECT active_focus FROM repos WHERE id = ?", (repo,)).fetchone()
    active = parse_json(focus[0], []) if focus else []
    return View(title=f"Ledger of {repo}",
                columns=["item", "title", "status", "priority", "attempts", "last_result", "present", "last_change",
                         "changed_at", "section", "status_text", "path"],
                rows=rows, headers={"last_result": "last result", "last_change": "last change",
                                    "changed_at": "changed"},
                numeric=frozenset({"attempts"}), times=frozenset({"changed_at"}),
                caption=("active focus: " + ", ".join(map(str, active))) if active else None)


TABLE_COLUMNS["ledger"] = ["item", "title", "status", "priority", "attempts", "last_result", "present", "last_change",
                           "changed_at"]


def hubs_view(conn: sqlite3.Connection, repo: str) -> View:
    """Per initiative: open hubs, all hubs, files and bytes (of every hub), last update."""
    rows = [dict(r) for r in conn.execute(
        """SELECT coalesce(initiative, '') AS initiative,
                  sum(archived = 0) AS open_hubs, count(*) AS hubs,
                  coalesce(sum(files), 0) AS files, coalesce(sum(bytes), 0) AS bytes,
                  max(coalesce(updated_at, opened_at)) AS last_update,
                  (SELECT h2.path FROM hubs h2 WHERE h2.repo = hubs.repo
                     AND coalesce(h2.initiative, '') = coalesce(hubs.initiative, '')
                     ORDER BY coalesce(h2.opened_at, h2.updated_at) DESC, h2.path DESC LIMIT 1) AS latest_hub
           FROM hubs WHERE repo = ? GROUP BY coalesce(initiative, '') ORDER BY last_update DESC""", (repo,))]
    return View(title=f"Hubs of {repo}", columns=["initiative", "open_hubs", "hubs", "files", "bytes", "last_update",
                                                   "latest_hub"],
                rows=rows, headers={"open_hubs": "open hubs", "last_update": "last update", "latest_hub": "latest hub"},
                numeric=frozenset({"open_hubs", "hubs", "files", "bytes"}), times=frozenset({"last_update"}),
                caption='evidence folders (hubs) per initiative; "" is hubs kept outside plans/')


# --------------------------------------------------------------------------- search


def fts_phrase(text: str) -> str:
    """User text as an FTS5 query of quoted terms: matched as words, never as query syntax."""
    terms = [t for t in text.split() if t]
    if not terms:
        raise QueryError("search: give some words to look for")
    return " ".join('"' + t.replace('"', '""') + '"' for t in terms)


def search_view(conn: sqlite3.Connection, repo: str, text: str, limit: int = 50) -> View:
    """Commit and alert messages matching every word of `text`, best match first."""
    match = fts_phrase(text)
    numbers = {i.idx: i.number for i in load_iterations(conn, repo)}
    rows = []
    for r in conn.execute(
        """SELECT c.committed_at AS time, c.sha, c.role, c.iteration, c.subject, c.message, commits_fts.rank AS rank
           FROM commits_fts JOIN commits c ON c.rowid = commits_fts.rowid
           WHERE commits_fts MATCH ? AND c.repo = ? ORDER BY rank LIMIT ?""", (match, repo, limit)):
        rows.append({"source": "commit", "time": r["time"], "ref": r["sha"], "kind": r["role"],
                     "iteration": r["iteration"], "text": r["subject"], "message": r["message"], "rank": r["rank"]})
    for r in conn.execute(
        """SELECT a.time, a.key, a.alert, a.iteration, a.message, alerts_fts.rank AS rank
           FROM alerts_fts JOIN alerts a ON a.rowid = alerts_fts.rowid
           WHERE alerts_fts MATCH ? AND a.repo = ? ORDER BY rank LIMIT ?""", (match, repo, limit)):
        rows.append({"source": "alert", "time": r["time"], "ref": r["key"], "kind": r["alert"],
                     "iteration": numbers.get(r["iteration"]), "text": r["message"].split("\n", 1)[0],
                     "message": r["message"], "rank": r["rank"]})
    rows.sort(key=lambda row: row["rank"])
    return View(title=f"Messages of {repo} matching {text!r}",
                columns=["source", "time", "ref", "kind", "iteration", "text", "message", "rank"], rows=rows[:limit],
                numeric=frozenset({"iteration"}), times=frozenset({"time"}))


TABLE_COLUMNS["search"] = ["source", "time", "ref", "kind", "iteration", "text"]


# --------------------------------------------------------------------------- sql


def sql_view(conn: sqlite3.Connection, statement: str, limit: int | None = None) -> View:
    """Run one reading statement; anything that would write is refused with `ReadOnlyRefused`."""
    if not _READ_STATEMENT.match(statement):
        first = statement.strip().split(None, 1)[0] if statement.strip() else "(nothing)"
        raise ReadOnlyRefused(
            f"sql: refused {first[:40]!r}: the store is opened read-only here; run SELECT, WITH, VALUES, "
            "EXPLAIN or a reading PRAGMA")
    guard = getattr(conn, "guard", None)
    if guard is not None:
        guard.refused = None
    try:
        cursor = conn.execute(statement)
        rows = cursor.fetchmany(limit) if limit else cursor.fetchall()
    except sqlite3.ProgrammingError as exc:
        raise QueryError(f"sql: {exc} (one statement per call)") from None
    except sqlite3.DatabaseError as exc:
        refused = guard.refused if guard is not None else None
        message = str(exc)
        if refused or "readonly" in message or "read-only" in message or "not authorized" in message:
            raise ReadOnlyRefused(
                f"sql: refused ({refused or message}): the store is opened read-only here; "
                "only reading statements run") from None
        raise QueryError(f"sql: {message}") from None
    columns = [d[0] for d in cursor.description or []]
    unique = _unique_names(columns)
    return View(title="SQL", columns=unique, rows=[dict(zip(unique, tuple(r))) for r in rows])


def _unique_names(columns: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for c in columns:
        n = seen.get(c, 0)
        seen[c] = n + 1
        out.append(c if n == 0 else f"{c}_{n + 1}")
    return out


# --------------------------------------------------------------------------- figures shared by report and metrics


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else 0.0


def mean(values: Sequence[float]) -> float:
    return float(statistics.fmean(values)) if values else 0.0


# --------------------------------------------------------------------------- dispatch

VIEWS = ("iterations", "dwell", "alerts", "ledger", "hubs", "search", "sql")


def build_view(conn: sqlite3.Connection, repo: str, name: str, *, last: int | None = None, bucket: str | None = None,
               focus: str | None = None, since: str | None = None, kind: str | None = None, text: str | None = None,
               statement: str | None = None) -> View:
    """The named view with its options, as `loopmon query NAME` shows it."""
    if name == "iterations":
        if last is not None and last < 0:
            raise QueryError(f"--last {last}: give a count of iterations (0 or more)")
        return iterations_view(conn, repo, last=last, bucket=bucket, focus=focus)
    if name == "dwell":
        return dwell_view(conn, repo)
    if name == "alerts":
        return alerts_view(conn, repo, since=parse_since(since) if since else None, kind=kind)
    if name == "ledger":
        return ledger_view(conn, repo)
    if name == "hubs":
        return hubs_view(conn, repo)
    if name == "search":
        return search_view(conn, repo, text or "")
    if name == "sql":
        return sql_view(conn, statement or "")
    raise QueryError(f"unknown view {name!r}; choose from {', '.join(VIEWS)}")
