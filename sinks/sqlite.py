"""The SQLite store: every event, and tables for what people ask about.

`events` keeps every envelope (heartbeats excepted) with its full JSON, so the scorer
and the live view can be rebuilt from the store alone. The other tables are derived
from the events by the `*_ops` functions below; a migration that adds a table fills it
by running the same functions over the stored events (`rebuild_derived`).

Idempotence: an event's row is keyed by `event_key` (its `Envelope.key`), and a
derived table only changes for an event not stored before, so a replay, a backfill run
twice or a restart adds nothing. The scorer's state tables (`iterations`, `dwell`) are
plain upserts on their natural keys and are applied every time.

Heartbeats are not stored as events: `streams` keeps each stream's highest sequence
number and its latest heartbeat.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any

import sqlite_utils

from monitor.config import StoreSettings
from monitor.events import Alert, Envelope, Warning, digest
from sinks.store_facts import Restatements, fact_of
from sinks.store_schema import StoreError, migrate

# Payload kinds the scorer produces: not input to a rebuilt scorer.
SCORER_KINDS = frozenset({"iteration_scored", "dwell_changed", "alert"})
SCORER_SOURCE = "scorer"
# State that the scorer restates as it changes: identified by content, not by stream position.
_STATE_KINDS = frozenset({"iteration_scored", "dwell_changed"})
# Derived tables, in the order a batch writes them (repos first for the foreign keys).
TABLES = ("repos", "events", "streams", "commits", "commit_files", "iterations", "dwell", "alerts",
          "ledger_items", "ledger_changes", "hubs", "briefs", "facts")
_IN_CHUNK = 500  # stays under SQLite's host-parameter limit
_ZERO = timedelta(0)


# --------------------------------------------------------------------------- values


def iso(dt: datetime | None) -> str | None:
    """A timestamp as sortable UTC ISO-8601 text (naive times are taken as UTC)."""
    if dt is None:
        return None
    if dt.tzinfo is timezone.utc or (dt.tzinfo is not None and dt.utcoffset() == _ZERO):
        return dt.isoformat(timespec="microseconds")
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.astimezone(timezone.utc).isoformat(timespec="microseconds")


_ENCODE = json.JSONEncoder(ensure_ascii=False, default=str).encode  # json.dumps would build one per call


def as_json(value: Any) -> str | None:
    """Lists and dicts as JSON text (Datasette shows it as such); None stays NULL."""
    if value is None:
        return None
    if not value and type(value) is list:
        return "[]"
    return _ENCODE(value)


def event_key(env: Envelope) -> str:
    """The key of an event's row: `Envelope.key`, except for restated scorer state.

    The scorer restates an iteration's scores and a focus's dwell whenever they move, and
    a restarted scorer restates them under a new stream id. Keyed by content, the same
    state stated twice is one row, which `Envelope.key` (stream and seq) would not give.
    """
    p = env.payload
    kind = p.kind
    if kind == "iteration_scored":
        return f"{env.repo}/iteration_scored:{p.index}:{digest(p.model_dump_json())}"
    if kind == "dwell_changed":
        return f"{env.repo}/dwell_changed:{p.focus}:{digest(p.model_dump_json())}"
    if _keyed_by_position(type(p)):
        # Same value as Envelope.key, without its per-instance attribute probe (hot path).
        return f"{env.repo}/{env.source}/{env.stream}/{env.seq}"
    return env.key


@lru_cache(maxsize=None)
def _keyed_by_position(payload_type: type) -> bool:
    return not hasattr(payload_type, "natural_key") and payload_type is not Alert


# --------------------------------------------------------------------------- rows per kind
#
# Each `*_ops` function turns one envelope into (table, sql, params) operations.
# Statements are the same text for every event of a kind so that a batch can send
# each run of them through one executemany.

_COMMIT_SQL = """INSERT OR IGNORE INTO commits (repo, sha, parents, author_name, author_email,
 authored_at, committed_at, subject, message, message_bytes, refs, role, iteration, sync_iteration,
 ledger_ids, tests_status, tests_passed, tests_failed, tests_selectors, tests_raw, files, insertions,
 deletions, code_lines, evidence, backfill, first_seen)
 VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"""
_COMMIT_FILE_SQL = """INSERT OR IGNORE INTO commit_files (repo, sha, path, path_bytes, old_path,
 insertions, deletions, path_class, binary, unknown, size) VALUES (?,?,?,?,?,?,?,?,?,?,?)"""
_ORPHAN_SQL = "UPDATE commits SET orphaned = 1, orphan_reason = ? WHERE repo = ? AND sha = ?"


def commit_ops(env: Envelope) -> list[tuple[str, str, tuple]]:
    """A commit row and one row per file of its numstat."""
    c = env.payload
    code_lines = sum(f.lines for f in c.files if f.path_class in ("production", "test"))
    ops = [("commits", _COMMIT_SQL, (
        env.repo, c.sha, as_json(c.parents), c.author_name, c.author_email,
        iso(c.authored_at), iso(c.committed_at), c.subject, c.message, c.message_bytes,
        as_json(c.refs), c.role, c.iteration, c.sync.iteration if c.sync else None,
        as_json(c.ledger_ids), c.tests.status, c.tests.passed, c.tests.failed,
        as_json(c.tests.selectors), c.tests.raw, len(c.files),
        sum(f.insertions or 0 for f in c.files), sum(f.deletions or 0 for f in c.files), code_lines,
        c.evidence.model_dump_json(), int(c.backfill), iso(env.observed),
    ))]
    for f in c.files:
        ops.append(("commit_files", _COMMIT_FILE_SQL, (
            env.repo, c.sha, f.path, f.path_bytes, f.old_path, f.insertions, f.deletions,
            f.path_class, int(f.binary), int(f.unknown), f.size,
        )))
    return ops


def commit_orphaned_ops(env: Envelope) -> list[tuple[str, str, tuple]]:
    p = env.payload
    return [("commits", _ORPHAN_SQL, (p.reason, env.repo, p.sha))]


_ITERATION_COLUMNS = ("repo", "idx", "number", "provisional", "summary", "code_diff", "semantic",
                      "aggregate", "bucket", "override", "reasons", "focus", "started_at", "ended_at",
                      "supervisor_commits", "engineer_commits", "other_commits", "code_lines",
                      "insertions", "deletions", "files_touched", "brief_digest", "hubs", "evidence",
                      "updated_at")
# A final score is never replaced by a provisional one that arrives late.
_ITERATION_SQL = (
    f"INSERT INTO iterations ({', '.join(_ITERATION_COLUMNS)}) VALUES ({', '.join('?' * len(_ITERATION_COLUMNS))})"
    " ON CONFLICT (repo, idx) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in _ITERATION_COLUMNS[2:])
    + " WHERE iterations.provisional = 1 OR excluded.provisional = 0"
)


def iteration_ops(env: Envelope) -> list[tuple[str, str, tuple]]:
    """Upserted on (repo, index): provisional until final."""
    p = env.payload
    return [("iterations", _ITERATION_SQL, (
        env.repo, p.index, p.number, int(p.provisional), p.summary, p.code_diff, p.semantic,
        p.aggregate, p.bucket, p.override, as_json([r.model_dump() for r in p.reasons]), p.focus,
        iso(p.started_at), iso(p.ended_at), as_json(p.supervisor_commits), as_json(p.engineer_commits),
        as_json(p.other_commits), p.code_lines, p.insertions, p.deletions, p.files_touched,
        p.brief_digest, as_json(p.hubs), p.evidence, iso(env.time),
    ))]


_DWELL_SQL = """INSERT INTO dwell (repo, focus, value, tier, iterations, reported, peak, updated_at)
 VALUES (?,?,?,?,?,?,?,?) ON CONFLICT (repo, focus) DO UPDATE SET value = excluded.value,
 tier = excluded.tier, iterations = excluded.iterations, reported = excluded.reported,
 peak = max(dwell.peak, excluded.value), updated_at = excluded.updated_at"""


def dwell_ops(env: Envelope) -> list[tuple[str, str, tuple]]:
    p = env.payload
    return [("dwell", _DWELL_SQL, (env.repo, p.focus, p.value, p.tier, as_json(p.iterations),
                                   p.reported, p.value, iso(env.time)))]


_ALERT_SQL = """INSERT OR IGNORE INTO alerts (repo, key, alert, severity, iteration, focus, message,
 detail, time, observed) VALUES (?,?,?,?,?,?,?,?,?,?)"""


def alert_ops(env: Envelope) -> list[tuple[str, str, tuple]]:
    """Raised once: a restated alert with a known key changes nothing."""
    p = env.payload
    return [("alerts", _ALERT_SQL, (env.repo, p.key, p.alert, p.severity, p.iteration, p.focus,
                                    p.message, as_json(p.detail), iso(env.time), iso(env.observed)))]


_LEDGER_CHANGE_SQL = """INSERT OR IGNORE INTO ledger_changes (key, repo, time, path, change, item_id,
 old, new, result, text) VALUES (?,?,?,?,?,?,?,?,?,?)"""
_LEDGER_ADDED_SQL = """INSERT INTO ledger_items (repo, path, item_id, title, priority, status,
 status_text, section, attempts, last_result, present, first_seen, updated_at)
 VALUES (?,?,?,?,?,?,?,?,?,?,1,?,?) ON CONFLICT (repo, path, item_id) DO UPDATE SET
 title = excluded.title, priority = excluded.priority, status = excluded.status,
 status_text = excluded.status_text, section = excluded.section, attempts = excluded.attempts,
 last_result = excluded.last_result, present = 1, removed_at = NULL, updated_at = excluded.updated_at"""
_LEDGER_REMOVED_SQL = """INSERT INTO ledger_items (repo, path, item_id, title, present, first_seen,
 updated_at, removed_at) VALUES (?,?,?,?,0,?,?,?) ON CONFLICT (repo, path, item_id) DO UPDATE SET
 present = 0, updated_at = excluded.updated_at, removed_at = excluded.removed_at"""
_LEDGER_STATUS_SQL = """INSERT INTO ledger_items (repo, path, item_id, status, first_seen, updated_at)
 VALUES (?,?,?,?,?,?) ON CONFLICT (repo, path, item_id) DO UPDATE SET status = excluded.status,
 updated_at = excluded.updated_at"""
_LEDGER_ATTEMPT_SQL = """INSERT INTO ledger_items (repo, path, item_id, attempts, last_result,
 first_seen, updated_at) VALUES (?,?,?,1,?,?,?) ON CONFLICT (repo, path, item_id) DO UPDATE SET
 attempts = ledger_items.attempts + 1, last_result = excluded.last_result,
 updated_at = excluded.updated_at"""
_FOCUS_SQL = "UPDATE repos SET active_focus = ? WHERE id = ?"


def _ledger_change(env: Envelope, change: str, item_id: str | None, old: Any = None, new: Any = None,
                   result: str | None = None, text: str | None = None) -> tuple[str, str, tuple]:
    return ("ledger_changes", _LEDGER_CHANGE_SQL,
            (event_key(env), env.repo, iso(env.time), env.payload.path, change, item_id, old, new, result, text))


def ledger_ops(env: Envelope) -> list[tuple[str, str, tuple]]:
    """Every ledger event is a change row; items keep their latest state."""
    p, t = env.payload, iso(env.time)
    if p.kind == "ledger_item_added":
        i = p.item
        last = i.attempts[-1].result if i.attempts else None
        return [
            ("ledger_items", _LEDGER_ADDED_SQL, (env.repo, p.path, i.id, i.title, i.priority, i.status,
                                                 i.status_text, i.section, len(i.attempts), last, t, t)),
            _ledger_change(env, "added", i.id, new=i.status, text=i.title),
        ]
    if p.kind == "ledger_item_removed":
        return [
            ("ledger_items", _LEDGER_REMOVED_SQL, (env.repo, p.path, p.item_id, p.title, t, t, t)),
            _ledger_change(env, "removed", p.item_id, text=p.title),
        ]
    if p.kind == "ledger_status_changed":
        return [
            ("ledger_items", _LEDGER_STATUS_SQL, (env.repo, p.path, p.item_id, p.new, t, t)),
            _ledger_change(env, "status_changed", p.item_id, old=p.old, new=p.new),
        ]
    if p.kind == "ledger_attempt_added":
        a = p.attempt
        return [
            ("ledger_items", _LEDGER_ATTEMPT_SQL, (env.repo, p.path, p.item_id, a.result, t, t)),
            _ledger_change(env, "attempt_added", p.item_id, new=a.number, result=a.result, text=a.text),
        ]
    if p.kind == "focus_changed":
        return [
            ("repos", _FOCUS_SQL, (as_json(p.new), env.repo)),
            _ledger_change(env, "focus_changed", None, old=as_json(p.old), new=as_json(p.new)),
        ]
    return []


_HUB_OPENED_SQL = """INSERT INTO hubs (repo, path, initiative, stamp, opened_at, updated_at)
 VALUES (?,?,?,?,?,?) ON CONFLICT (repo, path) DO UPDATE SET
 initiative = coalesce(excluded.initiative, hubs.initiative), stamp = excluded.stamp,
 opened_at = coalesce(hubs.opened_at, excluded.opened_at)"""
_HUB_UPDATED_SQL = """INSERT INTO hubs (repo, path, initiative, stamp, updated_at, files, bytes)
 VALUES (?,?,?,?,?,?,?) ON CONFLICT (repo, path) DO UPDATE SET
 initiative = coalesce(excluded.initiative, hubs.initiative), updated_at = excluded.updated_at,
 files = excluded.files, bytes = excluded.bytes"""
_HUB_SUMMARY_SQL = """INSERT INTO hubs (repo, path, initiative, stamp, updated_at, summary_excerpt)
 VALUES (?,?,?,?,?,?) ON CONFLICT (repo, path) DO UPDATE SET
 initiative = coalesce(excluded.initiative, hubs.initiative), updated_at = excluded.updated_at,
 summary_excerpt = excluded.summary_excerpt"""
_HUB_ARCHIVED_SQL = "UPDATE hubs SET archived = 1, archived_at = ? WHERE repo = ? AND initiative = ?"


def hub_ops(env: Envelope) -> list[tuple[str, str, tuple]]:
    """Hubs keep their latest size and summary; archiving an initiative archives its hubs."""
    p, t = env.payload, iso(env.time)
    if p.kind == "initiative_archived":
        return [("hubs", _HUB_ARCHIVED_SQL, (t, env.repo, p.initiative))]
    stamp = p.path.rstrip("/").rsplit("/", 1)[-1]
    if p.kind == "hub_opened":
        return [("hubs", _HUB_OPENED_SQL, (env.repo, p.path, p.initiative, p.stamp, t, t))]
    if p.kind == "hub_updated":
        return [("hubs", _HUB_UPDATED_SQL, (env.repo, p.path, p.initiative, stamp, t, p.files, p.bytes))]
    if p.kind == "hub_summary_changed":
        return [("hubs", _HUB_SUMMARY_SQL, (env.repo, p.path, p.initiative, stamp, t, p.excerpt))]
    return []


_BRIEF_SQL = """INSERT OR IGNORE INTO briefs (key, repo, time, path, summary, mode, focus, branch,
 mapped_tests, mapped_tests_none, artifacts, digest) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)"""


def brief_ops(env: Envelope) -> list[tuple[str, str, tuple]]:
    """One row per version of the brief."""
    p = env.payload
    return [("briefs", _BRIEF_SQL, (event_key(env), env.repo, iso(env.time), p.path, p.summary, p.mode,
                                    p.focus, p.branch, as_json(p.mapped_tests), int(p.mapped_tests_none),
                                    p.artifacts, p.digest))]


_BATON_SQL = """UPDATE repos SET baton_iteration = ?, expected_actor = ?, baton_status = ?,
 baton_updated = ?, lease_expires_at = ? WHERE id = ?"""
_STARTED_SQL = """UPDATE repos SET path = ?, branch = ?, head = ?, host = ?, pid = ?, version = ?
 WHERE id = ?"""


def repo_state_ops(env: Envelope) -> list[tuple[str, str, tuple]]:
    """The repo row keeps the latest baton and collector facts."""
    p = env.payload
    if p.kind == "baton_changed":
        return [("repos", _BATON_SQL, (p.iteration, p.expected_actor, p.status, iso(p.last_update),
                                       iso(p.lease_expires_at), env.repo))]
    if p.kind == "collector_started":
        return [("repos", _STARTED_SQL, (p.path, p.branch, p.head, p.host, p.pid, p.version, env.repo))]
    return []


OPS_BY_KIND = {
    "commit": commit_ops,
    "commit_orphaned": commit_orphaned_ops,
    "iteration_scored": iteration_ops,
    "dwell_changed": dwell_ops,
    "alert": alert_ops,
    "ledger_item_added": ledger_ops,
    "ledger_item_removed": ledger_ops,
    "ledger_status_changed": ledger_ops,
    "ledger_attempt_added": ledger_ops,
    "focus_changed": ledger_ops,
    "hub_opened": hub_ops,
    "hub_updated": hub_ops,
    "hub_summary_changed": hub_ops,
    "initiative_archived": hub_ops,
    "brief_updated": brief_ops,
    "baton_changed": repo_state_ops,
    "collector_started": repo_state_ops,
}


def derived_ops(env: Envelope) -> list[tuple[str, str, tuple]]:
    """The derived-table operations one event implies (none for most file events)."""
    fn = OPS_BY_KIND.get(env.kind)
    return fn(env) if fn else []


def run_ops(conn: sqlite3.Connection, ops: Iterable[tuple[str, str, tuple]]) -> None:
    """Execute operations table by table, each table's in order, runs of one statement batched."""
    by_table: dict[str, list[tuple[str, tuple]]] = {t: [] for t in TABLES}
    for table, sql, params in ops:
        by_table[table].append((sql, params))
    for table in TABLES:
        run: list[tuple] = []
        run_sql = None
        for sql, params in by_table[table]:
            if sql is not run_sql and run:
                conn.executemany(run_sql, run)
                run = []
            run_sql = sql
            run.append(params)
        if run:
            conn.executemany(run_sql, run)


def rebuild_derived(conn: sqlite3.Connection, tables: Iterable[str]) -> None:
    """Fill the given derived tables from the stored events (used by migrations)."""
    wanted = set(tables)
    ops: list[tuple[str, str, tuple]] = []
    for env in stored_events(conn):
        ops.extend(op for op in derived_ops(env) if op[0] in wanted)
        if len(ops) >= 5000:
            run_ops(conn, ops)
            ops = []
    run_ops(conn, ops)


def parse_stored(row_id: int, repo: str, text: str) -> Envelope:
    """A stored envelope; one this loopmon cannot read becomes a Warning saying so."""
    try:
        return Envelope.from_wire(text)
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return Envelope(repo=repo, source="store", seq=row_id, payload=Warning(
            code="stored_event_unreadable",
            message=f"stored event {row_id} could not be read by this loopmon ({first}); it was skipped",
            detail={"event_id": row_id}))


def stored_events(conn: sqlite3.Connection, where: str = "", params: tuple = (), *,
                  lock: AbstractContextManager | None = None, page: int = 1000) -> Iterator[Envelope]:
    """Stored envelopes in arrival order, a page at a time.

    Paging by id (not one long cursor) lets writes go on between pages, and holds
    `lock` only while a page is read.
    """
    sql = (f"SELECT id, repo, envelope FROM events WHERE id > ?{' AND ' + where if where else ''} "
           f"ORDER BY id LIMIT {int(page)}")
    last = 0
    while True:
        with lock or nullcontext():
            rows = conn.execute(sql, (last, *params)).fetchall()
        if not rows:
            return
        for row_id, repo, text in rows:
            yield parse_stored(row_id, repo, text)
        last = rows[-1][0]


# --------------------------------------------------------------------------- the sink

_EVENT_SQL = """INSERT OR IGNORE INTO events (key, repo, source, stream, seq, kind, time, observed, envelope)
 VALUES (?,?,?,?,?,?,?,?,?)"""
_REPO_SQL = """INSERT INTO repos (id, first_seen, last_seen) VALUES (?,?,?) ON CONFLICT (id) DO UPDATE
 SET last_seen = max(coalesce(repos.last_seen, ''), excluded.last_seen)"""
_STREAM_SQL = """INSERT INTO streams (repo, source, stream, last_seq, events, first_seen, last_seen,
 last_heartbeat, sent, dropped, interval, final) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)
 ON CONFLICT (repo, source, stream) DO UPDATE SET
 last_seq = max(streams.last_seq, excluded.last_seq), events = streams.events + excluded.events,
 last_seen = max(coalesce(streams.last_seen, ''), excluded.last_seen),
 last_heartbeat = coalesce(excluded.last_heartbeat, streams.last_heartbeat),
 sent = coalesce(excluded.sent, streams.sent), dropped = coalesce(excluded.dropped, streams.dropped),
 interval = coalesce(excluded.interval, streams.interval), final = max(streams.final, excluded.final)"""


class _StreamTally:
    """One stream's part of a batch: highest seq, first and last seen, latest heartbeat, new events."""

    __slots__ = ("seq", "first", "last", "heartbeat", "new")

    def __init__(self, env: Envelope) -> None:
        self.seq, self.first, self.last = env.seq, env.observed, env.observed
        self.heartbeat: Envelope | None = None
        self.new = 0

    def see(self, env: Envelope) -> None:
        if env.seq > self.seq:
            self.seq = env.seq
        observed = env.observed
        if observed < self.first:
            self.first = observed
        elif observed > self.last:
            self.last = observed

    def row(self, key: tuple[str, str, str]) -> tuple:
        hb = self.heartbeat
        p = hb.payload if hb is not None else None
        return (*key, self.seq, self.new, iso(self.first), iso(self.last), iso(hb.observed) if hb else None,
                p.sent if p else None, p.dropped if p else None, p.interval if p else None,
                int(getattr(p, "final", False)) if p else 0)


def stream_rows(batch: list[Envelope], new_counts: dict[tuple[str, str, str], int]) -> list[tuple]:
    """One streams upsert per stream in the batch: highest seq, latest heartbeat, new events."""
    tallies = _tally_streams(batch)
    for key, count in new_counts.items():
        tallies[key].new = count
    return [t.row(key) for key, t in tallies.items()]


def _tally_streams(batch: list[Envelope]) -> dict[tuple[str, str, str], _StreamTally]:
    tallies: dict[tuple[str, str, str], _StreamTally] = {}
    for env in batch:
        key = (env.repo, env.source, env.stream)
        tally = tallies.get(key)
        if tally is None:
            tally = tallies[key] = _StreamTally(env)
        else:
            tally.see(env)
        if env.payload.kind == "heartbeat" and (tally.heartbeat is None or env.seq >= tally.heartbeat.seq):
            tally.heartbeat = env
    return tallies


def open_store(path: str | Path) -> sqlite_utils.Database:
    """Open (creating if needed) and migrate a store; WAL so readers never block the writer."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        conn = sqlite3.connect(str(path), check_same_thread=False, timeout=10.0)
        conn.execute("PRAGMA busy_timeout = 10000")
        db = sqlite_utils.Database(conn)
        db.enable_wal()
        conn.execute("PRAGMA synchronous = NORMAL")  # durable at every checkpoint; safe in WAL
        conn.execute("PRAGMA foreign_keys = ON")
        migrate(db, path)
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{path}: cannot be opened as a loopmon store: {exc}") from exc
    return db


class SqliteSink:
    """Writes batches of envelopes into the store, one transaction per batch.

    Thread-safe: the runtime's receiver thread writes while another thread may read
    positions or stored events through the same sink.
    """

    def __init__(self, path: str | Path, settings: StoreSettings | None = None) -> None:
        self.path = Path(path)
        self.settings = settings or StoreSettings()
        self.db = open_store(self.path)
        self.conn = self.db.conn
        self._lock = threading.RLock()
        self._tokens: dict[str, str] = {}

    # ------------------------------------------------------------------ writing

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        # IMMEDIATE: the "already stored?" check and the inserts see the same database.
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            if self.conn.in_transaction:  # a full disk (SQLITE_FULL) has rolled it back already
                self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def _stored_keys(self, keys: list[str]) -> set[str]:
        found: set[str] = set()
        for i in range(0, len(keys), _IN_CHUNK):
            chunk = keys[i : i + _IN_CHUNK]
            sql = f"SELECT key FROM events WHERE key IN ({','.join('?' * len(chunk))})"
            found.update(r[0] for r in self.conn.execute(sql, chunk))
        return found

    def _maybe_stored(self, keyed: list[tuple[str, Envelope, str, tuple[str, str, str]]],
                      streams: Iterable[tuple[str, str, str]]) -> list[str]:
        """Keys that could already be in `events`: all but positional keys past their stream's end.

        A positional key (repo/source/stream/seq) with a seq above the stream's highest
        stored seq cannot be stored yet, which spares the lookup for the live case.
        """
        ends: dict[tuple[str, str, str], int] = {}
        for sk in streams:
            row = self.conn.execute("SELECT last_seq FROM streams WHERE repo = ? AND source = ? AND stream = ?",
                                    sk).fetchone()
            ends[sk] = row[0] if row else -1
        return [key for key, env, _, sk in keyed if not (_keyed_by_position(type(env.payload)) and env.seq > ends[sk])]

    def write(self, batch: list[Envelope]) -> None:
        """Store one batch in one transaction; events already stored change nothing."""
        if not batch:
            return
        with self._lock, self._transaction() as conn:
            # One pass over the batch for what every event needs (this runs per event
            # at full bus speed): its key, its stream's tally, its repo's last sighting.
            tallies = _tally_streams(batch)
            keyed = [(event_key(env), env, env.payload.kind, (env.repo, env.source, env.stream))
                     for env in batch if env.payload.kind != "heartbeat"]
            stored = self._stored_keys(self._maybe_stored(keyed, tallies))
            event_rows = []
            ops: list[tuple[str, str, tuple]] = []
            restatements = Restatements(conn)
            for key, env, kind, sk in keyed:
                new = key not in stored
                if new:
                    stored.add(key)  # a duplicate inside the batch is not new either
                    new = not restatements.restates(env)
                if new:
                    # Most events happen when they are observed: one timestamp to format, not two.
                    when = iso(env.time)
                    seen = when if env.observed == env.time else iso(env.observed)
                    event_rows.append((key, env.repo, env.source, env.stream, env.seq, kind, when, seen, env.json_text()))
                    tallies[sk].new += 1
                if (new or kind in _STATE_KINDS) and kind in OPS_BY_KIND:
                    ops.extend(OPS_BY_KIND[kind](env))
            last_seen: dict[str, datetime] = {}
            for (repo, _, _), tally in tallies.items():
                if repo not in last_seen or tally.last > last_seen[repo]:
                    last_seen[repo] = tally.last
            conn.executemany(_REPO_SQL, [(r, iso(t), iso(t)) for r, t in last_seen.items()])
            conn.executemany(_EVENT_SQL, event_rows)
            conn.executemany(_STREAM_SQL, [t.row(sk) for sk, t in tallies.items()])
            restatements.flush()
            run_ops(conn, ops)

    def close(self) -> None:
        """Fold the write-ahead log back into the database and close."""
        with self._lock:
            try:
                self.conn.execute("PRAGMA optimize")
                self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error:
                pass  # a reader may still hold the log; the next open checkpoints
            self.conn.close()

    # ------------------------------------------------------------------ reading

    def input_events(self, repo: str | None = None) -> Iterator[Envelope]:
        """Stored envelopes that are not scorer output, in arrival order (for Scorer.restore)."""
        kinds = tuple(sorted(SCORER_KINDS))
        where = f"source != ? AND kind NOT IN ({','.join('?' * len(kinds))})"
        params: tuple = (SCORER_SOURCE, *kinds)
        if repo is not None:
            where += " AND repo = ?"
            params += (repo,)
        return stored_events(self.conn, where, params, lock=self._lock)

    def alert_keys(self, repo: str | None = None) -> set[str]:
        """Keys of the alerts already raised (Alert.key), for one repo or all."""
        with self._lock:
            if repo is None:
                return {r[0] for r in self.conn.execute("SELECT key FROM alerts")}
            return {r[0] for r in self.conn.execute("SELECT key FROM alerts WHERE repo = ?", (repo,))}

    def stream_positions(self) -> dict[tuple[str, str, str], int]:
        """(repo, source, stream) -> highest seq stored, heartbeats included."""
        with self._lock:
            return {(r, s, st): seq for r, s, st, seq in
                    self.conn.execute("SELECT repo, source, stream, last_seq FROM streams")}

    def holds(self, env: Envelope) -> bool:
        """Whether this event is stored already (or was recognised as restating stored state)."""
        with self._lock:
            if self.conn.execute("SELECT 1 FROM events WHERE key = ?", (event_key(env),)).fetchone():
                return True
            fact = fact_of(env)
            if fact is None:
                return False
            row = self.conn.execute("SELECT digest FROM facts WHERE repo = ? AND entity = ?", (env.repo, fact[0])).fetchone()
            return row is not None and row[0] == fact[1]

    def store_token(self, repo: str) -> str:
        """This store's identity for `repo`: the repo's id and when this store first heard of it.

        Sent with every acknowledgement, so a collector trusts the state it saved only
        when the store answering is the one that holds the events that state describes
        (not a fresh or replaced database).
        """
        token = self._tokens.get(repo)
        if token is None:
            with self._lock:
                row = self.conn.execute("SELECT first_seen FROM repos WHERE id = ?", (repo,)).fetchone()
            if row is None or row[0] is None:
                return ""
            token = self._tokens[repo] = f"{repo}@{row[0]}"
        return token

    def counts(self) -> dict[str, int]:
        """Rows per table: a quick look at what the store holds."""
        with self._lock:
            return {t: self.conn.execute(f"SELECT count(*) FROM [{t}]").fetchone()[0] for t in TABLES}
