"""`loopmon report`: the seed's iteration audit, written from the store, checked against the store's rows."""

from __future__ import annotations

import json
import re
import statistics

import pytest
from loop_store import SEED_TURNS, LoopStore, Turn, rows

from monitor.cli import main
from monitor.report import md_code

SECTIONS = [
    "# Iteration Analysis Audit Report",
    "## Executive Summary",
    "## Iteration-by-Iteration Scoring",
    "## ASCII Aggregate Score Plot",
    "## Trend Analysis",
    "### Inflection Points",
    "### Productivity Patterns",
    "## Dwell and Git-State Findings",
    "### Dwell",
    "### Git State",
    "## Prompt Evolution Analysis",
    "### Prompt Changes Detected",
    "### Pre/Post Statistical Analysis",
    "## Key Findings",
    "## Appendix: Scoring Methodology",
]


def fmt(value: float) -> str:
    """A figure as the report prints it: one decimal, none when whole."""
    value = round(value, 1)
    return str(int(value)) if value == int(value) else f"{value:.1f}"


def label(row: dict) -> str:
    return str(row["number"]) if row["number"] is not None else f"#{row['idx']}"


def report(capsys, db, *argv) -> str:
    code = main(["report", "--db", str(db), *argv])
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


def section(text: str, heading: str) -> str:
    """The text under a heading, up to the next heading of the same or a higher level."""
    level = len(heading) - len(heading.lstrip("#"))
    start = text.index(heading)
    rest = text[start + len(heading):]
    ends = [m.start() for m in re.finditer(r"^#{1,%d} " % level, rest, re.M)]
    return rest[: ends[0]] if ends else rest


def plot_columns(text: str) -> dict[str, int]:
    """Iteration label -> the plot row its `*` sits on."""
    block = section(text, "## ASCII Aggregate Score Plot").split("```")[1].strip("\n").splitlines()
    axis = block[-1]
    labels = axis.split()
    width = len(axis) - 4
    width //= len(labels)
    found = {}
    for line in block[:-1]:
        level = int(line[:3])
        for k, lab in enumerate(labels):
            if line[4 + k * width : 4 + (k + 1) * width].endswith("*"):
                found[lab] = level
    return found


def check_against_store(text: str, db) -> None:
    """Every figure the report gives, recomputed from the store's rows."""
    its = rows(db, "SELECT * FROM iterations ORDER BY idx")
    positions = [text.index(s) for s in SECTIONS]
    assert positions == sorted(positions), "sections out of order"

    summary = section(text, "## Executive Summary")
    for name, title in (("high", "High-value iterations"), ("medium", "Medium-value"), ("low", "Low-value")):
        members = [label(r) for r in its if r["bucket"] == name]
        line = next(x for x in summary.splitlines() if x.startswith(f"- **{title}"))
        assert f"{len(members)} out of {len(its)}" in line
        if members:
            assert line.endswith(f"({', '.join(members)})")
    aggs = [r["aggregate"] for r in its]
    assert f"**Mean aggregate score:** {fmt(statistics.fmean(aggs))}/100" in summary
    assert f"**Median aggregate score:** {fmt(statistics.median(aggs))}/100" in summary

    headers = re.findall(r"^### \*\*Iter (\S+)\*\* — Summary: (\d+)/100 \| Code-diff: (\d+)/100 \| "
                         r"Semantic: (\d+)/100 \| \*\*Aggregate: (\d+)/100\*\*$", text, re.M)
    assert headers == [(label(r), str(r["summary"]), str(r["code_diff"]), str(r["semantic"]), str(r["aggregate"]))
                       for r in its]
    blocks = re.split(r"^### \*\*Iter ", section(text, "## Iteration-by-Iteration Scoring"), flags=re.M)[1:]
    for r, block in zip(its, blocks):
        for reason in json.loads(r["reasons"] or "[]"):
            assert f"{reason['delta']:+g}:" in block
        shas = json.loads(r["supervisor_commits"]) + json.loads(r["engineer_commits"]) + json.loads(r["other_commits"])
        code = rows(db, f"SELECT path, sum(insertions) AS i, sum(deletions) AS d FROM commit_files WHERE sha IN "
                        f"({','.join('?' * len(shas))}) AND path_class IN ('production', 'test') GROUP BY path "
                        "ORDER BY i + d DESC, path LIMIT 8", tuple(shas))
        for f in code:
            change = f"{f['path']}:+{f['i']}/-{f['d']}"
            assert f"- {md_code(change)}" in block
        if not code:
            assert "- No production/test code" in block
        if r["files_touched"]:
            assert f"**Total:** {r['files_touched']} files touched (+{r['insertions']}/-{r['deletions']} lines)" in block

    assert plot_columns(text) == {label(r): min(100, int(r["aggregate"] / 10 + 0.5) * 10) for r in its}

    # Inflections: where the rolling mean of the final aggregates changes bucket.
    final = [r for r in its if not r["provisional"]]
    means = [statistics.fmean([f["aggregate"] for f in final[max(0, k - 9): k + 1]]) for k in range(len(final))]
    bucket = lambda m: "high" if round(m) >= 75 else "medium" if round(m) >= 40 else "low"  # noqa: E731
    expected = [label(final[k]) for k in range(1, len(final)) if bucket(means[k]) != bucket(means[k - 1])]
    shown = re.findall(r"^\d+\. \*\*Iter (\S+):\*\* rolling mean crossed", section(text, "### Inflection Points"), re.M)
    assert shown == expected

    dwell = section(text, "### Dwell")
    for d in rows(db, "SELECT * FROM dwell"):
        focus = "all foci (global)" if d["focus"] == "*" else md_code(d["focus"])
        assert f"| {focus} | {d['value']} | {d['tier'] or '—'} | {max(d['peak'], d['value'])} |" in dwell
    for a in rows(db, "SELECT * FROM alerts WHERE alert = 'dwell_tier'"):
        assert a["message"].split(" (")[0].replace("_", "\\_") in dwell

    prompts = section(text, "### Prompt Changes Detected")
    start = min(r["started_at"] for r in its)
    for p in rows(db, "SELECT f.path, f.insertions, f.deletions, c.sha FROM commit_files f JOIN commits c USING (repo, sha) "
                      "WHERE f.path_class = 'prompt' AND c.committed_at >= ?", (start,)):
        assert f"{md_code(p['path'])} +{p['insertions']}/-{p['deletions']} lines" in prompts
        assert md_code(p["sha"][:8]) in prompts


# --------------------------------------------------------------------------- the seed, from envelopes


@pytest.fixture(scope="module")
def seed_store(tmp_path_factory):
    """The seed's iterations 302-311, with a prompt change committed just before 306 and a rebase in 310."""
    db = tmp_path_factory.mktemp("report") / "loopmon.db"
    s = LoopStore(db, branch="feature/torchapi-newprompt")
    s.prompt_commit("prompts/main.md", 0, 0)  # the prompts exist before the window
    for turn in SEED_TURNS:
        if turn.number == 306:
            s.prompt_commit("prompts/main.md", 12, 3)
        if turn.number == 310:
            s.git_state("rebase-merge", True)
        idx = s.iteration(turn)
        if turn.number == 310:
            s.alert("git_state", "A rebase is in progress: resolve it before the next turn", iteration=idx,
                    severity="critical")
            s.git_state("rebase-merge", False)
    s.close()
    return db


def test_the_seed_window_reads_like_the_seed(seed_store, capsys):
    text = report(capsys, seed_store, "--from", "302", "--to", "311")
    assert text.startswith("# Iteration Analysis Audit Report: feature/torchapi-newprompt (Iterations 302-311)")
    assert "**Analysis Period:** Iterations 302-311 (10 iterations)" in text
    assert "**Primary Focus:** `INTEGRATE-PYTORCH-001` (8 of 10 iterations)" in text
    check_against_store(text, seed_store)


def test_the_git_state_failure_and_the_recovery_after_it_are_found(seed_store, capsys):
    text = report(capsys, seed_store)
    git = section(text, "### Git State")
    assert "Iter 310 [critical]: A rebase is in progress: resolve it before the next turn" in git
    assert "Iter 310 scored 5: git\\_failure" in git
    assert "`rebase-merge` appeared" in git and "`rebase-merge` cleared" in git
    assert "**Recovery:** after Iter 310 (git\\_failure), Iter 311 scored 93" in section(text, "### Strengths")


def test_a_prompt_change_inside_the_window_splits_it_into_before_and_after(seed_store, capsys):
    text = report(capsys, seed_store)
    prompts = section(text, "## Prompt Evolution Analysis")
    assert "`prompts/main.md` +12/-3 lines" in prompts and "in effect from Iter 306" in prompts
    its = rows(seed_store, "SELECT number, aggregate, bucket FROM iterations ORDER BY idx")
    before = [r["aggregate"] for r in its if r["number"] < 306]
    after = [r["aggregate"] for r in its if r["number"] >= 306]
    table = section(text, "### Pre/Post Statistical Analysis")
    assert "changed before Iter 306** (Iter 302-305 before, 306-311 after)" in table
    assert f"| Iterations | {len(before)} | {len(after)} |" in table
    assert f"| Mean aggregate | {fmt(statistics.fmean(before))} | {fmt(statistics.fmean(after))} |" in table
    assert f"| Median aggregate | {fmt(statistics.median(before))} | {fmt(statistics.median(after))} |" in table


def test_a_window_after_the_prompt_change_says_so(seed_store, capsys):
    text = report(capsys, seed_store, "--from", "307", "--to", "309")
    assert "Iterations 307-309 (3 iterations)" in text
    assert re.findall(r"^### \*\*Iter (\d+)", text, re.M) == ["307", "308", "309"]
    prompts = section(text, "## Prompt Evolution Analysis")
    assert "No prompt change inside the window." in prompts
    assert "The latest one before it: `prompts/main.md` +12/-3 lines" in prompts
    assert "**Limitation:** no prompt change splits the window" in prompts


def test_a_window_with_no_iterations_is_a_usage_error(seed_store, capsys):
    assert main(["report", "--db", str(seed_store), "--from", "400", "--to", "410"]) == 2
    assert "the store has iterations 302-311" in capsys.readouterr().err
    assert main(["report", "--db", str(seed_store), "--from", "309", "--to", "303"]) == 2


def test_the_report_goes_to_a_file(seed_store, tmp_path, capsys):
    target = tmp_path / "audit.md"
    assert main(["report", "--db", str(seed_store), "-o", str(target)]) == 0
    assert target.read_text(encoding="utf-8") == report(capsys, seed_store)


def test_repo_strings_cannot_change_the_markdown_around_them(tmp_path, capsys):
    db = tmp_path / "loopmon.db"
    s = LoopStore(db)
    s.iteration(Turn(1, 80, "X-1", (("ptycho/`odd`|name.py", 9, 0),), "## not a heading `x` | [a](b) *b*"))
    s.close()
    text = report(capsys, db)
    assert not re.search(r"^#+ not a heading", text, re.M)
    assert md_code("ptycho/`odd`|name.py:+9/-0") in text
    line = next(x for x in text.splitlines() if "not a heading" in x)
    assert md_code("RALPH AUTO (prompt=main.md) (iter=00001): ## not a heading `x` | [a](b) *b* — tests: "
                   "pytest tests -q (3 passed)") in line


def test_code_spans_hold_any_backticks():
    assert md_code("plain") == "`plain`"
    assert md_code("a `b` c") == "``a `b` c``"
    assert md_code("`edge`") == "`` `edge` ``"


# --------------------------------------------------------------------------- a simulated loop, backfilled


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    """30 iterations of the simulator's mixed scenario, backfilled exactly as `loopmon backfill` does."""
    from monitor.simulator import LoopSimulator

    root = tmp_path_factory.mktemp("sim")
    repo = root / "loop"
    LoopSimulator(repo, scenario="mixed", seed=1).run(30)
    db = root / "loopmon.db"
    assert main(["backfill", "--repo", str(repo), "--db", str(db), "--quiet"]) == 0
    return repo, db


def test_the_report_of_a_simulated_30_iteration_loop_matches_the_store(simulated, tmp_path, capsys):
    repo, db = simulated
    target = tmp_path / "audit.md"
    assert main(["report", "--repo", str(repo), "--db", str(db), "-o", str(target)]) == 0
    text = target.read_text(encoding="utf-8")
    assert len(rows(db, "SELECT idx FROM iterations")) >= 30
    assert "**Branch:** `main`" in text  # read from the repository when no collector said
    check_against_store(text, db)
    dwell_alerts = rows(db, "SELECT * FROM alerts WHERE alert = 'dwell_tier'")
    assert dwell_alerts, "the mixed scenario dwells at least once"


def test_a_window_of_the_simulated_loop_keeps_only_its_iterations(simulated, capsys):
    repo, db = simulated
    text = report(capsys, db, "--repo", str(repo), "--from", "10", "--to", "14")
    numbers = [r["number"] for r in rows(db, "SELECT number FROM iterations WHERE number BETWEEN 10 AND 14 ORDER BY idx")]
    assert re.findall(r"^### \*\*Iter (\S+)\*\*", text, re.M) == [str(n) for n in numbers]
    assert f"({len(numbers)} iterations)" in text
