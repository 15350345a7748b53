"""Working-tree changes: one `file_changed` per path, or `files_burst` summaries for a flood.

A checkout of 100,000 files must not become 100,000 events. Once more than
`watch.burst_threshold` changes arrive within a second, the collector stops
reporting paths one by one and sends at most one `files_burst` a second
(count, bytes, classes, largest file) until the flood is over.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

from collectors.base import Collector, Emit
from collectors.watch import Change
from monitor.config import Settings
from monitor.events import FileChanged, FilesBurst, decode_text
from monitor.paths import PathClassifier, compile_globs


def repo_text(path: str) -> tuple[str, bytes | None]:
    """A path as watchdog gave it (surrogate-escaped) -> (readable, exact bytes if not UTF-8)."""
    return decode_text(os.fsencode(path))


class GitIgnore:
    """Asks git which paths `.gitignore` excludes, one process per batch, with a cache."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._cache: dict[str, bool] = {}

    def invalidate(self) -> None:
        self._cache.clear()

    def ignored(self, paths: list[str]) -> set[str]:
        unknown = [p for p in paths if p not in self._cache]
        if unknown:
            found = self._ask(unknown)
            for p in unknown:
                self._cache[p] = p in found
            if len(self._cache) > 200_000:
                self._cache.clear()
        return {p for p in paths if self._cache.get(p)}

    def _ask(self, paths: list[str]) -> set[str]:
        data = b"\0".join(os.fsencode(p) for p in paths) + b"\0"
        try:
            proc = subprocess.run(
                ["git", "-C", str(self.root), "check-ignore", "-z", "--stdin"],
                input=data,
                capture_output=True,
                timeout=10,
            )
        except (OSError, subprocess.TimeoutExpired):
            return set()
        # Exit 1: nothing ignored; 128: not a repo or other trouble (then ignore nothing).
        if proc.returncode != 0:
            return set()
        return {os.fsdecode(p) for p in proc.stdout.split(b"\0") if p}


FLOOD_WINDOW = 1.0  # seconds: the rate window, and the most often a flood is summarised


class FileCollector(Collector):
    name = "files"

    def __init__(self, root: str | Path, settings: Settings, emit: Emit) -> None:
        super().__init__(root, settings, emit)
        self.classifier = PathClassifier(settings.paths)
        self._ignore = compile_globs(settings.watch.ignore)
        self._gitignore = GitIgnore(self.root) if settings.watch.respect_gitignore else None
        self._lock = threading.Lock()
        self._window_start = 0.0
        self._window_count = 0  # changes seen in the current one-second window
        self._flood: list[Change] = []  # changes held for the next summary
        self._flood_since = 0.0

    def wants(self, path: str) -> bool:
        if not path or path == ".git" or path.startswith(".git/"):
            return False
        return not (self._ignore is not None and self._ignore.match(path))

    def on_changes(self, changes: list[Change]) -> None:
        files = [c for c in changes if not c.is_dir]
        if self._gitignore is not None:
            if any(c.path.endswith(".gitignore") or (c.dest or "").endswith(".gitignore") for c in files):
                self._gitignore.invalidate()
            ignored = self._gitignore.ignored([c.dest or c.path for c in files])
            files = [c for c in files if (c.dest or c.path) not in ignored]
        if not files:
            return
        with self._lock:
            now = time.monotonic()
            if now - self._window_start >= FLOOD_WINDOW:
                self._window_start, self._window_count = now, 0
            self._window_count += len(files)
            if self._flood or self._window_count > self.settings.watch.burst_threshold:
                if not self._flood:
                    self._flood_since = now
                self._flood.extend(files)
                if now - self._flood_since >= FLOOD_WINDOW:
                    self._end_flood_summary()
                return
        for change in files:
            self._emit_change(change)

    def tick(self, now: datetime) -> None:
        with self._lock:
            if self._flood and time.monotonic() - self._flood_since >= FLOOD_WINDOW:
                self._end_flood_summary()

    def _end_flood_summary(self) -> None:
        """Send what the flood held so far (the caller holds the lock)."""
        held, self._flood = self._flood, []
        self._emit_burst(held)

    def _size(self, path: str) -> int | None:
        try:
            return os.stat(self.root / path).st_size
        except OSError:
            return None

    def _emit_change(self, change: Change) -> None:
        text, raw = repo_text(change.path)
        current = change.dest if change.kind == "moved" and change.dest else change.path
        size = None if change.kind == "deleted" else self._size(current)
        self.emit(
            FileChanged(
                path=text,
                path_bytes=raw,
                change=change.kind,  # type: ignore[arg-type]
                dest_path=repo_text(change.dest)[0] if change.dest else None,
                size=size,
                path_class=self.classifier.classify(repo_text(current)[0]),  # type: ignore[arg-type]
            ),
            None,
        )

    def _emit_burst(self, files: list[Change]) -> None:
        by_class: Counter[str] = Counter()
        total = 0
        largest: tuple[int, str] | None = None
        for change in files:
            current = change.dest or change.path
            by_class[self.classifier.classify(repo_text(current)[0])] += 1
            size = None if change.kind == "deleted" else self._size(current)
            if size is not None:
                total += size
                if largest is None or size > largest[0]:
                    largest = (size, current)
        self.emit(
            FilesBurst(
                count=len(files),
                bytes=total,
                by_class=dict(by_class),
                sample=[repo_text(c.dest or c.path)[0] for c in files[:10]],
                largest_path=repo_text(largest[1])[0] if largest else None,
                largest_size=largest[0] if largest else None,
            ),
            None,
        )
