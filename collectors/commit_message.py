"""What a commit message says: role, iteration, SYNC hand-off, ledger IDs, the `tests:` tail.

A message is a hint, never the fact (the diff is): this module only reads text.
Every pattern that differs between loops comes from settings (`[roles]`,
`[iterations]`); the shapes here are those of shared/spec/agent-loop-formats.md.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from monitor.config import Settings
from monitor.events import Role, SyncInfo, TestsReport

ROLE_ORDER: tuple[Role, ...] = ("driver", "supervisor", "engineer", "other")

# Iteration numbers longer than this are not iteration numbers (and int() of a
# few thousand digits raises).
_MAX_ITERATION_DIGITS = 9

_SYNC = re.compile(r"\[SYNC\s+i=(\d{1,9})\]", re.IGNORECASE)
_SYNC_PAIR = re.compile(r"\b(actor|next|status|galph_commit|ralph_commit)=([^\s\]]+)")
_REVERT = re.compile(r"This reverts commit ([0-9a-fA-F]{7,64})")

_TESTS_TAIL = re.compile(r"(?:^|[\s(\[—–-])tests?\s*:\s*(.*)$", re.IGNORECASE)
_VERIFICATION = re.compile(r"^\s*(?:verification|tests run|testing)\s*:\s*(.*)$", re.IGNORECASE)
_NOT_RUN = re.compile(
    r"^\s*(?:not[\s_-]*run|none|n/?a|skipped|not[\s_-]*applicable|no tests?)\b|\bnot[\s_-]*run\b", re.IGNORECASE
)
_COUNT = re.compile(r"(\d{1,9})\s*(passed|passing|pass|failed|failing|failures?|errors?|errored)\b", re.IGNORECASE)
_RATIO = re.compile(r"(\d{1,9})\s*/\s*(\d{1,9})\s*(?:tests?\s*)?(?:passed|passing|pass|green|ok)\b", re.IGNORECASE)
_PASS_WORD = re.compile(r"\b(?:pass(?:ed|es|ing)?|green|ok|success(?:ful)?|all good)\b", re.IGNORECASE)
_FAIL_WORD = re.compile(r"\b(?:fail(?:ed|s|ing|ures?)?|errors?)\b", re.IGNORECASE)
_SELECTOR = re.compile(
    r"(?<![\w/.-])("
    r"[\w./-]*\.py(?:::[\w\[\]().,=-]+)*"  # path, path::node ids
    r"|(?:[\w.-]+/)*tests?/[\w./-]*"  # a tests folder
    r"|test_\w+"  # a bare test name
    r")"
)


@dataclass(frozen=True)
class MessageInfo:
    """Everything read off one commit message."""

    role: Role
    iteration: int | None = None
    sync: SyncInfo | None = None
    ledger_ids: list[str] = field(default_factory=list)
    tests: TestsReport = field(default_factory=TestsReport)
    revert_of: str | None = None


class MessageParser:
    """Parses commit messages with the patterns of one `Settings` (compiled once)."""

    def __init__(self, settings: Settings | None = None) -> None:
        settings = settings or Settings()
        roles = settings.roles
        self._roles: list[tuple[Role, list[re.Pattern[str]]]] = [
            (role, [re.compile(p) for p in getattr(roles, role)]) for role in ROLE_ORDER
        ]
        self._unmatched: Role = roles.unmatched if roles.unmatched in ROLE_ORDER else "engineer"  # type: ignore[assignment]
        self._iteration = [re.compile(p) for p in settings.iterations.tag_patterns]
        self._ledger_id = re.compile(settings.iterations.ledger_id_pattern)

    def parse(self, message: str) -> MessageInfo:
        """Read one message; never raises on any text."""
        subject = message.split("\n", 1)[0].strip()
        sync = parse_sync(subject)
        return MessageInfo(
            role=self.role(subject),
            iteration=self.iteration(subject, message),
            sync=sync,
            ledger_ids=self.ledger_ids(message),
            tests=parse_tests(message),
            revert_of=revert_of(message),
        )

    def role(self, subject: str) -> Role:
        """First role, in the order driver, supervisor, engineer, other, with a matching pattern."""
        for role, patterns in self._roles:
            if any(p.search(subject) for p in patterns):
                return role
        return self._unmatched

    def iteration(self, subject: str, message: str) -> int | None:
        """The iteration tag: the subject is asked before the body, patterns in their order."""
        for text in (subject, message):
            for pattern in self._iteration:
                match = pattern.search(text)
                if match is None:
                    continue
                number = _first_group(match)
                if number is not None:
                    return number
        return None

    def ledger_ids(self, message: str) -> list[str]:
        ids: list[str] = []
        for match in self._ledger_id.finditer(message):
            value = match.group(1) if match.groups() else match.group(0)
            if value and value not in ids:
                ids.append(value)
        return ids


def _first_group(match: re.Match[str]) -> int | None:
    text = next((g for g in match.groups() if g), None) if match.groups() else match.group(0)
    if text is None:
        return None
    digits = re.sub(r"\D", "", text)
    if not digits or len(digits) > _MAX_ITERATION_DIGITS:
        return None
    return int(digits)


def parse_sync(subject: str) -> SyncInfo | None:
    """`[SYNC i=301] actor=galph → next=ralph status=ok galph_commit=0a595c40` -> SyncInfo."""
    match = _SYNC.search(subject)
    if match is None:
        return None
    fields: dict[str, str] = {}
    for key, value in _SYNC_PAIR.findall(subject[match.end() :]):
        fields.setdefault(key, value)
    return SyncInfo(
        iteration=int(match.group(1)),
        actor=fields.get("actor"),
        next_actor=fields.get("next"),
        status=fields.get("status"),
        galph_commit=fields.get("galph_commit"),
        ralph_commit=fields.get("ralph_commit"),
    )


def revert_of(message: str) -> str | None:
    match = _REVERT.search(message)
    return match.group(1).lower() if match else None


def _tests_text(message: str) -> str | None:
    """The free text after `tests:` (the subject's tail first), or a `Verification:` block."""
    lines = message.split("\n")
    for line in lines:
        match = _TESTS_TAIL.search(line)
        if match is not None:
            return match.group(1).strip()
    for index, line in enumerate(lines):
        match = _VERIFICATION.match(line)
        if match is None:
            continue
        block = [match.group(1).strip()]
        for follower in lines[index + 1 : index + 21]:
            if not follower.strip():
                break
            block.append(follower.strip().lstrip("-*• ").strip())
        return " ; ".join(part for part in block if part)
    return None


def parse_tests(message: str) -> TestsReport:
    """Parse the free-text `tests:` tail: not run, selectors, `N passed`, `N failed`."""
    text = _tests_text(message)
    if text is None:
        return TestsReport()
    text = text[:2000]
    passed = failed = None
    for number, word in _COUNT.findall(text):
        if word.lower().startswith("pass"):
            passed = (passed or 0) + int(number)
        else:
            failed = (failed or 0) + int(number)
    ratio = _RATIO.search(text)
    if ratio is not None and passed is None:
        good, total = int(ratio.group(1)), int(ratio.group(2))
        passed = good
        if total > good:
            failed = (failed or 0) + (total - good)
    selectors = _selectors(text)
    if failed:
        status = "failed"
    elif passed:
        status = "passed"
    elif _NOT_RUN.search(text):
        status = "not_run"
    elif _FAIL_WORD.search(text) and not re.search(r"\b0\s*failed\b", text, re.IGNORECASE):
        status = "failed"
    elif _PASS_WORD.search(text):
        status = "passed"
    else:
        status = "mentioned"
    return TestsReport(status=status, passed=passed, failed=failed, selectors=selectors, raw=text)


def _selectors(text: str) -> list[str]:
    found: list[str] = []
    for match in _SELECTOR.finditer(text):
        value = match.group(1).rstrip(".,;:)")
        if value.count("(") < value.count(")"):
            value = value.rstrip(")")
        if len(value) < 3 or value in found:
            continue
        found.append(value)
    return found
