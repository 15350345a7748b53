"""The opt-in empty-selector check runs when the brief changes, and only when enabled."""

from __future__ import annotations

import threading
import time
from typing import Any

from collectors.brief import BriefCollector
from monitor.config import AlertSettings, Settings

from conftest import GitRepo

BRIEF = """Summary: wire the flag
Mode: Code
Focus: FEAT-001
Mapped tests: pytest tests/test_flag.py::test_missing -q
Artifacts: plans/active/FEAT-001/reports/20260105T090000Z/
"""


def collect_brief(repo: GitRepo, settings: Settings, wait: float) -> list[Any]:
    got: list[Any] = []
    lock = threading.Lock()

    def emit(payload: Any, when: Any = None) -> None:
        with lock:
            got.append(payload)

    repo.write("tests/test_flag.py", "def test_present():\n    assert True\n")
    repo.write("input.md", BRIEF)
    BriefCollector(repo.root, settings, emit).scan()
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline and not any(p.kind == "alert" for p in got):
        time.sleep(0.05)
    return got


def test_a_selector_that_collects_nothing_raises_an_alert_when_enabled(repo: GitRepo) -> None:
    settings = Settings(alerts=AlertSettings(check_selectors=True, selector_timeout_seconds=60))
    got = collect_brief(repo, settings, wait=60)
    alerts = [p for p in got if p.kind == "alert"]
    assert [a.alert for a in alerts] == ["empty_selector"]
    assert "tests/test_flag.py::test_missing" in alerts[0].message


def test_the_check_never_runs_by_default(repo: GitRepo) -> None:
    before = {t.name for t in threading.enumerate()}
    got = collect_brief(repo, Settings(), wait=0.5)
    assert [p.kind for p in got] == ["brief_updated"]
    assert "loopmon-selectors" not in {t.name for t in threading.enumerate()} - before
