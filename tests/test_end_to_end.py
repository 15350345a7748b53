"""The whole chain, as a user runs it: real processes, real git, real sockets, real SQLite."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from monitor.events import Envelope
from monitor.simulator import LoopSimulator

LOOPMON = [sys.executable, "-m", "monitor.cli"]


def git_commits(repo: Path) -> dict[str, tuple[str, str, str]]:
    """sha -> (full message, author name, author time) for every commit on every ref, as git says."""
    out = subprocess.run(
        ["git", "-C", str(repo), "log", "--all", "-z", "--format=%H%x00%an%x00%aI%x00%B"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    fields = out.split("\0")
    commits = {}
    for i in range(0, len(fields) - 3, 4):
        sha, author, when, message = fields[i : i + 4]
        commits[sha.strip()] = (message.strip(), author, when)
    return commits


def stored_commits(db: Path) -> dict[str, tuple[str, str, str]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT sha, message, author_name, authored_at FROM commits").fetchall()
    finally:
        conn.close()
    return {sha: (message.strip(), author, when) for sha, message, author, when in rows}


def wait_until(predicate, timeout: float = 30.0, what: str = "condition", status=lambda: "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except sqlite3.OperationalError:
            pass  # the store is not created yet
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}: {status()}")


def count(db: Path, sql: str) -> int:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return conn.execute(sql).fetchone()[0]
    finally:
        conn.close()


def start(args: list[str], output: Path) -> subprocess.Popen:
    """A loopmon process whose output goes to files (a pipe nobody reads would stall it)."""
    return subprocess.Popen(
        LOOPMON + args,
        stdout=open(output.with_suffix(".out"), "w"),
        stderr=open(output.with_suffix(".err"), "w"),
        text=True,
    )


def stop(proc: subprocess.Popen, output: Path) -> tuple[str, str]:
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=60)
    out = output.with_suffix(".out").read_text()
    err = output.with_suffix(".err").read_text()
    assert proc.returncode == 0, err
    return out, err


def same_time(a: str, b: str) -> bool:
    from datetime import datetime

    return datetime.fromisoformat(a) == datetime.fromisoformat(b)


def assert_same_commits(repo: Path, db: Path) -> None:
    expected = git_commits(repo)
    stored = stored_commits(db)
    assert set(stored) == set(expected)
    for sha, (message, author, when) in expected.items():
        got_message, got_author, got_when = stored[sha]
        assert got_message == message and got_author == author and same_time(got_when, when), sha


def empty_repo(path: Path) -> Path:
    path.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", "-b", "main", str(path)], check=True)
    return path


def test_run_stores_every_commit_of_a_live_loop_once(tmp_path: Path) -> None:
    repo = empty_repo(tmp_path / "loop")
    db = tmp_path / "store.db"
    proc = start(["run", "--repo", str(repo), "--db", str(db), "--headless"], tmp_path / "run")
    try:
        wait_until(lambda: count(db, "SELECT count(*) FROM events WHERE kind = 'collector_started'") == 1, what="monitor start")
        LoopSimulator(repo, scenario="mixed", seed=3).run(6)
        expected = set(git_commits(repo))
        wait_until(
            lambda: set(stored_commits(db)) == expected,
            what=f"every commit in the store ({len(expected)})",
            status=lambda: f"{len(stored_commits(db))} stored",
        )
    finally:
        out, err = stop(proc, tmp_path / "run")
    assert_same_commits(repo, db)
    assert count(db, "SELECT count(*) FROM events WHERE kind = 'commit'") == len(expected), "each commit arrives once"
    lines = [line for line in out.splitlines() if line.strip()]
    envelopes = [Envelope.from_wire(line) for line in lines]  # headless output is the wire schema, line by line
    assert {e.payload.sha for e in envelopes if e.kind == "commit"} == expected
    # While an iteration is open its provisional scores move; then it is final.
    scores: dict[int, list] = {}
    for e in envelopes:
        if e.kind == "iteration_scored":
            scores.setdefault(e.payload.index, []).append(e.payload)
    moving = [
        idx
        for idx, seen in scores.items()
        if len({p.aggregate for p in seen if p.provisional}) >= 2 and not seen[-1].provisional
    ]
    assert moving, {idx: [(p.provisional, p.aggregate) for p in seen] for idx, seen in scores.items()}
    assert all(p.reasons for seen in scores.values() for p in seen), "every score carries its reasons"


def test_serve_and_collect_as_two_processes_over_ipc(tmp_path: Path) -> None:
    repo = tmp_path / "loop"
    sim = LoopSimulator(repo, scenario="productive", seed=5)
    sim.run(1)
    db = tmp_path / "store.db"
    endpoint = f"ipc://{tmp_path}/loopmon.sock"
    server = start(["serve", "--bind", endpoint, "--db", str(db), "--headless"], tmp_path / "serve")
    collector = start(["collect", "--repo", str(repo), "--connect", endpoint], tmp_path / "collect")
    try:
        wait_until(lambda: count(db, "SELECT count(*) FROM events WHERE kind = 'collector_started'") == 1, what="collector")
        first = set(git_commits(repo))
        sim.run(5)
        new = set(git_commits(repo)) - first
        wait_until(lambda: new <= set(stored_commits(db)), what="the new commits")
    finally:
        stop(collector, tmp_path / "collect")
        stop(server, tmp_path / "serve")
    stored = stored_commits(db)
    expected = git_commits(repo)
    for sha in new:
        assert stored[sha][0] == expected[sha][0] and stored[sha][1] == expected[sha][1]


def test_backfill_then_run_gives_the_same_rows_as_git(tmp_path: Path) -> None:
    repo = tmp_path / "loop"
    LoopSimulator(repo, scenario="mixed", seed=7).run(8)
    db = tmp_path / "store.db"
    done = subprocess.run(LOOPMON + ["backfill", "--repo", str(repo), "--db", str(db), "--quiet"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert_same_commits(repo, db)
    rows = count(db, "SELECT count(*) FROM events")
    again = subprocess.run(LOOPMON + ["backfill", "--repo", str(repo), "--db", str(db), "--quiet"], capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert count(db, "SELECT count(*) FROM commits") == len(git_commits(repo))
    assert count(db, "SELECT count(*) FROM events WHERE kind = 'commit'") == len(git_commits(repo))
    assert count(db, "SELECT count(*) FROM events") >= rows


def test_the_readme_demo_command_exits_0_and_leaves_the_commits(tmp_path: Path) -> None:
    db = tmp_path / "demo.db"
    done = subprocess.run(
        ["loopmon", "demo", "--iterations", "3", "--headless", "--db", str(db)],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"},
    )
    assert done.returncode == 0, done.stderr
    assert count(db, "SELECT count(*) FROM commits") >= 6
    assert "database at" in done.stdout + done.stderr


@pytest.mark.parametrize("command", ["run", "serve", "collect", "backfill", "simulate", "demo", "keys"])
def test_every_command_explains_itself(command: str) -> None:
    done = subprocess.run(LOOPMON + [command, "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    assert "usage: loopmon " + command in done.stdout
    assert len(done.stdout.splitlines()) > 5
