"""The loop's bookkeeping files as the simulator writes them: ledger, brief, memory,
baton, prompts, hub summaries, pytest logs and the initial repository scaffold.

Shapes follow shared/spec/agent-loop-formats.md. The ledger is kept as a small
model (`Ledger`) and rendered whole on every change; `Ledger.parse` reads back
what `render` wrote, so a simulator can continue an existing repository.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass, field
from datetime import datetime

LEDGER_PATH = "docs/fix_plan.md"
BRIEF_PATH = "input.md"
MEMORY_PATH = "galph_memory.md"
BATON_PATH = "sync/state.json"
PROMPTS = ("prompts/main.md", "prompts/supervisor.md")
CONFIG_MODULE = "ptycho/config/config.py"


@dataclass(frozen=True)
class Area:
    """The code a ledger item works on."""

    modules: tuple[str, ...]
    tests: str
    script: str | None = None


# The ledger items a new repository starts with, in order, with the code each touches.
CATALOG: tuple[tuple[str, str, str, Area], ...] = (
    ("OVERSAMPLING-001", "Oversampling guardrails for neighbor pools", "Critical",
     Area(("ptycho/raw_data.py",), "tests/test_oversampling.py", "scripts/training/train.py")),
    ("INTEGRATE-PYTORCH-001", "PyTorch backend parity for inference", "High",
     Area(("ptycho/workflows/backend_selector.py",), "tests/scripts/test_inference_backend_selector.py",
          "scripts/inference/inference.py")),
    ("TEST-GOLDEN-001", "Regenerate golden datasets", "Medium",
     Area(("ptycho/loader.py",), "tests/test_loader.py")),
    ("STUDY-SYNTH-DOSE-001", "Synthetic dose overlap study", "High",
     Area(("ptycho/metrics.py",), "tests/study/test_dose_overlap.py", "scripts/study/dose_overlap.py")),
    ("PARITY-LOGGER-002", "D0 parity logger", "Medium",
     Area(("ptycho/parity_log.py",), "tests/tools/test_parity_log.py")),
    ("CONFIG-BRIDGE-001", "Legacy config bridge for PyTorch workflows", "High",
     Area(("ptycho/workflows/components.py",), "tests/test_config_bridge.py", "scripts/training/train.py")),
)
AREAS = {item_id: area for item_id, _, _, area in CATALOG}
SCRIPTS = {
    "scripts/training/train.py": ("TrainingConfig", "Train a reconstruction model.", "epochs", "int", "10"),
    "scripts/inference/inference.py": ("InferenceConfig", "Reconstruct images with a trained model.", "model_path", "str", '"model.h5"'),
    "scripts/study/dose_overlap.py": ("StudyConfig", "Run the synthetic dose overlap study.", "n_groups", "int", "8"),
}


def iso(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def hub_stamp(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H%M%SZ")


# --------------------------------------------------------------------------- ledger


@dataclass
class LedgerItem:
    id: str
    title: str
    priority: str = "High"
    status: str = "pending"
    owner: str = ""
    plan: str = ""
    attempts: list[str] = field(default_factory=list)
    next_actions: list[str] = field(default_factory=list)


_SECTION_RE = re.compile(r"^## \[([^\]]+)\] (.+)$")


@dataclass
class Ledger:
    items: list[LedgerItem] = field(default_factory=list)
    focus: str | None = None
    updated: str = ""

    def get(self, item_id: str) -> LedgerItem | None:
        return next((item for item in self.items if item.id == item_id), None)

    def render(self) -> str:
        out = ["# Fix Plan Ledger", "", f"**Last Updated:** {self.updated}", "**Active Focus:**"]
        current = self.get(self.focus) if self.focus else None
        if current:
            label = {"Critical": "CRITICAL", "High": "HIGH"}.get(current.priority, "ACTIVE")
            out.append(f"- {label}: `[{current.id}]` — {current.title} ({current.status})")
        else:
            out.append("- none")
        out += ["", "## Index", "| ID | Title | Priority | Status |", "| --- | --- | --- | --- |"]
        for item in self.items:
            out.append(f"| [{item.id}](#{item.id.lower()}) | {item.title} | {item.priority} | {item.status} |")
        for item in self.items:
            out += [
                "",
                f"## [{item.id}] {item.title}",
                f"- Priority: {item.priority}",
                f"- Status: {item.status}",
                f"- Owner/Date: {item.owner}",
                f"- Plan References: `{item.plan}`",
                "- Attempts History:",
                *[f"  * {a}" for a in item.attempts],
                "- Next Actions:",
                *[f"  - {a}" for a in item.next_actions],
            ]
        return "\n".join(out) + "\n"

    @classmethod
    def parse(cls, text: str) -> "Ledger":
        ledger = cls()
        item: LedgerItem | None = None
        block = ""
        for line in text.splitlines():
            if line.startswith("**Last Updated:** "):
                ledger.updated = line[len("**Last Updated:** "):]
            m = re.match(r"^- \w+: `\[([^\]]+)\]`", line)
            if m and ledger.focus is None and item is None:
                ledger.focus = m.group(1)
            m = _SECTION_RE.match(line)
            if m:
                item = LedgerItem(m.group(1), m.group(2))
                ledger.items.append(item)
                block = ""
                continue
            if item is None:
                continue
            for key, attr in (("- Priority: ", "priority"), ("- Status: ", "status"), ("- Owner/Date: ", "owner")):
                if line.startswith(key):
                    setattr(item, attr, line[len(key):])
            if line.startswith("- Plan References: "):
                item.plan = line[len("- Plan References: "):].strip("`")
            elif line == "- Attempts History:":
                block = "attempts"
            elif line == "- Next Actions:":
                block = "next"
            elif line.startswith("  * ") and block == "attempts":
                item.attempts.append(line[4:])
            elif line.startswith("  - ") and block == "next":
                item.next_actions.append(line[4:])
        return ledger


# --------------------------------------------------------------------------- brief, memory, baton


BRIEF_KEYS = ("Summary", "Mode", "Focus", "Branch", "Mapped tests", "Artifacts", "Do Now", "If Blocked")


def render_brief(fields: dict[str, str], focus: str, hub: str, selectors: list[str]) -> str:
    lines = [f"{key}: {fields[key]}" for key in BRIEF_KEYS if key in fields]
    lines += [f"{key}: {value}" for key, value in fields.items() if key not in BRIEF_KEYS]
    first = selectors[0] if selectors else "the mapped selector"
    lines += [
        "Priorities & Rationale:",
        f"- {focus} is the active ledger item; land the smallest change that moves it.",
        "- Tests move with the code: no implementation without a validating test.",
        "How-To Map:",
        f"- Run `pytest {first} -q` and keep the log under {hub}/green/.",
        f"- Append the turn summary to {hub}/summary.md.",
        "Pitfalls To Avoid:",
        "- Storing bulky artifacts in-repo instead of linking externally or using `.artifacts/`.",
        "- Exposing a flag without wiring its execution path.",
        f"- Opening a new hub: keep {hub}/ until a real milestone lands.",
        "Pointers:",
        f"- plans/active/{focus}/implementation.md",
        "- docs/fix_plan.md",
    ]
    return "\n".join(lines) + "\n"


def memory_entry(when: datetime, focus: str, state: str, dwell: int, action: str, hub: str, next_action: str, note: str) -> str:
    return (
        f"\n## {iso(when)}\n"
        f"focus={focus} state={state} dwell={dwell} action_type={action} artifacts={hub}/ next_action={next_action}\n"
        f"- {note}\n"
    )


def render_baton(baton: dict) -> str:
    return json.dumps(baton, indent=2, ensure_ascii=False) + "\n"


# --------------------------------------------------------------------------- hubs and logs


def pytest_log(selectors: list[str], passed: int, failed: int, rng: random.Random) -> str:
    total = passed + failed
    lines = [
        "============================= test session starts ==============================",
        "platform linux -- Python 3.11.7, pytest-8.3.2, pluggy-1.5.0",
        f"collected {total} item{'s' if total != 1 else ''}",
        "",
    ]
    names = selectors or ["tests"]
    for i in range(total):
        sel = names[i % len(names)]
        outcome = "FAILED" if i >= passed else "PASSED"
        pct = int(100 * (i + 1) / max(total, 1))
        lines.append(f"{sel} {outcome}".ljust(72) + f"[{pct:3d}%]")
    seconds = rng.uniform(0.2, 9.0)
    summary = f"{passed} passed" + (f", {failed} failed" if failed else "")
    lines += ["", f"{'=' * 30} {summary} in {seconds:.2f}s {'=' * 30}"]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- prompts


MAIN_PROMPT = """# Engineer prompt (ralph)

You are the engineer of an autonomous loop. Each turn:

1. Read `input.md` (the supervisor's brief) and the ledger `docs/fix_plan.md`.
2. Required reading: `docs/specs/spec-ptycho-core.md`, `specs/data_contracts.md`.
3. Carry out the Do Now: production change and its tests, in one turn.
4. Run the mapped tests; archive logs under the hub's `green/` (or `red/`) folder.
5. Append an Attempt to the ledger item with the result and the artifacts path.
6. Commit as `RALPH AUTO (prompt=main.md) (iter=NNNNN): <what> — tests: <selectors and outcome>`.

Rules:
- Testing proof is mandatory: name the selectors you ran and their outcome.
- Never expose a CLI flag or config field without wiring its execution path.
- Storing bulky artifacts in-repo instead of linking externally or using `.artifacts/` is not allowed.
- Keep the long-lived `plans/active/<initiative>/summary.md`; prepend Turn Summaries.
"""

SUPERVISOR_PROMPT = """# Supervisor prompt (galph)

You are the supervisor of an autonomous loop. Each turn:

1. Review the engineer's last commit, its hub and the ledger.
2. Decide the focus: one ledger item; update its Status and Next Actions.
3. Write `input.md`: Summary, Mode, Focus, Branch, Mapped tests, Artifacts, Do Now, If Blocked.
4. Append to `galph_memory.md`: `focus=<ID> state=<state> dwell=<n> action_type=<planning|review> artifacts=<hub> next_action=<...>`.
5. Commit as `SUPERVISOR AUTO (prompt=supervisor.md) (iter=NNNNN): <what> — tests: not run`.

Rules:
- Dwell: after 6 consecutive planning loops on one focus with no code landed, escalate (Tier 3 block).
- Pick (or continue using) a timestamped directory under `plans/active/<ID>/reports/` and reuse it until a real milestone lands.
- Mapped tests must be selectors that collect at least one test.
"""

PROMPT_RULES = (
    ("supervisor.md", "Dwell tier 1.5: at dwell=3 require a micro-nucleus of code in the Do Now."),
    ("main.md", "Archive pytest logs under green/ or red/ of the active hub, never at the repo root."),
    ("supervisor.md", "Close a hub explicitly (`hub closed` in its summary.md) when its milestone lands."),
    ("main.md", "Cite the findings or spec IDs the change implements in the commit summary."),
    ("supervisor.md", "Validate every Mapped tests selector with `pytest --collect-only` before handing off."),
    ("main.md", "Wire new config fields end to end: parser, config object, execution path, test."),
)


# --------------------------------------------------------------------------- scaffold


def config_module() -> str:
    parts = [
        '"""Configuration dataclasses shared by the training, inference and study entry points."""',
        "",
        "import logging",
        "from dataclasses import dataclass",
        "",
        "_log = logging.getLogger(__name__)",
    ]
    for cls, doc, dest, typ, default in (
        ("TrainingConfig", "Options of a training run.", "epochs", "int", "10"),
        ("InferenceConfig", "Options of an inference run.", "model_path", "str", '"model.h5"'),
        ("StudyConfig", "Options of a parameter study.", "n_groups", "int", "8"),
    ):
        parts += ["", "", "@dataclass", f"class {cls}:", f'    """{doc}"""', "", f"    {dest}: {typ} = {default}", "    seed: int = 0"]
    return "\n".join(parts) + "\n"


def script_module(rel: str) -> str:
    cls, description, dest, typ, default = SCRIPTS[rel]
    option = "--" + dest.replace("_", "-")
    stem = rel.rsplit("/", 1)[-1][:-3]
    return f'''"""Command-line entry point: {description[:-1].lower()}."""

import argparse
import logging

from ptycho.config.config import {cls}

_log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    """Options of the {stem} entry point."""
    parser = argparse.ArgumentParser(description="{description}")
    parser.add_argument("{option}", type={typ}, default={default})
    return parser


def main(argv: list[str] | None = None) -> {cls}:
    """Parse the options into a {cls}."""
    args = build_parser().parse_args(argv)
    config = {cls}()
    config.{dest} = args.{dest}
    _log.info("{stem} config: %s", config)
    return config


if __name__ == "__main__":
    main()
'''


STATIC_FILES = {
    "README.md": "# ptycho-loop\n\nA repository driven by an autonomous supervisor (galph) / engineer (ralph) loop.\n"
    "This one is played by the loopmon simulator: every file and commit follows the loop's formats.\n",
    ".gitignore": ".artifacts/\n.loopmon/\n__pycache__/\n*.pyc\n.pytest_cache/\n",
    "conftest.py": '"""Repository root on sys.path, so tests import `ptycho` and `scripts`."""\n',
    "ptycho/__init__.py": '"""Reconstruction package the loop works on."""\n',
    "ptycho/config/__init__.py": "",
    "ptycho/workflows/__init__.py": "",
    "scripts/__init__.py": "",
    "scripts/training/__init__.py": "",
    "scripts/inference/__init__.py": "",
    "scripts/study/__init__.py": "",
    MEMORY_PATH: "# galph memory\n\nSupervisor notes to itself, newest last.\n",
    "prompts/main.md": MAIN_PROMPT,
    "prompts/supervisor.md": SUPERVISOR_PROMPT,
}


def implementation_plan(item_id: str, title: str) -> str:
    return (
        f"# {item_id}: {title}\n\n"
        "## Phases\n"
        "- Phase A: evidence and failing test\n"
        "- Phase B: implementation behind the mapped tests\n"
        "- Phase C: CLI and config wiring, end to end\n"
        "- Phase D: parity evidence and hub close-out\n\n"
        "## Exit criteria\n"
        "- Mapped tests green, logs archived in the hub.\n"
    )


def plan_summary(item_id: str) -> str:
    return f"# {item_id} summary\n\n## Turn Summaries\n"
