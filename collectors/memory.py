"""The supervisor's memory (`galph_memory.md`): one entry per `## <timestamp>` heading.

Two shapes are read:

- a machine-readable line per turn,
  `focus=<ID> state=<state> dwell=<n> action_type=planning artifacts=<hub> next_action=...`;
- labelled bullets, `- Focus issue: <ID> ...`, `- Action type: Planning`,
  `- <Action State>: [ready_for_implementation]`.

The `key=value` line wins where both are present. `parse_memory` is a pure
function of the text; `MemoryTracker` emits each entry once, ever; the collector
reads the file when it changes.

An entry's identity is its heading and how many earlier entries share that
heading. Text is no part of it: an edited old entry is not a new one, and a
trimmed or archived file never brings an entry back.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from collectors.base import Emit
from collectors.textfile import FileRead, OneFileCollector, looks_binary
from monitor.config import Settings
from monitor.events import MemoryEntry, Warning, digest

_FENCE = re.compile(r"^\s{0,3}(`{3,}|~{3,})")
_ENTRY_HEADING = re.compile(r"^##(?!#)[ \t]*(.*)$")
# `key=` at the start of a line or after whitespace; values run to the next key.
_KEY_VALUE = re.compile(r"(?:(?<=\s)|^)(focus|state|dwell|action_type|artifacts|next_action|notes|<action state>)=", re.IGNORECASE)
_LABELLED = re.compile(
    r"^\s*(?:[-*+]\s+)?\**\s*(focus issue|focus|action type|action state|<action state>|state|dwell|artifacts?|next actions?|mode)"
    r"\s*\**\s*:\s*\**\s*(.*?)\s*$",
    re.IGNORECASE,
)
_LEAD_WORD = re.compile(r"^`?\[?`?([A-Za-z][\w.\-]{0,79})")
_STAMP = re.compile(r"(\d{4})-?(\d{2})-?(\d{2})(?:[T ](\d{2}):?(\d{2})(?::?(\d{2}))?)?")
_NONE_VALUES = frozenset({"", "none", "n/a", "na", "-", "—", "null"})

MAX_TEXT = 4000
MAX_FIELD = 500


def _snake(value: str) -> str | None:
    """`Review or housekeeping` -> review_or_housekeeping; `[ready_for_implementation]` -> ready_for_implementation."""
    value = re.sub(r"[\[\]*`.;,]+", " ", value).strip().lower()
    value = re.sub(r"[\s\-/]+", "_", value).strip("_")
    return value[:MAX_FIELD] or None


def _value(raw: str | None) -> str | None:
    if raw is None:
        return None
    value = re.sub(r"\s+", " ", raw.replace("`", "")).strip()
    return None if value.lower() in _NONE_VALUES else value[:MAX_FIELD]


def _dwell(raw: str | None) -> int | None:
    match = re.match(r"^\s*(\d{1,6})\b", raw or "")
    return int(match.group(1)) if match else None


def key_values(text: str) -> dict[str, str]:
    """`focus=X state=Y dwell=2 next_action=ship it <Action State>=Z` -> {focus: X, ...}.

    Single-word keys take one word; next_action and notes run to the next key or
    the end of the line. The first occurrence of each key counts.
    """
    out: dict[str, str] = {}
    for line in text.splitlines():
        matches = list(_KEY_VALUE.finditer(line))
        for n, match in enumerate(matches):
            key = match.group(1).lower()
            key = "state_label" if key == "<action state>" else key
            end = matches[n + 1].start() if n + 1 < len(matches) else len(line)
            value = line[match.end() : end].strip()
            if key not in ("next_action", "notes", "artifacts"):
                value = value.split()[0] if value.split() else ""
            out.setdefault(key, value)
    return out


def _labelled(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        match = _LABELLED.match(line)
        if not match:
            continue
        label = match.group(1).lower().strip("<>")
        key = {
            "focus issue": "focus",
            "focus": "focus",
            "action type": "action_type",
            "action state": "state",
            "state": "state",
            "dwell": "dwell",
            "artifact": "artifacts",
            "artifacts": "artifacts",
            "next action": "next_action",
            "next actions": "next_action",
        }.get(label)
        if key:
            out.setdefault(key, match.group(2))
    return out


def _focus(raw: str | None) -> str | None:
    """A focus value: the ledger ID it opens with (`INTEGRATE-PYTORCH-001 Phase B1 ...`), else the text."""
    value = _value(raw)
    if value is None:
        return None
    match = _LEAD_WORD.match(value)
    word = match.group(1).rstrip(".-") if match else ""
    return word if "-" in word and any(c.isdigit() for c in word) else value


def parse_entry(heading: str, body: str) -> MemoryEntry:
    """One entry, its self-reported fields read from `key=value` tokens or labelled lines."""
    pairs = key_values(body)
    labels = _labelled(body)

    def field(key: str) -> str | None:
        return _value(pairs.get(key)) or _value(labels.get(key))

    state = field("state") or _value(pairs.get("state_label"))
    action_type = field("action_type")
    return MemoryEntry(
        heading=heading[:MAX_FIELD],
        text=body.strip()[:MAX_TEXT],
        focus=_focus(field("focus")),
        state=_snake(state) if state else None,
        dwell=_dwell(field("dwell")),
        action_type=_snake(action_type) if action_type else None,
        artifacts=field("artifacts"),
        next_action=field("next_action"),
    )


def parse_memory(text: str, path: str = "galph_memory.md") -> list[MemoryEntry]:
    """Every `## ` entry of a memory file, in file order. Text before the first entry is not one."""
    entries: list[MemoryEntry] = []
    heading: str | None = None
    body: list[str] = []
    fenced = False

    def close() -> None:
        if heading is not None:
            entry = parse_entry(heading, "\n".join(body))
            entries.append(entry.model_copy(update={"path": path}) if path != entry.path else entry)

    for line in text.splitlines():
        if _FENCE.match(line):
            fenced = not fenced
        match = None if fenced else _ENTRY_HEADING.match(line)
        if match:
            close()
            heading, body = match.group(1).strip().rstrip("#").strip(), []
        elif heading is not None:
            body.append(line)
    close()
    return entries


def entry_time(entry: MemoryEntry) -> datetime | None:
    """The UTC time an entry's heading names (`2026-01-22T022725Z`, `2025-10-17T01:19:18Z: ...`)."""
    match = _STAMP.search(entry.heading)
    if not match:
        return None
    year, month, day, hour, minute, second = (int(g) if g else 0 for g in match.groups())
    try:
        return datetime(year, month, day, hour, minute, second, tzinfo=timezone.utc)
    except ValueError:
        return None


def entry_keys(entries: list[MemoryEntry]) -> list[tuple[str, int]]:
    """(heading, how many earlier entries share it): an entry's identity."""
    counts: dict[str, int] = {}
    keys: list[tuple[str, int]] = []
    for entry in entries:
        norm = re.sub(r"\s+", " ", entry.heading).strip()
        n = counts.get(norm, 0)
        counts[norm] = n + 1
        keys.append((norm, n))
    return keys


class MemoryTracker:
    """Emits each memory entry once: the first read reports them all, later reads only new ones."""

    def __init__(self) -> None:
        self._seen: dict[str, set[tuple[str, int]]] = {}
        self._last: dict[str, str] = {}
        self._warned: set[str] = set()

    def update(self, path: str, text: str) -> list[Any]:
        if self._last.get(path) == text:
            return []
        self._last[path] = text
        if looks_binary(text):
            key = digest(text)
            if key in self._warned:
                return []
            self._warned.add(key)
            return [
                Warning(
                    code="memory_binary",
                    message=f"{path} looks like a binary file (NUL bytes), not the supervisor's memory: ignored",
                    detail={"path": path, "chars": len(text)},
                )
            ]
        entries = parse_memory(text, path)
        seen = self._seen.setdefault(path, set())
        new: list[Any] = []
        for key, entry in zip(entry_keys(entries), entries):
            if key not in seen:
                seen.add(key)
                new.append(entry.model_copy(update={"occurrence": key[1]}) if key[1] else entry)
        return new


class MemoryCollector(OneFileCollector):
    """Reads `files.memory` (galph_memory.md) whenever it changes.

    At start every entry is reported, dated from its heading's stamp (the only
    clue to when it was written); later entries are dated when they are seen,
    since headings are self-reported and often out of order. A read that does not
    end in a newline may be cut mid-entry, and an entry is reported only once, so
    such a read is tried again after `watch.baton_retry_ms`.
    """

    name = "memory"

    def __init__(self, root: str | Path, settings: Settings, emit: Emit) -> None:
        super().__init__(root, settings, emit)
        self.path = settings.files.memory
        self.tracker = MemoryTracker()

    def incomplete(self, read: FileRead) -> bool:
        return _incomplete(read)

    def scan(self) -> None:
        self.refresh(initial=True)

    def state(self) -> dict[str, Any] | None:
        """The entries reported so far, by identity (heading, repeat)."""
        return {"seen": {path: sorted(keys) for path, keys in self.tracker._seen.items()}}

    def restore(self, state: dict[str, Any]) -> None:
        for path, keys in (state.get("seen") or {}).items():
            self.tracker._seen[path] = {(str(k[0]), int(k[1])) for k in keys if isinstance(k, list) and len(k) == 2}

    def refresh(self, initial: bool = False) -> None:
        text = self.read_text()
        if text is None:
            return
        for payload in self.tracker.update(self.path, text):
            when = entry_time(payload) if initial and isinstance(payload, MemoryEntry) else None
            self.emit(payload, when)


def _incomplete(read: FileRead) -> bool:
    return read.exists and read.error is None and not read.binary and bool(read.text) and not read.text.endswith(("\n", "\r"))
