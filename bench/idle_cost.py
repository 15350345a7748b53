"""Idle cost: CPU of `loopmon run` over a quiet minute (nothing in the repo changes).

`loopmon run` watches a simulated loop repo in its own process, once with the live
view (on a pseudo-terminal, as a person runs it) and once `--headless` (output to
/dev/null). After start-up and a settling pause, the process's CPU time (user +
system, plus the git commands it ran and reaped) is read from /proc at the start and
the end of `--seconds`. The two variants run side by side, each in its own process;
each run is a fresh pair.

Run: python bench/idle_cost.py [--seconds S] [--repeats R] [--quick]
"""

from __future__ import annotations

import argparse
import os
import pty
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import benchlib

GOAL_PERCENT = 2.0
SCRIPT = "idle_cost.py"


class _Terminal:
    """A pseudo-terminal for the live view, drained so the view never blocks on it."""

    def __init__(self, columns: int = 120, rows: int = 40) -> None:
        self.master, self.slave = pty.openpty()
        os.set_blocking(self.master, True)
        import fcntl
        import struct
        import termios

        fcntl.ioctl(self.slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
        self.bytes = 0
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:
                return
            if not data:
                return
            self.bytes += len(data)

    def close(self) -> None:
        for fd in (self.slave, self.master):
            try:
                os.close(fd)
            except OSError:
                pass


def start(repo: Path, db: Path, view: bool) -> tuple[benchlib.Monitored, _Terminal | None]:
    if not view:
        return benchlib.Monitored(repo, db, "--headless"), None
    term = _Terminal()
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "120", "LINES": "40"}
    monitor = benchlib.Monitored.__new__(benchlib.Monitored)
    monitor.repo, monitor.db, monitor.log = repo, db, db.with_suffix(".stderr")
    monitor.store = benchlib.Store(db)
    monitor.proc = subprocess.Popen(benchlib.loopmon("run", "--repo", str(repo), "--db", str(db)), stdin=term.slave,
                                    stdout=term.slave, stderr=monitor.log.open("wb"), cwd=str(benchlib.ROOT), env=env,
                                    start_new_session=True)
    return monitor, term


def one_run(seconds: float, settle: float, workdir: Path, r: int) -> dict[str, float]:
    """CPU percent of one core for each variant, measured over the same quiet window."""
    repo = benchlib.simulated_repo(workdir / f"loop{r}", iterations=5, seed=r)
    runs = {name: start(repo, workdir / f"{name}{r}.db", view=name == "view") for name in ("view", "headless")}
    try:
        for monitor, _ in runs.values():
            monitor.wait_ready()
        time.sleep(settle)
        before = {name: (benchlib.cpu_seconds(m.proc.pid), time.monotonic()) for name, (m, _) in runs.items()}
        time.sleep(seconds)
        out = {}
        for name, (m, term) in runs.items():
            cpu0, t0 = before[name]
            out[name] = 100 * (benchlib.cpu_seconds(m.proc.pid) - cpu0) / (time.monotonic() - t0)
            if term is not None and term.bytes == 0:
                raise RuntimeError("the live view drew nothing on its terminal")
        return out
    finally:
        for monitor, term in runs.values():
            monitor.stop()
            if term is not None:
                term.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0, help="the quiet window measured (default 60)")
    parser.add_argument("--settle", type=float, default=5.0, help="pause after start-up before measuring (default 5)")
    parser.add_argument("--repeats", type=int, default=3, help="runs, each a fresh pair of processes (default 3)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for the smoke test")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.settle, args.repeats = 1.0, 0.5, 1
    benchlib.header("idle cost: CPU of loopmon run with nothing changing", SCRIPT, args)
    print("process: loopmon run (live view on a 120x40 pseudo-terminal) and loopmon run --headless, side by side")
    results: dict[str, list[float]] = {"view": [], "headless": []}
    with tempfile.TemporaryDirectory(prefix="loopmon-bench-") as tmp:
        for r in range(args.repeats):
            got = one_run(args.seconds, args.settle, Path(tmp), r)
            for name, pct in got.items():
                results[name].append(pct)
            print(f"run {r + 1}: with the live view {got['view']:.2f} %  headless {got['headless']:.2f} % of a core", flush=True)
    view, headless = benchlib.median(results["view"]), benchlib.median(results["headless"])
    print(f"RESULT idle cost: {view:.2f} % of a core with the live view, {headless:.2f} % headless "
          f"(median of {args.repeats} x {args.seconds:.0f} s; goal < {GOAL_PERCENT:.0f} %): "
          f"{benchlib.verdict(max(view, headless) < GOAL_PERCENT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
