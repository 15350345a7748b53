"""Every benchmark in bench/ still runs: each script with `--quick` (tiny sizes), as a user
would run it. No timing is asserted: only that it finishes, prints the command that
reproduces it, the machine, and a RESULT line with its figure."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = {
    "commit_latency.py": r"RESULT commit latency: p99 [\d.]+ ms",
    "commit_trace.py": r"RESULT commit trace: row seen at median [\d.]+ ms",
    "file_latency.py": r"RESULT file latency: p99 [\d.]+ ms",
    "throughput.py": r"store \(SqliteSink.write\) +[\d.]+ µs(.|\n)*RESULT throughput: [\d,]+ events/s .* baseline [\d,]+ events/s; ratio [\d.]+",
    "backfill.py": r"RESULT backfill: [\d.]+ s for \d+ commits .* ratio [\d.]+",
    "backfill_stages.py": r"RESULT backfill stages: [\d.]+ s CPU for \d+ commits .*collect \d+ %",
    "scorer_memory.py": r"RESULT scorer memory: \d+ MB RSS after [\d,]+ events",
    "idle_cost.py": r"RESULT idle cost: [\d.]+ % of a core with the live view, [\d.]+ % headless",
    "view_cost.py": r"RESULT view cost: [\d.]+ % of a core at [\d,]+ events/s",
}


# Options that only add output, run too so that their code cannot rot either.
EXTRA = {"throughput.py": ["--stages"]}


def test_every_benchmark_script_is_covered() -> None:
    assert set(SCRIPTS) <= {p.name for p in (ROOT / "bench").glob("*.py")}


@pytest.fixture(scope="module")
def runs() -> dict[str, subprocess.CompletedProcess[str]]:
    """All quick runs at once: they are mostly waiting (on git, on sockets, on the clock)."""
    procs = {
        name: subprocess.Popen([sys.executable, f"bench/{name}", "--quick", *EXTRA.get(name, [])], cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
        for name in SCRIPTS
    }
    out = {}
    for name, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=120)
        out[name] = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    return out


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_a_quick_run_prints_its_command_machine_and_figure(script: str, runs) -> None:
    run = runs[script]
    assert run.returncode == 0, run.stderr[-3000:]
    assert re.search(rf"^command: python bench/{re.escape(script)} ", run.stdout, re.M), run.stdout
    assert re.search(r"^machine: \d+ cores .*Python 3", run.stdout, re.M), run.stdout
    assert re.search(SCRIPTS[script], run.stdout), run.stdout
