"""Throughput: events per second through bus + scorer + SQLite store, against a bare baseline.

Sender and receiver are separate processes on one ipc:// endpoint (the split
deployment, `loopmon collect` -> `loopmon serve`):

- loopmon:  the sender numbers and publishes prepared payloads through
  `monitor.bus.Publisher` (spool, acknowledgements); the receiver is
  `monitor.runtime.Server` with the `Scorer` and the `SqliteSink`, as `loopmon serve`
  builds it, less the view.
- baseline: the same payloads wrapped in the same envelopes, serialised with
  `Envelope.to_wire`, one ZeroMQ message each on a DEALER -> ROUTER pair over the
  same transport; the receiver decodes each with `json.loads` and inserts the
  batch with one `sqlite3.executemany` into a table shaped like the store's
  `events` table (same indexes, WAL, synchronous=NORMAL). No scoring, no sequence
  tracking, no acknowledgements.

The time runs from the sender's first event to the receiver's commit of the last.
Payloads are built before the clock starts (that is the collectors' work).

Run: python bench/throughput.py [--events N] [--repeats R] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import benchlib

GOAL_RATE = 50_000
GOAL_RATIO = 0.6
SCRIPT = "throughput.py"


# --------------------------------------------------------------------------- the events


def payloads(count: int) -> list:
    """`count` payloads of the synthetic busy loop (mostly file changes, some commits)."""
    out = []
    iterations = count // benchlib.events_per_iteration() + 1
    for payload, _ in benchlib.loop_payloads(iterations):
        out.append(payload)
        if len(out) == count:
            break
    return out


def mix(items: list) -> str:
    kinds: dict[str, int] = {}
    for p in items:
        kinds[p.kind] = kinds.get(p.kind, 0) + 1
    return ", ".join(f"{k} {100 * v / len(items):.0f}%" for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])[:5])


# --------------------------------------------------------------------------- loopmon


def loopmon_receiver(endpoint: str, db: str, count: int) -> None:
    from monitor.config import Settings
    from monitor.runtime import Server
    from monitor.scorer import Scorer
    from sinks.sqlite import SqliteSink

    settings = Settings()
    stop = threading.Event()
    done: dict[str, float] = {}

    class Counting(SqliteSink):
        stored = 0

        def write(self, batch):  # noqa: ANN001
            super().write(batch)
            self.stored += sum(1 for env in batch if env.source == "bench" and env.kind != "heartbeat")
            if self.stored >= count and "t" not in done:
                done["t"] = time.monotonic()
                stop.set()

    sink = Counting(db, settings.store)
    server = Server(endpoint, [sink], settings, scorer=Scorer(settings))
    print("ready", flush=True)
    cpu0 = time.process_time()
    server.run(stop)
    server.stop()
    print(json.dumps({"done": done.get("t"), "written": server.written, "cpu": time.process_time() - cpu0}), flush=True)


def loopmon_sender(endpoint: str, count: int) -> None:
    import zmq

    from monitor.bus import Publisher
    from monitor.config import Settings

    items = payloads(count)
    publisher = Publisher(endpoint, "bench", "bench", settings=Settings().bus, context=zmq.Context())
    cpu0 = time.process_time()
    start = time.monotonic()
    with publisher.batch():  # as a collector's call sends its burst: several envelopes a message
        for p in items:
            publisher.publish(p)
    sent = time.monotonic()
    ok = publisher.flush(timeout=300)
    publisher.close()
    print(json.dumps({"start": start, "sent": sent, "flushed": ok, "cpu": time.process_time() - cpu0}), flush=True)


# --------------------------------------------------------------------------- baseline

_BASE_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE, repo TEXT NOT NULL, source TEXT NOT NULL,
    stream TEXT NOT NULL, seq INTEGER NOT NULL, kind TEXT NOT NULL, time TEXT NOT NULL,
    observed TEXT NOT NULL, envelope TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS idx_events_kind_time ON events (kind, time);
CREATE INDEX IF NOT EXISTS idx_events_repo_time ON events (repo, time);
"""
_BASE_INSERT = "INSERT OR IGNORE INTO events (key, repo, source, stream, seq, kind, time, observed, envelope) VALUES (?,?,?,?,?,?,?,?,?)"


def baseline_receiver(endpoint: str, db: str, count: int) -> None:
    import zmq

    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.executescript(_BASE_SCHEMA)
    sock = zmq.Context().socket(zmq.ROUTER)
    sock.setsockopt(zmq.RCVHWM, 100_000)
    sock.bind(endpoint)
    print("ready", flush=True)
    cpu0 = time.process_time()
    stored = 0
    while stored < count:
        if not sock.poll(1000):
            continue
        rows = []
        for _ in range(2000):
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            text = frames[-1]
            d = json.loads(text)
            rows.append((f"{d['repo']}/{d['source']}/{d['stream']}/{d['seq']}", d["repo"], d["source"], d["stream"],
                         d["seq"], d["payload"]["kind"], d["time"], d["observed"], text.decode()))
        conn.execute("BEGIN")
        conn.executemany(_BASE_INSERT, rows)
        conn.execute("COMMIT")
        stored += len(rows)
    done = time.monotonic()
    conn.close()
    sock.close(0)
    print(json.dumps({"done": done, "written": stored, "cpu": time.process_time() - cpu0}), flush=True)


def baseline_sender(endpoint: str, count: int) -> None:
    import zmq

    from monitor.events import Envelope, utcnow

    items = payloads(count)
    sock = zmq.Context().socket(zmq.DEALER)
    sock.setsockopt(zmq.SNDHWM, 100_000)
    sock.connect(endpoint)
    cpu0 = time.process_time()
    start = time.monotonic()
    for seq, p in enumerate(items, start=1):
        now = utcnow()
        sock.send(Envelope(repo="bench", source="bench", stream="s1", seq=seq, time=now, observed=now, payload=p).to_wire())
    sent = time.monotonic()
    sock.close(linger=-1)
    print(json.dumps({"start": start, "sent": sent, "flushed": True, "cpu": time.process_time() - cpu0}), flush=True)


def _process(role: str) -> None:
    """Every role runs as `loopmon serve` / `loopmon collect` would: GC thresholds raised."""
    from monitor.gc_tuning import tune_for_streaming

    tune_for_streaming()


ROLES = {
    "loopmon-receiver": loopmon_receiver,
    "loopmon-sender": loopmon_sender,
    "baseline-receiver": baseline_receiver,
    "baseline-sender": baseline_sender,
}


# --------------------------------------------------------------------------- stages


def stages(count: int) -> dict[str, float]:
    """CPU µs per event of each step of the receiving half, one step after the other, in
    this process (GC as in a loopmon process): where a receiver's time goes."""
    from monitor.bus import Receiver
    from monitor.config import Settings
    from monitor.events import Envelope, utcnow
    from monitor.gc_tuning import tune_for_streaming
    from monitor.runtime import Server
    from monitor.scorer import Scorer
    from sinks.sqlite import SqliteSink

    tune_for_streaming()
    settings = Settings()
    now = utcnow()
    wires = [Envelope(repo="bench", source="bench", stream="s1", seq=seq, time=now, observed=now, payload=p).to_wire()
             for seq, p in enumerate(payloads(count), start=1)]
    batch = settings.store.batch_size
    out: dict[str, float] = {"json.loads (the baseline's decode)": 0.0, "receive (validate, sequence)": 0.0,
                             "score": 0.0, "store (SqliteSink.write)": 0.0}
    with tempfile.TemporaryDirectory(prefix="loopmon-bench-") as tmp:
        receiver = Receiver(f"ipc://{tmp}/stages.sock")
        server = Server(f"ipc://{tmp}/unused.sock", [], settings, scorer=Scorer(settings))
        sink = SqliteSink(Path(tmp) / "stages.db")
        t = time.process_time()
        for w in wires:
            json.loads(w)
        out["json.loads (the baseline's decode)"] = time.process_time() - t
        for i in range(0, len(wires), batch):
            received: list = []
            t0 = time.process_time()
            for w in wires[i : i + batch]:
                receiver._accept([b"bench", w], received)
            t1 = time.process_time()
            scored = server._score(received)
            t2 = time.process_time()
            sink.write(scored)
            t3 = time.process_time()
            out["receive (validate, sequence)"] += t1 - t0
            out["score"] += t2 - t1
            out["store (SqliteSink.write)"] += t3 - t2
        sink.close()
        server.receiver.close()
        receiver.close()
    return {k: 1e6 * v / count for k, v in out.items()}


# --------------------------------------------------------------------------- driver


def _child(role: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, str(Path(__file__)), "--role", role, *args], stdout=subprocess.PIPE,
                            text=True, cwd=str(benchlib.ROOT))


def one_run(mode: str, count: int, workdir: Path) -> tuple[float, float, float]:
    """Events per second of one run of `mode` (loopmon or baseline), and the sender's and
    the receiver's CPU time per event (µs)."""
    endpoint = f"ipc://{workdir}/{mode}.sock"
    db = workdir / f"{mode}.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    receiver = _child(f"{mode}-receiver", endpoint, str(db), str(count))
    assert receiver.stdout is not None
    if receiver.stdout.readline().strip() != "ready":
        raise RuntimeError(f"{mode} receiver did not start")
    sender = _child(f"{mode}-sender", endpoint, str(count))
    out, _ = sender.communicate(timeout=900)
    rout, _ = receiver.communicate(timeout=900)
    if sender.returncode or receiver.returncode:
        raise RuntimeError(f"{mode}: sender exit {sender.returncode}, receiver exit {receiver.returncode}")
    sent = json.loads(out.strip().splitlines()[-1])
    got = json.loads(rout.strip().splitlines()[-1])
    return count / (got["done"] - sent["start"]), 1e6 * sent["cpu"] / count, 1e6 * got["cpu"] / count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000, help="events per run (default 200000)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each pipeline (default 3)")
    parser.add_argument("--stages", action="store_true", help="also split the receiving half's CPU per event by step")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for the smoke test")
    parser.add_argument("--role", help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args(argv)
    if args.role:
        _process(args.role)
        fn = ROLES[args.role]
        fn(*rest[:-1], int(rest[-1])) if "receiver" in args.role else fn(rest[0], int(rest[1]))
        return 0
    if args.quick:
        args.events, args.repeats = 2_000, 1
    del args.role
    benchlib.header("throughput: bus + scorer + SQLite against a bare ZeroMQ + executemany baseline", SCRIPT, args)
    print(f"events:  {args.events} per run; mix {mix(payloads(min(args.events, 20_000)))}")
    print("split:   sender and receiver in separate processes over ipc://")
    rates: dict[str, list[float]] = {"loopmon": [], "baseline": []}
    ratios = []
    with tempfile.TemporaryDirectory(prefix="loopmon-bench-") as tmp:
        for r in range(args.repeats):
            order = ("baseline", "loopmon") if r % 2 == 0 else ("loopmon", "baseline")
            runs = {mode: one_run(mode, args.events, Path(tmp)) for mode in order}
            got = {mode: rate for mode, (rate, _, _) in runs.items()}
            for mode in order:
                rates[mode].append(got[mode])
            ratios.append(got["loopmon"] / got["baseline"])
            cpu = "  ".join(f"{mode} CPU/event: sender {runs[mode][1]:.0f} µs, receiver {runs[mode][2]:.0f} µs" for mode in order)
            print(f"run {r + 1}: loopmon {got['loopmon']:,.0f}/s  baseline {got['baseline']:,.0f}/s  "
                  f"ratio {ratios[-1]:.2f}  ({cpu})", flush=True)
    if args.stages:
        print("receiving half, CPU per event by step (in this process, one step after the other):")
        for step, micros in stages(min(args.events, 50_000)).items():
            print(f"  {step:36s} {micros:6.1f} µs")
    rate, base, ratio = benchlib.median(rates["loopmon"]), benchlib.median(rates["baseline"]), benchlib.median(ratios)
    print(f"RESULT throughput: {rate:,.0f} events/s (median of {args.repeats}); baseline {base:,.0f} events/s; "
          f"ratio {ratio:.2f} (goal >= {GOAL_RATE:,} and >= {GOAL_RATIO}): "
          f"{benchlib.verdict(rate >= GOAL_RATE and ratio >= GOAL_RATIO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
