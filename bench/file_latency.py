"""File latency: a file write in a watched repo -> its `file_changed` row in SQLite.

`loopmon run --headless` watches a simulated loop repo in its own process. This
script writes files the way a loop does (new logs in a hub, edits to code, notes),
one at a time with a pause between, and from the moment the write returns polls the
store (read-only, every 0.5 ms) for the event's row. The watcher's debounce
(`watch.debounce_ms`, default 20 ms) is part of the figure.

Run: python bench/file_latency.py [--writes N] [--repeats R] [--quick]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import benchlib

GOAL_P99_MS = 50.0
SCRIPT = "file_latency.py"


def target(i: int) -> str:
    """What the i-th write touches: an edited module, a new hub log, a note rewritten."""
    kind = i % 3
    if kind == 0:
        return f"ptycho/module_{i % 5}.py"
    if kind == 1:
        return f"plans/active/BENCH-001/reports/2026-01-05T090000Z/green/pytest_{i}.log"
    return f"docs/notes_{i % 4}.md"


def one_run(writes: int, workdir: Path, seed: int) -> list[float]:
    repo = benchlib.simulated_repo(workdir / f"loop{seed}", iterations=3, seed=seed)
    monitor = benchlib.Monitored(repo, workdir / f"loop{seed}.db", "--headless")
    rng = random.Random(seed)
    latencies: list[float] = []
    try:
        monitor.wait_ready()
        time.sleep(1.0)
        conn = monitor.store.connect()
        last_id = conn.execute("SELECT coalesce(max(id), 0) FROM events").fetchone()[0]
        for i in range(writes):
            rel = target(i)
            path = repo / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            time.sleep(0.03)  # a new folder's own events settle first
            with path.open("a") as fh:
                fh.write(f"line {i} {rng.random()}\n" * rng.randint(1, 20))
            written = time.monotonic()
            while True:
                (row_id, text), seen = monitor.store.wait_for(
                    "SELECT id, envelope FROM events WHERE id > ? AND kind = 'file_changed' ORDER BY id LIMIT 1",
                    (last_id,),
                )
                last_id = row_id
                if json.loads(text)["payload"]["path"] == rel:
                    break
            latencies.append((seen - written) * 1000)
            time.sleep(0.03 + rng.random() * 0.03)
    finally:
        code = monitor.stop()
    if code not in (0, -15):
        raise RuntimeError(f"loopmon exited {code}: {monitor.log.read_text(errors='replace')[-2000:]}")
    return latencies


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--writes", type=int, default=500, help="file writes per run (default 500)")
    parser.add_argument("--repeats", type=int, default=3, help="runs, each against a fresh monitor (default 3)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for the smoke test")
    args = parser.parse_args(argv)
    if args.quick:
        args.writes, args.repeats = 6, 1
    benchlib.header("file latency: a write in the watched repo -> its row in SQLite", SCRIPT, args)
    benchlib.latency_runs(one_run, args.writes, args.repeats, GOAL_P99_MS, "file latency", ", debounce included")
    return 0


if __name__ == "__main__":
    sys.exit(main())
