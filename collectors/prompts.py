"""The loop's prompts (`prompts/*.md` by default, `files.prompts` globs).

Every change to a prompt is a `prompt_changed`: its new digest, the previous one,
and how many lines were added and removed (difflib). The first sight of a prompt
(at start, or a new file) has `previous_digest` None and counts every line as
added; a deleted prompt has `deleted` set, an empty digest, and counts every line
as removed. The audit compares scores before and after such changes.
"""

from __future__ import annotations

import difflib
import os
from collections import Counter
from pathlib import Path
from typing import Any

from collectors.base import Collector, Emit
from collectors.textfile import read_file, touched_paths
from monitor.config import Settings
from monitor.events import PromptChanged, digest
from monitor.paths import compile_globs

# Past this many line pairs difflib's matcher gets slow; a multiset count is close enough.
_EXACT_DIFF_LIMIT = 4_000_000


def line_changes(old: str, new: str) -> tuple[int, int]:
    """(lines added, lines removed) going from `old` to `new`."""
    a, b = old.splitlines(), new.splitlines()
    if len(a) * len(b) > _EXACT_DIFF_LIMIT:
        before, after = Counter(a), Counter(b)
        return sum((after - before).values()), sum((before - after).values())
    added = removed = 0
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if tag in ("replace", "delete"):
            removed += i2 - i1
        if tag in ("replace", "insert"):
            added += j2 - j1
    return added, removed


class PromptTracker:
    """Diffs successive contents of prompt files; `None` content means the file is gone."""

    def __init__(self) -> None:
        self._texts: dict[str, str] = {}

    def known(self) -> list[str]:
        return list(self._texts)

    def update(self, path: str, text: str | None) -> list[PromptChanged]:
        old = self._texts.get(path)
        if text is None:
            if old is None:
                return []
            del self._texts[path]
            return [
                PromptChanged(
                    path=path,
                    digest="",
                    previous_digest=digest(old),
                    lines_added=0,
                    lines_removed=len(old.splitlines()),
                    deleted=True,
                )
            ]
        if old == text:
            return []
        self._texts[path] = text
        added, removed = line_changes(old or "", text)
        return [
            PromptChanged(
                path=path,
                digest=digest(text),
                previous_digest=None if old is None else digest(old),
                lines_added=added,
                lines_removed=removed,
            )
        ]


def _literal_prefix(glob: str) -> str:
    """The folder part of a glob before its first wildcard: where a scan needs to look."""
    parts: list[str] = []
    for part in glob.split("/")[:-1]:
        if any(c in part for c in "*?["):
            break
        parts.append(part)
    return "/".join(parts)


class PromptCollector(Collector):
    """Reads the prompt files (`files.prompts` globs) whenever one changes."""

    name = "prompts"

    def __init__(self, root: str | Path, settings: Settings, emit: Emit) -> None:
        super().__init__(root, settings, emit)
        self.globs = list(settings.files.prompts)
        self._pattern = compile_globs(self.globs)
        self.tracker = PromptTracker()
        self._errors: dict[str, str] = {}

    def wants(self, path: str) -> bool:
        return self._pattern is not None and self._pattern.match(path) is not None

    def scan(self) -> None:
        # Known prompts too: one deleted while a restored collector was down is a change.
        for path in dict.fromkeys(self._existing() + self.tracker.known()):
            self.refresh(path)

    def state(self) -> dict[str, Any] | None:
        return {"texts": dict(self.tracker._texts)}

    def restore(self, state: dict[str, Any]) -> None:
        texts = state.get("texts") or {}
        self.tracker._texts.update({p: t for p, t in texts.items() if isinstance(t, str) and self.wants(p)})

    def on_changes(self, changes: list[Any]) -> None:
        for path in touched_paths(changes, self.wants):
            self.refresh(path)

    def refresh(self, path: str) -> None:
        read = read_file(self.root, path)
        if read.error is not None:
            if self._errors.get(path) != read.error:
                self._errors[path] = read.error
                self.warn("prompt_unreadable", f"{path} cannot be read: {read.error}", path=path)
            return
        self._errors.pop(path, None)
        for payload in self.tracker.update(path, read.text if read.exists else None):
            self.emit(payload, None)

    def _existing(self) -> list[str]:
        """Prompt files on disk now, walking only below each glob's literal folder."""
        found: dict[str, None] = {}
        for base in sorted({_literal_prefix(g) for g in self.globs}):
            top = self.root / base if base else self.root
            if not top.is_dir():
                continue
            for dirpath, dirs, names in os.walk(top):
                rel_dir = Path(dirpath).relative_to(self.root).as_posix()
                rel_dir = "" if rel_dir == "." else rel_dir
                dirs[:] = sorted(d for d in dirs if d != ".git" and not (rel_dir == "" and d == ".loopmon"))
                for name in sorted(names):
                    rel = f"{rel_dir}/{name}" if rel_dir else name
                    if self.wants(rel):
                        found[rel] = None
        return list(found)
