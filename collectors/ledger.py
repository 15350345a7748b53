"""The ledger (`docs/fix_plan.md`): items, statuses, attempts and the Active Focus.

Ledgers are markdown written by hand and by agents, never strictly formatted.
Two shapes are read (shared/spec/agent-loop-formats.md), mixed freely:

- an index table `| ID | Title | Priority | Status |` followed by one section per
  item, `## [ID] Title` with `- Priority:`, `- Status:` and `- Attempts History:`
  whose bullets are attempts (`* [2025-10-15] Attempt #1 — Result: ✅ success ...`);
- bare item sections, `### [seed] Inbox monitoring` / `- Status: in_progress — ...`.

`parse_ledger` is a pure function of the text; `LedgerTracker` diffs successive
parses of one path into events; `LedgerCollector` reads the file when it changes.

The half-written-file rule (no phantom removals):
1. A read that lost items and looks truncated (empty, no final newline, an
   unclosed code fence) or shrank to under half its previous size is read again
   after `watch.baton_retry_ms`, until it stops changing (`LedgerCollector`).
2. If the settled text still looks truncated, the lost items are carried over,
   not removed, and one `ledger_truncated` warning says so (`LedgerTracker`).
   A text that shrank but looks complete is believed: items really went away
   (archived, deleted).
3. A status that disappears (its line cut off or deleted) is not a change to
   "no status": the old status is kept. Attempts already seen for an item are
   never reported again, so a cut-off Attempts History that grows back is quiet.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from collectors.base import Collector, Emit
from collectors.textfile import FileRead, looks_binary, read_settled, touched_paths
from monitor.config import Settings
from monitor.events import (
    FocusChanged,
    LedgerAttempt,
    LedgerAttemptAdded,
    LedgerItem,
    LedgerItemAdded,
    LedgerItemRemoved,
    LedgerRead,
    LedgerStatusChanged,
    Warning,
    digest,
)

# --------------------------------------------------------------------------- patterns

_FENCE = re.compile(r"^\s{0,3}(`{3,}|~{3,})")
# `-### [ID]` and `-  - *date*` are diff markers an agent pasted in with a patch.
_STRAY_DIFF_HEADING = re.compile(r"^[-+](?=#{1,6}\s)")
_STRAY_DIFF_BULLET = re.compile(r"^[-+](?=\s+[-*+]\s)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*)$")
_BRACKET_ID = re.compile(r"^\[`?([A-Za-z0-9][A-Za-z0-9_.:/\-]{0,79})`?\]")
# A bare ID at the start of a heading: TEST-GOLDEN-001, DEBUG-SIM-LINES-DOSE-001.F1.
# A bare ID must hold a digit, so a heading like "## CI-CD notes" is not an item.
_BARE_ID = re.compile(r"^`?((?=[A-Z0-9_.\-]*\d)[A-Z][A-Z0-9]*(?:[-_][A-Z0-9]+)+(?:\.[A-Za-z0-9]+)*)`?(?=$|[\s:—–(,])")
# An ID-looking token (with a hyphen) at the start of a focus line, bracketed or not.
_ID_LIKE = re.compile(r"^`?\[?`?([A-Za-z][A-Za-z0-9]*(?:[-_][A-Za-z0-9]+)*-[A-Za-z0-9]+(?:[-_.][A-Za-z0-9]+)*)")
_NO_FOCUS = frozenset({"none", "n/a", "na", "tbd", "-", "—", "id", "(none)", "nothing"})
_BRACKET_ANYWHERE = re.compile(r"\[`?([A-Za-z0-9][A-Za-z0-9_.:/\-]{0,79})`?\](?!\()")
_BULLET = re.compile(r"^(\s*)(?:[-*+]|\d+[.)])\s+(.*)$")
_FIELD = re.compile(r"^\s*(?:[-*+]\s+)?\**\s*([A-Za-z][A-Za-z /&]{0,30}?)\s*\**\s*:\s*\**\s*(.*)$")
_TABLE_SEPARATOR = re.compile(r"^\s*\|?\s*:?-{2,}:?\s*(\|\s*:?-{2,}:?\s*)*\|?\s*$")
_FOCUS_LINE = re.compile(r"^\s*(?:[-*+]\s+)?\**\s*(?:active|current)\s+focus\s*\**\s*:\s*\**\s*(.*?)\s*$", re.IGNORECASE)
_FOCUS_HEADING = re.compile(r"^(?:active|current)\s+focus\b", re.IGNORECASE)
_ATTEMPTS_HEADER = re.compile(r"^\s*(?:[-*+]\s+)?[#\s]*\**\s*attempts?\s+(?:history|log)\b", re.IGNORECASE)
_ATTEMPT_NUMBER = re.compile(r"\battempt\s*#?\s*(\d{1,6})\b", re.IGNORECASE)
_ATTEMPT_START = re.compile(
    r"^[\s*_\[]*(?:\d{4}-\d{2}-\d{2}[^\]\s]*\]?[\s*_:)]*(?:\([^)]{0,80}\))?[\s*_:]*)?[—–-]?\s*attempt\s*#?\s*\d",
    re.IGNORECASE,
)
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:?\d{2}(?::?\d{2})?(?:\.\d+)?Z?)?")
_RESULT = re.compile(r"\bresult\s*\**\s*:\s*\**\s*(.*)", re.IGNORECASE)
_STATUS_SPLIT = re.compile(r"\s+[—–]+\s*|\s*[—–]+\s+|\s+-{1,2}\s+|\s*[(;,]\s*|:\s+|\.\s+|\.$")
# Emphasis and code marks; underscores only at word edges, since statuses are snake_case.
_DECORATION = re.compile(r"[*`~]+|(?<!\w)_+|_+(?!\w)")

# Canonical statuses, most specific first; each maps the spellings seen in real ledgers.
_STATUS_WORDS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (name, re.compile(rf"(?<![a-z0-9]){pattern}(?![a-z0-9])"))
    for name, pattern in (
        ("ready_for_implementation", r"ready_for_(?:implementation|impl)"),
        ("in_planning", r"in_planning"),
        ("in_progress", r"in_progress|wip"),
        ("not_started", r"not_started"),
        ("reopened", r"re_?opened"),
        ("blocked", r"blocked"),
        ("pending", r"pending"),
        ("deferred", r"deferred"),
        ("paused", r"paused|on_hold"),
        ("superseded", r"superseded"),
        ("cancelled", r"cancell?ed"),
        ("archived", r"archived"),
        ("done", r"done|complete|completed|finished|closed|resolved"),
    )
)
_RESULT_WORDS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("partial", re.compile(r"partial|⚠|mixed|incomplete|in progress", re.IGNORECASE)),
    ("failure", re.compile(r"❌|✗|\bfail|\berror|\bred\b|regress|\bblocked\b|\bbroke", re.IGNORECASE)),
    ("success", re.compile(r"✅|✔|\bsuccess|\bsucceed|\bpass|\bgreen\b|\bcomplete|\bdone\b|\bfixed\b|\bok\b", re.IGNORECASE)),
)

MAX_TITLE = 200
MAX_STATUS = 60
MAX_TEXT = 500
MAX_FOCUS = 80


# --------------------------------------------------------------------------- parsed ledger


@dataclass
class Ledger:
    """One parse of a ledger text."""

    items: dict[str, LedgerItem] = field(default_factory=dict)  # by ID, in order of first appearance
    focus: list[str] = field(default_factory=list)
    duplicate_ids: list[str] = field(default_factory=list)
    chars: int = 0
    binary: bool = False
    # The item whose section (or index row) holds the text's last line: the one a
    # cut-off write would have damaged.
    tail_id: str | None = None
    sectioned: set[str] = field(default_factory=set)  # IDs whose fields came from their own section


@dataclass
class _Line:
    text: str
    heading: tuple[int, str] | None  # (level, heading text) outside code fences


@dataclass
class _Section:
    id: str
    title: str
    level: int
    start: int  # first line after the heading
    end: int
    parent: str | None


def split_status(raw: str) -> tuple[str | None, str | None]:
    """`in_progress — 2026-01-22: Triaging` -> ("in_progress", "2026-01-22: Triaging").

    The status is a canonical word when one of the known statuses (or a spelling of
    it: "In Progress", "COMPLETE", "✅ done") appears before the first separator;
    otherwise the lower-cased head itself. Whatever follows is the status text.
    """
    cleaned = _DECORATION.sub("", raw).strip().strip("|").strip()
    if not cleaned:
        return None, None
    parts = _STATUS_SPLIT.split(cleaned, maxsplit=1)
    head = parts[0].strip()
    rest = parts[1].strip() if len(parts) > 1 else ""
    if not head and rest:  # "(blocked) waiting on data": the status was the parenthesis
        inner = _STATUS_SPLIT.split(rest, maxsplit=1)
        head, rest = inner[0].strip(), (inner[1].strip() if len(inner) > 1 else "")
    rest = rest.strip().rstrip(")").strip() or None
    normal = re.sub(r"[\s\-]+", "_", head.lower())
    for name, pattern in _STATUS_WORDS:
        if pattern.search(normal):
            return name, rest if normal == name else _join(head, rest)
    word = re.sub(r"[^\w\s./\-]", "", head.lower()).strip()
    word = re.sub(r"\s+", " ", word)
    if not word:
        return None, _join(head, rest)
    if " " not in word:
        return word[:MAX_STATUS], rest
    return word[:MAX_STATUS], _join(head, rest) if len(word) > MAX_STATUS else rest


def _join(head: str, rest: str | None) -> str | None:
    text = " — ".join(p for p in (head.strip(), rest) if p)
    return text or None


def attempt_result(text: str) -> str:
    """success / failure / partial / unknown, from the words after `Result:` (unknown without them)."""
    match = _RESULT.search(text)
    if not match:
        return "unknown"
    head = re.split(r"[.(;—–]|\s-\s", match.group(1), maxsplit=1)[0][:80]
    if not head.strip():
        head = match.group(1)[:40]
    for name, pattern in _RESULT_WORDS:
        if pattern.search(head):
            return name
    return "unknown"


def parse_attempt(text: str) -> LedgerAttempt:
    """One attempt bullet: `[2025-10-15] Attempt #1 — Result: ✅ success (Phase A ...)`."""
    number = _ATTEMPT_NUMBER.search(text[:200])
    date = _DATE.search(text[:60])
    return LedgerAttempt(
        number=int(number.group(1)) if number else None,
        date=date.group(0) if date else None,
        result=attempt_result(text),  # type: ignore[arg-type]
        text=_clip(text, MAX_TEXT),
    )


def _clip(text: str, limit: int) -> str:
    text = re.sub(r"\s+", " ", text).strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _clean(text: str) -> str:
    return _DECORATION.sub("", text).strip()


def _lines(text: str) -> list[_Line]:
    """Lines with their heading (if any), headings inside code fences ignored.

    An opening fence that never closes is not a fence: a half-written or sloppy
    ledger must not hide every item after a stray ```.
    """
    raw = text.splitlines()
    cleaned = [_STRAY_DIFF_BULLET.sub("", _STRAY_DIFF_HEADING.sub("", line)) for line in raw]
    fences = [i for i, line in enumerate(cleaned) if _FENCE.match(line)]
    fenced: set[int] = set()
    pairs = fences if len(fences) % 2 == 0 else fences[:-1]
    for open_at, close_at in zip(pairs[0::2], pairs[1::2]):
        fenced.update(range(open_at, close_at + 1))
    out: list[_Line] = []
    for i, line in enumerate(cleaned):
        heading = None
        if i not in fenced:
            match = _HEADING.match(line)
            if match:
                heading = (len(match.group(1)), match.group(2).strip().rstrip("#").strip())
        out.append(_Line(line, heading))
    return out


def item_heading(heading: str) -> tuple[str, str] | None:
    """(ID, title) when a heading names a ledger item: `[ID] Title` or `ID: Title`."""
    text = heading.strip().lstrip("*_").strip()
    text = re.sub(r"^(?:\d+[.)]\s+)", "", text)  # "1. [ID] ..."
    match = _BRACKET_ID.match(text) or _BARE_ID.match(text)
    if not match or len(match.group(1)) < 2:  # `## [x] done`: a checkbox, not an ID
        return None
    title = text[match.end() :].strip()
    title = re.sub(r"^[\s:—–\-|*_]+", "", title).strip().rstrip("*_").strip()
    return match.group(1), _clip(title, MAX_TITLE)


def _sections(lines: list[_Line]) -> list[_Section]:
    """Item sections: from an item heading to the next heading of its level or above, or the next item."""
    sections: list[_Section] = []
    parents: list[tuple[int, str]] = []  # (level, text) of enclosing non-item headings
    heads = [(i, line.heading[0], line.heading[1], item_heading(line.heading[1])) for i, line in enumerate(lines) if line.heading]
    for n, (i, level, text, parsed) in enumerate(heads):
        while parents and parents[-1][0] >= level:
            parents.pop()
        if parsed is None:
            if level > 1:
                parents.append((level, _clip(_clean(text), MAX_TITLE)))
            continue
        end = len(lines)
        for j, other_level, _text, other_parsed in heads[n + 1 :]:
            if other_level <= level or other_parsed is not None:
                end = j
                break
        sections.append(_Section(parsed[0], parsed[1], level, i + 1, end, parents[-1][1] if parents else None))
    return sections


def _table_cells(line: str) -> list[str]:
    body = line.strip()
    if body.startswith("|"):
        body = body[1:]
    if body.endswith("|") and not body.endswith("\\|"):
        body = body[:-1]
    return [cell.strip() for cell in re.split(r"(?<!\\)\|", body)]


def _index_rows(lines: list[_Line], inside: list[bool]) -> list[dict[str, str]]:
    """Rows of every table (outside item sections) whose header has an ID column."""
    rows: list[dict[str, str]] = []
    i = 0
    while i < len(lines) - 1:
        line = lines[i].text
        below = lines[i + 1].text
        if inside[i] or "|" not in line or "|" not in below or not _TABLE_SEPARATOR.match(below):
            i += 1
            continue
        header = [_clean(c).lower() for c in _table_cells(line)]
        columns: dict[str, int] = {}
        for col, name in enumerate(header):
            if name in ("id", "item", "item id", "ledger id", "task id") and "id" not in columns:
                columns["id"] = col
            elif name in ("title", "name", "item title", "task", "description") and "title" not in columns:
                columns["title"] = col
            elif name in ("priority", "prio") and "priority" not in columns:
                columns["priority"] = col
            elif name in ("status", "state") and "status" not in columns:
                columns["status"] = col
        i += 2
        usable = "id" in columns and ("status" in columns or "title" in columns)
        while i < len(lines) and "|" in lines[i].text and not lines[i].heading:
            if usable:
                cells = _table_cells(lines[i].text)
                row = {key: cells[col] if col < len(cells) else "" for key, col in columns.items()}
                row["_line"] = str(i)
                rows.append(row)
            i += 1
    return rows


def _row_id(cell: str) -> str | None:
    """`[ID](#anchor)`, `` `ID` `` or a bare ID; a cell of prose names no item."""
    text = cell.strip().strip("*_").strip()
    match = _BRACKET_ID.match(text)
    if match:
        return match.group(1)
    word = _clean(text)
    if not word or len(word) > 80 or word.lower() in _NO_FOCUS or re.search(r"[\s\[\]()]", word):
        return None
    return word


def focus_entry(text: str) -> str | None:
    """What one Active Focus bullet points at: the ledger ID it opens with, else its label.

    `CRITICAL: [TEST-SUITE-TRIAGE-002] — Phase M ...` -> TEST-SUITE-TRIAGE-002,
    `FNO-STABILITY-OVERHAUL-001 — FNO/Hybrid ...` -> FNO-STABILITY-OVERHAUL-001,
    `ROUTING: Close the reopened guard plan ...` -> ROUTING. Only IDs count, so
    rewording a focus line is not a focus change.
    """
    body = text.strip().strip("*_").strip()
    if not body:
        return None
    label = re.match(r"^([A-Z][A-Za-z0-9 _/&\-]{0,30}?)\s*\**\s*:\s*(.*)$", body)
    candidates = [body]
    if label and not _BRACKET_ID.match(body):
        candidates = [label.group(2).strip().strip("*_").strip(), body]
    for candidate in candidates:
        match = _BRACKET_ID.match(candidate) or _ID_LIKE.match(candidate)
        if match and (candidate.startswith(("[", "`[")) or re.search(r"[-_]", match.group(1))):
            return match.group(1)
    if label:
        return _clip(label.group(1), MAX_FOCUS)
    anywhere = _BRACKET_ANYWHERE.search(body)
    if anywhere:
        return anywhere.group(1)
    head = re.split(r"\s+[—–-]\s+|:\s", _clean(body), maxsplit=1)[0]
    return _clip(head, MAX_FOCUS) or None


def _focus(lines: list[_Line], inside: list[bool]) -> list[str]:
    """The Active Focus: an inline `**Active Focus:** X`, a bullet list under it, or a section."""
    for i, line in enumerate(lines):
        if inside[i]:
            continue
        if line.heading is not None:
            if not _FOCUS_HEADING.match(_clean(line.heading[1])):
                continue
            inline = ""
        else:
            match = _FOCUS_LINE.match(line.text)
            if not match:
                continue
            inline = match.group(1).strip().strip("*").strip()
        entries: list[str] = []
        if inline:
            entries.append(inline)
        j = i + 1
        while j < len(lines) and not lines[j].text.strip() and not inline:
            j += 1  # a blank line between the label and its bullets
        top_indent: int | None = None
        while j < len(lines) and lines[j].heading is None:
            bullet = _BULLET.match(lines[j].text)
            if bullet:
                indent = len(bullet.group(1).expandtabs(4))
                if top_indent is None:
                    top_indent = indent
                if indent <= top_indent:
                    entries.append(bullet.group(2))
            elif not lines[j].text.strip() or top_indent is None:
                break  # a blank line or a paragraph ends the list
            j += 1
        if line.heading is not None and not entries:
            while j < len(lines) and lines[j].heading is None:
                if lines[j].text.strip():
                    entries.append(lines[j].text)
                    break
                j += 1
        out: list[str] = []
        for entry in entries:
            focus = focus_entry(entry)
            if focus and focus.lower() not in _NO_FOCUS and focus not in out:
                out.append(focus)
        return out
    return []


def _item_fields(lines: list[_Line], section: _Section) -> tuple[dict[str, str], list[LedgerAttempt]]:
    """Status, priority and attempts from one item's section.

    Attempts are the bullets one level under an `Attempts History` line (or
    sub-heading); deeper bullets and indented lines are their continuation. Outside
    such a block, a bullet that opens with `Attempt #N` (after an optional date)
    is an attempt too.
    """
    fields: dict[str, str] = {}
    attempts: list[LedgerAttempt] = []
    block: int | None = None  # indent at or under which a line ends the attempts block
    child_min = 0  # bullets at this indent or deeper belong to the block
    child: int | None = None  # indent of the block's attempt bullets
    for line in lines[section.start : section.end]:
        text = line.text
        if not text.strip():
            continue
        if line.heading is not None:
            opens = _ATTEMPTS_HEADER.match(line.heading[1]) is not None
            block, child_min, child = (-1, 0, None) if opens else (None, 0, None)
            continue
        bullet = _BULLET.match(text)
        lead = bullet.group(1) if bullet else text[: len(text) - len(text.lstrip())]
        indent = len(lead.expandtabs(4))
        if block is not None:
            if bullet is not None and indent >= child_min:
                if child is None:
                    child = indent
                if indent <= child:
                    content = re.sub(r"^(?:[-*+]\s+)+", "", bullet.group(2))
                    attempts.append(parse_attempt(content))
                continue
            if bullet is None and indent > block:
                continue  # an attempt's continuation: Metrics:, Artifacts:, ...
            block, child = None, None  # the item's next field
        if _ATTEMPTS_HEADER.match(text):
            block = indent
            child_min = indent + 1 if bullet is not None else indent
            child = None
            inline = text.split(":", 1)
            if len(inline) > 1 and _ATTEMPT_START.match(inline[1]):
                attempts.append(parse_attempt(inline[1].strip()))
            continue
        if bullet is not None and _ATTEMPT_START.match(bullet.group(2)):
            attempts.append(parse_attempt(bullet.group(2)))
            continue
        match = _FIELD.match(text)
        if match:
            name = match.group(1).strip().lower()
            if name in ("status", "state") and "status" not in fields:
                fields["status"] = match.group(2)
            elif name in ("priority", "prio") and "priority" not in fields:
                fields["priority"] = match.group(2)
    return fields, attempts


def _priority(raw: str | None) -> str | None:
    if not raw:
        return None
    head = re.split(r"\s+[—–-]\s+|\s*[(;,]", _clean(raw), maxsplit=1)[0].strip()
    return _clip(head, MAX_STATUS) or None


def parse_ledger(text: str) -> Ledger:
    """Parse a ledger text into items (by ID), the Active Focus and duplicated IDs. Never raises."""
    if looks_binary(text):
        return Ledger(chars=len(text), binary=True)
    lines = _lines(text)
    sections = _sections(lines)
    inside = [False] * len(lines)
    for section in sections:
        for k in range(section.start - 1, section.end):
            inside[k] = True

    ledger = Ledger(chars=len(text))
    duplicates: set[str] = set()

    index: dict[str, dict[str, str]] = {}
    last_line = max((i for i, line in enumerate(lines) if line.text.strip()), default=-1)
    for row in _index_rows(lines, inside):
        item_id = _row_id(row.get("id", ""))
        if not item_id:
            continue
        if row["_line"] == str(last_line):
            ledger.tail_id = item_id
        if item_id in index:
            duplicates.add(item_id)
            continue
        index[item_id] = row

    if sections and sections[-1].end == len(lines) and last_line >= sections[-1].start - 1:
        ledger.tail_id = sections[-1].id
    seen_sections: set[str] = set()
    for section in sections:
        if section.id in seen_sections:
            duplicates.add(section.id)
            continue  # the first section of an ID is the item; later copies only count as duplicates
        seen_sections.add(section.id)
        if section.id != ledger.tail_id:
            ledger.sectioned.add(section.id)
        fields, attempts = _item_fields(lines, section)
        row = index.get(section.id, {})
        # The section wins over the index row: it is where agents edit the item, and
        # the index is often left behind (seen: index "in_progress", section "done").
        status, status_text = split_status(fields.get("status") or row.get("status") or "")
        ledger.items[section.id] = LedgerItem(
            id=section.id,
            title=section.title or _clip(_clean(row.get("title", "")), MAX_TITLE),
            priority=_priority(fields.get("priority") or row.get("priority")),
            status=status,
            status_text=status_text,
            section=section.parent,
            attempts=attempts,
        )
    for item_id, row in index.items():
        if item_id in ledger.items:
            continue
        status, status_text = split_status(row.get("status", ""))
        ledger.items[item_id] = LedgerItem(
            id=item_id,
            title=_clip(_clean(row.get("title", "")), MAX_TITLE),
            priority=_priority(row.get("priority")),
            status=status,
            status_text=status_text,
            section=None,
        )
    ledger.focus = _focus(lines, inside)
    ledger.duplicate_ids = sorted(duplicates)
    return ledger


def looks_truncated(text: str) -> bool:
    """Whether a ledger text looks cut off mid-write: empty, no final newline, an unclosed fence."""
    if not text.strip() or not text.endswith(("\n", "\r")):
        return True
    fences = sum(1 for line in text.splitlines() if _FENCE.match(line))
    return fences % 2 == 1


# --------------------------------------------------------------------------- diffing


def attempt_keys(attempts: list[LedgerAttempt]) -> list[tuple[Any, ...]]:
    """A stable identity per attempt: its number (or date), with a count for repeats.

    Text is not part of the identity, so editing an attempt's words is not a new attempt.
    """
    counts: dict[tuple[Any, ...], int] = {}
    keys: list[tuple[Any, ...]] = []
    for attempt in attempts:
        base: tuple[Any, ...] = ("#", attempt.number) if attempt.number is not None else ("@", attempt.date)
        n = counts.get(base, 0)
        counts[base] = n + 1
        keys.append((*base, n))
    return keys


@dataclass
class _State:
    text: str
    items: dict[str, LedgerItem]
    focus: list[str]
    attempts_seen: dict[str, set[tuple[Any, ...]]]
    read: tuple[int, int, tuple[str, ...]] | None = None


class LedgerTracker:
    """Turns successive texts of ledger files into ledger events, one state per path."""

    def __init__(self) -> None:
        self._states: dict[str, _State] = {}
        self._warned: dict[str, set[str]] = {}
        self._last_parse: tuple[str, Ledger] | None = None  # the collector asks `suspicious` then `update`

    def parse(self, text: str) -> Ledger:
        """`parse_ledger`, remembering the last text: a big ledger is parsed once per read, not twice."""
        if self._last_parse is None or self._last_parse[0] != text:
            self._last_parse = (text, parse_ledger(text))
        return self._last_parse[1]

    def texts(self) -> dict[str, str]:
        """The last accepted text of each path."""
        return {path: state.text for path, state in self._states.items()}

    def items(self, path: str) -> dict[str, LedgerItem]:
        state = self._states.get(path)
        return dict(state.items) if state else {}

    def focus(self, path: str) -> list[str]:
        state = self._states.get(path)
        return list(state.focus) if state else []

    def suspicious(self, path: str, text: str) -> bool:
        """Whether `text` lost items the last accepted text had: read the file again before believing it."""
        state = self._states.get(path)
        if state is None or not state.items or text == state.text or looks_binary(text):
            return False
        return not set(state.items) <= set(self.parse(text).items)

    def _warn_once(self, path: str, key: str, payload: Warning) -> list[Any]:
        warned = self._warned.setdefault(path, set())
        if key in warned:
            return []
        warned.add(key)
        return [payload]

    def update(self, path: str, text: str) -> list[Any]:
        """The events that turn the last accepted state of `path` into `text`'s."""
        state = self._states.get(path)
        if state is not None and text == state.text:
            return []
        ledger = self.parse(text)
        if ledger.binary:
            return self._warn_once(
                path,
                "binary:" + digest(text),
                Warning(
                    code="ledger_binary",
                    message=f"{path} looks like a binary file (NUL bytes), not a markdown ledger: ignored",
                    detail={"path": path, "chars": len(text)},
                ),
            )
        if state is None:
            events = self._first(path, text, ledger)
            state = self._states[path]
        elif looks_truncated(text):
            items, kept = self._believable(state, ledger)
            events = []
            if kept:
                events.extend(
                    self._warn_once(
                        path,
                        f"truncated:{digest(text)}",
                        Warning(
                            code="ledger_truncated",
                            message=(
                                f"{path} looks cut off (empty, ends mid-line or inside a code block); "
                                f"{len(kept)} item(s) missing from it were kept, not removed"
                            ),
                            detail={"path": path, "chars": ledger.chars, "missing": kept[:50]},
                        ),
                    )
                )
            # The focus block is read only from a whole text: a cut one may have lost lines of it.
            events.extend(self._diff(path, state, items, state.focus, trust_status=ledger.sectioned))
            state.text = text
        else:
            events = self._diff(path, state, dict(ledger.items), ledger.focus, trust_status=None)
            state.text = text
        shape = (ledger.chars, len(state.items), tuple(ledger.duplicate_ids))
        if events or shape != state.read:
            state.read = shape
            events.append(
                LedgerRead(path=path, chars=ledger.chars, items=len(state.items), duplicate_ids=list(ledger.duplicate_ids))
            )
        return events

    def _first(self, path: str, text: str, ledger: Ledger) -> list[Any]:
        """The first read: every item is added, and the focus changes from nothing."""
        items = dict(ledger.items)
        attempts_seen = {item_id: set(attempt_keys(item.attempts)) for item_id, item in items.items()}
        self._states[path] = _State(text, items, list(ledger.focus), attempts_seen)
        events: list[Any] = [LedgerItemAdded(path=path, item=item) for item in items.values()]
        if ledger.focus:
            events.append(FocusChanged(path=path, old=[], new=list(ledger.focus)))
        return events

    @staticmethod
    def _believable(state: _State, ledger: Ledger) -> tuple[dict[str, LedgerItem], list[str]]:
        """What a cut-off text can be trusted for: (items, IDs kept though missing from it).

        Items it lost are kept; the item the cut went through is left as it was.
        """
        items = dict(ledger.items)
        tail = ledger.tail_id
        if tail is not None:
            if tail in state.items:
                items[tail] = state.items[tail]
            else:
                items.pop(tail, None)  # added once it is whole
        lost = [item_id for item_id in state.items if item_id not in items]
        for item_id in lost:
            items[item_id] = state.items[item_id]
        return items, lost

    def _diff(
        self,
        path: str,
        state: _State,
        items: dict[str, LedgerItem],
        focus: list[str],
        trust_status: set[str] | None,
    ) -> list[Any]:
        """Events from the accepted state to `items`/`focus`; then they become the accepted state.

        `trust_status` limits status changes to those IDs (a cut-off text: only
        items whose own section it holds whole); None trusts every item.
        """
        events: list[Any] = []
        for item_id, old in state.items.items():
            if item_id not in items:
                events.append(LedgerItemRemoved(path=path, item_id=item_id, title=old.title))
                state.attempts_seen.pop(item_id, None)
        for item_id, item in items.items():
            old = state.items.get(item_id)
            if old is None:
                events.append(LedgerItemAdded(path=path, item=item))
                state.attempts_seen[item_id] = set(attempt_keys(item.attempts))
                continue
            if item is old:
                continue
            keep_status = item.status is None or (trust_status is not None and item_id not in trust_status)
            if keep_status and (item.status, item.status_text) != (old.status, old.status_text):
                # A status line cut off or deleted is not a change to "no status".
                item = item.model_copy(update={"status": old.status, "status_text": old.status_text})
                items[item_id] = item
            elif item.status != old.status:
                events.append(LedgerStatusChanged(path=path, item_id=item_id, old=old.status, new=item.status))
            seen = state.attempts_seen.setdefault(item_id, set())
            for key, attempt in zip(attempt_keys(item.attempts), item.attempts):
                if key not in seen:
                    seen.add(key)
                    events.append(LedgerAttemptAdded(path=path, item_id=item_id, attempt=attempt))
        if focus != state.focus:
            events.append(FocusChanged(path=path, old=list(state.focus), new=list(focus)))
        state.items = items
        state.focus = list(focus)
        return events


# --------------------------------------------------------------------------- collector


class LedgerCollector(Collector):
    """Reads `files.ledger` (docs/fix_plan.md, fix_plan.md) whenever it changes.

    Each path is tracked on its own: some repos keep a stray root copy beside the
    docs/ one, and the events name the path they came from. A deleted ledger
    emits nothing (a checkout or rebase removes and restores files); when it comes
    back it is diffed against what was last read.
    """

    name = "ledger"

    def __init__(self, root: str | Path, settings: Settings, emit: Emit) -> None:
        super().__init__(root, settings, emit)
        self.paths = list(settings.files.ledger)
        self.tracker = LedgerTracker()
        self.wait_seconds = settings.watch.baton_retry_ms / 1000.0
        # The pause before a re-read; a test swaps in "the writer finishes its write".
        self.pause = time.sleep
        self._errors: dict[str, str] = {}

    def wants(self, path: str) -> bool:
        return path in self.paths

    def scan(self) -> None:
        for path in self.paths:
            self.refresh(path)

    def state(self) -> dict[str, Any] | None:
        return {"texts": self.tracker.texts()}

    def restore(self, state: dict[str, Any]) -> None:
        """Read each saved text again, silently: the next read emits only what changed since."""
        for path, text in (state.get("texts") or {}).items():
            if path in self.paths and isinstance(text, str):
                self.tracker.update(path, text)

    def on_changes(self, changes: list[Any]) -> None:
        for path in touched_paths(changes, self.wants):
            self.refresh(path)

    def refresh(self, path: str) -> None:
        """Read `path` (settled) and emit what changed since the last read."""
        read = read_settled(self.root, path, self._incomplete, self.pause, self.wait_seconds)
        if not read.exists:
            return
        if read.error is not None:
            if self._errors.get(path) != read.error:
                self._errors[path] = read.error
                self.warn("ledger_unreadable", f"{path} cannot be read: {read.error}", path=path)
            return
        self._errors.pop(path, None)
        for payload in self.tracker.update(path, read.text):
            self.emit(payload, None)

    def _incomplete(self, read: FileRead) -> bool:
        if not read.exists or read.error is not None or read.binary:
            return False
        return self.tracker.suspicious(read.path, read.text)
