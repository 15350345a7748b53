"""The three scores of an iteration, the aggregate, its overrides and bucket, and the rolling figures.

Every score is a sum of small, named parts, each recorded as a `Reason` with the
points it moved and the numbers behind it, so any score can be explained
(shared/spec/scoring.md). Inputs are only what the collectors extracted (commit
numstat, `tests:` tails, `DiffEvidence`, brief, memory, hubs): no I/O here.

The part sizes below were set on the seed audit's ten iterations
(tests/test_calibration.py prints the table); they are general rules, each one a
sentence of the audit's method.
"""

from __future__ import annotations

import math
import re
from bisect import insort
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from statistics import median
from typing import Callable, Iterable

from monitor.config import Settings
from monitor.events import Commit, MemoryEntry, Reason, TestsReport
from monitor.paths import CODE_CLASSES

# --------------------------------------------------------------------------- code tally

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Exception names and short error signatures in a failing test report.
_ERROR_SIG = re.compile(r"\b([A-Z]\w*(?:Error|Exception|Failure))\b(?::\s*([^\n;,)]{1,60}))?")


def _symbol_parts(symbol: str) -> tuple[str | None, list[str]]:
    """`pkg/mod.py::Class.method` -> ('pkg/mod.py', ['Class', 'method']); bare names have no path."""
    path: str | None = None
    name = symbol
    if "::" in symbol:
        path, name = symbol.split("::", 1)
    return path, _IDENT.findall(name)


def _flag_name(flag: str) -> str:
    """`--num-workers` and `num_workers` are one flag."""
    return flag.lstrip("-").replace("-", "_")


def _lookup_name(parts: list[str]) -> str | None:
    """The name tests call a symbol by: its last part; a dunder method's class."""
    if not parts:
        return None
    name = parts[-1]
    if name.startswith("__") and name.endswith("__") and len(parts) > 1:
        return parts[-2]
    return name


def module_stem(path: str) -> str:
    """`scripts/inference/inference.py` -> `inference`; `pkg/__init__.py` -> `pkg`."""
    p = PurePosixPath(path)
    stem = p.name.split(".", 1)[0]
    if stem == "__init__" and p.parent.name:
        return p.parent.name
    return stem


def _test_file_targets(path: str) -> set[str]:
    """Module stems a test file names: `tests/test_raw_data.py` -> {'raw_data', 'raw', 'data'}."""
    stem = module_stem(path)
    for affix in ("test_", "tests_"):
        if stem.startswith(affix):
            stem = stem[len(affix) :]
    for suffix in ("_test", "_tests", ".test", ".spec"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
    parts = {stem} | set(stem.split("_"))
    return {p for p in parts if len(p) >= 3}


@dataclass
class FileAgg:
    path_class: str
    insertions: int = 0
    deletions: int = 0
    binary: bool = False

    @property
    def lines(self) -> int:
        return self.insertions + self.deletions


@dataclass
class CodeTally:
    """What the commits of one iteration changed, summed (numstat, evidence, test reports).

    Kept incrementally: adding a commit costs what the commit holds, and every view
    the scores read is a counter or a set already up to date, so a burst of
    thousands of commits in one iteration stays linear.
    """

    baseline: frozenset[str] = frozenset()  # lines the previous iteration added (for churn)
    files: dict[str, FileAgg] = field(default_factory=dict)
    any_files: int = 0  # files of any class, bookkeeping included
    symbols: dict[str, str | None] = field(default_factory=dict)  # symbol -> its file when known
    test_functions: set[str] = field(default_factory=set)
    test_refs: set[str] = field(default_factory=set)
    asserts_added: int = 0
    asserts_removed: int = 0
    test_weakening: int = 0
    flags_added: set[str] = field(default_factory=set)
    flags_consumed: set[str] = field(default_factory=set)
    added_hashes: set[str] = field(default_factory=set)
    removed_hashes: set[str] = field(default_factory=set)
    undone: int = 0  # removed hashes the previous iteration had added
    reverts: list[str] = field(default_factory=list)
    truncated: bool = False
    evidence_seen: bool = False
    bulky: list[tuple[str, int, str]] = field(default_factory=list)  # (path, size, sha)
    reports: list[tuple[str, str, TestsReport]] = field(default_factory=list)  # (sha, role, report)
    ledger_ids: list[str] = field(default_factory=list)
    engineer_ids: list[str] = field(default_factory=list)
    engineer_subjects: list[str] = field(default_factory=list)
    # Running totals and the exercised closure (see _mark_*).
    _lines: dict[str, int] = field(default_factory=lambda: {"production": 0, "test": 0})
    _files_of: dict[str, int] = field(default_factory=lambda: {"production": 0, "test": 0})
    insertions: int = 0
    deletions: int = 0
    _by_name: dict[str, list[str]] = field(default_factory=dict)  # symbol lookup name -> symbols
    _stems: dict[str, list[str]] = field(default_factory=dict)  # module stem -> production files
    _named: set[str] = field(default_factory=set)  # module names test files are named after
    _symbol_paths: set[str] = field(default_factory=set)  # files holding an exercised symbol
    exercised_symbols: set[str] = field(default_factory=set)
    exercised: set[str] = field(default_factory=set)  # production files the changed tests exercise
    exercised_lines: int = 0

    @classmethod
    def of(cls, commits: Iterable[Commit], is_bulky: Callable[[str, int | None], bool], baseline: Iterable[str] = ()) -> "CodeTally":
        tally = cls(baseline=frozenset(baseline))
        for commit in commits:
            tally.add(commit, is_bulky)
        return tally

    def add(self, commit: Commit, is_bulky: Callable[[str, int | None], bool]) -> None:
        """Add one commit. Its diff counts whatever its message says (a hint, not the fact)."""
        for f in commit.files:
            self.any_files += 1
            if f.size is not None and is_bulky(f.path, f.size) and not (f.insertions == 0 and (f.deletions or 0) > 0):
                self.bulky.append((f.path, f.size, commit.sha))
            if f.path_class in CODE_CLASSES:
                self._add_file(f.path, f.path_class, f.insertions or 0, f.deletions or 0, f.binary or f.insertions is None)
        ev = commit.evidence
        if ev != type(ev)():
            self.evidence_seen = True
        for s in ev.symbols_changed:
            self._add_symbol(s)
        self.test_functions.update(ev.test_functions)
        for ref in ev.test_references:
            self._add_ref(ref)
            for part in _IDENT.findall(ref):
                self._add_ref(part)
        self.asserts_added += ev.asserts_added
        self.asserts_removed += ev.asserts_removed
        self.test_weakening += ev.test_weakening
        self.flags_added.update(_flag_name(f) for f in ev.flags_added)
        self.flags_consumed.update(_flag_name(f) for f in ev.flags_consumed)
        self.added_hashes.update(ev.added_hashes)
        for h in ev.removed_hashes:
            if h not in self.removed_hashes:
                self.removed_hashes.add(h)
                self.undone += h in self.baseline
        if ev.revert_of:
            self.reverts.append(ev.revert_of)
        self.truncated = self.truncated or ev.truncated
        if commit.tests.status != "absent":
            self.reports.append((commit.sha, commit.role, commit.tests))
        if commit.role == "engineer":
            self.engineer_subjects.append(commit.subject[:300])
        for lid in commit.ledger_ids:
            if lid not in self.ledger_ids:
                self.ledger_ids.append(lid)
            if commit.role == "engineer" and lid not in self.engineer_ids:
                self.engineer_ids.append(lid)

    # ----------------------------------------------------------------- the exercised closure

    def _add_file(self, path: str, path_class: str, ins: int, dels: int, binary: bool) -> None:
        agg = self.files.get(path)
        new = agg is None
        if agg is None:
            agg = self.files[path] = FileAgg(path_class)
            self._files_of[path_class] = self._files_of.get(path_class, 0) + 1
        agg.insertions += ins
        agg.deletions += dels
        agg.binary = agg.binary or binary
        self._lines[agg.path_class] = self._lines.get(agg.path_class, 0) + ins + dels
        self.insertions += ins
        self.deletions += dels
        if agg.path_class == "production":
            if path in self.exercised:
                self.exercised_lines += ins + dels
            elif new:
                stem = module_stem(path)
                self._stems.setdefault(stem, []).append(path)
                if stem in self.test_refs or stem in self._named or path in self._symbol_paths:
                    self._mark_file(path)
        elif new and agg.path_class == "test":
            for target in _test_file_targets(path) - self._named:
                self._named.add(target)
                for prod in self._stems.get(target, ()):
                    self._mark_file(prod)

    def _add_symbol(self, symbol: str) -> None:
        if symbol in self.symbols:
            return
        path, parts = _symbol_parts(symbol)
        self.symbols[symbol] = path
        name = _lookup_name(parts)
        if name is None:
            return
        self._by_name.setdefault(name, []).append(symbol)
        if name in self.test_refs:
            self._mark_symbol(symbol)

    def _add_ref(self, ref: str) -> None:
        if ref in self.test_refs:
            return
        self.test_refs.add(ref)
        for symbol in self._by_name.get(ref, ()):
            self._mark_symbol(symbol)
        for prod in self._stems.get(ref, ()):
            self._mark_file(prod)

    def _mark_symbol(self, symbol: str) -> None:
        if symbol in self.exercised_symbols:
            return
        self.exercised_symbols.add(symbol)
        path = self.symbols.get(symbol)
        if path is not None:
            self._symbol_paths.add(path)
            self._mark_file(path)

    def _mark_file(self, path: str) -> None:
        agg = self.files.get(path)
        if agg is None or agg.path_class != "production" or path in self.exercised:
            return
        self.exercised.add(path)
        self.exercised_lines += agg.lines

    # ----------------------------------------------------------------- views

    def lines(self, path_class: str | None = None) -> int:
        if path_class is None:
            return sum(self._lines.values())
        return self._lines.get(path_class, 0)

    @property
    def code_lines(self) -> int:
        return self.lines()

    def paths(self, path_class: str) -> list[str]:
        return sorted(p for p, a in self.files.items() if a.path_class == path_class)

    @property
    def has_code_change(self) -> bool:
        return bool(self.files)

    def symbol_exercised(self, symbol: str) -> bool:
        """A changed production symbol whose name (its last dotted part) the changed tests use.

        A dunder method stands for its class: a test exercises `Model.__init__` by building a `Model`.
        """
        name = _lookup_name(_symbol_parts(symbol)[1])
        return name is not None and name in self.test_refs

    def exercised_files(self) -> set[str]:
        """Production files the changed tests exercise: by module name, symbol, or test file name."""
        return set(self.exercised)

    def exercised_line_share(self) -> float:
        """Share of changed production lines in files that changed tests exercise."""
        prod = self.lines("production")
        return self.exercised_lines / prod if prod else 0.0

    def exercised_symbol_share(self) -> tuple[float, int, int]:
        """(share, exercised, total) of changed production symbols; files when no symbols are known."""
        if self.symbols:
            hit = len(self.exercised_symbols)
            return hit / len(self.symbols), hit, len(self.symbols)
        files = self._files_of.get("production", 0)
        if not files:
            return 0.0, 0, 0
        return self.exercised_line_share(), len(self.exercised), files

    def outcome(self) -> tuple[str, int, int]:
        """The turn's reported test outcome: (status, passed, failed) of the last informative report."""
        status, passed, failed = "absent", 0, 0
        for _, _, report in self.reports:
            if report.status in ("passed", "failed", "mentioned"):
                status, passed, failed = report.status, report.passed or 0, report.failed or 0
            elif report.status == "not_run" and status == "absent":
                status = "not_run"
        return status, passed, failed

    def failures_reported(self) -> int:
        return sum((r.failed or 1) for _, _, r in self.reports if r.status == "failed")

    def selectors_run(self) -> set[str]:
        return {s for _, _, r in self.reports if r.status in ("passed", "failed", "mentioned") for s in r.selectors}

    def failure_signatures(self) -> set[str]:
        """Failing tests or error names an engineer turn reported, for repeated-failure checks."""
        sigs: set[str] = set()
        for _, role, report in self.reports:
            if report.status != "failed" or role == "supervisor":
                continue
            sigs.update(report.selectors)
            for name, detail in _ERROR_SIG.findall(report.raw or ""):
                sigs.add(f"{name}: {detail.strip()}" if detail.strip() else name)
        return sigs


# --------------------------------------------------------------------------- scores


@dataclass
class Scores:
    summary: int
    code_diff: int
    semantic: int
    aggregate: int
    bucket: str
    override: str | None
    reasons: list[Reason]


class _Ledger:
    """Collects the parts of one score."""

    def __init__(self, score: str) -> None:
        self.score = score
        self.total = 0.0
        self.reasons: list[Reason] = []

    def add(self, delta: float, text: str) -> None:
        self.total += delta
        self.reasons.append(Reason(score=self.score, delta=round(delta, 1), text=text))  # type: ignore[arg-type]

    def result(self) -> int:
        return int(round(max(0.0, min(100.0, self.total))))


def _saturate(value: float, full: float) -> float:
    return 0.0 if full <= 0 else max(0.0, min(1.0, value / full))


@dataclass
class TurnFacts:
    """What an iteration's files and events say, besides its commits."""

    supervisor_commits: int = 0
    engineer_commits: int = 0
    other_commits: int = 0
    mapped_tests: list[str] = field(default_factory=list)
    mapped_tests_none: bool = False
    brief_present: bool = False
    artifacts: str | None = None
    hub_summary: bool = False
    memory: list[MemoryEntry] = field(default_factory=list)
    focus: str | None = None
    git_failures: list[str] = field(default_factory=list)
    bulky_files: int = 0


# Summary parts (process adherence, outcome, alignment).
SUMMARY_TURN = 10
SUMMARY_MAPPED = 10
SUMMARY_MAPPED_NONE = 5
SUMMARY_ARTIFACTS = 5
SUMMARY_HUB = 10
SUMMARY_IDS = 10
SUMMARY_MEMORY = 5
SUMMARY_PASSED = 25
SUMMARY_PASSED_COUNT = 10  # more passing tests, up to this many points (log scale)
SUMMARY_FAILED = 5  # tests ran, though not green
SUMMARY_MENTIONED = 10
SUMMARY_MAPPED_RUN = 5
SUMMARY_ALIGNED = 15


def summary_score(t: CodeTally, f: TurnFacts) -> _Ledger:
    """What the turn says it did: process adherence, reported outcome, alignment with the focus."""
    s = _Ledger("summary")
    commits = f.supervisor_commits + f.engineer_commits + f.other_commits
    if commits == 0:
        s.add(0, "no commit yet")
        return s
    s.add(SUMMARY_TURN, f"turn recorded: {f.supervisor_commits} supervisor, {f.engineer_commits} engineer, {f.other_commits} other commits")
    if f.mapped_tests:
        s.add(SUMMARY_MAPPED, f"brief maps {len(f.mapped_tests)} test selector(s)")
    elif f.mapped_tests_none:
        s.add(SUMMARY_MAPPED_NONE, "brief declares no mapped tests (evidence-only)")
    elif f.brief_present:
        s.add(0, "brief names no mapped tests")
    if f.artifacts:
        s.add(SUMMARY_ARTIFACTS, f"artifacts path given: {f.artifacts[:80]}")
    if f.hub_summary:
        s.add(SUMMARY_HUB, "hub summary written")
    if t.ledger_ids:
        s.add(SUMMARY_IDS, f"ledger IDs cited: {', '.join(t.ledger_ids[:4])}")
    if f.memory:
        s.add(SUMMARY_MEMORY, "supervisor memory entry written")

    status, passed, failed = t.outcome()
    if status == "passed":
        bonus = SUMMARY_PASSED_COUNT * _saturate(math.log2(1 + passed), math.log2(1 + 32)) if passed else 0.0
        s.add(SUMMARY_PASSED + bonus, f"tests reported passing ({passed or 'count not given'} passed)")
    elif status == "failed":
        s.add(SUMMARY_FAILED, f"tests reported failing ({passed} passed, {failed or '?'} failed)")
    elif status == "mentioned":
        s.add(SUMMARY_MENTIONED, "tests named without a result")
    elif t.has_code_change:
        s.add(0, "code changed but no test result reported")
    if f.mapped_tests and status in ("passed", "failed", "mentioned"):
        ran = t.selectors_run()
        if any(_selector_matches(m, ran) for m in f.mapped_tests):
            s.add(SUMMARY_MAPPED_RUN, "the brief's mapped tests were run")

    if f.engineer_commits and f.focus:
        if f.focus in t.engineer_ids:
            s.add(SUMMARY_ALIGNED, f"engineer's commit cites the focus {f.focus}")
        elif any(_names(subject, f.focus) for subject in t.engineer_subjects):
            s.add(SUMMARY_ALIGNED, f"engineer's commit names the focus {f.focus}")
        elif t.engineer_ids:
            s.add(0, f"off focus: engineer cites {', '.join(t.engineer_ids[:3])}, focus is {f.focus}")
        else:
            s.add(0, f"engineer's commits cite no ledger ID (focus {f.focus})")
    return s


def _names(text: str, item_id: str) -> bool:
    """`text` names the ledger ID as a whole word (not inside a longer ID)."""
    return re.search(rf"(?<![\w-]){re.escape(item_id)}(?![\w-])", text) is not None


def _selector_matches(mapped: str, ran: set[str]) -> bool:
    """A mapped selector was run: same node, or one names the other's file."""
    m_file = mapped.split("::", 1)[0]
    for r in ran:
        r_file = r.split("::", 1)[0]
        if mapped == r or m_file == r_file or mapped.startswith(r) or r.startswith(mapped):
            return True
    return False


# Code-diff parts: volume, tests moving with the code, test/production balance, breadth.
CODE_VOLUME = 35
CODE_VOLUME_FULL_LINES = 400
CODE_EXERCISED = 25
CODE_BALANCE = 25
CODE_BREADTH = 10
CODE_BREADTH_FULL_FILES = 4
CODE_TEST_FUNCTIONS = 5
CODE_DELETION_HEAVY = 10


def code_diff_score(t: CodeTally) -> _Ledger:
    """How much implementation and test work landed: production and test paths only."""
    s = _Ledger("code_diff")
    prod, test = t.lines("production"), t.lines("test")
    n_files = len(t.files)
    if n_files == 0:
        s.add(0, "no production or test path changed")
        return s
    total = prod + test
    s.add(
        CODE_VOLUME * _saturate(math.log1p(total), math.log1p(CODE_VOLUME_FULL_LINES)),
        f"{total} code lines (+{t.insertions}/-{t.deletions}): {prod} production, {test} test",
    )
    if prod > 0:
        share = t.exercised_line_share()
        if t.symbols:
            # Files are a coarse grain (one tested function "covers" a big file): average with symbols.
            sym_share, hit, total_symbols = t.exercised_symbol_share()
            s.add(CODE_EXERCISED * (share + sym_share) / 2,
                  f"tests moved with the code: {share:.0%} of production lines in exercised files, {hit} of {total_symbols} symbols exercised")
        else:
            s.add(CODE_EXERCISED * share, f"tests moved with the code: {share:.0%} of production lines in exercised files")
        if test > 0:
            s.add(CODE_BALANCE * _saturate(test, 0.5 * prod), f"{test} test lines against {prod} production lines")
        else:
            s.add(0, f"no test changed with {prod} production lines")
    else:
        # Tests alone: real work, though nothing new is implemented.
        s.add(CODE_EXERCISED * 0.5 * _saturate(test, 50), f"tests only: {test} lines, no production change")
        s.add(CODE_BALANCE * _saturate(test, 50), "test lines with no production counterpart")
    s.add(CODE_BREADTH * _saturate(n_files, CODE_BREADTH_FULL_FILES), f"{n_files} code files touched")
    if t.test_functions:
        s.add(CODE_TEST_FUNCTIONS * _saturate(len(t.test_functions), 2), f"{len(t.test_functions)} test functions added or changed")
    if t.deletions > t.insertions and t.deletions >= 20:
        s.add(-CODE_DELETION_HEAVY * (t.deletions - t.insertions) / t.deletions, f"mostly deletions (-{t.deletions}/+{t.insertions})")
    return s


# Semantic parts.
SEM_LANDED = 10
SEM_TRIVIAL = 2
SEM_EXERCISED = 40
SEM_ASSERTS = 15
SEM_ASSERTS_FULL = 4
SEM_WIRED = 10
SEM_PASSED = 25
SEM_NO_CODE_EVIDENCE = 5
PENALTY_FAILED = 15
PENALTY_NOT_RUN = 5
PENALTY_UNWIRED = 10
PENALTY_UNTESTED = 15
PENALTY_WEAKENED = 8
PENALTY_CHURN = 20
PENALTY_REVERT = 15
PENALTY_BULKY = 10
SEM_INCOMPLETE_CAP = 40


def semantic_score(t: CodeTally, f: TurnFacts, min_code_lines: int, previous_label: str = "the previous iteration") -> _Ledger:
    """Whether the change is correct, complete and verified, from the diff hunks' evidence."""
    s = _Ledger("semantic")
    code = t.code_lines
    prod = t.lines("production")
    test = t.lines("test")
    status, passed, failed = t.outcome()
    if not t.has_code_change:
        if f.hub_summary or t.any_files:
            s.add(SEM_NO_CODE_EVIDENCE, "evidence or bookkeeping only: nothing to verify")
        else:
            s.add(0, "nothing changed")
    elif code < min_code_lines:
        s.add(SEM_TRIVIAL, f"trivial change: {code} code line(s), under {min_code_lines}")
    else:
        s.add(SEM_LANDED, f"code landed: {code} lines")
        share = 0.0
        if prod > 0:
            share, hit, total = t.exercised_symbol_share()
            what = "symbols" if t.symbols else "files"
            s.add(SEM_EXERCISED * share, f"{hit} of {total} changed production {what} exercised by changed tests")
            unexercised = 1.0 - t.exercised_line_share()
            if test == 0:
                s.add(-PENALTY_UNTESTED, f"production changed ({prod} lines) with no test change")
            elif unexercised > 0:
                lines = prod - round(prod * (1.0 - unexercised))
                s.add(-PENALTY_UNTESTED * unexercised, f"{lines} of {prod} production lines ({unexercised:.0%}) in files no changed test exercises")
            if t.flags_added:
                wired = t.flags_added & t.flags_consumed
                unwired = sorted(t.flags_added - t.flags_consumed)
                s.add(SEM_WIRED * len(wired) / len(t.flags_added), f"{len(wired)} of {len(t.flags_added)} new flags/fields also consumed")
                if unwired:
                    s.add(-PENALTY_UNWIRED * len(unwired) / len(t.flags_added), f"flag exposed without execution wiring: {', '.join(unwired[:4])}")
            else:
                s.add(SEM_WIRED, "no new flag or config field left unconsumed")
        elif test > 0:
            share = 0.5
            s.add(SEM_EXERCISED * 0.25, "tests changed with no production change")
        if test > 0:
            if t.asserts_added:
                s.add(SEM_ASSERTS * _saturate(t.asserts_added, SEM_ASSERTS_FULL), f"{t.asserts_added} assertions added")
            elif t.evidence_seen:
                s.add(0, "changed tests add no assertion")
        if status == "passed":
            # Passing tests vouch only for the code they exercise.
            credit = SEM_PASSED * (0.3 + 0.7 * share)
            s.add(credit, f"tests reported passing ({passed or '?'}), covering {share:.0%} of the change")
        elif status in ("not_run", "absent") and prod > 0:
            s.add(-PENALTY_NOT_RUN, "no test run reported for a code change")
    if status == "failed" or t.failures_reported():
        n = failed or t.failures_reported()
        s.add(-PENALTY_FAILED, f"failures reported: {n}")
    if t.test_weakening:
        weight = 1.0 if prod == 0 else 0.5
        s.add(-min(3 * PENALTY_WEAKENED, PENALTY_WEAKENED * t.test_weakening * weight),
              f"tests weakened {t.test_weakening}x (asserts/tolerances/settings removed, skips added)"
              + ("" if prod else " while the code under them is untouched"))
    if t.baseline and t.undone:
        share_undone = t.undone / len(t.baseline)
        if t.undone >= 3 and share_undone >= 0.2:
            s.add(-PENALTY_CHURN * min(1.0, share_undone * 2), f"churn: removes {t.undone} of {len(t.baseline)} lines {previous_label} added")
    if t.reverts:
        s.add(-min(2 * PENALTY_REVERT, PENALTY_REVERT * len(t.reverts)), f"reverts: {', '.join(r[:10] for r in t.reverts[:3])}")
    if t.bulky:
        s.add(-min(2 * PENALTY_BULKY, PENALTY_BULKY * len(t.bulky)), f"bulky artifacts committed: {', '.join(p for p, _, _ in t.bulky[:3])}")
    if t.truncated:
        s.add(0, "diff evidence truncated: the change was too large to read whole")
    unwired = sorted(t.flags_added - t.flags_consumed)
    if unwired and prod > 0:
        # A flag nothing reads is a feature that does not run end to end: incomplete
        # work, capped the lower the more of the new flags are left unwired.
        wired_share = 1 - len(unwired) / len(t.flags_added)
        cap = round(SEM_INCOMPLETE_CAP + (100 - SEM_INCOMPLETE_CAP) * wired_share)
        if s.total > cap:
            s.add(cap - s.total, f"incomplete: {len(unwired)} of {len(t.flags_added)} new flags/fields not wired, capped at {cap}")
    return s


def bucket_of(aggregate: int, settings: Settings) -> str:
    if aggregate >= settings.scores.high:
        return "high"
    if aggregate >= settings.scores.medium:
        return "medium"
    return "low"


def score(t: CodeTally, f: TurnFacts, settings: Settings, previous_label: str = "the previous iteration") -> Scores:
    """All three scores, the weighted aggregate, the overrides and the bucket."""
    summ = summary_score(t, f)
    code = code_diff_score(t)
    sem = semantic_score(t, f, settings.dwell.min_code_lines, previous_label)
    w = settings.scores.weights
    s_sum, s_code, s_sem = summ.result(), code.result(), sem.result()
    aggregate = int(round(w["summary"] * s_sum + w["code_diff"] * s_code + w["semantic"] * s_sem))
    reasons = summ.reasons + code.reasons + sem.reasons
    override = None
    landed = t.code_lines >= settings.dwell.min_code_lines
    if f.git_failures and not landed:
        override = "git_failure"
        target = settings.scores.git_failure_score
        reasons.append(Reason(score="aggregate", delta=target - aggregate, text=f"git-state failure ({', '.join(f.git_failures)}) and no code landed: set to {target}"))
        aggregate = target
    elif not t.has_code_change and aggregate > settings.scores.no_code_cap:
        override = "no_code_cap"
        cap = settings.scores.no_code_cap
        reasons.append(Reason(score="aggregate", delta=cap - aggregate, text=f"no production or test change: capped at {cap}"))
        aggregate = cap
    return Scores(s_sum, s_code, s_sem, aggregate, bucket_of(aggregate, settings), override, reasons)


# --------------------------------------------------------------------------- rolling figures


@dataclass
class Rolling:
    """Running figures over final aggregates: kept incrementally so reading them is cheap."""

    window: int = 10
    aggregates: list[int] = field(default_factory=list)
    indexes: list[int] = field(default_factory=list)
    numbers: list[int | None] = field(default_factory=list)
    rolling: list[float] = field(default_factory=list)
    sorted_aggregates: list[int] = field(default_factory=list)
    total: int = 0
    buckets: dict[str, int] = field(default_factory=lambda: {"low": 0, "medium": 0, "high": 0})
    inflections: list[dict] = field(default_factory=list)

    def add(self, index: int, number: int | None, aggregate: int, bucket: str, settings: Settings) -> float:
        """Record a final aggregate; returns the new rolling mean."""
        self.aggregates.append(aggregate)
        self.indexes.append(index)
        self.numbers.append(number)
        insort(self.sorted_aggregates, aggregate)
        self.total += aggregate
        self.buckets[bucket] = self.buckets.get(bucket, 0) + 1
        recent = self.aggregates[-self.window :]
        mean = sum(recent) / len(recent)
        if self.rolling:
            before = bucket_of(int(round(self.rolling[-1])), settings)
            after = bucket_of(int(round(mean)), settings)
            if before != after:
                self.inflections.append(
                    {"index": index, "number": number, "from": before, "to": after, "rolling_mean": round(mean, 1)}
                )
        self.rolling.append(mean)
        return mean

    def trend(self) -> float:
        """Slope of the rolling mean (points per iteration) over the last `window` values."""
        ys = self.rolling[-self.window :]
        n = len(ys)
        if n < 2:
            return 0.0
        mx = (n - 1) / 2
        my = sum(ys) / n
        num = sum((i - mx) * (y - my) for i, y in enumerate(ys))
        den = sum((i - mx) ** 2 for i in range(n))
        return num / den

    def regression(self, window: int) -> tuple[float, int] | None:
        """(drop, peak index) when the rolling mean fell from a peak within the last `window` iterations."""
        if len(self.rolling) <= window:
            return None  # the first few means swing with every iteration: no trend to fall from yet
        start = max(0, len(self.rolling) - 1 - window)
        earlier = self.rolling[start:-1]
        peak = max(earlier)
        at = start + earlier.index(peak)
        return peak - self.rolling[-1], self.indexes[at]

    def figures(self) -> dict:
        n = len(self.aggregates)
        return {
            "iterations": n,
            "mean": round(self.total / n, 1) if n else None,
            "median": median(self.sorted_aggregates) if n else None,
            "rolling_mean": round(self.rolling[-1], 1) if self.rolling else None,
            "rolling_window": self.window,
            "trend": round(self.trend(), 2),
            "inflections": list(self.inflections),
            "buckets": {k: (round(v / n, 3) if n else 0.0) for k, v in self.buckets.items()},
            "bucket_counts": dict(self.buckets),
        }
