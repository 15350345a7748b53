"""Soak: a simulated loop played fast for a long time under `loopmon run`.

It checks what a long unattended run must keep true: every event a collector sent
is a row in the store (events in = rows out), every commit git has is stored once,
memory does not creep (RSS of the monitor at start, at its peak and at the end),
and which warnings came up. Not part of the test suite; run it by hand:

    .venv/bin/python bench/soak.py --minutes 10 --pace 0.05

It prints a JSON summary and a Markdown block for docs/benchmarks.md, and exits 1
when events in and rows out differ or a commit is missing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from monitor.simulator import LoopSimulator  # noqa: E402

GIT_ENV = {
    "GIT_AUTHOR_NAME": "Soak Loop",
    "GIT_AUTHOR_EMAIL": "soak@example.invalid",
    "GIT_COMMITTER_NAME": "Soak Loop",
    "GIT_COMMITTER_EMAIL": "soak@example.invalid",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
}
# Sources whose events are the collectors' own (the scorer and the bus derive theirs).
DERIVED_SOURCES = ("scorer", "bus")


def rss_kib(pid: int) -> int | None:
    """Resident memory of a process, from /proc (KiB)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def query(db: Path, sql: str, params: tuple = ()) -> list[tuple]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def git_shas(repo: Path) -> set[str]:
    out = subprocess.run(["git", "-C", str(repo), "log", "--all", "--format=%H"], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def wait_for_start(db: Path, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"loopmon run exited early with status {proc.returncode}")
        try:
            if query(db, "SELECT count(*) FROM events WHERE kind = 'collector_started'")[0][0]:
                return
        except sqlite3.Error:
            pass
        time.sleep(0.2)
    raise SystemExit("loopmon run did not start within a minute")


def tally(db: Path) -> dict:
    """Events in (what each collector stream says it sent) against rows out (what the store holds)."""
    streams = query(
        db,
        f"SELECT source, stream, sent, dropped, events, final FROM streams WHERE source NOT IN {DERIVED_SOURCES}",
    )
    sent = sum(s[2] or 0 for s in streams)
    dropped = sum(s[3] or 0 for s in streams)
    per_stream = {s[1]: s for s in streams}
    rows = dict(query(db, f"SELECT stream, count(*) FROM events WHERE source NOT IN {DERIVED_SOURCES} GROUP BY stream"))
    mismatched = [
        {"source": s[0], "sent": s[2], "rows": rows.get(stream, 0)}
        for stream, s in per_stream.items()
        if (s[2] or 0) != rows.get(stream, 0)
    ]
    warnings = dict(
        query(db, "SELECT json_extract(envelope, '$.payload.code'), count(*) FROM events WHERE kind = 'warning' GROUP BY 1")
    )
    alerts = dict(query(db, "SELECT alert, count(*) FROM alerts GROUP BY 1"))
    return {
        "events_in": sent,
        "rows_out": sum(rows.values()),
        "dropped": dropped,
        "streams_not_final": sum(1 for s in streams if not s[5]),
        "mismatched_streams": mismatched,
        "warnings": warnings,
        "alerts": alerts,
        "events_total": query(db, "SELECT count(*) FROM events")[0][0],
        "iterations": query(db, "SELECT count(*) FROM iterations")[0][0],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0, help="how long the loop plays (default 10)")
    parser.add_argument("--pace", type=float, default=0.05, help="seconds between the simulator's turns (default 0.05)")
    parser.add_argument("--scenario", default="mixed")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--workdir", help="keep the repo and store here (default: a temporary folder)")
    parser.add_argument("--keep-output", action="store_true", help="keep every event the monitor printed in WORKDIR/run.jsonl")
    parser.add_argument("--sample-seconds", type=float, default=5.0, help="how often RSS is sampled")
    args = parser.parse_args()

    os.environ.update(GIT_ENV)
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="loopmon-soak-"))
    repo, db = work / "loop", work / "soak.db"
    sim = LoopSimulator(repo, scenario=args.scenario, seed=args.seed, pace=args.pace)
    sim.run(1)  # the repo exists before the monitor starts; its history is backfill's job
    before = git_shas(repo)
    monitor = subprocess.Popen(
        [sys.executable, "-m", "monitor.cli", "run", "--repo", str(repo), "--db", str(db), "--headless"],
        cwd=ROOT,
        stdout=open(work / "run.jsonl", "w") if args.keep_output else subprocess.DEVNULL,
        stderr=open(work / "run.err", "w"),
    )
    started = datetime.now(timezone.utc)
    wait_for_start(db, monitor)
    rss = [rss_kib(monitor.pid)]
    began = time.monotonic()
    by_minute: list[int | None] = [rss[0]]  # RSS at each whole minute: a creep shows as a slope
    stop = threading.Event()
    turns: list[int] = []

    def play() -> None:
        try:
            turns.append(len(sim.run(1_000_000, stop=stop)))
        except Exception as exc:  # the soak reports it; the monitor is what is measured
            print(f"soak: the simulator stopped: {exc!r}", file=sys.stderr)
            turns.append(-1)

    player = threading.Thread(target=play, name="soak-simulator")
    player.start()
    deadline = time.monotonic() + args.minutes * 60
    while time.monotonic() < deadline and player.is_alive():
        time.sleep(min(args.sample_seconds, max(0.0, deadline - time.monotonic())))
        if monitor.poll() is not None:
            break
        rss.append(rss_kib(monitor.pid))
        if time.monotonic() - began >= 60 * len(by_minute):
            by_minute.append(rss[-1])
    stop.set()
    player.join()
    alive = monitor.poll() is None
    time.sleep(3.0)  # the last turn's events reach the store
    rss.append(rss_kib(monitor.pid))
    monitor.send_signal(signal.SIGINT)
    status = monitor.wait(timeout=120)

    shas = git_shas(repo) - before
    stored = {r[0] for r in query(db, "SELECT sha FROM commits")}
    result = {
        "command": "python bench/soak.py " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "date": started.strftime("%Y-%m-%d"),
        "machine": f"{os.cpu_count()} cores, Python {platform.python_version()}, {platform.system()} {platform.release()}",
        "minutes": args.minutes,
        "pace": args.pace,
        "turns": turns[0] if turns else None,
        "monitor_alive_until_stopped": alive,
        "monitor_exit": status,
        "commits_in_git": len(shas),
        "commits_stored": len(stored & shas),
        "commits_missing": len(shas - stored),
        "rss_kib_start": rss[0],
        "rss_kib_peak": max(r for r in rss if r is not None),
        "rss_kib_end": rss[-1],
        "rss_kib_by_minute": by_minute,
        "commit": subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip(),
        **tally(db),
        "workdir": str(work),
    }
    ok = (
        result["events_in"] == result["rows_out"]
        and not result["mismatched_streams"]
        and result["commits_missing"] == 0
        and alive
        and status == 0
    )
    result["ok"] = ok
    print(json.dumps(result, indent=2))
    mib = lambda kib: f"{kib / 1024:.0f} MiB" if kib else "?"  # noqa: E731
    print(
        f"\n| minutes | turns | commits (git = stored) | events in | rows out | RSS start / peak / end | warnings |\n"
        f"| --- | --- | --- | --- | --- | --- | --- |\n"
        f"| {args.minutes:g} | {result['turns']} | {len(shas)} = {len(stored & shas)} | {result['events_in']} | "
        f"{result['rows_out']} | {mib(result['rss_kib_start'])} / {mib(result['rss_kib_peak'])} / "
        f"{mib(result['rss_kib_end'])} | {', '.join(f'{k} {v}' for k, v in sorted(result['warnings'].items())) or 'none'} |"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
