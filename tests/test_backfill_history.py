"""Backfill of a long simulated history: one row per commit, the right iteration tags, idempotent."""

from __future__ import annotations

import re
import sqlite3
import subprocess
from pathlib import Path

from monitor.cli import main
from monitor.simulator import LoopSimulator

TAG = re.compile(r"\biter=(\d+)|\[SYNC i=(\d+)\]")


def table_counts(db: Path) -> dict[str, int]:
    conn = sqlite3.connect(db)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE '%fts%'")]
        return {t: conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables}
    finally:
        conn.close()


def test_backfill_of_500_iterations_is_one_row_per_commit_with_its_tag_and_runs_twice_the_same(tmp_path: Path) -> None:
    repo = tmp_path / "loop"
    LoopSimulator(repo, scenario="mixed", seed=11, sync_commits=False).run(500)
    log = subprocess.run(
        ["git", "-C", str(repo), "log", "--all", "-z", "--format=%H%x00%B"], capture_output=True, text=True, check=True
    ).stdout.split("\0")
    messages = {log[i].strip(): log[i + 1] for i in range(0, len(log) - 1, 2)}
    db = tmp_path / "store.db"

    assert main(["backfill", "--repo", str(repo), "--db", str(db), "--quiet"]) == 0
    conn = sqlite3.connect(db)
    stored = dict(conn.execute("SELECT sha, iteration FROM commits").fetchall())
    iterations = conn.execute("SELECT count(*), max(number) FROM iterations").fetchone()
    conn.close()

    assert set(stored) == set(messages)
    tagged = 0
    for sha, message in messages.items():
        match = TAG.search(message.split("\n", 1)[0])
        if match:
            tagged += 1
            assert stored[sha] == int(match.group(1) or match.group(2)), message
    assert tagged > 500
    assert iterations[0] >= 500 and iterations[1] >= 500

    before = table_counts(db)
    assert main(["backfill", "--repo", str(repo), "--db", str(db), "--quiet"]) == 0
    after = table_counts(db)
    # `streams` records each run of a collector (this one too); every other table stays as it was.
    assert after.pop("streams") == before.pop("streams") + 1
    assert after == before
