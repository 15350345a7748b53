"""Scorer memory: resident memory of a process that has scored 1,000,000 events.

A synthetic busy loop (benchlib.loop_payloads: baton, SYNC, supervisor and engineer
commits with ten classified paths and evidence, brief, memory, ledger, hub updates
and many working-tree file changes) is generated on the fly and fed to one
`monitor.scorer.Scorer`, in this process; nothing is kept but what the scorer keeps.
RSS is read from /proc every `--events / 10` events. "Flat after warm-up" is the
growth from the 20 % mark to the end.

Run: python bench/scorer_memory.py [--events N] [--repeats R] [--quick]
"""

from __future__ import annotations

import argparse
import gc
import subprocess
import sys
import time

import benchlib

GOAL_MB = 150.0
GOAL_GROWTH_MB = 10.0  # what "flat" is taken to mean between the warm-up mark and the end
SCRIPT = "scorer_memory.py"


def one_run(events: int) -> tuple[list[tuple[int, float]], float, dict]:
    """[(events scored, RSS MB)], the seconds it took, and the scorer's own counts."""
    from monitor.config import Settings
    from monitor.scorer import Scorer

    settings = Settings()
    scorer = Scorer(settings)
    gc.collect()
    samples = [(0, benchlib.rss_mb())]
    step = max(1, events // 10)
    iterations = events // benchlib.events_per_iteration() + 1
    derived = 0
    start = time.monotonic()
    for n, env in enumerate(benchlib.loop_envelopes(iterations), start=1):
        derived += len(scorer.process(env))
        if n % step == 0:
            samples.append((n, benchlib.rss_mb()))
        if n >= events:
            break
    elapsed = time.monotonic() - start
    figures = scorer.figures("bench")
    scorer.close()
    return samples, elapsed, {"derived": derived, "iterations": figures["iterations"]}


def child(events: int) -> None:
    samples, elapsed, counts = one_run(events)
    print(" ".join(f"{n}:{mb:.1f}" for n, mb in samples))
    print(f"{elapsed:.3f} {counts['derived']} {counts['iterations']}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000, help="events scored per run (default 1000000)")
    parser.add_argument("--repeats", type=int, default=3, help="runs, each a fresh process (default 3)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for the smoke test")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.events)
        return 0
    if args.quick:
        args.events, args.repeats = 5_000, 1
    del args.child
    benchlib.header("scorer memory: RSS after scoring N events", SCRIPT, args)
    print(f"process: one Scorer in a fresh process per run; {benchlib.events_per_iteration()} events per synthetic iteration")
    finals, growths = [], []
    for r in range(args.repeats):
        out = subprocess.run([sys.executable, __file__, "--child", "--events", str(args.events)], capture_output=True,
                             text=True, cwd=str(benchlib.ROOT))
        if out.returncode:
            raise RuntimeError(out.stderr[-2000:])
        line, tail = out.stdout.strip().splitlines()[-2:]
        samples = [(int(n), float(mb)) for n, mb in (s.split(":") for s in line.split())]
        elapsed, derived, iterations = tail.split()
        warm = next(mb for n, mb in samples if n >= args.events * 0.2)
        final = samples[-1][1]
        finals.append(final)
        growths.append(final - warm)
        print(f"run {r + 1}: RSS MB at events " + ", ".join(f"{n:,}: {mb:.0f}" for n, mb in samples))
        print(f"        {args.events:,} events in {float(elapsed):.1f} s ({args.events / float(elapsed):,.0f}/s), "
              f"{int(iterations):,} iterations closed, {int(derived):,} outputs; after warm-up +{final - warm:.1f} MB",
              flush=True)
    final, growth = benchlib.median(finals), benchlib.median(growths)
    ok = final <= GOAL_MB and growth <= GOAL_GROWTH_MB
    print(f"RESULT scorer memory: {final:.0f} MB RSS after {args.events:,} events, +{growth:.1f} MB after warm-up "
          f"(median of {args.repeats}; goal <= {GOAL_MB:.0f} MB, flat): {benchlib.verdict(ok)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
