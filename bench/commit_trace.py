"""Where a commit's latency goes: a timeline of each commit through the live pipeline.

Runs the embedded monitor (`loopmon run`'s Monitor + CollectorSet, inproc bus) in
this process with time marks on its steps, makes commits as bench/commit_latency.py
does, and reports for each step the median and p90 of when it ended, in ms after
`git commit` returned (negative: before it returned; the watcher hears the ref move
before git exits):

  dispatched     the watcher hands the ref change to the commit collector
  tips read      `git for-each-ref` (a process)
  new commits    `git rev-list` (a process)
  log read       `git log -p` of the new commit, parsed (a process)
  published      the commit event built (blobs, evidence) and sent
  scored         the receiving thread scored it
  stored         its batch committed to SQLite
  row seen       a reader polling the store found it (the figure of commit_latency.py)

Run: python bench/commit_trace.py [--commits N] [--quick]
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import benchlib
from commit_latency import write_change

SCRIPT = "commit_trace.py"
STEPS = ("dispatched", "tips read", "new commits", "log read", "published", "scored", "stored", "row seen")


class Marks:
    """First time each step happened since `reset` (monotonic)."""

    def __init__(self) -> None:
        self.at: dict[str, float] = {}
        self._lock = threading.Lock()

    def reset(self) -> None:
        with self._lock:
            self.at = {}

    def mark(self, step: str) -> None:
        now = time.monotonic()
        with self._lock:
            self.at.setdefault(step, now)


def instrument(marks: Marks) -> None:
    """Wrap the steps of the live commit path so they leave a mark when they end."""
    from collectors import commits, gitlog, watch
    from monitor import runtime

    def after(owner, name: str, step: str, *, when=lambda result, args: True) -> None:  # noqa: ANN001
        original = getattr(owner, name)

        def wrapped(*args, **kwargs):  # noqa: ANN002, ANN003
            result = original(*args, **kwargs)
            if when(result, args):
                marks.mark(step)
            return result

        setattr(owner, name, wrapped)

    def before(owner, name: str, step: str, *, when=lambda args: True) -> None:  # noqa: ANN001
        original = getattr(owner, name)

        def wrapped(*args, **kwargs):  # noqa: ANN002, ANN003
            if when(args):
                marks.mark(step)
            return original(*args, **kwargs)

        setattr(owner, name, wrapped)

    before(commits.CommitCollector, "on_changes", "dispatched")
    after(commits, "read_tips", "tips read")
    after(commits, "rev_list", "new commits", when=lambda result, args: bool(result))
    after(gitlog, "parse_record", "log read", when=lambda result, args: result is not None)
    before(commits.CommitBuilder, "assemble", "published")  # the event goes out right after
    after(runtime.Server, "_score", "scored", when=lambda result, args: any(e.kind == "commit" for e in result))
    after(runtime.Server, "_flush", "stored", when=lambda result, args: any(e.kind == "commit" for e in args[1]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--commits", type=int, default=100, help="commits traced (default 100)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for the smoke test")
    args = parser.parse_args(argv)
    if args.quick:
        args.commits = 4
    benchlib.header("commit trace: when each step of the live commit path ends", SCRIPT, args)
    import zmq

    from monitor.cli import Monitor
    from monitor.config import Settings
    from monitor.gc_tuning import tune_for_streaming
    from monitor.runtime import CollectorSet, inproc_endpoint

    marks = Marks()
    instrument(marks)
    tune_for_streaming()
    timelines: dict[str, list[float]] = {step: [] for step in STEPS}
    with tempfile.TemporaryDirectory(prefix="loopmon-bench-") as tmp:
        repo = benchlib.simulated_repo(Path(tmp) / "loop", iterations=3)
        settings, context, endpoint = Settings(), zmq.Context(), inproc_endpoint()
        monitor = Monitor(settings, Path(tmp) / "store.db", endpoint, context, headless=False, view=False).start()
        collectors = CollectorSet(repo, settings, endpoint, context=context).start()
        store = benchlib.Store(Path(tmp) / "store.db")
        rng = random.Random(0)
        try:
            time.sleep(1.0)
            for i in range(args.commits):
                write_change(repo, i, rng)
                benchlib.git(repo, "add", "ptycho", "tests")
                time.sleep(0.05 + rng.random() * 0.05)
                subject = f"[BENCH-001] traced step {i} — tests: not run"
                marks.reset()
                subprocess.run(["git", "-C", str(repo), "commit", "-q", "-m", subject], env=benchlib.GIT_ENV, check=True)
                returned = time.monotonic()
                _, seen = store.wait_for("SELECT sha FROM commits WHERE subject = ?", (subject,))
                time.sleep(0.05)
                at = dict(marks.at, **{"row seen": seen})
                for step in STEPS:
                    if step in at:
                        timelines[step].append((at[step] - returned) * 1000)
        finally:
            store.close()
            collectors.stop()
            monitor.close()
            collectors.close()
    print(f"{'step':14s} {'median':>8s} {'p90':>8s}   (ms after git commit returned, {args.commits} commits)")
    for step in STEPS:
        values = timelines[step]
        if values:
            print(f"{step:14s} {benchlib.percentile(values, 50):8.1f} {benchlib.percentile(values, 90):8.1f}")
    rows = timelines["row seen"]
    print(f"RESULT commit trace: row seen at median {benchlib.percentile(rows, 50):.1f} ms, "
          f"p90 {benchlib.percentile(rows, 90):.1f} ms after git commit returned")
    return 0


if __name__ == "__main__":
    sys.exit(main())
