"""Restarts lose nothing: `kill -9` either half, start it again, every event is stored once.

The serving side: collectors keep every event until the store acknowledges it and
send it again to the restarted server, which knows from the store what it holds.
The collecting side: each collector saves what the store acknowledged of it
(monitor/resume.py) and a restarted one emits only what changed while it was down.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import zmq

from collectors.gitlog import read_tips
from collectors.ledger import LedgerTracker
from collectors.memory import entry_keys, parse_memory
from monitor.bus import Publisher, Receiver
from monitor.config import BusSettings, settings_from_dict
from monitor.events import Envelope, FileChanged, digest
from monitor.resume import Checkpoints, StateFolder
from monitor.runtime import CollectorSet, Server
from monitor.simulator import LoopSimulator
from sinks.sqlite import SqliteSink

LOOPMON = [sys.executable, "-m", "monitor.cli"]
COLLECTOR_SOURCES = ("commits", "baton", "ledger", "brief", "memory", "prompts", "hubs", "gitstate")
# Quick heartbeats and resends: the same mechanism, less waiting.
FAST = "[bus]\nheartbeat_seconds = 0.3\nresend_seconds = 0.5\n"


# --------------------------------------------------------------------------- helpers


def start(args: list[str], output: Path) -> subprocess.Popen:
    """A loopmon process whose output goes to files (a pipe nobody reads would stall it)."""
    return subprocess.Popen(
        LOOPMON + args, stdout=open(output.with_suffix(".out"), "w"), stderr=open(output.with_suffix(".err"), "w")
    )


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 0


def rows(db: Path, sql: str, params: tuple = ()) -> list[tuple]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def wait_until(predicate, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except (sqlite3.OperationalError, OSError, ValueError, KeyError):
            pass  # not created yet, or caught mid-write
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def headless(path: Path) -> list[Envelope]:
    """Every envelope a `serve --headless` printed (what reached its sinks)."""
    return [Envelope.from_wire(line) for line in path.read_text().splitlines() if line.strip()]


def git_shas(repo: Path) -> set[str]:
    out = subprocess.run(["git", "-C", str(repo), "log", "--all", "--format=%H"], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def saved(repo: Path, name: str) -> dict:
    return json.loads((repo / ".loopmon" / "collector" / f"{name}.json").read_text())["state"]


# --------------------------------------------------------------------------- the serving side


def test_a_server_killed_mid_stream_of_10000_events_stores_each_once(tmp_path: Path) -> None:
    repo = tmp_path / "loop"
    (repo / "data").mkdir(parents=True)
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    config = tmp_path / "loopmon.toml"
    # Every file its own event (no flood summaries), so each one can be counted.
    config.write_text(FAST + "[watch]\nburst_threshold = 1000000\nrespect_gitignore = false\n")
    db, endpoint = tmp_path / "store.db", f"ipc://{tmp_path}/loopmon.sock"
    serve = ["serve", "--config", str(config), "--bind", endpoint, "--db", str(db), "--headless"]
    server = start(serve, tmp_path / "serve1")
    collector = start(["collect", "--config", str(config), "--repo", str(repo), "--connect", endpoint], tmp_path / "collect")
    total = 10_000
    stored = lambda: rows(db, "SELECT count(*) FROM events WHERE kind = 'file_changed'")[0][0]  # noqa: E731
    try:
        wait_until(lambda: rows(db, "SELECT count(*) FROM events WHERE kind = 'collector_started'")[0][0] == 1, "collector")
        staging = tmp_path / "staging"
        staging.mkdir()

        def write_files() -> None:
            for i in range(total):
                # Written beside the repo and moved in: one `created` event per file.
                tmp = staging / f"f{i}"
                tmp.write_text(f"file {i}\n")
                os.rename(tmp, repo / "data" / f"f{i:05d}.txt")
                if i % 200 == 199:
                    time.sleep(0.02)

        writer = threading.Thread(target=write_files)
        writer.start()
        wait_until(lambda: stored() >= 2000, "the first events stored")
        server.kill()  # kill -9, in the middle of the stream
        server.wait()
        at_kill = stored()
        writer.join()
        server = start(serve, tmp_path / "serve2")
        wait_until(lambda: stored() >= total, f"all {total} events stored", timeout=120)
    finally:
        stop(collector)
        stop(server)
    assert 0 < at_kill < total, "the server died with events still in flight"
    paths = [p for (p,) in rows(db, "SELECT json_extract(envelope, '$.payload.path') FROM events WHERE kind = 'file_changed'")]
    assert len(paths) == total and set(paths) == {f"data/f{i:05d}.txt" for i in range(total)}, "each file exactly once"
    [(sent, dropped, events, last_seq)] = rows(
        db, "SELECT sent, dropped, events, last_seq FROM streams WHERE source = 'files'"
    )
    assert sent == events == total and dropped == 0, "as many stored as the collector sent, by (source, stream, seq)"
    seqs = [s for (s,) in rows(db, "SELECT seq FROM events WHERE source = 'files' ORDER BY seq")]
    assert len(seqs) == len(set(seqs)) == total and seqs[-1] < last_seq


def test_a_receiver_restarted_after_a_second_crash_still_takes_the_holes(tmp_path: Path) -> None:
    """A run that died while refilling a gap stored events past the gap: the next run asks the store."""
    endpoint = f"ipc://{tmp_path}/bus.sock"
    fast = BusSettings(resend_seconds=0.2)
    sink = SqliteSink(tmp_path / "store.db")
    publisher = Publisher(endpoint, "loop", "files", settings=fast, context=zmq.Context())
    for i in range(300):
        publisher.publish(FileChanged(path=f"f{i}", change="created"))
    first = Receiver(endpoint, settings=fast)
    got: list[Envelope] = []
    while len(got) < 300:
        got += first.poll(50)
    events = [e for e in got if e.kind == "file_changed"]
    sink.write(events[:100] + events[200:])  # 101..200 never made it to the store
    first.close()
    second = Receiver(endpoint, settings=fast)
    second.resume(sink.stream_positions(), stored=sink.holds)
    taken: list[Envelope] = []
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and len(taken) < 100:
        publisher.heartbeat()
        taken += [e for e in second.poll(20) if e.kind == "file_changed"]
    sink.write(taken)
    assert sorted(e.seq for e in taken) == list(range(101, 201)), "only the holes, each once"
    assert sink.conn.execute("SELECT count(*) FROM events WHERE kind = 'file_changed'").fetchone()[0] == 300
    sink.close()
    second.close()


# --------------------------------------------------------------------------- the collecting side


def ledger_events(before: str, after: str) -> list[tuple[str, str | None]]:
    """What a collector that never stopped would have said about the ledger: (kind, item)."""
    tracker = LedgerTracker()
    tracker.update("docs/fix_plan.md", before)
    out = []
    for p in tracker.update("docs/fix_plan.md", after):
        item = getattr(p, "item_id", None) or (p.item.id if hasattr(p, "item") else None)
        out.append((p.kind, item))
    return out


def payload_item(env: Envelope) -> tuple[str, str | None]:
    p = env.payload
    return p.kind, getattr(p, "item_id", None) or (p.item.id if hasattr(p, "item") else None)


def test_a_collector_killed_and_restarted_emits_exactly_what_it_missed_once(tmp_path: Path) -> None:
    repo = tmp_path / "loop"
    sim = LoopSimulator(repo, scenario="mixed", seed=4)
    sim.run(2)
    config = tmp_path / "loopmon.toml"
    config.write_text(FAST)
    db, endpoint = tmp_path / "store.db", f"ipc://{tmp_path}/loopmon.sock"
    server = start(["serve", "--config", str(config), "--bind", endpoint, "--db", str(db), "--headless"], tmp_path / "serve")
    collect = ["collect", "--config", str(config), "--repo", str(repo), "--connect", endpoint]
    collector = start(collect, tmp_path / "collect1")
    ledger, memory, brief = repo / "docs" / "fix_plan.md", repo / "galph_memory.md", repo / "input.md"
    try:
        wait_until(lambda: rows(db, "SELECT count(*) FROM events WHERE kind = 'collector_started'")[0][0] == 1, "collector")
        sim.run(2)
        # The loop goes on; wait until the collector has saved all it published.
        wait_until(
            lambda: saved(repo, "commits")["tips"] == read_tips(repo, ["refs/heads/"], repo / ".git" / "HEAD")
            and saved(repo, "ledger")["texts"]["docs/fix_plan.md"] == ledger.read_text()
            and saved(repo, "brief")["digests"]["input.md"] == digest(brief.read_text()),
            "the collector's saved state to catch up",
        )
        collector.kill()  # kill -9, between turns of a running loop
        collector.wait()
        first_streams = {s for (s,) in rows(db, "SELECT stream FROM streams")}
        before = {"shas": git_shas(repo), "ledger": ledger.read_text(), "memory": memory.read_text(), "brief": brief.read_text()}
        sim.run(2)  # while it is down: commits, ledger, brief, memory, baton all move
        # And a hand edit: the first item's status changes.
        first = re.search(r"^- Status: (\w+)", ledger.read_text(), re.M)
        assert first is not None
        new_status = "blocked" if first.group(1) != "blocked" else "done"
        ledger.write_text(ledger.read_text().replace(first.group(0), f"- Status: {new_status}", 1))
        collector = start(collect, tmp_path / "collect2")
        missed = git_shas(repo) - before["shas"]
        wait_until(lambda: missed <= {s for (s,) in rows(db, "SELECT sha FROM commits")}, "the missed commits")
        time.sleep(1.0)  # anything else it would say has arrived by now
    finally:
        stop(collector)
        stop(server)
    everything = headless(tmp_path / "serve.out")
    assert len([e for e in everything if e.kind == "collector_started"]) == 2
    # What the restarted collector said: everything on streams the store had not heard of at the kill.
    after = [e for e in everything if e.stream not in first_streams and e.source in COLLECTOR_SOURCES and e.kind != "heartbeat"]

    commits = [e.payload.sha for e in after if e.kind == "commit"]
    assert sorted(commits) == sorted(missed), "every commit made while it was down, once, and no other"
    assert not [e for e in after if e.kind == "commit_orphaned"]

    expected_memory = set(entry_keys(parse_memory(memory.read_text()))) - set(entry_keys(parse_memory(before["memory"])))
    assert len(expected_memory) > 0
    assert len([e for e in after if e.kind == "memory_entry"]) == len(expected_memory)

    ledger_said = sorted(payload_item(e) for e in after if e.source == "ledger" and e.kind != "ledger_read")
    assert ledger_said == sorted(k for k in ledger_events(before["ledger"], ledger.read_text()) if k[0] != "ledger_read")
    assert any(kind == "ledger_status_changed" for kind, _ in ledger_said), "the hand edit"

    briefs = [e.payload for e in after if e.kind == "brief_updated"]
    assert [b.digest for b in briefs] == ([digest(brief.read_text())] if brief.read_text() != before["brief"] else [])
    assert len([e for e in after if e.kind == "baton_changed"]) == 1

    stored = {k for (k,) in rows(db, "SELECT key FROM events")}
    assert all(e.key in stored for e in after), "nothing said again: every event it sent was new to the store"


def in_process(tmp_path: Path, repo: Path, db: Path, **overrides) -> tuple[Server, SqliteSink, dict, zmq.Context]:
    settings = settings_from_dict({"bus": {"heartbeat_seconds": 0.2, "resend_seconds": 0.3}, **overrides})
    context = zmq.Context()
    sink = SqliteSink(db)
    server = Server(f"ipc://{tmp_path}/{db.stem}.sock", [sink], settings, context=context)
    server.receiver.resume(sink.stream_positions(), stored=sink.holds)
    return server.start(), sink, settings, context


def run_collectors(repo: Path, settings, endpoint: str, context: zmq.Context) -> None:
    collectors = CollectorSet(repo, settings, endpoint, context=context).start()
    time.sleep(0.8)
    collectors.stop()
    collectors.close()


def test_a_collector_restarted_against_another_store_tells_it_everything(tmp_path: Path) -> None:
    repo = tmp_path / "loop"
    LoopSimulator(repo, scenario="productive", seed=2).run(2)
    server, sink, settings, context = in_process(tmp_path, repo, tmp_path / "first.db")
    run_collectors(repo, settings, server.endpoint, context)
    server.stop()
    assert (repo / ".loopmon" / "collector" / "ledger.json").exists()
    # A fresh database: the saved state describes what the first store holds, not this one.
    server, sink, settings, context = in_process(tmp_path, repo, tmp_path / "second.db")
    run_collectors(repo, settings, server.endpoint, context)
    server.stop()
    second = sqlite3.connect(tmp_path / "second.db")
    items = second.execute("SELECT count(*) FROM ledger_items").fetchone()[0]
    first_items = sqlite3.connect(tmp_path / "first.db").execute("SELECT count(*) FROM ledger_items").fetchone()[0]
    assert items == first_items > 0
    codes = [r[0] for r in second.execute("SELECT json_extract(envelope, '$.payload.code') FROM events WHERE kind = 'warning'")]
    assert "collector_state_other_store" in codes


def test_a_collector_that_cannot_reach_its_store_at_start_says_so_and_scans_from_scratch(tmp_path: Path) -> None:
    repo = tmp_path / "loop"
    LoopSimulator(repo, scenario="productive", seed=2).run(1)
    db = tmp_path / "store.db"
    server, sink, settings, context = in_process(tmp_path, repo, db)
    run_collectors(repo, settings, server.endpoint, context)
    server.stop()
    items = sqlite3.connect(db).execute("SELECT count(*) FROM ledger_items").fetchone()[0]
    later = f"ipc://{tmp_path}/later.sock"
    quick = settings_from_dict({"bus": {"heartbeat_seconds": 0.2, "resend_seconds": 0.3}, "watch": {"resume_wait_seconds": 0.3}})
    collectors = CollectorSet(repo, quick, later, context=zmq.Context()).start()  # nobody answers yet
    sink = SqliteSink(db)
    server = Server(later, [sink], quick, context=zmq.Context())
    server.receiver.resume(sink.stream_positions(), stored=sink.holds)
    server.start()
    assert collectors.flush(20), "what waited in the collectors' spools reaches the store"
    collectors.stop()
    collectors.close()
    server.stop()
    conn = sqlite3.connect(db)
    codes = [r[0] for r in conn.execute("SELECT json_extract(envelope, '$.payload.code') FROM events WHERE kind = 'warning'")]
    assert codes == ["collector_state_unconfirmed"]
    assert conn.execute("SELECT count(*) FROM ledger_items").fetchone()[0] == items, "the rescan restated, nothing doubled"


def test_a_state_is_saved_only_once_the_store_holds_its_events(tmp_path: Path) -> None:
    folder = StateFolder(tmp_path / "state")
    marks = Checkpoints(limit=3)
    marks.capture(5, {"n": 1})
    marks.capture(9, {"n": 2})
    assert marks.due(4) is None
    assert marks.due(7) == {"n": 1}
    assert marks.due(7) is None
    for seq in range(10, 20):
        marks.capture(seq, {"n": seq})
    assert marks.waiting == 3 and marks.due(100) == {"n": 19}
    folder.save("ledger", "loop@2026", {"texts": {"docs/fix_plan.md": "bytes \udcff kept"}})
    back = folder.load("ledger")
    assert back is not None and back.token == "loop@2026" and back.state["texts"]["docs/fix_plan.md"] == "bytes \udcff kept"
    assert [p.name for p in folder.folder.iterdir()] == ["ledger.json"], "no temporary file left behind"
    (folder.folder / "brief.json").write_text('{"format": 1, "state": ')  # cut off by a crash of another tool
    try:
        folder.load("brief")
    except ValueError as err:
        assert "brief.json" in str(err)
    else:
        raise AssertionError("a cut-off state file must be refused")
