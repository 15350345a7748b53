"""The store's schema: its version, its migrations, and the checks made on open.

The version lives in SQLite's own header (`PRAGMA user_version`), so any tool can
read it. Each migration runs in one transaction together with the version bump: a
database is at one known version or another, never half way. A database newer than
this loopmon knows, or a file that is not a loopmon store, is refused with a message.

Migrations are frozen SQL: once released, a step never changes, because databases
made by that release depend on exactly what it did. Later needs get a new step.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import sqlite_utils

STORE_SCHEMA_VERSION = 2

# Foreign keys are checked at COMMIT, so rows of one batch may arrive in any order.
_FK = "DEFERRABLE INITIALLY DEFERRED"


class StoreError(Exception):
    """A database loopmon cannot use; the message says which file and why."""


class StoreVersionError(StoreError):
    """The database was written by a newer loopmon (or names an unknown version)."""


# --------------------------------------------------------------------------- version 1

SCHEMA_V1 = f"""
CREATE TABLE repos (
    id TEXT PRIMARY KEY,
    path TEXT, branch TEXT, head TEXT, host TEXT, pid INTEGER, version TEXT,
    first_seen TEXT, last_seen TEXT,
    baton_iteration INTEGER, expected_actor TEXT, baton_status TEXT,
    baton_updated TEXT, lease_expires_at TEXT,
    active_focus TEXT
);
CREATE TABLE events (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    repo TEXT NOT NULL REFERENCES repos(id) {_FK},
    source TEXT NOT NULL,
    stream TEXT NOT NULL,
    seq INTEGER NOT NULL,
    kind TEXT NOT NULL,
    time TEXT NOT NULL,
    observed TEXT NOT NULL,
    envelope TEXT NOT NULL
);
CREATE INDEX idx_events_kind_time ON events (kind, time);
CREATE INDEX idx_events_repo_time ON events (repo, time);
CREATE INDEX idx_events_stream ON events (repo, source, stream, seq);
CREATE TABLE commits (
    repo TEXT NOT NULL REFERENCES repos(id) {_FK},
    sha TEXT NOT NULL,
    parents TEXT, author_name TEXT, author_email TEXT,
    authored_at TEXT, committed_at TEXT,
    subject TEXT, message TEXT, message_bytes BLOB,
    refs TEXT, role TEXT, iteration INTEGER, sync_iteration INTEGER,
    ledger_ids TEXT,
    tests_status TEXT, tests_passed INTEGER, tests_failed INTEGER,
    tests_selectors TEXT, tests_raw TEXT,
    files INTEGER, insertions INTEGER, deletions INTEGER, code_lines INTEGER,
    evidence TEXT, backfill INTEGER,
    orphaned INTEGER NOT NULL DEFAULT 0, orphan_reason TEXT,
    first_seen TEXT,
    PRIMARY KEY (repo, sha)
);
CREATE INDEX idx_commits_committed_at ON commits (committed_at);
CREATE INDEX idx_commits_repo_committed_at ON commits (repo, committed_at);
CREATE INDEX idx_commits_repo_iteration ON commits (repo, iteration);
CREATE TABLE commit_files (
    repo TEXT NOT NULL,
    sha TEXT NOT NULL,
    path TEXT NOT NULL,
    path_bytes BLOB, old_path TEXT,
    insertions INTEGER, deletions INTEGER,
    path_class TEXT, binary INTEGER, unknown INTEGER, size INTEGER,
    PRIMARY KEY (repo, sha, path),
    FOREIGN KEY (repo, sha) REFERENCES commits(repo, sha) {_FK}
);
CREATE INDEX idx_commit_files_path ON commit_files (repo, path);
CREATE TABLE iterations (
    repo TEXT NOT NULL REFERENCES repos(id) {_FK},
    idx INTEGER NOT NULL,
    number INTEGER,
    provisional INTEGER NOT NULL,
    summary INTEGER, code_diff INTEGER, semantic INTEGER, aggregate INTEGER,
    bucket TEXT, reasons TEXT, focus TEXT,
    started_at TEXT, ended_at TEXT,
    supervisor_commits TEXT, engineer_commits TEXT, other_commits TEXT,
    code_lines INTEGER, insertions INTEGER, deletions INTEGER, files_touched INTEGER,
    brief_digest TEXT, hubs TEXT,
    updated_at TEXT,
    PRIMARY KEY (repo, idx)
);
CREATE INDEX idx_iterations_bucket ON iterations (repo, bucket);
CREATE INDEX idx_iterations_focus ON iterations (repo, focus);
CREATE TABLE dwell (
    repo TEXT NOT NULL REFERENCES repos(id) {_FK},
    focus TEXT NOT NULL,
    value INTEGER NOT NULL, tier TEXT, iterations TEXT, reported INTEGER,
    peak INTEGER, updated_at TEXT,
    PRIMARY KEY (repo, focus)
);
CREATE TABLE alerts (
    repo TEXT NOT NULL REFERENCES repos(id) {_FK},
    key TEXT NOT NULL,
    alert TEXT NOT NULL, severity TEXT NOT NULL,
    iteration INTEGER, focus TEXT,
    message TEXT NOT NULL, detail TEXT,
    time TEXT NOT NULL, observed TEXT,
    PRIMARY KEY (repo, key)
);
CREATE INDEX idx_alerts_time ON alerts (time);
CREATE INDEX idx_alerts_alert_time ON alerts (alert, time);
CREATE TABLE ledger_items (
    repo TEXT NOT NULL REFERENCES repos(id) {_FK},
    path TEXT NOT NULL,
    item_id TEXT NOT NULL,
    title TEXT, priority TEXT, status TEXT, status_text TEXT, section TEXT,
    attempts INTEGER NOT NULL DEFAULT 0, last_result TEXT,
    present INTEGER NOT NULL DEFAULT 1,
    first_seen TEXT, updated_at TEXT, removed_at TEXT,
    PRIMARY KEY (repo, path, item_id)
);
CREATE INDEX idx_ledger_items_status ON ledger_items (repo, status);
CREATE TABLE ledger_changes (
    key TEXT PRIMARY KEY,
    repo TEXT NOT NULL REFERENCES repos(id) {_FK},
    time TEXT NOT NULL,
    path TEXT,
    change TEXT NOT NULL,
    item_id TEXT, old TEXT, new TEXT, result TEXT, text TEXT
);
CREATE INDEX idx_ledger_changes_item ON ledger_changes (repo, item_id, time);
CREATE INDEX idx_ledger_changes_time ON ledger_changes (repo, time);
"""


def migrate_to_1(db: sqlite_utils.Database) -> None:
    """The first schema: events, commits, iterations, dwell, alerts and the ledger."""
    db.executescript(SCHEMA_V1)


# --------------------------------------------------------------------------- version 2

SCHEMA_V2 = f"""
CREATE TABLE streams (
    repo TEXT NOT NULL REFERENCES repos(id) {_FK},
    source TEXT NOT NULL,
    stream TEXT NOT NULL,
    last_seq INTEGER NOT NULL,
    events INTEGER NOT NULL DEFAULT 0,
    first_seen TEXT, last_seen TEXT,
    last_heartbeat TEXT, sent INTEGER, dropped INTEGER, interval REAL,
    final INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (repo, source, stream)
);
CREATE TABLE hubs (
    repo TEXT NOT NULL REFERENCES repos(id) {_FK},
    path TEXT NOT NULL,
    initiative TEXT, stamp TEXT,
    opened_at TEXT, updated_at TEXT,
    files INTEGER, bytes INTEGER, summary_excerpt TEXT,
    archived INTEGER NOT NULL DEFAULT 0, archived_at TEXT,
    PRIMARY KEY (repo, path)
);
CREATE INDEX idx_hubs_initiative ON hubs (repo, initiative);
CREATE TABLE briefs (
    key TEXT PRIMARY KEY,
    repo TEXT NOT NULL REFERENCES repos(id) {_FK},
    time TEXT NOT NULL,
    path TEXT, summary TEXT, mode TEXT, focus TEXT, branch TEXT,
    mapped_tests TEXT, mapped_tests_none INTEGER, artifacts TEXT, digest TEXT
);
CREATE INDEX idx_briefs_time ON briefs (repo, time);
CREATE INDEX idx_briefs_focus ON briefs (repo, focus);
CREATE TABLE facts (
    repo TEXT NOT NULL REFERENCES repos(id) {_FK},
    entity TEXT NOT NULL,
    digest TEXT NOT NULL,
    PRIMARY KEY (repo, entity)
) WITHOUT ROWID;
ALTER TABLE iterations ADD COLUMN override TEXT;
ALTER TABLE iterations ADD COLUMN evidence TEXT;
CREATE INDEX idx_iterations_aggregate ON iterations (repo, aggregate);
CREATE INDEX idx_alerts_repo_time ON alerts (repo, time);
DROP INDEX idx_events_stream;
"""

# Version 1 stored every heartbeat as an event; version 2 keeps each stream's latest
# position and heartbeat in `streams` instead, which keeps `events` lean.
_STREAMS_FROM_EVENTS = """
INSERT INTO streams (repo, source, stream, last_seq, events, first_seen, last_seen)
SELECT repo, source, stream, max(seq), sum(kind != 'heartbeat'), min(observed), max(observed)
FROM events GROUP BY repo, source, stream;
"""
_HEARTBEATS_FROM_EVENTS = """
UPDATE streams SET
    last_heartbeat = h.observed,
    sent = json_extract(h.envelope, '$.payload.sent'),
    dropped = json_extract(h.envelope, '$.payload.dropped'),
    interval = json_extract(h.envelope, '$.payload.interval')
FROM (
    SELECT repo, source, stream, observed, envelope,
           row_number() OVER (PARTITION BY repo, source, stream ORDER BY seq DESC) AS n
    FROM events WHERE kind = 'heartbeat'
) AS h
WHERE h.n = 1 AND h.repo = streams.repo AND h.source = streams.source AND h.stream = streams.stream;
"""
_ITERATION_COLUMNS_FROM_EVENTS = """
UPDATE iterations SET
    override = json_extract(last.envelope, '$.payload.override'),
    evidence = json_extract(last.envelope, '$.payload.evidence')
FROM (
    SELECT repo, json_extract(envelope, '$.payload.index') AS idx, envelope,
           row_number() OVER (PARTITION BY repo, json_extract(envelope, '$.payload.index') ORDER BY id DESC) AS n
    FROM events WHERE kind = 'iteration_scored'
) AS last
WHERE last.n = 1 AND last.repo = iterations.repo AND last.idx = iterations.idx;
"""


def migrate_to_2(db: sqlite_utils.Database) -> None:
    """Streams instead of stored heartbeats, hubs and briefs, restatement facts, full-text search.

    The new tables are filled from the stored events, so an upgraded database looks
    as if this version had written it from the start.
    """
    from sinks.sqlite import rebuild_derived  # the same code that fills them live

    db.executescript(SCHEMA_V2)
    db.execute(_STREAMS_FROM_EVENTS)
    db.execute(_HEARTBEATS_FROM_EVENTS)
    db.execute("DELETE FROM events WHERE kind = 'heartbeat'")
    db.execute(_ITERATION_COLUMNS_FROM_EVENTS)
    rebuild_derived(db.conn, tables=("hubs", "briefs"))
    db["commits"].enable_fts(["subject", "message"], create_triggers=True)
    db["alerts"].enable_fts(["message"], create_triggers=True)


MIGRATIONS: dict[int, Callable[[sqlite_utils.Database], None]] = {
    1: migrate_to_1,
    2: migrate_to_2,
}
assert max(MIGRATIONS) == STORE_SCHEMA_VERSION


# --------------------------------------------------------------------------- open


def schema_version(conn: sqlite3.Connection) -> int:
    return conn.execute("PRAGMA user_version").fetchone()[0]


def check_version(path: Path, version: int, conn: sqlite3.Connection) -> None:
    """Refuse a database this loopmon cannot read or upgrade."""
    if version > STORE_SCHEMA_VERSION:
        raise StoreVersionError(
            f"{path}: the store has schema version {version}, but this loopmon knows versions "
            f"up to {STORE_SCHEMA_VERSION}; it was written by a newer loopmon. Upgrade loopmon, "
            "or point --db at another file."
        )
    if version < 0:
        raise StoreVersionError(f"{path}: the store names schema version {version}, which no loopmon wrote.")
    if version == 0:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        if tables:
            shown = ", ".join(sorted(tables)[:5])
            raise StoreError(
                f"{path}: not a loopmon store (it has tables such as {shown} but no loopmon schema "
                "version); refusing to write into it. Point --db at another file."
            )


def migrate(db: sqlite_utils.Database, path: Path) -> tuple[int, int]:
    """Bring the database to STORE_SCHEMA_VERSION, one transaction per step.

    Returns (version found, version now).
    """
    found = schema_version(db.conn)
    check_version(path, found, db.conn)
    for version in range(found + 1, STORE_SCHEMA_VERSION + 1):
        try:
            with db.atomic():
                MIGRATIONS[version](db)
                db.execute(f"PRAGMA user_version = {int(version)}")
        except Exception as exc:
            raise StoreError(
                f"{path}: upgrading the store from schema version {version - 1} to {version} failed "
                f"({exc}); the database was left at version {version - 1}, unchanged."
            ) from exc
    return found, STORE_SCHEMA_VERSION
