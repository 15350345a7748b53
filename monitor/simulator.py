"""A loop simulator: plays supervisor (galph) and engineer (ralph) turns into a real git repo.

It writes exactly what a real agent loop writes (shared/spec/agent-loop-formats.md):
the baton `sync/state.json`, the ledger `docs/fix_plan.md`, the brief `input.md`,
the supervisor memory `galph_memory.md`, hubs under `plans/active/<ID>/reports/<STAMP>/`,
prompts, production code under `ptycho/` and `scripts/`, and tests under `tests/`,
with commit messages in the loop's shapes. Every turn returns a `TurnRecord`: the
ground truth (what the turn meant to do, which code lines landed) that tests compare
the monitor's verdicts with.

Scenarios are seeded: the same scenario and seed give the same files, messages,
dates and therefore the same shas. With `pace == 0` dates come from a virtual clock
starting at 2026-01-05T09:00:00Z; with `pace > 0` (a live demo) they are real and
the simulator sleeps `pace` seconds between turns.

    sim = LoopSimulator(tmp_path / "loop", scenario="dwell", seed=3)
    records = sim.run(20)

Tests can also craft exact iterations from the building blocks
`supervisor_turn`, `engineer_turn`, `prompt_edit` and `git_state`.
"""

from __future__ import annotations

import json
import random
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable

from monitor.config import AlertSettings, DwellSettings
from monitor.paths import PathClassifier
from monitor.simulator_code import (
    CodeError,
    SourceFile,
    Subject,
    TurnCode,
    delete_lines,
    fields_for,
    function_block,
    function_names,
    generic_lines,
    grow_config,
    grow_module,
    grow_script,
    grow_tests,
    importable,
    module_subjects,
    python_kind,
    removable_units,
)
from monitor.simulator_files import (
    AREAS,
    BATON_PATH,
    BRIEF_PATH,
    CATALOG,
    CONFIG_MODULE,
    LEDGER_PATH,
    MEMORY_PATH,
    PROMPT_RULES,
    SCRIPTS,
    STATIC_FILES,
    Area,
    Ledger,
    LedgerItem,
    config_module,
    hub_stamp,
    implementation_plan,
    iso,
    memory_entry,
    plan_summary,
    pytest_log,
    render_baton,
    render_brief,
    script_module,
)
from monitor.simulator_git import GIT_STATES, Git, SimulatorError

__all__ = ["SCENARIOS", "START_TIME", "LoopSimulator", "SimulatorError", "TurnRecord", "GIT_STATES"]

SCENARIOS: tuple[str, ...] = ("productive", "dwell", "stuck-rebase", "bulky-artifact", "mixed")
START_TIME = datetime(2026, 1, 5, 9, 0, tzinfo=timezone.utc)
STATE_FILE = "loopmon-simulator.json"  # inside .git: the simulator's own memory, invisible to the loop
LEASE = timedelta(minutes=30)
CODE_PATH_CLASSES = frozenset({"production", "test"})
_DONE = ("done", "blocked")
_PHASES = "ABCDEFGHIJKLMN"


@dataclass
class TurnRecord:
    """Ground truth of one turn: what it meant to do and exactly what it committed."""

    iteration: int
    actor: str  # "galph" (supervisor), "ralph" (engineer) or "operator" (a hand edit between turns)
    intent: str  # planning | review | code | incomplete | failure | micro | weakened | refactor | bulky | git-failure | prompt-edit
    focus: str | None = None
    sha: str | None = None  # the turn's main work commit; None when it committed no work
    shas: list[str] = field(default_factory=list)  # every commit of the turn in order, SYNC commits included
    messages: list[str] = field(default_factory=list)  # parallel to `shas`
    work_shas: list[str] = field(default_factory=list)  # the turn's own commits (no driver SYNC bookkeeping)
    code: dict[str, tuple[int, int]] = field(default_factory=dict)  # production/test path -> (insertions, deletions)
    files: list[str] = field(default_factory=list)  # every path the work commits wrote
    symbols: list[str] = field(default_factory=list)  # production functions/classes added or changed
    tests: list[str] = field(default_factory=list)  # pytest selectors of tests added or changed
    flags_added: list[str] = field(default_factory=list)
    flags_consumed: list[str] = field(default_factory=list)
    fields_added: list[str] = field(default_factory=list)
    asserts: int = 0
    tests_tail: str | None = None
    tests_failed: int = 0
    hub: str | None = None
    hub_new: bool = False
    artifact: str | None = None
    artifact_bytes: int = 0
    git_state: str | None = None
    prompt: str | None = None
    dwell: int = 0  # supervisor: the dwell it wrote in its memory; engineer: the focus's true dwell after the turn
    started_at: datetime | None = None
    ended_at: datetime | None = None

    @property
    def role(self) -> str:
        return {"galph": "supervisor", "ralph": "engineer"}.get(self.actor, "other")

    @property
    def insertions(self) -> int:
        return sum(i for i, _ in self.code.values())

    @property
    def deletions(self) -> int:
        return sum(d for _, d in self.code.values())

    @property
    def code_lines(self) -> int:
        return self.insertions + self.deletions

    @property
    def lands_code(self) -> bool:
        """Whether the turn landed enough production/test change to reset dwell."""
        return self.code_lines >= DwellSettings().min_code_lines


@dataclass
class _Step:
    """One planned iteration of a scenario."""

    intent: str
    supervisor: dict
    engineer: dict
    prompt: str | None = None


class LoopSimulator:
    """Plays an agent loop into a real git repository (created, or continued)."""

    def __init__(
        self,
        repo: Path,
        *,
        scenario: str = "mixed",
        seed: int = 0,
        pace: float = 0.0,
        sync_commits: bool = True,
        start_iteration: int | None = None,
        real_time: bool | None = None,
        allow_foreign: bool = False,
    ) -> None:
        if scenario not in SCENARIOS:
            raise ValueError(f"unknown scenario {scenario!r}; choose one of {', '.join(SCENARIOS)}")
        if pace < 0:
            raise ValueError("pace must be >= 0 seconds")
        self.repo = Path(repo).absolute()
        self.scenario = scenario
        self.seed = seed
        self.pace = pace
        self.sync_commits = sync_commits
        self.real_time = pace > 0 if real_time is None else real_time
        self.git = Git(self.repo)
        self.classifier = PathClassifier()
        self.min_code_lines = DwellSettings().min_code_lines
        self.bulky_bytes = AlertSettings().bulky_bytes
        self.records: list[TurnRecord] = []
        self._touched: set[str] = set()  # written since the last commit
        self._new: set[str] = set()  # of those, the ones git does not track yet
        self._emit: Callable[[TurnRecord], None] | None = None
        self._clock = START_TIME
        self.rng = random.Random(f"scaffold-clock:{seed}")  # replaced once the start iteration is known
        self._stuck_record: TurnRecord | None = None
        self.bootstrap_sha: str | None = None

        fresh = not (self.repo.exists() and self.git.is_repo())
        if fresh and self.repo.exists() and any(self.repo.iterdir()) and not allow_foreign:
            raise SimulatorError(f"{self.repo} is a non-empty folder that is not a git repository; give a new path")
        if fresh:
            self.git.init()
        if not self.git.has_commits():
            if [p for p in self.repo.iterdir() if p.name != ".git"] and not allow_foreign:
                raise SimulatorError(f"{self.repo} has files but no commits; give a new path")
            self._scaffold()
        elif not (self.repo / BATON_PATH).exists() and not allow_foreign:
            raise SimulatorError(
                f"{self.repo} is a git repository without {BATON_PATH}: not a simulated loop. "
                "Give a new path (or allow_foreign=True to write into it anyway)."
            )
        self._load()
        if start_iteration is not None:
            self.iteration = start_iteration
            self._phase = "galph"
        self.rng = random.Random(f"{scenario}:{seed}:{self.iteration}")
        self._plan_state: dict = {}

    # ================================================================== public API

    def run(
        self,
        iterations: int,
        stop: threading.Event | None = None,
        on_turn: Callable[[TurnRecord], None] | None = None,
    ) -> list[TurnRecord]:
        """Play `iterations` iterations of the scenario; the records of every turn played.

        With pace > 0 it sleeps `pace` seconds between turns; `stop` ends the run
        between turns. A git state left broken by the previous turn (or run) is
        recovered first, as a loop driver would.
        """
        produced: list[TurnRecord] = []

        def emit(record: TurnRecord) -> None:
            produced.append(record)
            if on_turn is not None:
                on_turn(record)

        previous, self._emit = self._emit, emit
        try:
            self._plan_state = {}
            for k in range(iterations):
                if stop is not None and stop.is_set():
                    break
                if k and self._pause(stop):
                    break
                if self._stuck or self.git.blocking_states():
                    self.recover()
                step = self._plan(k, iterations)
                if k == 0 and self._phase == "ralph":
                    # an interrupted iteration: the baton hands this one to the engineer
                    self.engineer_turn(**self._step(step.intent, self.ledger.focus or self._rotating_focus()).engineer)
                    continue
                if step.prompt:
                    self.prompt_edit(step.prompt)
                self.supervisor_turn(**step.supervisor)
                if self._pause(stop):
                    break
                self.engineer_turn(**step.engineer)
        finally:
            self._emit = previous
        return produced

    def supervisor_turn(
        self,
        *,
        focus: str,
        planning: bool = True,
        hub_new: bool = False,
        brief: dict | None = None,
        memory_dwell: int | None = None,
        ledger_status: str | None = None,
        message: str | None = None,
        intent: str | None = None,
        style: str = "auto",
    ) -> str:
        """One supervisor turn: ledger, brief, memory and hub updates; returns the work commit's sha.

        `brief` overrides brief lines by key (e.g. {"Mapped tests": "none — evidence-only"});
        `memory_dwell` is the dwell the supervisor claims (default: the true one);
        `style` "short" writes `SUPERVISOR: ... - tests: not run` without an iteration tag.
        """
        self._require_clean()
        if self._phase == "ralph":  # the engineer turn of the last iteration never came
            self.iteration += 1
        n = self.iteration
        started = self._now()
        shas: list[str] = []
        messages: list[str] = []
        self._running(n, "galph", "supervisor.md", shas, messages)
        self._advance(self.rng.randint(180, 720))
        switched_from = self.ledger.focus if self.ledger.focus not in (None, focus) else None
        item = self._focus_item(focus, ledger_status)
        hub, hub_created = self._hub(focus, hub_new or switched_from is not None)
        selectors = self._mapped_selectors(focus)
        dwell = self.dwell.get(focus, 0)
        reported = dwell if memory_dwell is None else memory_dwell
        phase = _PHASES[min(self.landings.get(focus, 0), len(_PHASES) - 1)]
        today = self._now().strftime("%Y-%m-%d")

        if switched_from:
            summary = f"pivot from {switched_from} to {focus}; open hub {hub.rsplit('/', 1)[-1]}"
        elif dwell >= 6:
            summary = f"Tier 3 dwell block on {focus} (dwell={dwell}): escalate, narrow Do Now"
        elif not planning:
            summary = f"review ralph evidence for {focus} Phase {phase}"
        else:
            summary = self.rng.choice(
                (f"{focus} Phase {phase} Do Now", f"refresh {focus} directives", "reports evidence",
                 f"{focus} Phase {phase} plan + mapped tests")
            )
        next_action = self.rng.choice(
            ("implement the mapped guard and its test", "wire the new option through config and main()",
             "capture evidence logs in the hub", "rerun mapped tests and archive logs")
        )
        item.next_actions = [f"Phase {phase}: {next_action}", f"Keep artifacts under {hub}/"]
        self.ledger.updated = f"{today} (galph loop i={n}, {summary})"
        self._write(LEDGER_PATH, self.ledger.render())

        mapped = f"pytest {' '.join(selectors)} -q" if selectors else "none — evidence-only"
        fields = {
            "Summary": summary[0].upper() + summary[1:],
            "Mode": "Code",
            "Focus": f"{focus} — {item.title}",
            "Branch": "main",
            "Mapped tests": mapped,
            "Artifacts": f"{hub}/",
            "Do Now": f"{focus} Phase {phase}: {next_action}; run {mapped if selectors else 'the evidence capture'}.",
            "If Blocked": f"Record the blocker in {hub}/summary.md and mark {focus} blocked in {LEDGER_PATH}.",
        }
        fields.update(brief or {})
        self._write(BRIEF_PATH, render_brief(fields, focus, hub, selectors))
        action = "planning" if planning else "review"
        note = f"{summary}. Dwell on {focus}: {reported}."
        self._append(MEMORY_PATH, memory_entry(self._now(), focus, item.status, reported, action, hub, next_action.replace(" ", "_"), note))
        header = f"# Hub {hub.rsplit('/', 1)[-1]} — {focus}\n" if hub_created else ""
        self._append(f"{hub}/summary.md", f"{header}\n## galph i={n} ({action})\n- {summary}\n- Next: {next_action}\n")

        if message is None:
            if style == "short":
                message = f"SUPERVISOR: {summary} - tests: not run"
            else:
                message = f"SUPERVISOR AUTO (prompt=supervisor.md) (iter={n:05d}): {summary} — tests: not run"
        if not self.sync_commits:
            self._set_baton(iteration=n, expected_actor="ralph", status="waiting-ralph",
                            last_prompt="main.md", last_prompt_actor="ralph")
        files = sorted(self._touched)
        sha = self._commit(message)
        shas.append(sha)
        messages.append(message)
        self._handoff(f"[SYNC i={n}] actor=galph → next=ralph status=ok galph_commit={sha[:8]}", shas, messages,
                      iteration=n, expected_actor="ralph", status="waiting-ralph", galph_commit=sha,
                      last_prompt="main.md", last_prompt_actor="ralph")
        self._phase = "ralph"
        self._record(
            TurnRecord(
                iteration=n, actor="galph", intent=intent or action, focus=focus, sha=sha, shas=shas,
                messages=messages, work_shas=[sha], files=files, hub=hub, hub_new=hub_created, dwell=reported,
                started_at=started, ended_at=self._now(),
            )
        )
        return sha

    def engineer_turn(
        self,
        *,
        focus: str,
        code: dict[str, int] | None = None,
        deletions: dict[str, int] | None = None,
        tests_tail: str | None = None,
        consume_flags: bool = True,
        with_asserts: bool = True,
        artifact_bytes: int = 0,
        message: str | None = None,
        tests_failed: int = 0,
        style: str = "auto",
        split_evidence: bool = False,
        git_failure: str | None = None,
        intent: str | None = None,
    ) -> str:
        """One engineer turn; returns the sha of its (first) work commit, "" when it committed none.

        `code` maps paths to lines added, `deletions` paths to lines removed; what the
        lines are follows from the path's class (production module, script, config,
        test; anything else gets plain lines). `consume_flags=False` leaves new CLI
        options parsed but unused (an incomplete intermediate); `with_asserts=False`
        writes tests that call without asserting. `tests_tail=None` reports the tests
        the turn wrote (and `tests_failed` failures). `style` is "auto"
        (`RALPH AUTO ... (iter=N)`), "tagged" (`[ID] ...`), "evidence"
        (`RALPH AUTO: reports evidence`) or "sync" (a `[SYNC i=N]` message on a code commit).
        `split_evidence` commits code and bookkeeping separately. `git_failure` (a state
        in GIT_STATES) makes the turn hit that broken state and land nothing; `recover()`
        (or the next `run` iteration) clears it.
        """
        self._require_clean()
        n = self.iteration
        started = self._now()
        area = self._area(focus)
        ctx = TurnCode(iteration=n, focus=focus, rng=self.rng, consume_flags=consume_flags,
                       with_asserts=with_asserts, taken_names=self._names)
        sources: dict[str, SourceFile] = {}
        if not git_failure:
            try:
                self._make_code(ctx, area, code or {}, deletions or {}, sources)
            except CodeError as err:
                raise SimulatorError(f"engineer turn i={n}: {err}") from None

        shas: list[str] = []
        messages: list[str] = []
        self._running(n, "ralph", "main.md", shas, messages)
        self._advance(self.rng.randint(300, 1500))

        if git_failure:
            self.git_state(git_failure, True)
            self._stuck = git_failure
            self._count_dwell(focus, 0)
            record = TurnRecord(
                iteration=n, actor="ralph", intent=intent or "git-failure", focus=focus, shas=shas,
                messages=messages, git_state=git_failure, dwell=self.dwell[focus],
                started_at=started, ended_at=self._now(),
            )
            self._stuck_record = record
            self._record(record)
            return ""

        for f in sources.values():
            if f.inserted or f.deleted:
                self._mark(f.rel, f.path)
                f.save()
        code_stats = {
            rel: (f.inserted, f.deleted)
            for rel, f in sources.items()
            if self.classifier.classify(rel) in CODE_PATH_CLASSES and (f.inserted or f.deleted)
        }
        code_paths = sorted(rel for rel, f in sources.items() if f.inserted or f.deleted)
        code_lines = sum(i + d for i, d in code_stats.values())
        tests = list(dict.fromkeys(ctx.tests))

        hub, hub_created = self._hub(focus, False)
        artifact = None
        if artifact_bytes:
            artifact = f"{hub}/{self.rng.choice(('recon_dump', 'probe_stack', 'diffraction_cube'))}_i{n}.npz"
            self._write_bytes(artifact, self.rng.randbytes(artifact_bytes))
        if tests_tail is None:
            tests_tail = self._auto_tail(tests, tests_failed, sources)
        ran = tests_tail != "not run"
        if ran:
            folder = "red" if tests_failed else "green"
            stem = Path(tests[0].split("::")[0]).stem if tests else Path(area.tests).stem
            tally = re.search(r"(\d+) passed", tests_tail)
            passed = int(tally.group(1)) if tally else max(len(tests), 1)
            self._write(f"{hub}/{folder}/pytest_{stem}.log", pytest_log(tests or [area.tests], passed, tests_failed, self.rng))

        phase = _PHASES[min(self.landings.get(focus, 0), len(_PHASES) - 1)]
        summary = self._engineer_summary(ctx, code_lines, artifact, tests_failed, phase)
        if code_lines >= self.min_code_lines and not tests_failed:
            result = f"✅ success ({summary})"
        elif tests_failed:
            result = f"❌ failed ({tests_failed} failing: {summary})"
        else:
            result = f"⚠️ evidence only ({summary})"
        item = self.ledger.get(focus) or self._new_item(focus)
        today = self._now().strftime("%Y-%m-%d")
        number = max((int(m) for a in item.attempts for m in re.findall(r"Attempt #(\d+)", a)), default=0) + 1
        item.attempts.append(f"[{today}] Attempt #{number} — Result: {result}. Artifacts: `{hub}/`")
        self._write(LEDGER_PATH, self.ledger.render())
        self._append(f"{hub}/summary.md", f"\n## ralph i={n}\n- {result}\n- Tests: {tests_tail}\n")
        self._prepend_turn_summary(focus, f"- i={n} ({today}): {summary}; tests: {tests_tail}")

        if message is None:
            if style == "tagged":
                message = f"[{focus}] Phase {phase}: {summary}"
            elif style == "evidence":
                message = f"RALPH AUTO: reports evidence — tests: {tests_tail}"
            elif style == "sync":
                message = f"[SYNC i={n}] actor=ralph status=running"
            elif code_lines:
                message = f"RALPH AUTO (prompt=main.md) (iter={n:05d}): {focus} Phase {phase}: {summary} — tests: {tests_tail}"
            else:
                message = f"RALPH AUTO (prompt=main.md) (iter={n:05d}): {summary} — tests: {tests_tail}"
        if not self.sync_commits:
            self._set_baton(iteration=n + 1, expected_actor="galph", status="waiting-galph",
                            last_prompt="supervisor.md", last_prompt_actor="galph")
        files = sorted(self._touched - {BATON_PATH} if self.sync_commits else self._touched)
        work: list[str] = []
        if split_evidence and code_paths:
            first = [*code_paths, *([artifact] if artifact else [])]
            work.append(self._commit(message, first))
            shas.append(work[-1])
            messages.append(message)
            message = f"RALPH AUTO: reports evidence — tests: {tests_tail}"
        work.append(self._commit(message))
        shas.append(work[-1])
        messages.append(message)
        self._handoff(f"[SYNC i={n + 1}] actor=ralph → next=galph status=ok ralph_commit={work[-1][:8]}", shas, messages,
                      iteration=n + 1, expected_actor="galph", status="waiting-galph", ralph_commit=work[-1],
                      last_prompt="supervisor.md", last_prompt_actor="galph")
        self._count_dwell(focus, code_lines)
        self.iteration = n + 1
        self._phase = "galph"
        if intent is None:
            intent = self._observed_intent(ctx, code_lines, artifact, tests_failed)
        self._record(
            TurnRecord(
                iteration=n, actor="ralph", intent=intent, focus=focus, sha=work[0], shas=shas, messages=messages,
                work_shas=work,
                code=code_stats, files=files, symbols=list(ctx.symbols), tests=tests,
                flags_added=list(ctx.flags_added), flags_consumed=list(ctx.flags_consumed),
                fields_added=list(ctx.fields_added), asserts=ctx.asserts, tests_tail=tests_tail,
                tests_failed=tests_failed, hub=hub, hub_new=hub_created, artifact=artifact,
                artifact_bytes=artifact_bytes, dwell=self.dwell[focus], started_at=started, ended_at=self._now(),
            )
        )
        return work[0]

    def prompt_edit(self, prompt: str = "supervisor.md", rule: str | None = None) -> str:
        """A hand edit of a prompt between turns (`update prompts/<prompt>: ...`); its sha."""
        self._require_clean()
        rel = prompt if "/" in prompt else f"prompts/{prompt}"
        name = rel.rsplit("/", 1)[-1]
        if rule is None:
            rules = [r for p, r in PROMPT_RULES if p == name] or [r for _, r in PROMPT_RULES]
            existing = (self.repo / rel).read_text(encoding="utf-8") if (self.repo / rel).exists() else ""
            fresh = [r for r in rules if r not in existing]
            rule = fresh[0] if fresh else f"{rules[0]} (restated i={self.iteration})"
        started = self._now()
        self._advance(self.rng.randint(30, 240))
        self._append(rel, f"- {rule}\n")
        message = f"update {rel}: {rule.split(':')[0].split('.')[0].lower()}"
        sha = self._commit(message, [rel])
        self._record(
            TurnRecord(iteration=self.iteration, actor="operator", intent="prompt-edit", sha=sha, shas=[sha], work_shas=[sha],
                       messages=[message], files=[rel], prompt=rel, started_at=started, ended_at=self._now())
        )
        return sha

    def git_state(self, state: str, active: bool, *, lock_age: float = 120.0) -> None:
        """Make (`active=True`) or clear a broken git state.

        "rebase-merge" / "rebase-apply": a real `git rebase` stopped on a conflict in the
        ledger; "merge": a real conflicted `git merge` (MERGE_HEAD); "index.lock": a lock
        file `lock_age` seconds old. They are built on a scratch branch, so clearing
        them returns to the loop's branch with its history untouched.
        """
        if state not in GIT_STATES:
            raise SimulatorError(f"unknown git state {state!r}; known: {', '.join(GIT_STATES)}")
        if not active:
            if state in self.git.active_states():
                self.git.clear_states()
            return
        if self._touched:
            raise SimulatorError(f"uncommitted loop files ({', '.join(sorted(self._touched))}); finish the turn first")
        path = LEDGER_PATH if (self.repo / LEDGER_PATH).exists() else "sync/notes.md"
        base = (self.repo / path).read_text(encoding="utf-8") if (self.repo / path).exists() else ""
        ours = _edit_first_marker(base, "**Last Updated:**", "(ralph local: pull --rebase before handoff)")
        theirs = _edit_first_marker(base, "**Last Updated:**", "(galph upstream: ledger status sweep)")
        self.git.make_state(state, path, ours, theirs, self._now(), lock_age)

    def recover(self) -> list[str]:
        """Clear any broken git state, as the loop driver does, and finish a stuck hand-off."""
        cleared = self.git.clear_states() if self.git.blocking_states() or self._stuck else []
        if self._stuck or self.baton.get("status") == "running-ralph":
            n = int(self.baton.get("iteration", self.iteration))
            prev = (self.baton.get("ralph_commit") or "")[:8] or "none"
            self._set_baton(iteration=n + 1, expected_actor="galph", status="waiting-galph",
                            last_prompt="supervisor.md", last_prompt_actor="galph")
            shas: list[str] = []
            messages: list[str] = []
            self._sync(f"[SYNC i={n + 1}] actor=ralph → next=galph status=failed ralph_commit={prev}", shas, messages)
            if self._stuck_record is not None:
                self._stuck_record.shas += shas
                self._stuck_record.messages += messages
            self.iteration = n + 1
            self._phase = "galph"
        self._stuck = None
        self._stuck_record = None
        self._save_state()
        return cleared

    @property
    def focus(self) -> str | None:
        """The ledger's Active Focus."""
        return self.ledger.focus

    # ================================================================== scenarios

    def _plan(self, k: int, total: int) -> _Step:
        return getattr(self, "_plan_" + self.scenario.replace("-", "_"))(k, total)

    def _plan_productive(self, k: int, total: int) -> _Step:
        return self._step("code", self._rotating_focus())

    def _plan_dwell(self, k: int, total: int) -> _Step:
        st = self._plan_state
        focus = self.ledger.focus or self._rotating_focus()
        if "streak" not in st:
            st["streak"], st["pos"] = self.rng.randint(6, 8), 0
        if st["pos"] < st["streak"]:
            st["pos"] += 1
            return self._step("planning", focus, hub_new=False)
        st["streak"], st["pos"] = self.rng.randint(6, 8), 0
        return self._step("code", focus, hub_new=False)

    def _plan_stuck_rebase(self, k: int, total: int) -> _Step:
        first = min(2, total - 1)
        if k == first or (k > first and (k - first) % 10 == 0):
            return self._step("git-failure", self.ledger.focus or self._rotating_focus())
        return self._step("code", self._rotating_focus())

    def _plan_bulky_artifact(self, k: int, total: int) -> _Step:
        first = min(1, total - 1)
        if k == first or (k > first and (k - first) % 10 == 0):
            return self._step("bulky", self._rotating_focus())
        return self._step("code", self._rotating_focus())

    _MIXED_OPENING = (
        "planning", "code", "incomplete", "failure", "wire", "code",
        "switch", "planning", "split", "micro", "refactor", "sync-code",
    )
    _MIXED_BLEND = (
        ("code", 44), ("planning", 22), ("incomplete", 6), ("failure", 8), ("micro", 5), ("weakened", 3),
        ("refactor", 5), ("split", 3), ("sync-code", 2), ("bulky", 1), ("git-failure", 1),
    )

    def _plan_mixed(self, k: int, total: int) -> _Step:
        st = self._plan_state
        if k < len(self._MIXED_OPENING):
            kind = self._MIXED_OPENING[k]
            prompt = "supervisor.md" if k == 3 else None
            if kind == "switch":
                return self._step("planning", self._next_focus(), hub_new=True)
            if kind == "wire":
                return self._step("code", self.ledger.focus or self._rotating_focus(), wire=True)
            focus = self.ledger.focus or self._rotating_focus()
            if kind == "refactor":
                return self._step("refactor", focus, hub_new=True)
            step = self._step(kind, focus, prompt=prompt)
            if k == 0:  # the loop's first turn only gathers evidence
                step.engineer["tests_tail"] = "not run"
            return step
        prompt = self.rng.choice(("supervisor.md", "main.md")) if self.rng.random() < 0.04 else None
        if st.get("planning_left"):
            st["planning_left"] -= 1
            return self._step("planning", self.ledger.focus or self._rotating_focus(), prompt=prompt)
        if st.get("after_failure"):
            st["after_failure"] = False
            return self._step("code", self.ledger.focus or self._rotating_focus(), prompt=prompt, wire=True)
        kinds, weights = zip(*self._MIXED_BLEND)
        kind = self.rng.choices(kinds, weights)[0]
        if kind == "planning":
            st["planning_left"] = self.rng.choice((0, 0, 1, 2))
        if kind == "failure":
            st["after_failure"] = True
        focus = self._rotating_focus() if kind in ("code", "split", "refactor") else (self.ledger.focus or self._rotating_focus())
        return self._step(kind, focus, prompt=prompt)

    def _step(self, kind: str, focus: str, *, hub_new: bool | None = None, prompt: str | None = None, wire: bool = False) -> _Step:
        """Supervisor and engineer arguments for one iteration of intent `kind` on `focus`."""
        rng = self.rng
        area = self._area(focus)
        if hub_new is None:
            hub_new = self._last_landed and rng.random() < 0.3
        planning_only = kind == "planning"
        brief: dict[str, str] = {}
        if planning_only:
            brief["Mode"] = rng.choice(("Docs", "Parity", "Evidence"))
            if rng.random() < 0.5:
                brief["Mapped tests"] = "none — evidence-only"
        elif kind == "git-failure":
            brief["Mode"] = "Code"
        else:
            brief["Mode"] = rng.choice(("Code", "Code", "TDD"))
        sup = {"focus": focus, "hub_new": hub_new, "brief": brief,
               "planning": rng.random() > 0.1, "style": "short" if rng.random() < 0.08 else "auto"}
        eng: dict = {"focus": focus}
        tagged = rng.random() < 0.15
        if kind in ("code", "failure", "bulky", "sync-code", "split", "refactor"):
            eng["code"] = self._code_request(area, wire=wire)
            eng["style"] = "tagged" if tagged else "auto"
            eng["intent"] = "code"
        if kind == "failure":
            eng["tests_failed"] = rng.choice((1, 1, 2))
            eng["intent"] = "failure"
        elif kind == "bulky":
            eng["artifact_bytes"] = rng.randint(int(self.bulky_bytes * 1.1), int(self.bulky_bytes * 1.6))
            eng["intent"] = "bulky"
        elif kind == "sync-code":
            eng["style"] = "sync"
        elif kind == "split":
            eng["style"] = "tagged"
            eng["split_evidence"] = True
        elif kind == "refactor":
            eng["intent"] = "refactor"
            module = next((m for m in area.modules if m in eng["code"]), area.modules[0])
            lines = self._feasible_deletion(module, False, 8)
            if lines:
                eng["deletions"] = {module: lines}
        elif kind == "incomplete":
            script = area.script or "scripts/training/train.py"
            eng.update(code={script: rng.randint(3, 14), area.tests: rng.randint(8, 24)}, consume_flags=False, intent="incomplete")
        elif kind == "micro":
            eng.update(code={area.tests: 1}, intent="micro")
        elif kind == "weakened":
            lines = self._feasible_deletion(area.tests, True, 3)
            count = len(self._test_names(area.tests))
            eng.update(deletions={area.tests: lines} if lines else {}, intent="weakened",
                       tests_tail=f"pytest {area.tests} -q ({count} passed)")
        elif kind == "planning":
            eng["intent"] = "planning"
            eng["style"] = "evidence" if rng.random() < 0.5 else "auto"
            if rng.random() < 0.5:
                count = len(self._test_names(area.tests))
                eng["tests_tail"] = f"pytest {area.tests} -q ({count} passed)" if count else "not run"
            else:
                eng["tests_tail"] = "not run"
        elif kind == "git-failure":
            eng.update(git_failure="rebase-merge", intent="git-failure")
        return _Step(kind, sup, eng, prompt)

    def _code_request(self, area: Area, *, wire: bool = False) -> dict[str, int]:
        rng = self.rng
        code: dict[str, int] = {}
        code[rng.choice(area.modules)] = rng.randint(10, 70)
        if area.script and (wire or rng.random() < 0.35):
            code[area.script] = rng.randint(4, 12) if wire else rng.randint(6, 40)
            if wire or rng.random() < 0.6:
                code[CONFIG_MODULE] = rng.randint(1, min(4, code[area.script] // 2))
        code[area.tests] = rng.randint(12, 90)
        return code

    def _rotating_focus(self) -> str:
        """The Active Focus, or the next item once this one has landed its share of code."""
        focus = self.ledger.focus
        if focus is None or (self.ledger.get(focus) and self.ledger.get(focus).status in _DONE):
            return self._next_focus()
        quota = self.quota.setdefault(focus, self.rng.randint(3, 5))
        if self.landings.get(focus, 0) >= quota:
            return self._next_focus()
        return focus

    def _next_focus(self) -> str:
        current = self.ledger.focus
        ids = [item.id for item in self.ledger.items]
        start = ids.index(current) + 1 if current in ids else 0
        for item in self.ledger.items[start:] + self.ledger.items[:start]:
            if item.id != current and item.status not in _DONE:
                return item.id
        k = len(self.ledger.items) + 1
        new_id = f"FOLLOWUP-{k:03d}"
        while self.ledger.get(new_id):
            k += 1
            new_id = f"FOLLOWUP-{k:03d}"
        return new_id

    # ================================================================== code

    def _make_code(self, ctx: TurnCode, area: Area, code: dict[str, int], deletions: dict[str, int],
                   sources: dict[str, SourceFile]) -> None:
        """Edit (in memory) every file the turn changes, in dependency order."""
        for rel in list(code) + list(deletions):
            if rel not in sources:
                sources[rel] = SourceFile(self.repo, rel)

        def rank(rel: str) -> int:
            cls = self.classifier.classify(rel)
            if not rel.endswith(".py"):
                return 5
            if cls == "test":
                return 4
            kind = python_kind(sources[rel])
            return {"script": 1, "config": 2}.get(kind, 3)

        ordered = sorted((rel for rel in code if code[rel] > 0), key=lambda r: (rank(r), r))
        ctx.fields_wanted = sum(fields_for(code[rel]) for rel in ordered if rank(rel) == 2)
        for rel in ordered:
            f, count = sources[rel], code[rel]
            r = rank(rel)
            can_import = importable(self.repo, rel)
            if r == 1:
                grow_script(ctx, f, count, f.module, can_import)
            elif r == 2:
                grow_config(ctx, f, count, f.module, can_import)
            elif r == 3:
                grow_module(ctx, f, count, f.module, can_import)
            elif r == 4:
                grow_tests(ctx, f, count, self._test_subjects(ctx, area, f, sources))
            else:
                f.append(generic_lines(ctx, rel, count))
        # deletions last, so they can steer clear of every line just inserted
        for rel, count in deletions.items():
            if count:
                delete_lines(sources[rel], count, self.classifier.classify(rel) == "test")

    def _test_subjects(self, ctx: TurnCode, area: Area, test_file: SourceFile,
                       sources: dict[str, SourceFile]) -> list[Subject]:
        """What a test file should exercise: this turn's new symbols first, then the area's."""
        subjects = list(ctx.subjects)
        modules = [rel for rel in sources if rel.endswith(".py") and self.classifier.classify(rel) == "production"]
        modules += [m for m in area.modules if m not in modules]
        known: list[Subject] = []
        for rel in modules:
            if importable(self.repo, rel):
                known += module_subjects(self.repo, rel)
        known.reverse()  # newest first
        known.sort(key=lambda s: s.name not in ctx.symbols)
        names = {s.name for s in subjects}
        subjects += [s for s in known if s.name not in names]
        return subjects

    def _feasible_deletion(self, rel: str, is_test: bool, most: int) -> int:
        """A line count that `delete_lines` can remove from `rel` (0 when nothing is removable)."""
        path = self.repo / rel
        if not path.exists():
            return 0
        lines = path.read_text(encoding="utf-8").split("\n")
        # single lines (logging, surplus asserts) are unique, so no insertion can collide with them
        singles = sum(1 for _, size in removable_units(lines, is_test) if size == 1)
        return self.rng.randint(1, min(singles, most)) if singles else 0

    def _test_names(self, rel: str) -> list[str]:
        path = self.repo / rel
        if not path.exists():
            return []
        return [line[4:].split("(")[0] for line in path.read_text(encoding="utf-8").splitlines() if line.startswith("def test_")]

    def _auto_tail(self, tests: list[str], failed: int, sources: dict[str, SourceFile]) -> str:
        if not tests:
            return f"pytest -q ({failed} failed)" if failed else "not run"
        tally = f"{len(tests)} passed" + (f", {failed} failed" if failed else "")
        roll = self.rng.random()
        if roll < 0.55:
            return f"pytest {' '.join(tests[:3])} -q ({tally})"
        if roll < 0.75:
            file = tests[0].split("::")[0]
            count = sum(1 for line in sources[file].lines if line.startswith("def test_")) if file in sources else len(tests)
            return f"pytest {file} -q ({count} passed" + (f", {failed} failed)" if failed else ")")
        if roll < 0.9 or failed:
            return tally
        return tests[0].split("::")[1]

    def _observed_intent(self, ctx: TurnCode, code_lines: int, artifact: str | None, failed: int) -> str:
        if artifact:
            return "bulky"
        if failed:
            return "failure"
        if set(ctx.flags_added) - set(ctx.flags_consumed):
            return "incomplete"
        if code_lines >= self.min_code_lines:
            return "code"
        return "micro" if code_lines else "planning"

    def _engineer_summary(self, ctx: TurnCode, code_lines: int, artifact: str | None, failed: int, phase: str) -> str:
        parts = []
        unwired = [f for f in ctx.flags_added if f not in ctx.flags_consumed]
        if ctx.flags_added and not unwired:
            parts.append(f"wire {', '.join(ctx.flags_added[:3])} through {ctx.config_class or 'config'}")
        elif unwired:
            parts.append(f"expose {', '.join(unwired[:3])} (parsing only)")
        elif ctx.flags_consumed:
            parts.append(f"consume {', '.join(ctx.flags_consumed[:3])} in main()")
        owners = {f.split(".")[0] for f in ctx.fields_added}
        new_symbols = [s for s in ctx.symbols if s not in ("build_parser", "main") and s not in owners]
        if new_symbols:
            parts.append(f"add {', '.join(new_symbols[:2])}")
        if ctx.fields_added:
            parts.append(f"add {', '.join(ctx.fields_added[:2])}")
        if ctx.tests:
            parts.append(f"{len(set(ctx.tests))} test{'s' if len(set(ctx.tests)) != 1 else ''}")
        if artifact:
            parts.append(f"capture {artifact.rsplit('/', 1)[-1]}")
        if failed:
            parts.append("smoke run failing")
        if not parts:
            parts.append("reports evidence" if not code_lines else f"{code_lines}-line touch-up")
        return "; ".join(parts)

    # ================================================================== bookkeeping files

    def _focus_item(self, focus: str, status: str | None) -> LedgerItem:
        item = self.ledger.get(focus) or self._new_item(focus)
        previous = self.ledger.get(self.ledger.focus) if self.ledger.focus else None
        if previous is not None and previous.id != focus and previous.status not in _DONE:
            previous.status = "done" if self.landings.get(previous.id, 0) else "blocked"
            self._archive_attempts(previous)
        self.ledger.focus = focus
        item.status = status or ("in_progress" if item.status in ("pending", "in_planning", "ready_for_implementation", *_DONE) else item.status)
        item.owner = f"galph/{self._now().strftime('%Y-%m-%d')}"
        return item

    def _archive_attempts(self, item: LedgerItem, keep: int = 2) -> None:
        """Move a closed item's older attempts to plans/archive/, as loops do to keep the ledger small."""
        if len(item.attempts) <= keep + 1:
            return
        rel = f"plans/archive/{item.id}/attempts.md"
        older = [a for a in item.attempts[:-keep] if not a.startswith("Earlier attempts")]
        self._append(rel, ("" if (self.repo / rel).exists() else f"# {item.id} archived attempts\n\n")
                     + "".join(f"* {a}\n" for a in older))
        item.attempts = [f"Earlier attempts ({len(older)}) archived in `{rel}`", *item.attempts[-keep:]]
        item.next_actions = []
        self._archive_closed_items()

    def _archive_closed_items(self, keep: int = 8) -> None:
        """Move all but the last `keep` closed items out of the ledger into plans/archive/."""
        closed = [item for item in self.ledger.items if item.status in _DONE and item.id != self.ledger.focus]
        if len(closed) <= keep:
            return
        moved = closed[:-keep]
        rel = "plans/archive/fix_plan_archive.md"
        sections = Ledger(items=moved).render().split("\n## [", 1)[1]
        self._append(rel, ("" if (self.repo / rel).exists() else "# Archived ledger items\n") + "\n## [" + sections)
        self.ledger.items = [item for item in self.ledger.items if item not in moved]

    def _new_item(self, item_id: str) -> LedgerItem:
        catalog = {i: (t, p) for i, t, p, _ in CATALOG}
        title, priority = catalog.get(item_id, (f"Follow-up work item {item_id}", "Medium"))
        item = LedgerItem(item_id, title, priority, "pending", plan=f"plans/active/{item_id}/implementation.md")
        self.ledger.items.append(item)
        if not (self.repo / item.plan).exists():
            self._write(item.plan, implementation_plan(item_id, title))
        return item

    def _hub(self, focus: str, new: bool) -> tuple[str, bool]:
        current = self.hubs.get(focus)
        if current and not new and (self.repo / current).is_dir():
            return current, False
        when = self._now()
        rel = f"plans/active/{focus}/reports/{hub_stamp(when)}"
        while (self.repo / rel).exists():
            when += timedelta(seconds=1)
            rel = f"plans/active/{focus}/reports/{hub_stamp(when)}"
        self.hubs[focus] = rel
        return rel, True

    def _mapped_selectors(self, focus: str) -> list[str]:
        tests_file = self._area(focus).tests
        names = self._test_names(tests_file)
        if not names:
            return [tests_file] if (self.repo / tests_file).exists() else []
        picked = names[-2:] if self.rng.random() < 0.4 else names[-1:]
        return [f"{tests_file}::{name}" for name in picked]

    def _prepend_turn_summary(self, focus: str, line: str) -> None:
        rel = f"plans/active/{focus}/summary.md"
        path = self.repo / rel
        text = path.read_text(encoding="utf-8") if path.exists() else plan_summary(focus)
        marker = "## Turn Summaries\n"
        if marker not in text:
            text += "\n" + marker
        head, tail = text.split(marker, 1)
        self._write(rel, head + marker + line + "\n" + tail)

    def _area(self, focus: str) -> Area:
        if focus in AREAS:
            return AREAS[focus]
        return CATALOG[sum(map(ord, focus)) % len(CATALOG)][3]

    def _count_dwell(self, focus: str, code_lines: int) -> None:
        if code_lines >= self.min_code_lines:
            self.dwell[focus] = 0
            self.global_dwell = 0
            self.landings[focus] = self.landings.get(focus, 0) + 1
            self._last_landed = True
        else:
            self.dwell[focus] = self.dwell.get(focus, 0) + 1
            self.global_dwell += 1
            self._last_landed = False

    # ================================================================== scaffold and state

    def _scaffold(self) -> None:
        """The repository as a loop starts: package, scripts, tests, prompts, ledger, baton."""
        rng = random.Random(f"scaffold:{self.seed}")
        for rel, text in STATIC_FILES.items():
            self._write(rel, text)
        self._write(CONFIG_MODULE, config_module())
        for rel in SCRIPTS:
            self._write(rel, script_module(rel))
        ledger = Ledger(updated=f"{START_TIME:%Y-%m-%d} (loop scaffold)")
        names: set[str] = set()
        for k, (item_id, title, priority, area) in enumerate(CATALOG):
            ledger.items.append(
                LedgerItem(item_id, title, priority, "in_progress" if k == 0 else "pending",
                           owner=f"galph/{START_TIME:%Y-%m-%d}", plan=f"plans/active/{item_id}/implementation.md",
                           next_actions=["Phase A: capture evidence and a failing test"])
            )
            self._write(f"plans/active/{item_id}/implementation.md", implementation_plan(item_id, title))
            self._write(f"plans/active/{item_id}/summary.md", plan_summary(item_id))
            ctx = TurnCode(iteration=0, focus=item_id, rng=rng, taken_names=names)
            for rel in area.modules:
                if (self.repo / rel).exists():
                    continue
                f = SourceFile(self.repo, rel)
                grow_module(ctx, f, 5 + 11 + 13, f.module, True)
                self._write(rel, f.text)
            tests = SourceFile(self.repo, area.tests)
            grow_tests(ctx, tests, 14, [s for s in ctx.subjects if s.kind in ("function", "class")])
            self._write(area.tests, tests.text)
        ledger.focus = CATALOG[0][0]
        self._write(LEDGER_PATH, ledger.render())
        first = CATALOG[0]
        self._write(BRIEF_PATH, render_brief(
            {"Summary": "Loop start: capture evidence for the first ledger item.", "Mode": "Docs",
             "Focus": f"{first[0]} — {first[1]}", "Branch": "main", "Mapped tests": "none — evidence-only",
             "Artifacts": f"plans/active/{first[0]}/", "Do Now": "Read the ledger and the prompts.",
             "If Blocked": "Note it in galph_memory.md."}, first[0], f"plans/active/{first[0]}", []))
        self.baton = {}
        self._set_baton(iteration=1, expected_actor="galph", status="waiting-galph",
                        galph_commit=None, ralph_commit=None, last_prompt=None, last_prompt_actor=None)
        self.bootstrap_sha = self._commit("Initial loop scaffold: package, tests, prompts, ledger")
        self._advance(600)

    def _load(self) -> None:
        """Read the loop's state back from the repository (and the simulator's notes in .git)."""
        baton_path = self.repo / BATON_PATH
        try:
            self.baton = json.loads(baton_path.read_text(encoding="utf-8")) if baton_path.exists() else {}
        except (ValueError, OSError):
            self.baton = {}
        if not isinstance(self.baton, dict):
            self.baton = {}
        self.iteration = int(self.baton.get("iteration") or 1)
        self._phase = "ralph" if self.baton.get("expected_actor") == "ralph" else "galph"
        ledger_path = self.repo / LEDGER_PATH
        self.ledger = Ledger.parse(ledger_path.read_text(encoding="utf-8")) if ledger_path.exists() else Ledger()
        if self.ledger.focus is None:
            active = [i.id for i in self.ledger.items if i.status == "in_progress"]
            self.ledger.focus = active[0] if active else None
        sim = {}
        state_path = self.git.git_dir / STATE_FILE
        if state_path.exists():
            try:
                sim = json.loads(state_path.read_text(encoding="utf-8"))
            except ValueError:
                sim = {}
        self.dwell: dict[str, int] = dict(sim.get("dwell", {}))
        self.global_dwell: int = int(sim.get("global_dwell", 0))
        self.landings: dict[str, int] = dict(sim.get("landings", {}))
        self.quota: dict[str, int] = dict(sim.get("quota", {}))
        self.hubs: dict[str, str] = dict(sim.get("hubs", {}))
        self._last_landed: bool = bool(sim.get("last_landed", False))
        self._stuck: str | None = sim.get("stuck")
        for item in self.ledger.items:
            if item.id not in self.hubs:
                reports = self.repo / "plans" / "active" / item.id / "reports"
                stamps = sorted(p.name for p in reports.iterdir() if p.is_dir()) if reports.is_dir() else []
                if stamps:
                    self.hubs[item.id] = f"plans/active/{item.id}/reports/{stamps[-1]}"
        self._names: set[str] = set()
        tracked = self.git.out("ls-files", "-z", "--", "*.py").split("\0") if self.git.has_commits() else []
        for rel in filter(None, tracked):
            path = self.repo / rel
            if path.is_file():
                self._names |= function_names(path.read_text(encoding="utf-8", errors="replace").split("\n"))
        if not self.real_time:
            head = self.git.head_time()
            if head is not None:
                self._clock = max(self._clock, head + timedelta(minutes=2))

    def _save_state(self) -> None:
        state = {
            "dwell": self.dwell, "global_dwell": self.global_dwell, "landings": self.landings,
            "quota": self.quota, "hubs": self.hubs, "last_landed": self._last_landed, "stuck": self._stuck,
        }
        (self.git.git_dir / STATE_FILE).write_text(json.dumps(state, indent=1, sort_keys=True), encoding="utf-8")

    # ================================================================== low level

    def _now(self) -> datetime:
        if self.real_time:
            return datetime.now(timezone.utc).replace(microsecond=0)
        return self._clock

    def _advance(self, seconds: int) -> None:
        if not self.real_time:
            self._clock += timedelta(seconds=seconds)

    def _pause(self, stop: threading.Event | None) -> bool:
        """Wait `pace` seconds between turns; True when asked to stop."""
        if self.pace > 0:
            if stop is not None:
                return stop.wait(self.pace)
            time.sleep(self.pace)
        return stop is not None and stop.is_set()

    def _mark(self, rel: str, path: Path) -> None:
        """Note `rel` for the next commit (and whether git has yet to learn of it)."""
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            self._new.add(rel)
        self._touched.add(rel)

    def _write(self, rel: str, text: str) -> None:
        path = self.repo / rel
        self._mark(rel, path)
        path.write_text(text, encoding="utf-8")

    def _write_bytes(self, rel: str, data: bytes) -> None:
        path = self.repo / rel
        self._mark(rel, path)
        path.write_bytes(data)

    def _append(self, rel: str, text: str) -> None:
        path = self.repo / rel
        self._mark(rel, path)
        with path.open("a", encoding="utf-8") as fh:
            fh.write(text)

    def _set_baton(self, **changes: object) -> None:
        """Rewrite the baton with `changes`; the key order is always the driver's."""
        self.baton.update(changes)
        now = self._now()
        self.baton["last_update"] = iso(now)
        self.baton["lease_expires_at"] = iso(now + LEASE)
        order = ("iteration", "expected_actor", "status", "last_update", "lease_expires_at",
                 "galph_commit", "ralph_commit", "last_prompt", "last_prompt_actor")
        ordered = {key: self.baton.get(key) for key in order}
        ordered.update({k: v for k, v in self.baton.items() if k not in ordered})
        self.baton = ordered
        self._write(BATON_PATH, render_baton(ordered))

    def _running(self, n: int, actor: str, prompt: str, shas: list[str], messages: list[str]) -> None:
        """The driver hands the turn to `actor`: a running baton and its SYNC commit (only with SYNC commits on)."""
        if self.sync_commits:
            self._set_baton(iteration=n, expected_actor=actor, status=f"running-{actor}",
                            last_prompt=prompt, last_prompt_actor=actor)
            self._sync(f"[SYNC i={n}] actor={actor} status=running", shas, messages)

    def _handoff(self, message: str, shas: list[str], messages: list[str], **baton: object) -> None:
        """The driver's hand-off: a baton naming the turn's commit, committed as a SYNC commit.

        Without SYNC commits the hand-off state already rode in the work commit; the
        commit's own sha is only remembered, for the next baton the loop writes.
        """
        if self.sync_commits:
            self._set_baton(**baton)
            self._sync(message, shas, messages)
        else:
            self.baton.update({k: v for k, v in baton.items() if k.endswith("_commit")})

    def _sync(self, message: str, shas: list[str], messages: list[str]) -> None:
        """A driver bookkeeping commit of the baton (folded into the next commit when SYNC commits are off)."""
        if self.sync_commits:
            shas.append(self._commit(message, [BATON_PATH]))
            messages.append(message)
            self._advance(self.rng.randint(5, 30))

    def _commit(self, message: str, paths: list[str] | None = None) -> str:
        chosen = sorted(self._touched) if paths is None else sorted(paths)
        sha = self.git.commit(chosen, message, self._now(), self._new)
        self._touched -= set(chosen)
        self._new -= set(chosen)
        self._advance(self.rng.randint(5, 40))
        return sha

    def _require_clean(self) -> None:
        states = self.git.blocking_states()
        if states:
            raise SimulatorError(
                f"git state in progress ({', '.join(states)}): call recover() or git_state(state, False) first"
            )

    def _record(self, record: TurnRecord) -> None:
        self.records.append(record)
        self._save_state()
        if self._emit is not None:
            self._emit(record)


def _edit_first_marker(text: str, marker: str, note: str) -> str:
    """`text` with the first line holding `marker` (else the first line) changed by `note`."""
    lines = text.split("\n") if text else [""]
    index = next((i for i, line in enumerate(lines) if marker in line), 0)
    lines[index] = f"{lines[index]} {note}".strip()
    out = "\n".join(lines)
    return out if out.endswith("\n") else out + "\n"
