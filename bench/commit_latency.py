"""Commit latency: `git commit` returns -> the commit's row, with its numstat, in SQLite.

`loopmon run --headless` watches a simulated loop repo in its own process (the
embedded deployment: collectors, bus, scorer and store in one process). This script
plays the engineer: it edits a production module and its test, waits a moment (an
agent does not commit the instant it writes), runs `git commit`, and from the moment
`git commit` returns polls the store (read-only, every 0.5 ms) until the commit's
row is there with its `commit_files` rows (one transaction writes both).

Run: python bench/commit_latency.py [--commits N] [--repeats R] [--quick]
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import time
from pathlib import Path

import benchlib

GOAL_P99_MS = 25.0
SCRIPT = "commit_latency.py"


def write_change(repo: Path, i: int, rng: random.Random) -> None:
    """An engineer's edit: a new function in a module and a test for it."""
    module = repo / "ptycho" / f"bench_{i % 8}.py"
    test = repo / "tests" / f"test_bench_{i % 8}.py"
    module.parent.mkdir(parents=True, exist_ok=True)
    test.parent.mkdir(parents=True, exist_ok=True)
    body = "".join(f"    total += {rng.randint(1, 99)} * value\n" for _ in range(rng.randint(3, 12)))
    with module.open("a") as fh:
        fh.write(f"\n\ndef step_{i}(value):\n    total = 0\n{body}    return total\n")
    with test.open("a") as fh:
        fh.write(f"\n\ndef test_step_{i}():\n    from ptycho.bench_{i % 8} import step_{i}\n    assert step_{i}(0) == 0\n")


def one_run(commits: int, workdir: Path, seed: int) -> list[float]:
    """Latencies (ms) of `commits` commits against one fresh monitor."""
    repo = benchlib.simulated_repo(workdir / f"loop{seed}", iterations=3, seed=seed)
    monitor = benchlib.Monitored(repo, workdir / f"loop{seed}.db", "--headless")
    rng = random.Random(seed)
    latencies: list[float] = []
    try:
        monitor.wait_ready()
        time.sleep(1.0)  # the start-up scan and its events are behind us
        for i in range(commits):
            write_change(repo, i, rng)
            benchlib.git(repo, "add", "ptycho", "tests")
            time.sleep(0.05 + rng.random() * 0.05)
            subject = f"[BENCH-001] step {seed}-{i}: add step_{i} — tests: pytest tests/test_bench_{i % 8}.py -q (1 passed)"
            subprocess.run(["git", "-C", str(repo), "commit", "-q", "-m", subject], env=benchlib.GIT_ENV, check=True)
            returned = time.monotonic()
            row, seen = monitor.store.wait_for(
                "SELECT c.sha, c.files, (SELECT count(*) FROM commit_files f WHERE f.repo = c.repo AND f.sha = c.sha) "
                "FROM commits c WHERE c.subject = ?",
                (subject,),
            )
            if row[1] != 2 or row[2] != 2:
                raise RuntimeError(f"commit {row[0]} stored with {row[1]} files and {row[2]} numstat rows, not 2")
            latencies.append((seen - returned) * 1000)
            time.sleep(0.05)
    finally:
        code = monitor.stop()
    if code not in (0, -15):
        raise RuntimeError(f"loopmon exited {code}: {monitor.log.read_text(errors='replace')[-2000:]}")
    return latencies


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--commits", type=int, default=200, help="commits per run (default 200)")
    parser.add_argument("--repeats", type=int, default=3, help="runs, each against a fresh monitor (default 3)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for the smoke test")
    args = parser.parse_args(argv)
    if args.quick:
        args.commits, args.repeats = 5, 1
    benchlib.header("commit latency: git commit returns -> row with numstat in SQLite", SCRIPT, args)
    benchlib.latency_runs(one_run, args.commits, args.repeats, GOAL_P99_MS, "commit latency", "")
    return 0


if __name__ == "__main__":
    sys.exit(main())
