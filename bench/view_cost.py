"""View cost: CPU of the live view while 1,000 events a second pour in.

The stream is the synthetic busy loop (benchlib.loop_payloads) scored by the real
`Scorer` beforehand, so the view sees what it sees live: file changes, commits,
provisional and final scores, dwell changes and alerts. A feeder thread hands it to
`sinks.live.LiveView.write` in batches every `--batch-ms` (the receiving half's
cadence under load) at `--rate` events a second, while `LiveView.run` redraws from
the main thread onto a 120x40 terminal console (output discarded), as `loopmon run`
does. The view's cost is the CPU time of both: the main thread's (`time.thread_time`
around `run`) and the time spent inside `write` (the feeder's thread time around
each call). Everything else (making the events) is left out.

Run: python bench/view_cost.py [--rate N] [--seconds S] [--repeats R] [--quick]
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time

import benchlib

GOAL_PERCENT = 25.0
SCRIPT = "view_cost.py"


def scored_stream(count: int) -> list:
    """`count` envelopes: the synthetic loop's events with the scorer's outputs after each."""
    from monitor.config import Settings
    from monitor.events import Envelope
    from monitor.scorer import Scorer

    scorer = Scorer(Settings())
    out = []
    seq = 0
    iterations = count // benchlib.events_per_iteration() + 2
    for env in benchlib.loop_envelopes(iterations):
        out.append(env)
        for payload in scorer.process(env):
            seq += 1
            out.append(Envelope(repo=env.repo, source="scorer", stream="bench-scorer", seq=seq, time=env.time,
                                observed=env.observed, payload=payload))
        if len(out) >= count:
            break
    scorer.close()
    return out[:count]


def one_run(rate: int, seconds: float, batch_ms: float) -> tuple[float, int, dict]:
    from rich.console import Console

    from sinks.live import LiveView

    envs = scored_stream(int(rate * seconds))
    sink = open(os.devnull, "w")
    console = Console(file=sink, force_terminal=True, width=120, height=40, color_system="truecolor")
    view = LiveView(console=console)
    stop = threading.Event()
    spent = {"write": 0.0, "fed": 0}

    def feed() -> None:
        per_batch = max(1, int(rate * batch_ms / 1000))
        start = time.monotonic()
        for i in range(0, len(envs), per_batch):
            due = start + (i / rate)
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            t0 = time.thread_time()
            view.write(envs[i : i + per_batch])
            spent["write"] += time.thread_time() - t0
            spent["fed"] += len(envs[i : i + per_batch])
        stop.set()

    feeder = threading.Thread(target=feed, name="feeder")
    wall0 = time.monotonic()
    feeder.start()
    main0 = time.thread_time()
    view.run(stop)
    drawing = time.thread_time() - main0
    wall = time.monotonic() - wall0
    feeder.join()
    sink.close()
    kinds: dict[str, int] = {}
    for env in envs:
        kinds[env.kind] = kinds.get(env.kind, 0) + 1
    return 100 * (drawing + spent["write"]) / wall, view.draws, {
        "draw_s": drawing, "write_s": spent["write"], "wall_s": wall, "fed": spent["fed"], "kinds": kinds,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=int, default=1000, help="events per second (default 1000)")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the burst (default 20)")
    parser.add_argument("--batch-ms", type=float, default=20.0, help="how often a batch reaches the view (default 20 ms)")
    parser.add_argument("--repeats", type=int, default=3, help="runs (default 3)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for the smoke test")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.repeats = 1.0, 1
    benchlib.header("view cost: CPU of the live view during a burst", SCRIPT, args)
    print("process: LiveView.run redrawing on a 120x40 terminal console in this process; batches fed from a thread")
    pcts = []
    for r in range(args.repeats):
        pct, draws, detail = one_run(args.rate, args.seconds, args.batch_ms)
        pcts.append(pct)
        top = ", ".join(f"{k} {v}" for k, v in sorted(detail["kinds"].items(), key=lambda kv: -kv[1])[:5])
        print(f"run {r + 1}: {pct:.1f} % of a core; {draws} redraws ({draws / detail['wall_s']:.1f}/s) took "
              f"{detail['draw_s']:.2f} s, write() took {detail['write_s']:.2f} s, over {detail['wall_s']:.1f} s "
              f"for {detail['fed']} events ({top})", flush=True)
    pct = benchlib.median(pcts)
    print(f"RESULT view cost: {pct:.1f} % of a core at {args.rate:,} events/s (median of {args.repeats}; "
          f"goal < {GOAL_PERCENT:.0f} %): {benchlib.verdict(pct < GOAL_PERCENT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
