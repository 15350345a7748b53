"""Git states that stop a loop: a rebase or merge in progress, a stale index.lock, a detached HEAD.

Read straight from `.git` (no subprocess): the watcher says when something in
`.git` moved, and the once-a-second tick ages `index.lock`.
"""

from __future__ import annotations

import os
import time
from datetime import datetime
from pathlib import Path

from collectors.base import Collector, Emit
from collectors.gitrepo import git_dir, read_head
from monitor.config import Settings
from monitor.events import GitStateChanged

# state name -> file or folder inside .git whose presence means it
MARKERS = {"rebase-merge": "rebase-merge", "rebase-apply": "rebase-apply", "merge": "MERGE_HEAD"}


class GitStateCollector(Collector):
    name = "gitstate"

    def __init__(self, root: str | Path, settings: Settings, emit: Emit) -> None:
        super().__init__(root, settings, emit)
        self.git_dir = git_dir(self.root)
        self.active: dict[str, bool] = {}

    def wants(self, path: str) -> bool:
        if not path.startswith(".git/"):
            return False
        name = path[len(".git/") :].split("/", 1)[0]
        return name in ("rebase-merge", "rebase-apply", "MERGE_HEAD", "index.lock", "HEAD")

    def _observe(self) -> dict[str, tuple[bool, str]]:
        seen: dict[str, tuple[bool, str]] = {}
        for state, marker in MARKERS.items():
            present = (self.git_dir / marker).exists()
            detail = ""
            if present and state.startswith("rebase"):
                detail = self._rebase_detail(self.git_dir / marker)
            seen[state] = (present, detail)
        try:
            age = time.time() - os.stat(self.git_dir / "index.lock").st_mtime
            stale = age > self.settings.watch.index_lock_stale_seconds
            seen["index-lock-stale"] = (stale, f".git/index.lock is {age:.0f} s old" if stale else "")
        except OSError:
            seen["index-lock-stale"] = (False, "")
        head = read_head(self.root)
        detached = head is not None and not head.startswith("ref:") and bool(head)
        seen["detached-head"] = (detached, f"HEAD is {head[:12]}" if detached and head else "")
        return seen

    @staticmethod
    def _rebase_detail(folder: Path) -> str:
        try:
            onto = (folder / "head-name").read_text(encoding="utf-8", errors="replace").strip()
            return f"rebasing {onto}"
        except OSError:
            return ""

    def _update(self) -> None:
        for state, (present, detail) in self._observe().items():
            if self.active.get(state, False) != present:
                self.active[state] = present
                self.emit(GitStateChanged(state=state, active=present, detail=detail), None)  # type: ignore[arg-type]

    def scan(self) -> None:
        # Only problems present at start are news (a clean state is the default), or,
        # after `restore`, any change since the saved state.
        self._update()

    def state(self) -> dict | None:
        return {"active": dict(self.active)}

    def restore(self, state: dict) -> None:
        active = state.get("active") or {}
        self.active.update({k: v for k, v in active.items() if isinstance(v, bool)})

    def on_changes(self, changes: list) -> None:
        self._update()

    def tick(self, now: datetime) -> None:
        self._update()
