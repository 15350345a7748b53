"""The supervisor's brief (`input.md`): Summary, Mode, Focus, Branch, Mapped tests, Artifacts.

Header lines come plain (`Mapped tests: none — evidence-only`) or bold
(`**Mapped tests:**` over a bullet list); `Mapped tests` lists pytest commands
inline (separated by `;`) or as bullets. `parse_brief` is a pure function of the
text; `BriefTracker` emits `brief_updated` only when the content changed;
`BriefCollector` reads the file when it changes.
"""

from __future__ import annotations

import re
import shlex
import threading
from pathlib import Path
from typing import Any

from collectors.base import Emit
from collectors.textfile import FileRead, OneFileCollector, looks_binary
from monitor.config import Settings
from monitor.events import BriefUpdated, Warning, digest

_FIELDS = {
    "summary": "summary",
    "mode": "mode",
    "focus": "focus",
    "branch": "branch",
    "mapped tests": "mapped_tests",
    "mapped test": "mapped_tests",
    "tests": "mapped_tests",
    "artifacts": "artifacts",
    "artifact": "artifacts",
}
# `Key: value`, `**Key:** value`, `**Key**: value`, `- Key: value`, `## Key`.
_HEADER = re.compile(
    r"^\s*(?:[-*+]\s+|#{1,6}\s+)?\**\s*(summary|mode|focus|branch|mapped tests?|tests|artifacts?)\s*\**\s*(?::|$)\s*\**\s*(.*?)\s*$",
    re.IGNORECASE,
)
_ANY_HEADER = re.compile(r"^\s*(?:#{1,6}\s+)?\**\s*[A-Z][\w /&()\-]{0,40}?\s*\**\s*:\s*\**(?:\s|$)")
_BULLET = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+(.*)$")
_FENCE = re.compile(r"^\s{0,3}(`{3,}|~{3,})")
_NONE = re.compile(r"^\(?\s*(?:none|n/?a|no tests?|not applicable|nothing)\b", re.IGNORECASE)
_ENV = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=\S*$")
# Flags that change how pytest reports, not what it selects.
_NOISE_FLAGS = re.compile(
    r"^-(?:v+|q+|x|s|l|rA|r[a-zA-Z]+|p\s*no:.*)$|^--(?:collect-only|co|verbose|quiet|exitfirst|tb(?:=.*)?|maxfail(?:=.*)?|"
    r"durations(?:=.*)?|disable-warnings|no-header|color(?:=.*)?|capture(?:=.*)?|showlocals|lf|ff|last-failed|failed-first)$"
)
_FLAGS_WITH_VALUE = {"--tb", "--maxfail", "--durations", "--color", "--capture", "-p"}
_BRACKET_ID = re.compile(r"^`?\[`?([A-Za-z0-9][A-Za-z0-9_.:/\-]{0,79})`?\]")
# A first word followed by a separator names the focus: `seed — Inbox monitoring`.
_WORD_THEN_SEPARATOR = re.compile(r"^`?([\w.\-]{1,80})`?\s*(?:[—–:(/|]|\s-\s|$)")
# A first word shaped like a ledger ID (a hyphen and a digit) names it even without one.
_FIRST_WORD = re.compile(r"^`?([A-Za-z][\w.\-]{0,79})`?(?=\s|$)")
_TEST_PATH = re.compile(r"^(?:\S*::\S*|\S+\.py(?:::\S*)?|tests?/\S*|\S*/tests?/\S*|test_\S+)$")

MAX_FIELD = 500


def _clean(value: str) -> str:
    value = re.sub(r"[*`]+", "", value)
    return re.sub(r"\s+", " ", value).strip()


def focus_id(value: str) -> str | None:
    """The ledger ID a Focus line names: `[VECTOR-GAPS-002] Vectorization gap audit` -> VECTOR-GAPS-002.

    A sub-item stays (`DEBUG-SIM-LINES-DOSE-001.F1`); a focus with no ID-looking
    word first (`finish the parser`) is kept whole.
    """
    text = value.strip().strip("*").strip()
    if not text:
        return None
    match = _BRACKET_ID.match(text) or _WORD_THEN_SEPARATOR.match(text)
    if match:
        return match.group(1)
    word = _FIRST_WORD.match(text)
    if word and looks_like_id(word.group(1)):
        return word.group(1).rstrip(".")
    return _clean(text)[:MAX_FIELD] or None


def looks_like_id(word: str) -> bool:
    """INTEGRATE-PYTORCH-001, DEBUG-SIM-LINES-DOSE-001.F1: a hyphen and a digit."""
    return "-" in word and any(c.isdigit() for c in word)


def selector_of(item: str) -> str | None:
    """A pytest command or selector as written -> what selects the tests, noise flags dropped.

    `KMP_X=1 pytest tests/a.py::test_b -vv` -> `tests/a.py::test_b`;
    `pytest -k "A or B" tests/x.py -q` -> `-k 'A or B' tests/x.py`. A line with
    nothing test-like in it (prose) is no selector.
    """
    text = item.strip().strip("`").strip()
    text = re.sub(r"\s+\((?:new|optional|existing|expected[^)]*|red|green|if [^)]*)\)\s*$", "", text, flags=re.IGNORECASE)
    text = text.replace("`", "")
    try:
        words = shlex.split(text)
    except ValueError:
        words = text.split()
    while words and _ENV.match(words[0]):
        words.pop(0)
    if words and words[0] in ("env",):
        words.pop(0)
        while words and _ENV.match(words[0]):
            words.pop(0)
    saw_pytest = False
    if words[:3] in (["python", "-m", "pytest"], ["python3", "-m", "pytest"]):
        words, saw_pytest = words[3:], True
    elif words and words[0] in ("pytest", "py.test"):
        words, saw_pytest = words[1:], True
    kept: list[str] = []
    skip_value = False
    for word in words:
        if skip_value:
            skip_value = False
            continue
        if _NOISE_FLAGS.match(word):
            continue
        if word in _FLAGS_WITH_VALUE:
            skip_value = True
            continue
        if word in ("|", "&&", ";", ">", "2>&1", "|&") or word.startswith((">", "|")):
            break  # `| tee log`, `> out.log`: what follows is not pytest's
        kept.append(word)
    if not kept:
        return None
    if not saw_pytest and not _TEST_PATH.match(kept[0]):
        return None  # prose that mentions a path is not a selector
    return " ".join(shlex.quote(w) if re.search(r"\s", w) else w for w in kept)


def _split_inline(value: str) -> list[str]:
    """`pytest a -vv; pytest b -vv` -> two commands (`;` and ` && ` separate them)."""
    parts = re.split(r";\s+|\s+&&\s+|,\s+(?=(?:[A-Z_]+=\S+\s+)*(?:pytest|python|tests?/))", value)
    return [p for p in (part.strip() for part in parts) if p]


def parse_brief(text: str, path: str = "input.md") -> BriefUpdated:
    """Parse a brief's header fields. Never raises; a field not found stays None."""
    values: dict[str, Any] = {}
    tests: list[str] = []
    tests_none = False
    lines = text.splitlines()
    fenced = False
    i = 0
    while i < len(lines):
        line = lines[i]
        if _FENCE.match(line):
            fenced = not fenced
            i += 1
            continue
        match = None if fenced else _HEADER.match(line)
        if match is None:
            i += 1
            continue
        key = _FIELDS[re.sub(r"\s+", " ", match.group(1).lower())]
        value = match.group(2).strip().strip("*").strip()
        # A heading form (`## Mapped tests`) or an empty value takes the lines below.
        block: list[str] = []
        j = i + 1
        if not value:
            while j < len(lines) and not lines[j].strip():
                j += 1
            while j < len(lines) and lines[j].strip() and not _HEADER.match(lines[j]) and not _ANY_HEADER.match(lines[j]):
                if re.match(r"^\s*#{1,6}\s", lines[j]) or _FENCE.match(lines[j]):
                    break
                block.append(lines[j])
                j += 1
        if key in values or (key == "mapped_tests" and (tests or tests_none)):
            i = max(j, i + 1)
            continue  # the first occurrence is the header; later ones are prose
        if key == "mapped_tests":
            entries = _split_inline(value) if value else []
            for raw in block:
                bullet = _BULLET.match(raw)
                entries.extend(_split_inline(bullet.group(1) if bullet else raw))
            if entries and all(_NONE.match(_clean(e)) for e in entries):
                tests_none = True
            for entry in entries:
                if _NONE.match(_clean(entry)):
                    continue
                selector = selector_of(entry)
                if selector and selector not in tests:
                    tests.append(selector)
        else:
            if not value and block:
                first = _BULLET.match(block[0])
                value = first.group(1) if first else block[0]
            cleaned = _clean(value)[:MAX_FIELD]
            values[key] = (focus_id(value) if key == "focus" else cleaned) or None
        i = max(j, i + 1)
    return BriefUpdated(
        path=path,
        summary=values.get("summary"),
        mode=values.get("mode"),
        focus=values.get("focus"),
        branch=values.get("branch"),
        mapped_tests=tests,
        mapped_tests_none=tests_none,
        artifacts=values.get("artifacts"),
        digest=digest(text),
    )


class BriefTracker:
    """Emits a `brief_updated` for a brief whose content differs from the last one seen."""

    def __init__(self) -> None:
        self._digests: dict[str, str] = {}
        self._warned: set[str] = set()

    def update(self, path: str, text: str) -> list[Any]:
        d = digest(text)
        if self._digests.get(path) == d:
            return []
        self._digests[path] = d
        if looks_binary(text):
            if d in self._warned:
                return []
            self._warned.add(d)
            return [
                Warning(
                    code="brief_binary",
                    message=f"{path} looks like a binary file (NUL bytes), not a brief: ignored",
                    detail={"path": path, "chars": len(text)},
                )
            ]
        return [parse_brief(text, path)]


class BriefCollector(OneFileCollector):
    """Reads `files.brief` (input.md) whenever it changes.

    A brief read while being rewritten (empty, or cut before its last newline) is
    read again after `watch.baton_retry_ms`, so a half-written brief is not
    reported as a new one.
    """

    name = "brief"

    def __init__(self, root: str | Path, settings: Settings, emit: Emit) -> None:
        super().__init__(root, settings, emit)
        self.path = settings.files.brief
        self.tracker = BriefTracker()

    def incomplete(self, read: FileRead) -> bool:
        return _incomplete(read)

    def scan(self) -> None:
        self.refresh()

    def state(self) -> dict[str, Any] | None:
        return {"digests": dict(self.tracker._digests)}

    def restore(self, state: dict[str, Any]) -> None:
        digests = state.get("digests") or {}
        self.tracker._digests.update({p: d for p, d in digests.items() if isinstance(d, str)})

    def refresh(self) -> None:
        text = self.read_text()
        if text is None:
            return
        for payload in self.tracker.update(self.path, text):
            self.emit(payload, None)
            if self.settings.alerts.check_selectors and payload.mapped_tests:
                self._check_selectors(payload)

    def _check_selectors(self, brief: BriefUpdated) -> None:
        """Run the opt-in empty-selector check off the watcher's thread (it runs pytest)."""
        from monitor.selectors import check_selectors

        def run() -> None:
            alert = check_selectors(
                self.root, brief, self.settings, on_error=lambda message: self.warn("selector_check_failed", message)
            )
            if alert is not None:
                self.emit(alert, None)

        threading.Thread(target=run, name="loopmon-selectors", daemon=True).start()


def _incomplete(read: FileRead) -> bool:
    return read.exists and read.error is None and not read.binary and (not read.text.strip() or not read.text.endswith(("\n", "\r")))
