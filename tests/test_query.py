"""`loopmon query`: ready views of the store as tables, JSON and CSV, read-only, while the monitor writes."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
import threading
from datetime import timedelta

import pytest
from loop_store import SEED_TURNS, T0, LoopStore, Turn, rows

from monitor.cli import main
from monitor.events import FileChanged
from monitor.query import QueryError, open_readonly, parse_since

MARKUP = "[bold red]x[/]"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """The seed's ten iterations, plus alerts, ledger, hubs and a commit message that looks like markup."""
    db = tmp_path_factory.mktemp("query") / "loopmon.db"
    s = LoopStore(db)
    for turn in SEED_TURNS:
        s.iteration(turn)
    s.commit(f"RALPH AUTO: fix {MARKUP} rendering, \"quoted\", comma\nsecond line", [("ptycho/view.py", 3, 1)],
             role="engineer")
    s.alert("git_state", "A rebase is in progress: resolve it before the next turn", iteration=9, severity="critical")
    s.alert("bulky_artifact", "plans/active/X/reports/run.npz is 4 MB", iteration=5)
    s.ledger("STUDY-SYNTH-001", "Oversampling guardrails", "in_progress", attempts=1)
    s.ledger("INTEGRATE-PYTORCH-001", "PyTorch parity", "pending")
    s.ledger_status("STUDY-SYNTH-001", "in_progress", "done")
    s.ledger_attempt("INTEGRATE-PYTORCH-001", 1, "partial")
    s.hub("STUDY-SYNTH-001", "2025-11-13T150000Z", 3, 4096)
    s.hub("STUDY-SYNTH-001", "2025-11-14T090000Z", 2, 100)
    s.hub("INTEGRATE-PYTORCH-001", "2025-11-13T150000Z", 7, 70_000)
    s.close()
    return db


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def query_json(capsys, db, *argv) -> list[dict]:
    code, out, err = run(capsys, "query", *argv, "--db", str(db), "--json")
    assert code == 0, err
    return json.loads(out)


# --------------------------------------------------------------------------- iterations


def test_iterations_show_the_stored_scores_bucket_focus_and_key_changes(store, capsys):
    shown = query_json(capsys, store, "iterations")
    stored = rows(store, "SELECT * FROM iterations ORDER BY idx")
    assert [r["index"] for r in shown] == [r["idx"] for r in stored]
    for view, row in zip(shown, stored):
        assert (view["iteration"], view["summary"], view["code_diff"], view["semantic"], view["aggregate"]) == (
            row["number"], row["summary"], row["code_diff"], row["semantic"], row["aggregate"])
        assert (view["bucket"], view["focus"], view["override"]) == (row["bucket"], row["focus"], row["override"])
        shas = json.loads(row["supervisor_commits"]) + json.loads(row["engineer_commits"])
        files = rows(store, f"SELECT path, insertions, deletions FROM commit_files WHERE sha IN ({','.join('?' * len(shas))})"
                            " AND path_class IN ('production', 'test') ORDER BY insertions + deletions DESC, path", tuple(shas))
        expected = [f"{f['path']}:+{f['insertions']}/-{f['deletions']}" for f in files]
        assert view["key_changes"] == expected[:4] + ([f"(+{len(expected) - 4} more)"] if len(expected) > 4 else [])


def test_iteration_filters_bucket_focus_then_last(store, capsys):
    high = query_json(capsys, store, "iterations", "--bucket", "high")
    assert [r["index"] for r in high] == [r["idx"] for r in rows(store, "SELECT idx FROM iterations WHERE bucket = 'high' ORDER BY idx")]
    focus = query_json(capsys, store, "iterations", "--focus", "STUDY-SYNTH-001")
    assert {r["focus"] for r in focus} == {"STUDY-SYNTH-001"} and len(focus) == 2
    last = query_json(capsys, store, "iterations", "--bucket", "low", "--last", "2")
    lows = [r["idx"] for r in rows(store, "SELECT idx FROM iterations WHERE bucket = 'low' ORDER BY idx")]
    assert [r["index"] for r in last] == lows[-2:]


def test_the_table_shows_iterations_with_their_headings(store, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    code, out, _ = run(capsys, "query", "iterations", "--db", str(store), "--last", "1")
    assert code == 0
    assert "Iter" in out and "agg" in out and "key changes" in out
    assert "311" in out and "93" in out and "scripts/training/train.py:+217/-0" in out
    assert "310" not in out


# --------------------------------------------------------------------------- formats


def test_csv_carries_the_same_rows_as_json_exactly(store, capsys):
    as_json = query_json(capsys, store, "search", "rendering")
    code, out, _ = run(capsys, "query", "search", "rendering", "--db", str(store), "--csv")
    assert code == 0
    parsed = list(csv.DictReader(io.StringIO(out)))
    assert len(parsed) == len(as_json) == 1
    assert parsed[0]["message"] == as_json[0]["message"] == f"RALPH AUTO: fix {MARKUP} rendering, \"quoted\", comma\nsecond line"
    assert parsed[0]["ref"] == as_json[0]["ref"]


def test_lists_travel_as_json_text_in_csv(store, capsys):
    as_json = query_json(capsys, store, "iterations", "--last", "1")
    code, out, _ = run(capsys, "query", "iterations", "--db", str(store), "--last", "1", "--csv")
    (row,) = list(csv.DictReader(io.StringIO(out)))
    assert json.loads(row["key_changes"]) == as_json[0]["key_changes"]
    assert int(row["aggregate"]) == as_json[0]["aggregate"]


def test_repo_text_that_looks_like_markup_is_shown_as_written(store, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")
    code, out, _ = run(capsys, "query", "search", "rendering", "--db", str(store))
    assert code == 0
    assert MARKUP in out  # rich would have eaten the tags and coloured the x


def test_json_and_csv_are_refused_together(store, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["query", "dwell", "--db", str(store), "--json", "--csv"])
    assert exc.value.code == 2


# --------------------------------------------------------------------------- the other views


def test_dwell_shows_each_focus_and_the_global_count_with_its_longest_streak(store, capsys):
    shown = query_json(capsys, store, "dwell")
    stored = {r["focus"]: r for r in rows(store, "SELECT * FROM dwell")}
    assert shown[0]["focus"] == "*"
    assert {r["focus"] for r in shown} == set(stored)
    for r in shown:
        s = stored[r["focus"]]
        assert (r["value"], r["tier"], r["longest"]) == (s["value"], s["tier"], s["peak"])


def test_alerts_filter_by_kind_and_since(store, capsys):
    every = query_json(capsys, store, "alerts")
    assert [a["kind"] for a in every] == [r["alert"] for r in rows(store, "SELECT alert FROM alerts ORDER BY time, key")]
    git = query_json(capsys, store, "alerts", "--kind", "git_state")
    assert [a["message"] for a in git] == ["A rebase is in progress: resolve it before the next turn"]
    assert git[0]["iteration"] == 310  # shown as the loop's number, stored as loopmon's index
    cut = rows(store, "SELECT time FROM alerts WHERE alert = 'bulky_artifact'")[0]["time"]
    since = query_json(capsys, store, "alerts", "--since", cut)
    assert [a["time"] for a in since] == [r["time"] for r in rows(store, "SELECT time FROM alerts WHERE time >= ? ORDER BY time, key", (cut,))]
    assert query_json(capsys, store, "alerts", "--since", "1h") == []  # the store's alerts are from 2025


def test_since_takes_dates_times_and_ages():
    assert parse_since("2025-11-13") == T0.replace(hour=0)
    assert parse_since("2025-11-13T15:00Z") == T0
    assert parse_since("90m", now=T0) == T0 - timedelta(minutes=90)
    with pytest.raises(QueryError, match="ISO date"):
        parse_since("yesterday")


def test_a_bad_since_is_a_usage_error(store, capsys):
    code, _, err = run(capsys, "query", "alerts", "--db", str(store), "--since", "last tuesday")
    assert code == 2 and "--since" in err


def test_ledger_shows_items_with_status_and_last_change(store, capsys):
    shown = {r["item"]: r for r in query_json(capsys, store, "ledger")}
    assert shown["STUDY-SYNTH-001"]["status"] == "done"
    assert shown["STUDY-SYNTH-001"]["last_change"] == "status changed: in_progress -> done"
    assert shown["INTEGRATE-PYTORCH-001"]["attempts"] == 1
    assert shown["INTEGRATE-PYTORCH-001"]["last_change"] == "attempt added #1 (partial)"


def test_hubs_sum_files_and_bytes_per_initiative(store, capsys):
    shown = {r["initiative"]: r for r in query_json(capsys, store, "hubs")}
    for initiative, r in shown.items():
        hubs = rows(store, "SELECT * FROM hubs WHERE initiative = ?", (initiative,))
        assert r["hubs"] == len(hubs) and r["open_hubs"] == sum(1 for h in hubs if not h["archived"])
        assert (r["files"], r["bytes"]) == (sum(h["files"] for h in hubs), sum(h["bytes"] for h in hubs))
    assert shown["STUDY-SYNTH-001"]["latest_hub"].endswith("2025-11-14T090000Z")


def test_search_finds_commit_and_alert_messages(store, capsys):
    found = query_json(capsys, store, "search", "rebase")
    assert {r["source"] for r in found} == {"commit", "alert"}
    assert all("rebase" in r["message"].lower() for r in found)


def test_search_text_is_words_not_query_syntax(store, capsys):
    for text in ('rebase"', "NEAR(", "rebase OR", "-", "*"):
        code, _, err = run(capsys, "query", "search", text, "--db", str(store), "--json")
        assert code == 0, err


def test_sql_runs_a_select(store, capsys):
    shown = query_json(capsys, store, "sql", "SELECT bucket, count(*) AS n FROM iterations GROUP BY bucket ORDER BY bucket")
    assert shown == rows(store, "SELECT bucket, count(*) AS n FROM iterations GROUP BY bucket ORDER BY bucket")


# --------------------------------------------------------------------------- read-only


WRITES = [
    "INSERT INTO alerts (repo, key, alert, severity, message, time) VALUES ('loop', 'k', 'x', 'info', 'm', 't')",
    "UPDATE iterations SET aggregate = 100",
    "DELETE FROM commits",
    "DROP TABLE events",
    "CREATE TABLE mine (x)",
    "CREATE TEMP TABLE mine (x)",
    "PRAGMA query_only = 0",
    "PRAGMA user_version = 99",
    "WITH t AS (SELECT 1) UPDATE iterations SET aggregate = 0",
    "REPLACE INTO repos (id) VALUES ('other')",
]


@pytest.mark.parametrize("statement", WRITES)
def test_sql_refuses_writes_with_a_clear_message(store, capsys, statement):
    before = rows(store, "SELECT (SELECT count(*) FROM alerts) AS a, (SELECT sum(aggregate) FROM iterations) AS s, "
                         "(SELECT count(*) FROM commits) AS c")
    code, out, err = run(capsys, "query", "sql", statement, "--db", str(store))
    assert code == 2
    assert "read-only" in err and "refused" in err
    assert out == ""
    assert rows(store, "SELECT (SELECT count(*) FROM alerts) AS a, (SELECT sum(aggregate) FROM iterations) AS s, "
                       "(SELECT count(*) FROM commits) AS c") == before


@pytest.mark.parametrize("statement", ["ATTACH DATABASE '{target}' AS other", "VACUUM INTO '{target}'"])
def test_sql_refuses_statements_that_would_create_another_file(store, capsys, tmp_path, statement):
    target = tmp_path / "copy.db"
    code, _, err = run(capsys, "query", "sql", statement.format(target=target), "--db", str(store))
    assert code == 2 and "read-only" in err
    assert not target.exists()


def test_a_write_hidden_after_a_select_is_refused(store, capsys):
    code, _, err = run(capsys, "query", "sql", "SELECT 1; DELETE FROM commits", "--db", str(store))
    assert code == 2 and "one statement" in err
    assert rows(store, "SELECT count(*) AS n FROM commits")[0]["n"] > 0


def test_the_connection_itself_cannot_write(store):
    conn = open_readonly(store)
    conn.set_authorizer(None)  # even without the guard, the file is opened read-only with query_only
    with pytest.raises(sqlite3.OperationalError):
        conn.execute("DELETE FROM commits")
    conn.close()


# --------------------------------------------------------------------------- which store, which repo


def test_a_missing_store_is_a_usage_error(tmp_path, capsys):
    code, _, err = run(capsys, "query", "dwell", "--db", str(tmp_path / "none.db"))
    assert code == 2 and "no such database" in err


def test_another_programs_database_is_refused(tmp_path, capsys):
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.commit()
    code, _, err = run(capsys, "query", "dwell", "--db", str(other))
    assert code == 2 and "not a loopmon store" in err


def test_with_several_repos_the_repo_must_be_named(tmp_path, capsys):
    db = tmp_path / "fleet.db"
    for name in ("loop-a", "loop-b"):
        s = LoopStore(db, repo=name)
        s.iteration(Turn(1, 80 if name == "loop-a" else 20, code=(("ptycho/a.py", 9, 0),)))
        s.close()
    code, _, err = run(capsys, "query", "iterations", "--db", str(db))
    assert code == 2 and "loop-a, loop-b" in err
    shown = query_json(capsys, db, "iterations", "--repo", "loop-b")
    assert [r["aggregate"] for r in shown] == [20]
    folder = tmp_path / "loop-a"  # a folder names its repo as the monitor does
    folder.mkdir()
    assert [r["aggregate"] for r in query_json(capsys, db, "iterations", "--repo", str(folder))] == [80]


def test_the_default_store_is_under_the_repo(tmp_path, capsys):
    repo = tmp_path / "loop"
    s = LoopStore(repo / ".loopmon" / "loopmon.db")
    s.iteration(Turn(7, 60, code=(("ptycho/a.py", 9, 0),)))
    s.close()
    code, out, err = run(capsys, "query", "iterations", "--repo", str(repo), "--json")
    assert code == 0, err
    assert [r["iteration"] for r in json.loads(out)] == [7]


# --------------------------------------------------------------------------- beside a writer


def test_every_view_answers_while_the_monitor_writes_bursts(tmp_path, capsys):
    db = tmp_path / "busy.db"
    s = LoopStore(db)
    s.iteration(SEED_TURNS[1])
    stop = threading.Event()
    written = []

    def writer() -> None:
        # Bursts through the same sink the monitor uses: file events, then a scored iteration.
        n = 0
        while not stop.is_set():
            n += 1
            s.sink.write([s.envelope(FileChanged(path=f"ptycho/f{n}_{i}.py", change="created")) for i in range(200)])
            s.iteration(Turn(400 + n, 60 + n % 30, code=((f"ptycho/m{n}.py", 12, 0),)))
            written.append(n)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        seen = []
        for _ in range(3):
            for view in (["iterations"], ["dwell"], ["alerts"], ["ledger"], ["hubs"], ["search", "implement"],
                         ["sql", "SELECT count(*) AS n FROM events"]):
                code, out, err = run(capsys, "query", *view, "--db", str(db), "--json")
                assert code == 0, err
                json.loads(out)
            seen.append(len(query_json(capsys, db, "iterations")))
            code, out, err = run(capsys, "report", "--db", str(db))
            assert code == 0, err
            code, _, err = run(capsys, "gate", "--db", str(db))
            assert code in (0, 3), err
    finally:
        stop.set()
        thread.join()
    assert seen == sorted(seen)  # each read saw a whole state, never one going backwards
    assert written
    s.close()


VIEWS = [  # a view, and a column whose every value the table shows as JSON has it
    (["iterations"], "index"), (["dwell"], "focus"), (["alerts"], "kind"), (["ledger"], "item"),
    (["hubs"], "files"), (["search", "rebase"], "source"),
    (["sql", "SELECT idx, bucket, focus FROM iterations ORDER BY idx"], "bucket"),
]


@pytest.mark.parametrize("view, column", VIEWS, ids=lambda v: v[0] if isinstance(v, list) else v)
def test_every_view_gives_the_same_rows_as_table_json_and_csv(store, capsys, monkeypatch, view, column):
    monkeypatch.setenv("COLUMNS", "400")
    as_json = query_json(capsys, store, *view)
    assert as_json, "each view has rows in this store"
    code, out, _ = run(capsys, "query", *view, "--db", str(store), "--csv")
    assert code == 0
    as_csv = list(csv.DictReader(io.StringIO(out)))
    assert [list(r) for r in as_csv[:1]] == [list(as_json[0])]  # same columns, same order
    assert [list(r.values()) for r in as_csv] == [
        ["" if v is None else json.dumps(v, ensure_ascii=False) if isinstance(v, (list, dict))
         else str(int(v)) if isinstance(v, bool) else str(v) for v in r.values()] for r in as_json]
    code, out, _ = run(capsys, "query", *view, "--db", str(store))
    assert code == 0
    cells = [c.strip() for line in out.splitlines() if line.startswith("│") for c in line.strip("│").split("│")]
    for r in as_json:
        assert str(r[column]) in cells
