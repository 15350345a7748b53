"""Where a backfill's time goes: CPU per commit of each stage, measured one stage at a time.

`loopmon backfill` runs its stages at once (the collector reads git and builds
events on the main thread while the server thread scores and stores them), so a
profile of it shows threads, not costs. This script runs the same code stage after
stage, in one process with loopmon's GC settings, over the same history as
bench/backfill.py, and reports the CPU time (time.process_time) of each:

- git log -p: `git log --numstat -p -U0` of every commit, read and thrown away
  (what the commit reader asks git for; git's own CPU, in a child process, is not
  counted here but shown as wall time);
- collect: `collectors.commits.backfill` (reading git's stream, blobs, evidence,
  the Commit events);
- bus: envelopes, `to_wire`, `from_wire`;
- score: `Server._score` in batches as the server takes them;
- store: `SqliteSink.write` of those batches.

Run: python bench/backfill_stages.py [--iterations N] [--commits C] [--history DIR] [--quick]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import benchlib
from backfill import make_history

SCRIPT = "backfill_stages.py"


def stages(repo: Path, db: Path) -> dict[str, float]:
    from collectors.commits import backfill
    from monitor.config import Settings
    from monitor.events import Envelope, utcnow
    from monitor.gc_tuning import tune_for_streaming
    from monitor.runtime import Server, inproc_endpoint
    from monitor.scorer import Scorer
    from sinks.sqlite import SqliteSink

    tune_for_streaming()
    settings = Settings()
    out: dict[str, float] = {}
    start = time.monotonic()
    subprocess.run(["git", "-C", str(repo), "log", "--all", "--numstat", "-p", "-U0", "--full-index", "-M"],
                   capture_output=True, check=True)
    out["git log -p (wall)"] = time.monotonic() - start

    emitted: list = []
    t = time.process_time()
    count = backfill(repo, settings, lambda payload, when: emitted.append((payload, when)))
    out["collect"] = time.process_time() - t

    t = time.process_time()
    wires = []
    for seq, (payload, when) in enumerate(emitted, start=1):
        now = utcnow()
        wires.append(Envelope(repo="r", source="backfill", stream="s", seq=seq, time=when or now, observed=now,
                              payload=payload).to_wire())
    received = [Envelope.from_wire(w) for w in wires]
    out["bus"] = time.process_time() - t

    server = Server(inproc_endpoint(), [], settings, scorer=Scorer(settings))
    batch = settings.store.batch_size
    t = time.process_time()
    scored = [server._score(received[i : i + batch]) for i in range(0, len(received), batch)]
    out["score"] = time.process_time() - t
    server.receiver.close()

    sink = SqliteSink(db)
    t = time.process_time()
    for b in scored:
        sink.write(b)
    out["store"] = time.process_time() - t
    sink.close()
    out["commits"] = count
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=500, help="simulated iterations (default 500)")
    parser.add_argument("--commits", type=int, default=5000, help="commits to pad the history to (default 5000)")
    parser.add_argument("--history", help="keep (or reuse) the generated repository here")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for the smoke test")
    args = parser.parse_args(argv)
    if args.quick:
        args.iterations, args.commits = 3, 30
    benchlib.header("backfill stages: CPU per commit of each stage, run one after the other", SCRIPT, args)
    with tempfile.TemporaryDirectory(prefix="loopmon-bench-") as tmp:
        repo = Path(args.history) if args.history else Path(tmp) / "loop"
        make_history(repo, args.iterations, args.commits)
        got = stages(repo, Path(tmp) / "stages.db")
    n = got.pop("commits")
    cpu = {k: v for k, v in got.items() if "wall" not in k}
    total = sum(cpu.values())
    for name, seconds in got.items():
        share = f"{100 * seconds / total:4.0f} %" if name in cpu else "      "
        print(f"  {name:20s} {seconds:6.2f} s  {1e6 * seconds / n:6.0f} µs/commit  {share}")
    print(f"RESULT backfill stages: {total:.2f} s CPU for {n} commits ({1e6 * total / n:.0f} µs/commit): "
          + ", ".join(f"{k} {100 * v / total:.0f} %" for k, v in cpu.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
