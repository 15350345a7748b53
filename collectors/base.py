"""What every collector is: something that reads part of a repo and emits events.

A collector never talks to the bus itself: it is handed an `emit` callable
(payload, event time or None for now). The runtime binds `emit` to a bus
publisher; tests bind it to a list.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any, Callable

from monitor.config import Settings
from monitor.events import Warning

Emit = Callable[[Any, "datetime | None"], None]


class Collector:
    """Base class: override `wants`, `on_changes`, and where useful `scan` and `tick`."""

    name = "collector"

    def __init__(self, root: str | Path, settings: Settings, emit: Emit) -> None:
        self.root = Path(root)
        self.settings = settings
        self.emit = emit

    def wants(self, path: str) -> bool:
        """Whether this collector reads the repo-relative posix `path`."""
        return False

    def on_changes(self, changes: list[Any]) -> None:
        """Debounced changes to paths this collector wants (from the watcher's thread)."""

    def scan(self) -> None:
        """Read the current state once, at start."""

    def tick(self, now: datetime) -> None:
        """Periodic call (about once a second) for time-based checks."""

    def rescan(self) -> None:
        """Read everything again after the watch was lost (the repo folder deleted and
        created again): emit what changed since the last read. Default: `scan`."""
        self.scan()

    def state(self) -> dict[str, Any] | None:
        """What this collector has published so far, as JSON-able data (None: nothing to resume).

        Taken after a call that emitted, and saved once the store has acknowledged those
        events, so a restarted collector can `restore` it. Return copies, never live containers.
        """
        return None

    def restore(self, state: dict[str, Any]) -> None:
        """Take back a saved `state` before `scan`, silently: `scan` then emits only what changed since."""

    def close(self) -> None:
        """Release processes or files the collector holds."""

    def warn(self, code: str, message: str, **detail: Any) -> None:
        self.emit(Warning(code=code, message=message, detail=detail), None)
