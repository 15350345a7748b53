"""Backfill: `loopmon backfill` wall time against `git log --numstat` over the same range.

The history is a simulated loop (monitor/simulator.py, scenario "mixed") of
`--iterations` iterations, padded to about `--commits` commits with extra engineer
work commits (`[FOCUS] step k: ...`, a function and its test each) between the
supervisor's hand-off and the engineer's turn, as real loops show, then packed
(`git gc`, as git's automatic gc keeps a real repository). Generating it takes minutes: `--history DIR` keeps it for the next run (reused when present).

Both commands run as fresh processes over every ref (`--all`), each on a fresh
store for loopmon; the figure is the median of `--repeats` runs of each, run in
alternation, and their ratio.

Run: python bench/backfill.py [--iterations N] [--commits C] [--repeats R] [--history DIR] [--quick]
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import benchlib

GOAL_RATIO = 3.0
SCRIPT = "backfill.py"


class _Padding:
    """Extra engineer work commits, made between a supervisor turn and the engineer's."""

    def __init__(self, sim, per_iteration: float, seed: int) -> None:  # noqa: ANN001
        self.sim = sim
        self.per_iteration = per_iteration
        self.rng = random.Random(seed)
        self.owed = 0.0
        self.count = 0

    def __call__(self, record) -> None:  # noqa: ANN001 - a TurnRecord
        if record.actor != "galph" or not record.focus:
            return
        self.owed += self.per_iteration
        while self.owed >= 1:
            self.owed -= 1
            self.commit(record.focus)

    def commit(self, focus: str) -> None:
        sim, rng = self.sim, self.rng
        self.count += 1
        k = self.count
        name = focus.lower().replace("-", "_")
        module, test = f"ptycho/work/{name}.py", f"tests/test_work_{name}.py"
        for rel, text in (
            (module, f"\n\ndef step_{k}(value):\n" + "".join(f"    value += {rng.randint(1, 99)}\n" for _ in range(rng.randint(4, 30))) + "    return value\n"),
            (test, f"\n\ndef test_step_{k}():\n    from ptycho.work.{name} import step_{k}\n    assert step_{k}(0) > 0\n"),
        ):
            path = sim.repo / rel
            new = not path.exists()
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a") as fh:
                fh.write(text)
            if new:
                sim._new.add(rel)  # the simulator's own bookkeeping of untracked files
        when = sim._now()
        message = f"[{focus}] step {k}: add step_{k} — tests: pytest {test}::test_step_{k} -q (1 passed)"
        sim.git.commit([module, test], message, when, sim._new)
        sim._new -= {module, test}
        sim._advance(rng.randint(60, 600))


def make_history(path: Path, iterations: int, commits: int, seed: int = 0) -> int:
    """Play the simulated loop into `path` (unless it is there already); its commit count."""
    from monitor.simulator import LoopSimulator

    if not (path / ".git").exists():
        started = time.monotonic()
        sim = LoopSimulator(path, scenario="mixed", seed=seed)
        # The simulator makes about 6 commits an iteration; the padding brings it to the target.
        padding = _Padding(sim, max(0.0, commits / max(1, iterations) - 6.1), seed)
        sim.run(iterations, on_turn=padding)
        # A real loop's repository is packed (git's automatic gc); the simulator turns gc off.
        benchlib.git(path, "gc", "-q")
        print(f"history: generated in {time.monotonic() - started:.0f} s ({padding.count} padding commits)", flush=True)
    return int(benchlib.git(path, "rev-list", "--all", "--count").stdout)


def time_git_log(repo: Path) -> float:
    start = time.monotonic()
    proc = subprocess.run(["git", "-C", str(repo), "log", "--all", "--numstat"], capture_output=True, env=benchlib.GIT_ENV)
    elapsed = time.monotonic() - start
    if proc.returncode:
        raise RuntimeError(proc.stderr.decode(errors="replace"))
    return elapsed


def time_backfill(repo: Path, db: Path) -> float:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    start = time.monotonic()
    proc = subprocess.run(benchlib.loopmon("backfill", "--repo", str(repo), "--db", str(db), "--quiet"),
                          capture_output=True, cwd=str(benchlib.ROOT))
    elapsed = time.monotonic() - start
    if proc.returncode:
        raise RuntimeError(proc.stderr.decode(errors="replace")[-2000:])
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=500, help="simulated iterations (default 500)")
    parser.add_argument("--commits", type=int, default=5000, help="commits to pad the history to (default 5000)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each command (default 3)")
    parser.add_argument("--history", help="keep (or reuse) the generated repository here")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for the smoke test")
    args = parser.parse_args(argv)
    if args.quick:
        args.iterations, args.commits, args.repeats = 3, 30, 1
    benchlib.header("backfill: loopmon backfill against git log --numstat over the same history", SCRIPT, args)
    with tempfile.TemporaryDirectory(prefix="loopmon-bench-") as tmp:
        repo = Path(args.history) if args.history else Path(tmp) / "loop"
        count = make_history(repo, args.iterations, args.commits)
        print(f"history: {count} commits, {args.iterations} iterations at {repo}")
        db = Path(tmp) / "backfill.db"
        git_times, loopmon_times, ratios = [], [], []
        for r in range(args.repeats):
            g = time_git_log(repo)
            b = time_backfill(repo, db)
            git_times.append(g)
            loopmon_times.append(b)
            ratios.append(b / g)
            print(f"run {r + 1}: loopmon backfill {b:.2f} s  git log --numstat {g:.2f} s  ratio {b / g:.1f}", flush=True)
    g, b, ratio = benchlib.median(git_times), benchlib.median(loopmon_times), benchlib.median(ratios)
    print(f"RESULT backfill: {b:.2f} s for {count} commits ({count / b:,.0f} commits/s); git log --numstat {g:.2f} s; "
          f"ratio {ratio:.1f} (median of {args.repeats}; goal <= {GOAL_RATIO:.0f}): {benchlib.verdict(ratio <= GOAL_RATIO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
