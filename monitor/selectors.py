"""The empty-selector check: does each `Mapped tests` selector of the brief collect any test?

It runs `pytest --collect-only -q` in the watched repo, which imports the repo's
own code, so it is opt-in (`alerts.check_selectors`) and bounded by
`alerts.selector_timeout_seconds`. It is slow and does I/O, so it is not part of
the scorer: the runtime calls `check_selectors` in a worker thread when a
`brief_updated` event arrives and publishes the alert it returns.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from monitor.config import Settings
from monitor.events import Alert, BriefUpdated

# Options that take a value and only narrow the selection; every other option is dropped,
# so a brief cannot make the check load plugins or write files.
_VALUE_OPTIONS = {"-k", "-m"}
_RUNNERS = {"pytest", "py.test", "python", "python3"}


def selector_args(selector: str) -> list[str]:
    """`python -m pytest tests/x.py::test_y -q -k fast` -> ['tests/x.py::test_y', '-k', 'fast']."""
    text = selector.strip().strip("`").strip()
    try:
        tokens = [t.strip("`") for t in shlex.split(text)]
    except ValueError:
        tokens = [t.strip("`") for t in text.split()]
    while tokens and (tokens[0] in _RUNNERS or (tokens[0] == "-m" and len(tokens) > 1 and tokens[1] in _RUNNERS)):
        tokens = tokens[2:] if tokens[0] == "-m" else tokens[1:]
    args: list[str] = []
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if tok in _VALUE_OPTIONS and i + 1 < len(tokens):
            args += [tok, tokens[i + 1]]
            i += 2
            continue
        if tok and not tok.startswith("-"):
            args.append(tok)
        i += 1
    return args


@dataclass
class Collected:
    selector: str
    count: int | None  # None: the check could not tell (timeout, pytest missing)
    returncode: int | None
    output: str


def collect(repo: str | Path, selector: str, settings: Settings) -> Collected:
    """How many tests one selector collects in `repo`."""
    args = selector_args(selector)
    if not args:
        return Collected(selector, 0, None, "not a test selector")
    base = list(settings.alerts.selector_command) or [sys.executable, "-m", "pytest"]
    argv = base + ["--collect-only", "-q", "-p", "no:cacheprovider", *args]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    try:
        proc = subprocess.run(
            argv, cwd=str(repo), env=env, capture_output=True, timeout=settings.alerts.selector_timeout_seconds, check=False
        )
    except subprocess.TimeoutExpired:
        return Collected(selector, None, None, f"timed out after {settings.alerts.selector_timeout_seconds} s")
    except OSError as exc:
        return Collected(selector, None, None, f"could not run {argv[0]}: {exc}")
    out = proc.stdout.decode("utf-8", errors="replace")
    count = sum(1 for line in out.splitlines() if "::" in line and not line.startswith(("ERROR", "FAILED", "=")))
    if proc.returncode not in (0, 2, 4, 5):
        return Collected(selector, None, proc.returncode, out[-500:])
    return Collected(selector, count, proc.returncode, out[-500:])


def check_selectors(
    repo: str | Path,
    brief: BriefUpdated,
    settings: Settings,
    *,
    iteration: int | None = None,
    on_error: Callable[[str], None] | None = None,
) -> Alert | None:
    """An `empty_selector` alert when a mapped selector collects 0 tests; None when all collect some.

    Does nothing (None) unless `alerts.check_selectors` is on. A check that cannot
    tell (timeout, no pytest) is reported through `on_error`, not as an alert.
    """
    if not settings.alerts.check_selectors or brief.mapped_tests_none or not brief.mapped_tests:
        return None
    empty: list[Collected] = []
    for selector in brief.mapped_tests:
        result = collect(repo, selector, settings)
        if result.count is None:
            if on_error is not None:
                on_error(f"selector check for {selector!r} gave no answer: {result.output.strip()[-200:]}")
            continue
        if result.count == 0:
            empty.append(result)
    if not empty:
        return None
    names = [e.selector for e in empty]
    return Alert(
        alert="empty_selector",
        severity="warning",
        key=f"empty_selector:{brief.digest}:{'|'.join(names)}"[:500],
        iteration=iteration,
        focus=brief.focus,
        message=(
            f"Mapped tests in {brief.path} collect 0 tests: {', '.join(names[:4])}. "
            "The engineer will 'pass' a selector that runs nothing: fix the selector or write the test first."
        ),
        detail={"selectors": names, "outputs": [e.output.strip()[-200:] for e in empty]},
    )
