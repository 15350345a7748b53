"""The SQLite store: every table filled from a stream, idempotent, migratable, readable while written."""

from __future__ import annotations

import json
import sqlite3
import subprocess

import pytest
import sqlite_utils

from monitor.events import (
    Alert,
    BatonChanged,
    BriefUpdated,
    DwellChanged,
    Envelope,
    FileChanged,
    FileStat,
    FocusChanged,
    GitStateChanged,
    Heartbeat,
    HubOpened,
    HubUpdated,
    IterationScored,
    LedgerAttempt,
    LedgerAttemptAdded,
    LedgerItem,
    LedgerItemAdded,
    LedgerRead,
    LedgerStatusChanged,
    MemoryEntry,
    PromptChanged,
)
from sinks.sqlite import TABLES, SqliteSink, event_key
from sinks.store_schema import SCHEMA_V1, STORE_SCHEMA_VERSION, StoreError, StoreVersionError
from sink_streams import T0, commit, env, loop_history, observe


def rows(db_path, table: str) -> list[dict]:
    """A table read the way sqlite-utils (and Datasette) would read it."""
    return list(sqlite_utils.Database(db_path)[table].rows)


@pytest.fixture
def db_path(tmp_path):
    return tmp_path / "store" / "loopmon.db"


def test_a_stream_fills_every_table(db_path):
    sink = SqliteSink(db_path)
    sink.write(loop_history())
    sink.close()

    (repo,) = rows(db_path, "repos")
    assert (repo["id"], repo["branch"], repo["host"], repo["pid"]) == ("loop", "main", "box", 42)
    assert (repo["baton_iteration"], repo["expected_actor"], repo["baton_status"]) == (303, "ralph", "running-ralph")
    assert json.loads(repo["active_focus"]) == ["STUDY-001"]

    commits = {c["sha"][0]: c for c in rows(db_path, "commits")}
    assert set(commits) == {"c", "d", "e"}
    assert commits["d"]["role"] == "engineer" and commits["d"]["iteration"] == 303
    assert (commits["d"]["tests_status"], commits["d"]["tests_passed"]) == ("passed", 2)
    assert (commits["d"]["insertions"], commits["d"]["deletions"], commits["d"]["code_lines"]) == (162, 2, 164)
    assert commits["c"]["code_lines"] == 0  # the ledger is bookkeeping, not code
    assert commits["e"]["orphaned"] == 1 and commits["e"]["orphan_reason"] == "history rewritten"

    files = {(f["sha"][0], f["path"]): f for f in rows(db_path, "commit_files")}
    assert set(files) == {("c", "docs/fix_plan.md"), ("d", "ptycho/raw_data.py"),
                          ("d", "tests/test_oversampling.py"), ("e", "scratch.py")}
    assert files[("d", "tests/test_oversampling.py")]["path_class"] == "test"

    (it,) = rows(db_path, "iterations")
    assert (it["idx"], it["number"], it["provisional"], it["aggregate"], it["bucket"]) == (1, 303, 0, 78, "high")
    assert json.loads(it["reasons"])[0]["text"] == "tests moved with the code"
    assert json.loads(it["engineer_commits"]) == ["d" * 40] and it["evidence"] == "tag"

    assert {(d["focus"], d["value"]) for d in rows(db_path, "dwell")} == {("STUDY-001", 0), ("*", 0)}

    (alert,) = rows(db_path, "alerts")
    assert (alert["key"], alert["severity"], alert["iteration"]) == ("git_state:rebase-merge:1", "critical", 1)

    (item,) = rows(db_path, "ledger_items")
    assert (item["item_id"], item["status"], item["attempts"], item["last_result"], item["present"]) == (
        "STUDY-001", "done", 2, "success", 0)
    changes = [c["change"] for c in sorted(rows(db_path, "ledger_changes"), key=lambda c: c["time"])]
    assert sorted(changes) == sorted(["added", "focus_changed", "status_changed", "attempt_added", "removed"])

    (hub,) = rows(db_path, "hubs")
    assert (hub["initiative"], hub["stamp"], hub["files"], hub["bytes"]) == ("STUDY-001", "2025-11-13T150000Z", 3, 4096)
    assert hub["summary_excerpt"] == "guards green" and hub["archived"] == 1

    (brief,) = rows(db_path, "briefs")
    assert (brief["focus"], brief["mode"]) == ("STUDY-001", "Code")
    assert json.loads(brief["mapped_tests"]) == ["tests/test_oversampling.py::test_guard"]

    events = rows(db_path, "events")
    assert len(events) == len(loop_history()) - 1  # all but the heartbeat
    assert "heartbeat" not in {e["kind"] for e in events}
    (stream,) = [s for s in rows(db_path, "streams") if s["source"] == "test"]
    assert stream["sent"] == 24 and stream["last_heartbeat"] is not None


def test_every_stored_event_keeps_its_full_envelope(db_path):
    history = loop_history()
    sink = SqliteSink(db_path)
    sink.write(history)
    stored = {e["key"]: Envelope.from_wire(e["envelope"]) for e in rows(db_path, "events")}
    for original in history:
        if original.kind != "heartbeat":
            assert stored[event_key(original)] == original


def test_replaying_the_same_history_leaves_the_same_row_counts(db_path):
    history = loop_history()
    sink = SqliteSink(db_path)
    sink.write(history)
    first = sink.counts()
    assert all(first[t] > 0 for t in TABLES), first
    # Again, whole and in other batch sizes, and after a restart of the sink.
    sink.write(history)
    for i in range(0, len(history), 3):
        sink.write(history[i : i + 3])
    sink.close()
    sink = SqliteSink(db_path)
    sink.write(list(reversed(history)))
    assert sink.counts() == first
    (item,) = rows(db_path, "ledger_items")
    assert item["attempts"] == 2  # an attempt replayed is not a new attempt


def restarted(history: list[Envelope], stream: str) -> list[Envelope]:
    """What collectors started again report: the same payloads under a new stream, numbered afresh."""
    return [e.model_copy(update={"stream": stream, "seq": i}) for i, e in enumerate(history, 1)]


def collector_scan(item: LedgerItem, stream: str) -> list[Envelope]:
    """What the loop-file collectors report when they start: the state they read."""
    hub = "plans/active/STUDY-001/reports/2025-11-13T150000Z"
    return [env(p, stream=stream) for p in (
        BatonChanged(iteration=303, expected_actor="ralph", status="running-ralph", last_update=T0),
        BriefUpdated(focus="STUDY-001", mode="Code", digest="b1"),
        LedgerItemAdded(path="docs/fix_plan.md", item=item),
        FocusChanged(path="docs/fix_plan.md", old=[], new=["STUDY-001"]),
        LedgerRead(path="docs/fix_plan.md", chars=1200, items=1),
        HubOpened(path=hub, initiative="STUDY-001", stamp="2025-11-13T150000Z"),
        HubUpdated(path=hub, initiative="STUDY-001", files=3, bytes=4096),
        MemoryEntry(heading="2025-11-13T15:00", focus="STUDY-001", dwell=0),
        PromptChanged(path="prompts/main.md", digest="p1"),
        GitStateChanged(state="rebase-merge", active=True),
    )]


def test_state_reported_again_by_restarted_collectors_adds_no_rows(db_path):
    item = LedgerItem(id="STUDY-001", title="Oversampling guardrails", status="in_progress")
    sink = SqliteSink(db_path)
    sink.write(collector_scan(item, "run1"))
    sink.write([env(LedgerStatusChanged(path="docs/fix_plan.md", item_id="STUDY-001", old="in_progress", new="done"),
                    stream="run1"),
                env(LedgerAttemptAdded(path="docs/fix_plan.md", item_id="STUDY-001",
                                       attempt=LedgerAttempt(number=1, result="success")), stream="run1")])
    before = sink.counts()
    now = item.model_copy(update={"status": "done", "attempts": [LedgerAttempt(number=1, result="success")]})
    sink.write(collector_scan(now, "run2"))
    scan = collector_scan(now, "run3")
    sink.write(scan[:4])
    sink.write(scan[4:])
    after = sink.counts()
    assert {t: n for t, n in after.items() if t != "streams"} == {t: n for t, n in before.items() if t != "streams"}
    assert after["streams"] == before["streams"] + 2  # each run's position is kept for resuming it
    (prompt,) = [e for e in sink.input_events() if e.kind == "prompt_changed"]
    assert prompt.stream == "run1"


def test_a_ledger_item_restated_with_its_current_status_is_not_added_again(db_path):
    item = LedgerItem(id="A-1", title="t", status="pending")
    sink = SqliteSink(db_path)
    sink.write([env(LedgerItemAdded(path="docs/fix_plan.md", item=item), stream="run1"),
                env(LedgerStatusChanged(path="docs/fix_plan.md", item_id="A-1", old="pending", new="done"), stream="run1")])
    done = item.model_copy(update={"status": "done"})
    sink.write([env(LedgerItemAdded(path="docs/fix_plan.md", item=done), stream="run2")])
    assert [c["change"] for c in rows(db_path, "ledger_changes")] == ["added", "status_changed"]
    sink.write([env(LedgerItemAdded(path="docs/fix_plan.md", item=item), stream="run3")])  # a real change back
    assert [c["change"] for c in rows(db_path, "ledger_changes")] == ["added", "status_changed", "added"]
    assert rows(db_path, "ledger_items")[0]["status"] == "pending"


def test_a_change_back_to_an_earlier_state_is_a_change(db_path):
    a, b = BriefUpdated(focus="A-1", digest="a"), BriefUpdated(focus="B-2", digest="b")
    sink = SqliteSink(db_path)
    sink.write([env(a), env(b)])
    sink.write([env(a)])
    sink.write([env(a, stream="restart")])
    assert [r["focus"] for r in rows(db_path, "briefs")] == ["A-1", "B-2", "A-1"]


def test_a_duplicate_inside_one_batch_is_stored_once(db_path):
    c = commit("f" * 40, "RALPH AUTO: x", [])
    sink = SqliteSink(db_path)
    sink.write([c, c, c.model_copy()])
    assert sink.counts()["commits"] == 1 and sink.counts()["events"] == 1


def test_a_restarted_scorer_restating_the_same_scores_adds_no_rows(db_path):
    score = IterationScored(index=4, number=12, provisional=False, aggregate=50, bucket="medium")
    dwell = DwellChanged(focus="X-1", value=2, tier="1", iterations=[2, 3])
    sink = SqliteSink(db_path)
    sink.write([env(score, stream="run1"), env(dwell, stream="run1")])
    before = sink.counts()
    sink.write([env(score, stream="run2"), env(dwell, stream="run2")])
    assert sink.counts()["events"] == before["events"]
    assert sink.counts()["iterations"] == 1 and sink.counts()["dwell"] == 1


def test_provisional_scores_move_until_final_and_a_late_provisional_changes_nothing(db_path):
    sink = SqliteSink(db_path)

    def aggregate():
        return sink.conn.execute("SELECT aggregate, provisional FROM iterations WHERE idx = 7").fetchone()

    sink.write([env(IterationScored(index=7, aggregate=20))])
    assert aggregate() == (20, 1)
    sink.write([env(IterationScored(index=7, aggregate=35))])
    assert aggregate() == (35, 1)
    sink.write([env(IterationScored(index=7, aggregate=80, provisional=False, bucket="high"))])
    assert aggregate() == (80, 0)
    sink.write([env(IterationScored(index=7, aggregate=30))])
    assert aggregate() == (80, 0)
    sink.write([env(IterationScored(index=7, aggregate=70, provisional=False, bucket="medium"))])
    assert aggregate() == (70, 0)  # the scorer may revise a final score


def test_a_score_that_returns_to_an_earlier_value_is_shown(db_path):
    first, second = IterationScored(index=2, aggregate=40), IterationScored(index=2, aggregate=55)
    sink = SqliteSink(db_path)
    sink.write([env(first), env(second), env(first)])
    assert sink.conn.execute("SELECT aggregate FROM iterations").fetchone() == (40,)


def test_heartbeats_only_move_the_stream_position(db_path):
    sink = SqliteSink(db_path)
    sink.write([env(FileChanged(path="a.py", change="created"), stream="w", seq=1),
                env(Heartbeat(sent=1, dropped=0), stream="w", seq=2)])
    sink.write([env(Heartbeat(sent=1, dropped=3, final=True), stream="w", seq=3)])
    assert sink.counts()["events"] == 1
    assert sink.stream_positions() == {("loop", "test", "w"): 3}
    (s,) = rows(db_path, "streams")
    assert (s["events"], s["dropped"], s["final"]) == (1, 3, 1)


def test_an_event_arriving_late_in_its_stream_is_stored_once(db_path):
    sink = SqliteSink(db_path)
    late = env(FileChanged(path="late.py", change="created"), stream="w", seq=2)
    sink.write([env(FileChanged(path="a.py", change="created"), stream="w", seq=1),
                env(FileChanged(path="b.py", change="created"), stream="w", seq=3)])
    sink.write([late])
    sink.write([late])
    assert sink.counts()["events"] == 3
    assert sink.stream_positions()[("loop", "test", "w")] == 3


def test_input_events_are_the_collectors_events_in_arrival_order(db_path):
    history = loop_history()
    other = env(FileChanged(path="x.py", change="created"), repo="other")
    sink = SqliteSink(db_path)
    sink.write(history[:10])
    sink.write([other])
    sink.write(history[10:])
    expected = [e for e in history if e.kind not in ("heartbeat", "iteration_scored", "dwell_changed", "alert")]
    assert list(sink.input_events("loop")) == expected
    assert list(sink.input_events()) == expected[:10] + [other] + expected[10:]


def test_a_stored_event_this_loopmon_cannot_read_comes_back_as_a_warning(db_path):
    sink = SqliteSink(db_path)
    sink.write([env(FileChanged(path="a.py", change="created"))])
    future = env(FileChanged(path="b.py", change="created")).model_dump(mode="json")
    future["payload"] = {"kind": "kind_from_the_future", "x": 1}
    with sink.conn:
        sink.conn.execute("INSERT INTO events (key, repo, source, stream, seq, kind, time, observed, envelope)"
                          " VALUES ('k', 'loop', 'test', 's9', 1, 'kind_from_the_future', '', '', ?)",
                          (json.dumps(future),))
    sink.write([env(FileChanged(path="c.py", change="created"))])
    events = list(sink.input_events())
    assert [e.kind for e in events] == ["file_changed", "warning", "file_changed"]
    assert events[1].payload.code == "stored_event_unreadable" and "could not be read" in events[1].payload.message


def test_alert_keys_are_the_alerts_raised(db_path):
    sink = SqliteSink(db_path)
    sink.write([env(Alert(alert="dwell_tier", key="dwell:X:2", message="m")),
                env(Alert(alert="dwell_tier", key="dwell:Y:2", message="m"), repo="other"),
                env(Alert(alert="dwell_tier", key="dwell:X:2", message="raised again"), stream="s2")])
    assert sink.alert_keys() == {"dwell:X:2", "dwell:Y:2"}
    assert sink.alert_keys("loop") == {"dwell:X:2"}
    assert [a["message"] for a in rows(db_path, "alerts") if a["repo"] == "loop"] == ["m"]


def test_non_utf8_text_survives_exactly(db_path):
    raw = b"RALPH AUTO: caf\xe9 \xff"
    text = raw.decode("utf-8", errors="replace")
    c = commit("a1" * 20, text, [FileStat(path="\ufffd.py", path_bytes=b"\xe9.py", insertions=1, deletions=0)],
               message_bytes=raw)
    sink = SqliteSink(db_path)
    sink.write([c])
    (row,) = rows(db_path, "commits")
    assert row["message_bytes"] == raw and row["message"] == text
    assert rows(db_path, "commit_files")[0]["path_bytes"] == b"\xe9.py"
    assert next(sink.input_events()).payload.message_bytes == raw


def test_commit_and_alert_messages_are_full_text_searchable(db_path):
    sink = SqliteSink(db_path)
    sink.write(loop_history())
    sink.close()
    db = sqlite_utils.Database(db_path)
    assert [r["sha"][0] for r in db["commits"].search("oversampling")] == ["d"]
    assert [r["key"] for r in db["alerts"].search("rebase")] == ["git_state:rebase-merge:1"]
    assert list(db["commits"].search("scratch")) == []  # "wip" commit's message has no such word


def test_the_store_is_in_wal_mode(db_path):
    SqliteSink(db_path).close()
    assert sqlite_utils.Database(db_path).journal_mode == "wal"


def test_a_reader_holding_a_snapshot_does_not_block_the_writer(db_path):
    sink = SqliteSink(db_path)
    sink.write([env(FileChanged(path="first.py", change="created"))])
    reader = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, isolation_level=None)
    reader.execute("BEGIN")
    assert reader.execute("SELECT count(*) FROM events").fetchone() == (1,)
    for burst in range(20):  # the reader's snapshot stays open through the burst
        sink.write([env(FileChanged(path=f"f{burst}_{i}.py", change="created")) for i in range(50)])
    assert reader.execute("SELECT count(*) FROM events").fetchone() == (1,)
    reader.execute("COMMIT")
    assert reader.execute("SELECT count(*) FROM events").fetchone() == (1001,)
    # sqlite-utils opened beside the writer sees every committed batch.
    assert sqlite_utils.Database(db_path)["events"].count == 1001
    sink.close()


def test_the_store_makes_its_folder(tmp_path):
    path = tmp_path / "a" / "b" / "loopmon.db"
    SqliteSink(path).close()
    assert path.is_file()


# --------------------------------------------------------------------------- versions


def test_a_new_store_has_the_current_schema_version(db_path):
    SqliteSink(db_path).close()
    assert sqlite3.connect(db_path).execute("PRAGMA user_version").fetchone() == (STORE_SCHEMA_VERSION,)


def make_v1_store(path) -> int:
    """A database as loopmon's first schema left it: heartbeats stored as events, no hubs, briefs or search."""
    conn = sqlite3.connect(path)
    conn.executescript(SCHEMA_V1_BY_HAND)
    hub = env(HubOpened(path="reports/phase/20251015T201831Z", initiative=None, stamp="20251015T201831Z"), stream="old")
    brief = env(BriefUpdated(focus="OLD-1", digest="d0"), stream="old")
    beat = env(Heartbeat(sent=2, dropped=1), stream="old")
    score = env(IterationScored(index=1, number=9, provisional=False, aggregate=8, override="no code", evidence="tag"),
                source="scorer", stream="old-scorer")
    conn.execute("INSERT INTO repos (id, first_seen) VALUES ('loop', ?)", (T0.isoformat(),))
    for e in (hub, brief, beat, score):
        conn.execute("INSERT INTO events (key, repo, source, stream, seq, kind, time, observed, envelope)"
                     " VALUES (?,?,?,?,?,?,?,?,?)",
                     (e.key, e.repo, e.source, e.stream, e.seq, e.kind, e.time.isoformat(), e.observed.isoformat(),
                      e.model_dump_json()))
    conn.execute("INSERT INTO commits (repo, sha, subject, message, committed_at) VALUES "
                 "('loop', 'abc', 'RALPH AUTO: parity logger', 'RALPH AUTO: parity logger', ?)", (T0.isoformat(),))
    conn.execute("INSERT INTO iterations (repo, idx, number, provisional, aggregate, bucket) VALUES ('loop', 1, 9, 0, 8, 'low')")
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    return beat.seq


# Written out here as the first release created it, not taken from the code under test.
SCHEMA_V1_BY_HAND = """
CREATE TABLE repos (id TEXT PRIMARY KEY, path TEXT, branch TEXT, head TEXT, host TEXT, pid INTEGER,
    version TEXT, first_seen TEXT, last_seen TEXT, baton_iteration INTEGER, expected_actor TEXT,
    baton_status TEXT, baton_updated TEXT, lease_expires_at TEXT, active_focus TEXT);
CREATE TABLE events (id INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE,
    repo TEXT NOT NULL REFERENCES repos(id) DEFERRABLE INITIALLY DEFERRED,
    source TEXT NOT NULL, stream TEXT NOT NULL, seq INTEGER NOT NULL, kind TEXT NOT NULL,
    time TEXT NOT NULL, observed TEXT NOT NULL, envelope TEXT NOT NULL);
CREATE INDEX idx_events_kind_time ON events (kind, time);
CREATE INDEX idx_events_repo_time ON events (repo, time);
CREATE INDEX idx_events_stream ON events (repo, source, stream, seq);
CREATE TABLE commits (repo TEXT NOT NULL REFERENCES repos(id) DEFERRABLE INITIALLY DEFERRED, sha TEXT NOT NULL,
    parents TEXT, author_name TEXT, author_email TEXT, authored_at TEXT, committed_at TEXT, subject TEXT,
    message TEXT, message_bytes BLOB, refs TEXT, role TEXT, iteration INTEGER, sync_iteration INTEGER,
    ledger_ids TEXT, tests_status TEXT, tests_passed INTEGER, tests_failed INTEGER, tests_selectors TEXT,
    tests_raw TEXT, files INTEGER, insertions INTEGER, deletions INTEGER, code_lines INTEGER, evidence TEXT,
    backfill INTEGER, orphaned INTEGER NOT NULL DEFAULT 0, orphan_reason TEXT, first_seen TEXT,
    PRIMARY KEY (repo, sha));
CREATE INDEX idx_commits_committed_at ON commits (committed_at);
CREATE INDEX idx_commits_repo_committed_at ON commits (repo, committed_at);
CREATE INDEX idx_commits_repo_iteration ON commits (repo, iteration);
CREATE TABLE commit_files (repo TEXT NOT NULL, sha TEXT NOT NULL, path TEXT NOT NULL, path_bytes BLOB,
    old_path TEXT, insertions INTEGER, deletions INTEGER, path_class TEXT, binary INTEGER, unknown INTEGER,
    size INTEGER, PRIMARY KEY (repo, sha, path),
    FOREIGN KEY (repo, sha) REFERENCES commits(repo, sha) DEFERRABLE INITIALLY DEFERRED);
CREATE INDEX idx_commit_files_path ON commit_files (repo, path);
CREATE TABLE iterations (repo TEXT NOT NULL REFERENCES repos(id) DEFERRABLE INITIALLY DEFERRED,
    idx INTEGER NOT NULL, number INTEGER, provisional INTEGER NOT NULL, summary INTEGER, code_diff INTEGER,
    semantic INTEGER, aggregate INTEGER, bucket TEXT, reasons TEXT, focus TEXT, started_at TEXT,
    ended_at TEXT, supervisor_commits TEXT, engineer_commits TEXT, other_commits TEXT, code_lines INTEGER,
    insertions INTEGER, deletions INTEGER, files_touched INTEGER, brief_digest TEXT, hubs TEXT,
    updated_at TEXT, PRIMARY KEY (repo, idx));
CREATE INDEX idx_iterations_bucket ON iterations (repo, bucket);
CREATE INDEX idx_iterations_focus ON iterations (repo, focus);
CREATE TABLE dwell (repo TEXT NOT NULL REFERENCES repos(id) DEFERRABLE INITIALLY DEFERRED,
    focus TEXT NOT NULL, value INTEGER NOT NULL, tier TEXT, iterations TEXT, reported INTEGER,
    peak INTEGER, updated_at TEXT, PRIMARY KEY (repo, focus));
CREATE TABLE alerts (repo TEXT NOT NULL REFERENCES repos(id) DEFERRABLE INITIALLY DEFERRED,
    key TEXT NOT NULL, alert TEXT NOT NULL, severity TEXT NOT NULL, iteration INTEGER, focus TEXT,
    message TEXT NOT NULL, detail TEXT, time TEXT NOT NULL, observed TEXT, PRIMARY KEY (repo, key));
CREATE INDEX idx_alerts_time ON alerts (time);
CREATE INDEX idx_alerts_alert_time ON alerts (alert, time);
CREATE TABLE ledger_items (repo TEXT NOT NULL REFERENCES repos(id) DEFERRABLE INITIALLY DEFERRED,
    path TEXT NOT NULL, item_id TEXT NOT NULL, title TEXT, priority TEXT, status TEXT, status_text TEXT,
    section TEXT, attempts INTEGER NOT NULL DEFAULT 0, last_result TEXT, present INTEGER NOT NULL DEFAULT 1,
    first_seen TEXT, updated_at TEXT, removed_at TEXT, PRIMARY KEY (repo, path, item_id));
CREATE INDEX idx_ledger_items_status ON ledger_items (repo, status);
CREATE TABLE ledger_changes (key TEXT PRIMARY KEY,
    repo TEXT NOT NULL REFERENCES repos(id) DEFERRABLE INITIALLY DEFERRED, time TEXT NOT NULL, path TEXT,
    change TEXT NOT NULL, item_id TEXT, old TEXT, new TEXT, result TEXT, text TEXT);
CREATE INDEX idx_ledger_changes_item ON ledger_changes (repo, item_id, time);
CREATE INDEX idx_ledger_changes_time ON ledger_changes (repo, time);
"""


def test_the_hand_written_v1_schema_is_the_one_the_first_migration_makes():
    def shape(sql: str) -> dict:
        conn = sqlite3.connect(":memory:")
        conn.executescript(sql)
        return {t: [c[1:3] for c in conn.execute(f"PRAGMA table_info([{t}])")]
                for (t,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}

    assert shape(SCHEMA_V1_BY_HAND) == shape(SCHEMA_V1)


def test_a_v1_store_is_upgraded_in_place(db_path):
    db_path.parent.mkdir(parents=True)
    heartbeat_seq = make_v1_store(db_path)
    sink = SqliteSink(db_path)
    assert sink.conn.execute("PRAGMA user_version").fetchone() == (STORE_SCHEMA_VERSION,)
    # Heartbeats moved out of events into streams, with their positions.
    assert [e["kind"] for e in rows(db_path, "events")] == ["hub_opened", "brief_updated", "iteration_scored"]
    assert sink.stream_positions()[("loop", "test", "old")] == heartbeat_seq
    (old,) = [s for s in rows(db_path, "streams") if s["stream"] == "old"]
    assert (old["sent"], old["dropped"], old["events"]) == (2, 1, 2)
    # New tables filled from the stored events; new columns from the last stored score.
    assert [h["stamp"] for h in rows(db_path, "hubs")] == ["20251015T201831Z"]
    assert [b["focus"] for b in rows(db_path, "briefs")] == ["OLD-1"]
    (it,) = rows(db_path, "iterations")
    assert (it["override"], it["evidence"]) == ("no code", "tag")
    # Search covers rows written before the upgrade, and the store keeps working.
    db = sqlite_utils.Database(db_path)
    assert [r["sha"] for r in db["commits"].search("parity")] == ["abc"]
    sink.write(loop_history())
    assert [r["sha"][0] for r in db["commits"].search("oversampling")] == ["d"]
    sink.close()


def test_an_upgrade_that_fails_leaves_the_old_store_untouched(db_path):
    db_path.parent.mkdir(parents=True)
    make_v1_store(db_path)
    conn = sqlite3.connect(db_path)
    conn.execute("CREATE TABLE hubs (note TEXT)")  # someone's own table in the way of version 2
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="from schema version 1 to 2 failed"):
        SqliteSink(db_path)
    conn = sqlite3.connect(db_path)
    assert conn.execute("PRAGMA user_version").fetchone() == (1,)
    assert conn.execute("SELECT count(*) FROM events WHERE kind = 'heartbeat'").fetchone() == (1,)
    assert conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'streams'").fetchone() == (0,)


def test_a_store_from_a_newer_loopmon_is_refused_naming_both_versions(db_path):
    SqliteSink(db_path).close()
    conn = sqlite3.connect(db_path)
    conn.execute(f"PRAGMA user_version = {STORE_SCHEMA_VERSION + 5}")
    conn.commit()
    conn.close()
    with pytest.raises(StoreVersionError) as err:
        SqliteSink(db_path)
    assert f"version {STORE_SCHEMA_VERSION + 5}" in str(err.value)
    assert f"up to {STORE_SCHEMA_VERSION}" in str(err.value)


def test_another_programs_database_is_refused(db_path):
    db_path.parent.mkdir(parents=True)
    sqlite_utils.Database(db_path)["recipes"].insert({"name": "bread"})
    with pytest.raises(StoreError, match="not a loopmon store"):
        SqliteSink(db_path)
    assert sqlite_utils.Database(db_path)["recipes"].count == 1


def test_a_file_that_is_not_sqlite_is_refused(db_path):
    db_path.parent.mkdir(parents=True)
    db_path.write_bytes(b"this is a text file, not a database" * 100)
    with pytest.raises(StoreError, match="cannot be opened"):
        SqliteSink(db_path)


# --------------------------------------------------------------------------- a simulated loop


def git_numstat_paths(root) -> set[tuple[str, str]]:
    out = subprocess.run(["git", "-C", str(root), "log", "--all", "--no-renames", "--numstat", "--format=@%H"],
                         capture_output=True, text=True, check=True).stdout
    paths, sha = set(), None
    for line in out.splitlines():
        if line.startswith("@"):
            sha = line[1:]
        elif line.strip():
            paths.add((sha, line.split("\t", 2)[2]))
    return paths


def test_a_simulated_loop_backfilled_fills_every_table_and_a_second_run_adds_nothing(tmp_path):
    from monitor.config import Settings
    from monitor.simulator import LoopSimulator

    root = tmp_path / "loop"
    records = LoopSimulator(root, scenario="mixed", seed=2).run(8)
    settings = Settings()
    sink = SqliteSink(tmp_path / "loopmon.db")
    first = observe(root, settings, "run1", T0)
    for i in range(0, len(first), 40):
        sink.write(first[i : i + 40])
    counts = sink.counts()
    assert all(counts[t] > 0 for t in TABLES), counts

    db = sqlite_utils.Database(tmp_path / "loopmon.db")
    all_shas = subprocess.run(["git", "-C", str(root), "rev-list", "--all"], capture_output=True, text=True,
                              check=True).stdout.split()
    assert {r["sha"] for r in db["commits"].rows} == set(all_shas)
    assert {(r["sha"], r["path"]) for r in db["commit_files"].rows} == git_numstat_paths(root)
    work = {sha for r in records for sha in r.work_shas}
    assert work <= {r["sha"] for r in db["commits"].rows}
    # Every commit an iteration names is a stored commit; the final iterations cover the engineer's work.
    named = set()
    for it in db["iterations"].rows:
        named.update(json.loads(it["supervisor_commits"]) + json.loads(it["engineer_commits"])
                     + json.loads(it["other_commits"]))
    assert named <= set(all_shas)
    assert {r.sha for r in records if r.role == "engineer" and r.sha} <= named
    assert [r["focus"] for r in db["dwell"].rows if r["focus"] == "*"] == ["*"]
    stored_kinds = {r["kind"] for r in db["events"].rows}
    assert {"commit", "iteration_scored", "ledger_item_added", "brief_updated", "baton_changed"} <= stored_kinds
    assert counts["events"] == len({event_key(e) for e in first if e.kind != "heartbeat"})

    sink.write(observe(root, settings, "run2", T0))  # a restart: backfill again, collectors and scorer anew
    again = sink.counts()
    assert {t: n for t, n in again.items() if t != "streams"} == {t: n for t, n in counts.items() if t != "streams"}
    sink.close()
