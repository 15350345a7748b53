"""What every benchmark script shares: the machine, percentiles, process CPU and memory,
a `loopmon` process to measure, and a synthetic stream of loop events.

Bench scripts are plain Python (`python bench/NAME.py`), so this module sits beside
them and is imported as `benchlib`. Everything here is stdlib plus loopmon itself.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sqlite3
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable, Iterator, Sequence

from monitor.events import (
    BatonChanged,
    BriefUpdated,
    Commit,
    DiffEvidence,
    Envelope,
    FileChanged,
    FileStat,
    HubUpdated,
    LedgerStatusChanged,
    MemoryEntry,
)

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
TICKS = os.sysconf("SC_CLK_TCK")

# Identity for the git commits a benchmark makes itself; never the user's config.
GIT_ENV = {
    **{k: v for k, v in os.environ.items() if not k.startswith("GIT_")},
    "GIT_AUTHOR_NAME": "Bench Loop",
    "GIT_AUTHOR_EMAIL": "bench@example.invalid",
    "GIT_COMMITTER_NAME": "Bench Loop",
    "GIT_COMMITTER_EMAIL": "bench@example.invalid",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "LC_ALL": "C",
}


# --------------------------------------------------------------------------- reporting


def machine() -> str:
    """Cores, CPU model, Python and git versions: the line every figure is quoted with."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    git = subprocess.run(["git", "--version"], capture_output=True, text=True).stdout.strip().replace("git version ", "")
    return f"{os.cpu_count()} cores ({model or platform.machine()}), Python {platform.python_version()}, git {git}"


def command_line(script: str, args: argparse.Namespace, skip: Sequence[str] = ("quick",)) -> str:
    """The exact command that reproduces this run, every option spelled out."""
    parts = ["python", f"bench/{script}"]
    for name, value in vars(args).items():
        if name in skip or value is None or value is False:
            continue
        flag = "--" + name.replace("_", "-")
        parts += [flag] if value is True else [flag, str(value)]
    return " ".join(shlex.quote(p) for p in parts)


def header(title: str, script: str, args: argparse.Namespace) -> None:
    print(f"== {title}")
    print(f"command: {command_line(script, args)}")
    print(f"machine: {machine()}")
    print(f"date:    {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}")
    sys.stdout.flush()


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), nearest rank: a real observation, never interpolated."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


def distribution(values_ms: Sequence[float]) -> str:
    return (
        f"n={len(values_ms)} p50={percentile(values_ms, 50):.1f} p90={percentile(values_ms, 90):.1f} "
        f"p99={percentile(values_ms, 99):.1f} max={max(values_ms):.1f} ms"
    )


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def verdict(ok: bool) -> str:
    return "meets the goal" if ok else "MISSES the goal"


# --------------------------------------------------------------------------- processes


def latency_runs(
    one_run: "Callable[[int, Path, int], list[float]]", count: int, repeats: int, goal_ms: float, what: str, note: str = ""
) -> float:
    """Run `one_run(count, workdir, seed)` `repeats` times against fresh monitors; print each
    run's distribution and the median of the runs' p99, which is returned."""
    import tempfile

    print("process: loopmon run --headless (embedded: collectors, bus, scorer, store in one process)")
    p99s: list[float] = []
    everything: list[float] = []
    with tempfile.TemporaryDirectory(prefix="loopmon-bench-") as tmp:
        for r in range(repeats):
            lat = one_run(count, Path(tmp), r)
            p99s.append(percentile(lat, 99))
            everything += lat
            print(f"run {r + 1}: {distribution(lat)}", flush=True)
    p99 = median(p99s)
    print(f"all runs: {distribution(everything)}")
    print(
        f"RESULT {what}: p99 {p99:.1f} ms (median of {repeats} runs' p99{note}; goal < {goal_ms:.0f} ms): "
        f"{verdict(p99 < goal_ms)}"
    )
    return p99


def cpu_seconds(pid: int) -> float:
    """CPU used by a process and the children it has waited for (git calls), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    utime, stime, cutime, cstime = (int(fields[i]) for i in (11, 12, 13, 14))
    return (utime + stime + cutime + cstime) / TICKS


def rss_mb(pid: int | None = None) -> float:
    """Resident memory of a process (default: this one) in MB."""
    for line in Path(f"/proc/{pid or os.getpid()}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def loopmon(*args: str) -> list[str]:
    """The `loopmon` command line, run with this Python (what `pip install -e .` installs)."""
    return [sys.executable, "-m", "monitor.cli", *args]


def git(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["git", "-C", str(repo), *args], env=GIT_ENV, capture_output=True, check=check)


def simulated_repo(path: Path, iterations: int, seed: int = 0, scenario: str = "mixed") -> Path:
    """A real git loop repository played by loopmon's simulator."""
    from monitor.simulator import LoopSimulator

    LoopSimulator(path, scenario=scenario, seed=seed).run(iterations)
    return path


class Store:
    """A read-only look into a running monitor's SQLite store, polled for rows."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.conn: sqlite3.Connection | None = None

    def connect(self, timeout: float = 30.0) -> sqlite3.Connection:
        deadline = time.monotonic() + timeout
        while self.conn is None:
            try:
                if self.path.exists():
                    conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=5.0)
                    conn.execute("SELECT 1 FROM events LIMIT 1")
                    self.conn = conn
                    break
            except sqlite3.Error:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.path}: no store appeared within {timeout:.0f} s")
            time.sleep(0.05)
        return self.conn

    def wait_for(self, sql: str, params: tuple = (), timeout: float = 30.0, interval: float = 0.0005):
        """Poll until `sql` returns a row; (row, monotonic time it was first seen)."""
        conn = self.connect()
        deadline = time.monotonic() + timeout
        while True:
            row = conn.execute(sql, params).fetchone()
            now = time.monotonic()
            if row is not None:
                return row, now
            if now > deadline:
                raise TimeoutError(f"no row for {sql!r} {params!r} within {timeout:.0f} s")
            time.sleep(interval)

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


class Monitored:
    """`loopmon run --headless` on a repo, as its own process, ready when its collectors are."""

    def __init__(self, repo: Path, db: Path, *extra: str, stdout=subprocess.DEVNULL) -> None:
        self.repo, self.db = repo, db
        self.log = db.with_suffix(".stderr")
        self.proc = subprocess.Popen(
            loopmon("run", "--repo", str(repo), "--db", str(db), *extra),
            stdout=stdout,
            stderr=self.log.open("wb"),
            cwd=str(ROOT),
        )
        self.store = Store(db)

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Until the collectors have said `collector_started` (every change from then on is seen)."""
        try:
            self.store.wait_for("SELECT id FROM events WHERE kind = 'collector_started'", timeout=timeout, interval=0.05)
        except (TimeoutError, RuntimeError):
            self.stop()
            raise RuntimeError(f"loopmon did not start: {self.log.read_text(errors='replace')[-2000:]}") from None

    def stop(self, timeout: float = 30.0) -> int:
        self.store.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


# --------------------------------------------------------------------------- a synthetic loop stream


@dataclass
class StreamShape:
    """How many of each event one iteration of the synthetic loop sends."""

    file_changes: int = 80
    hub_updates: int = 4
    engineer_commits: int = 3
    paths_per_commit: int = 10


_T0 = datetime(2026, 1, 5, 9, 0, tzinfo=timezone.utc)


def loop_payloads(iterations: int, shape: StreamShape | None = None, focus_count: int = 7) -> Iterator[tuple[object, datetime]]:
    """(payload, event time) of a busy loop, iteration after iteration, generated on the fly.

    Each iteration: the baton and a SYNC commit for each hand-off, a supervisor commit
    with its brief, memory entry and ledger status change, engineer commits of
    `paths_per_commit` classified paths with evidence, hub updates, and a stream of
    working-tree file changes. Commits and their evidence look like what the commit
    collector emits, so the scorer does its full work on them.
    """
    shape = shape or StreamShape()
    now = _T0
    sha = 0

    def next_sha() -> str:
        nonlocal sha
        sha += 1
        return f"{sha:040x}"

    for n in range(1, iterations + 1):
        focus = f"FOCUS-{n % focus_count:03d}"
        hub = f"plans/active/{focus}/reports/2026-01-05T{n % 24:02d}0000Z"
        lands = n % 3 != 0  # every third iteration is planning only: dwell moves too
        now += timedelta(minutes=1)
        yield BatonChanged(iteration=n, expected_actor="galph", status="running-galph", last_update=now,
                           lease_expires_at=now + timedelta(minutes=30)), now
        yield _commit(next_sha(), f"[SYNC i={n}] actor=galph status=running", now, []), now
        yield BriefUpdated(summary=f"next step on {focus}", mode="Code", focus=focus,
                           mapped_tests=[f"tests/test_{focus.lower()}.py::test_step"], artifacts=hub,
                           digest=f"{n:016x}"), now
        yield MemoryEntry(heading=now.isoformat(), focus=focus, state="ready", dwell=0 if lands else 1,
                          action_type="planning"), now
        yield LedgerStatusChanged(path="docs/fix_plan.md", item_id=focus, old="pending", new="in_progress"), now
        yield _commit(next_sha(), f"SUPERVISOR AUTO (prompt=supervisor.md) (iter={n:05d}): plan {focus} — tests: not run",
                      now, [FileStat(path="input.md", insertions=20, deletions=18, path_class="brief"),
                            FileStat(path="docs/fix_plan.md", insertions=3, deletions=1, path_class="ledger")]), now
        yield _commit(next_sha(), f"[SYNC i={n}] actor=galph → next=ralph status=ok", now, []), now
        for k in range(shape.file_changes):
            now += timedelta(seconds=1)
            cls, path = _FILE_KINDS[k % len(_FILE_KINDS)]
            yield FileChanged(path=path.format(n=n, k=k, hub=hub), change="modified", size=1000 + k,
                              path_class=cls), now
            if k % (shape.file_changes // max(1, shape.hub_updates) or 1) == 0:
                yield HubUpdated(path=hub, initiative=focus, files=k + 1, bytes=4096 * (k + 1)), now
        for c in range(shape.engineer_commits):
            files = [
                FileStat(path=f"src/{focus.lower()}/mod{j}.py" if j % 3 else f"tests/test_{focus.lower()}_{j}.py",
                         insertions=(12 if lands else 0) + j, deletions=j // 2,
                         path_class="production" if j % 3 else "test", size=4000 + 100 * j)
                for j in range(shape.paths_per_commit)
            ]
            evidence = DiffEvidence(
                symbols_changed=[f"src/{focus.lower()}/mod1.py::step_{n}_{c}"],
                test_functions=[f"tests/test_{focus.lower()}_0.py::test_step_{n}_{c}"],
                test_references=[f"step_{n}_{c}"], asserts_added=2, languages=["python"], ast=True,
                added_hashes=[f"{(n * 31 + c * 7 + i) & 0xFFFFFFFF:08x}" for i in range(20)],
            ) if lands else DiffEvidence()
            message = (f"RALPH AUTO (prompt=main.md) (iter={n:05d}): {focus} step {c} — "
                       f"tests: pytest tests/test_{focus.lower()}_0.py -q (2 passed)")
            yield _commit(next_sha(), message, now, files if lands else files[:1], evidence), now
        yield _commit(next_sha(), f"[SYNC i={n + 1}] actor=ralph → next=galph status=ok", now, []), now


_FILE_KINDS = (
    ("production", "src/pkg/mod{k}.py"),
    ("test", "tests/test_mod{k}.py"),
    ("hub", "{hub}/green/pytest_{k}.log"),
    ("docs", "docs/notes/n{k}.md"),
    ("other", "scratch/tmp_{n}_{k}.txt"),
)


def _commit(sha: str, message: str, when: datetime, files: list[FileStat], evidence: DiffEvidence | None = None) -> Commit:
    info = _parser().parse(message)
    return Commit(sha=sha, parents=[], author_name="Bench Loop", author_email="bench@example.invalid",
                  authored_at=when, committed_at=when, message=message, role=info.role, iteration=info.iteration,
                  sync=info.sync, ledger_ids=info.ledger_ids, tests=info.tests,
                  files=files, evidence=evidence or DiffEvidence())


_PARSER = None


def _parser():
    global _PARSER
    if _PARSER is None:
        from collectors.commit_message import MessageParser
        from monitor.config import Settings

        _PARSER = MessageParser(Settings())
    return _PARSER


def loop_envelopes(iterations: int, repo: str = "bench", source: str = "bench", stream: str = "s1",
                   shape: StreamShape | None = None) -> Iterator[Envelope]:
    """`loop_payloads` wrapped in numbered envelopes, as one publisher would number them."""
    for seq, (payload, when) in enumerate(loop_payloads(iterations, shape), start=1):
        yield Envelope(repo=repo, source=source, stream=stream, seq=seq, time=when, observed=when, payload=payload)


def events_per_iteration(shape: StreamShape | None = None) -> int:
    shape = shape or StreamShape()
    return sum(1 for _ in loop_payloads(1, shape))
