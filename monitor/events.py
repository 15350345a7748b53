"""The one event schema: everything that travels between collectors, scorer and sinks.

An `Envelope` wraps exactly one payload; payloads form a discriminated union on
`kind`. The wire format is the models' own JSON (`Envelope.to_wire` /
`Envelope.from_wire`). Collectors and sinks share nothing but this module.

Text read from a watched repository can be any bytes. JSON cannot carry invalid
UTF-8, so such text travels twice: once as a readable `str` (invalid bytes
replaced) and once, exactly, as base64 in a `*_bytes` companion field that is
only set when the two differ.
"""

from __future__ import annotations

import base64
import hashlib
from datetime import datetime, timezone
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

SCHEMA_VERSION = 1

Role = Literal["supervisor", "engineer", "driver", "other"]
PathClass = Literal[
    "production",
    "test",
    "docs",
    "plans",
    "hub",
    "ledger",
    "brief",
    "baton",
    "memory",
    "prompt",
    "artifact",
    "other",
]
Severity = Literal["info", "notice", "warning", "critical"]


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def decode_text(raw: bytes) -> tuple[str, bytes | None]:
    """Decode repo bytes: (readable text, exact bytes when they are not valid UTF-8)."""
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError:
        return raw.decode("utf-8", errors="replace"), raw


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", ser_json_bytes="base64", val_json_bytes="base64")


# --------------------------------------------------------------------------- commits


class FileStat(_Model):
    """One path of a commit's numstat, classified."""

    path: str
    path_bytes: bytes | None = Field(default=None, description="exact path when not UTF-8")
    old_path: str | None = None
    insertions: int | None = None  # None: binary or unreadable
    deletions: int | None = None
    path_class: PathClass = "other"
    binary: bool = False
    unknown: bool = False  # object missing: numstat could not be read
    size: int | None = None  # blob size in bytes, when known

    @property
    def lines(self) -> int:
        return (self.insertions or 0) + (self.deletions or 0)


class TestsReport(_Model):
    """The parsed `tests:` tail of a commit message."""

    status: Literal["absent", "not_run", "passed", "failed", "mentioned"] = "absent"
    passed: int | None = None
    failed: int | None = None
    selectors: list[str] = Field(default_factory=list)
    raw: str | None = None


class SyncInfo(_Model):
    """Driver bookkeeping carried by a `[SYNC i=N] ...` message."""

    iteration: int
    actor: str | None = None
    next_actor: str | None = None
    status: str | None = None
    galph_commit: str | None = None
    ralph_commit: str | None = None


class DiffEvidence(_Model):
    """What a commit's diff hunks show, extracted once by the commit collector.

    The scorer never reads git: it judges iterations from this evidence. Python files
    get a structural view of the new blob (the enclosing def/class of each changed line,
    from its def/class outline: see collectors/diffs.py); other languages fall back to
    git's hunk-header function context and line patterns.

    Symbols and test functions read `path::Qual.name` (`pkg/engine.py::Engine.step`);
    match them against `test_references` (bare identifiers) by their last dotted part.
    """

    symbols_changed: list[str] = Field(default_factory=list)  # production functions/classes touched
    test_functions: list[str] = Field(default_factory=list)  # test functions added or changed
    test_references: list[str] = Field(default_factory=list)  # identifiers used by changed test lines
    asserts_added: int = 0
    asserts_removed: int = 0
    test_weakening: int = 0  # removed tolerances/settings/asserts, added skips, in tests
    flags_added: list[str] = Field(default_factory=list)  # CLI flags / config fields introduced
    # Flags added here that are read (args.x, config.x, getattr(.., "x")) in this commit's added
    # lines or new blobs, plus names this commit reads through config-like receivers whatever
    # commit added them: join over an iteration to find flags exposed but never wired.
    flags_consumed: list[str] = Field(default_factory=list)
    added_hashes: list[str] = Field(default_factory=list)  # short hashes of normalised added code lines
    removed_hashes: list[str] = Field(default_factory=list)
    revert_of: str | None = None  # "This reverts commit <sha>"
    languages: list[str] = Field(default_factory=list)
    ast: bool = False  # a Python file was seen through its structural view
    truncated: bool = False  # too large: evidence covers only part of the diff


class Commit(_Model):
    kind: Literal["commit"] = "commit"
    sha: str
    parents: list[str] = Field(default_factory=list)
    author_name: str = ""
    author_email: str = ""
    authored_at: datetime
    committed_at: datetime
    message: str
    message_bytes: bytes | None = None
    refs: list[str] = Field(default_factory=list)
    role: Role = "other"
    iteration: int | None = None
    sync: SyncInfo | None = None
    ledger_ids: list[str] = Field(default_factory=list)
    tests: TestsReport = Field(default_factory=TestsReport)
    files: list[FileStat] = Field(default_factory=list)
    evidence: DiffEvidence = Field(default_factory=DiffEvidence)
    backfill: bool = False

    @property
    def subject(self) -> str:
        return self.message.split("\n", 1)[0]

    def natural_key(self) -> str:
        return f"commit:{self.sha}"


class CommitOrphaned(_Model):
    """A commit that was seen before is no longer reachable from any ref."""

    kind: Literal["commit_orphaned"] = "commit_orphaned"
    sha: str
    ref: str | None = None
    reason: str = "history rewritten"

    def natural_key(self) -> str:
        return f"commit_orphaned:{self.sha}"


# --------------------------------------------------------------------------- files


class FileChanged(_Model):
    kind: Literal["file_changed"] = "file_changed"
    path: str
    path_bytes: bytes | None = None
    change: Literal["created", "modified", "deleted", "moved"]
    dest_path: str | None = None
    size: int | None = None
    path_class: PathClass = "other"


class FilesBurst(_Model):
    """Many file changes coalesced into one summary (a checkout, a generated tree)."""

    kind: Literal["files_burst"] = "files_burst"
    count: int
    bytes: int = 0
    by_class: dict[str, int] = Field(default_factory=dict)
    sample: list[str] = Field(default_factory=list)
    largest_path: str | None = None
    largest_size: int | None = None


# --------------------------------------------------------------------------- ledger


class LedgerAttempt(_Model):
    number: int | None = None
    date: str | None = None
    result: Literal["success", "failure", "partial", "unknown"] = "unknown"
    text: str = ""


class LedgerItem(_Model):
    id: str
    title: str = ""
    priority: str | None = None
    status: str | None = None
    status_text: str | None = None  # free text after the status word
    section: str | None = None
    attempts: list[LedgerAttempt] = Field(default_factory=list)


class LedgerItemAdded(_Model):
    kind: Literal["ledger_item_added"] = "ledger_item_added"
    path: str
    item: LedgerItem


class LedgerItemRemoved(_Model):
    kind: Literal["ledger_item_removed"] = "ledger_item_removed"
    path: str
    item_id: str
    title: str = ""


class LedgerStatusChanged(_Model):
    kind: Literal["ledger_status_changed"] = "ledger_status_changed"
    path: str
    item_id: str
    old: str | None = None
    new: str | None = None


class LedgerAttemptAdded(_Model):
    kind: Literal["ledger_attempt_added"] = "ledger_attempt_added"
    path: str
    item_id: str
    attempt: LedgerAttempt


class FocusChanged(_Model):
    kind: Literal["focus_changed"] = "focus_changed"
    path: str
    old: list[str] = Field(default_factory=list)
    new: list[str] = Field(default_factory=list)


class LedgerRead(_Model):
    """A ledger was read and parsed: its size and shape, for bloat and sanity checks."""

    kind: Literal["ledger_read"] = "ledger_read"
    path: str
    chars: int
    items: int
    duplicate_ids: list[str] = Field(default_factory=list)


# --------------------------------------------------------------------------- brief, memory, baton


class BriefUpdated(_Model):
    kind: Literal["brief_updated"] = "brief_updated"
    path: str = "input.md"
    summary: str | None = None
    mode: str | None = None
    focus: str | None = None
    branch: str | None = None
    mapped_tests: list[str] = Field(default_factory=list)
    mapped_tests_none: bool = False
    artifacts: str | None = None
    digest: str = ""


class MemoryEntry(_Model):
    kind: Literal["memory_entry"] = "memory_entry"
    path: str = "galph_memory.md"
    heading: str
    text: str = ""
    focus: str | None = None
    state: str | None = None
    dwell: int | None = None
    action_type: str | None = None
    artifacts: str | None = None
    next_action: str | None = None
    # How many earlier entries of the file have the same heading: two identical entries
    # under one heading (two turns in the same second) are two entries.
    occurrence: int = 0


class BatonChanged(_Model):
    kind: Literal["baton_changed"] = "baton_changed"
    path: str = "sync/state.json"
    iteration: int | None = None
    expected_actor: str | None = None
    status: str | None = None
    last_update: datetime | None = None
    lease_expires_at: datetime | None = None
    galph_commit: str | None = None
    ralph_commit: str | None = None
    last_prompt: str | None = None


# --------------------------------------------------------------------------- hubs, git state, prompts


class HubOpened(_Model):
    kind: Literal["hub_opened"] = "hub_opened"
    path: str
    initiative: str | None = None
    stamp: str
    existing: bool = False  # already there when the collector started: not a new hub


class HubUpdated(_Model):
    kind: Literal["hub_updated"] = "hub_updated"
    path: str
    initiative: str | None = None
    files: int
    bytes: int


class HubSummaryChanged(_Model):
    kind: Literal["hub_summary_changed"] = "hub_summary_changed"
    path: str
    initiative: str | None = None
    excerpt: str = ""
    digest: str = ""  # of the whole summary: it can change past the excerpt


class InitiativeArchived(_Model):
    kind: Literal["initiative_archived"] = "initiative_archived"
    initiative: str
    path: str


class GitStateChanged(_Model):
    kind: Literal["git_state_changed"] = "git_state_changed"
    state: Literal["rebase-merge", "rebase-apply", "merge", "index-lock-stale", "detached-head"]
    active: bool
    detail: str = ""


class PromptChanged(_Model):
    kind: Literal["prompt_changed"] = "prompt_changed"
    path: str
    digest: str
    previous_digest: str | None = None
    lines_added: int = 0
    lines_removed: int = 0
    deleted: bool = False


# --------------------------------------------------------------------------- health


class CollectorStarted(_Model):
    kind: Literal["collector_started"] = "collector_started"
    path: str
    branch: str | None = None
    head: str | None = None
    host: str = ""
    pid: int = 0
    version: str = ""


class Heartbeat(_Model):
    kind: Literal["heartbeat"] = "heartbeat"
    sent: int = 0  # events this stream has published so far (excluding heartbeats)
    dropped: int = 0  # events this stream gave up on (send timed out)
    interval: float = 2.0
    final: bool = False  # the collector is stopping cleanly: expect no more from this stream


class Warning(_Model):  # noqa: A001 - the event kind is "warning"
    kind: Literal["warning"] = "warning"
    code: str
    message: str
    detail: dict[str, Any] = Field(default_factory=dict)


# --------------------------------------------------------------------------- scorer output


class Reason(_Model):
    """One thing that moved a score, with its numbers."""

    score: Literal["summary", "code_diff", "semantic", "aggregate"]
    delta: float
    text: str


class IterationScored(_Model):
    kind: Literal["iteration_scored"] = "iteration_scored"
    index: int  # ordinal of the iteration in this repo, 1-based, never repeats
    number: int | None = None  # the loop's own iteration number (may repeat)
    provisional: bool = True
    summary: int = 0
    code_diff: int = 0
    semantic: int = 0
    aggregate: int = 0
    bucket: Literal["low", "medium", "high"] = "low"
    override: str | None = None
    reasons: list[Reason] = Field(default_factory=list)
    focus: str | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    supervisor_commits: list[str] = Field(default_factory=list)
    engineer_commits: list[str] = Field(default_factory=list)
    other_commits: list[str] = Field(default_factory=list)
    code_lines: int = 0
    insertions: int = 0
    deletions: int = 0
    files_touched: int = 0
    brief_digest: str | None = None
    hubs: list[str] = Field(default_factory=list)
    evidence: Literal["tag", "baton", "alternation", "gap", "none"] = "none"


class DwellChanged(_Model):
    kind: Literal["dwell_changed"] = "dwell_changed"
    focus: str  # "*" is the global count
    value: int
    tier: str | None = None
    iterations: list[int] = Field(default_factory=list)  # the iteration indexes that make it up
    reported: int | None = None  # the supervisor's own dwell= where known


class Alert(_Model):
    kind: Literal["alert"] = "alert"
    alert: str  # alert kind: dwell_tier, git_state, bulky_artifact, ...
    severity: Severity = "warning"
    key: str  # stable: a restart or replay raises no alert twice
    iteration: int | None = None
    focus: str | None = None
    message: str
    detail: dict[str, Any] = Field(default_factory=dict)


Payload = Annotated[
    Union[
        Commit,
        CommitOrphaned,
        FileChanged,
        FilesBurst,
        LedgerItemAdded,
        LedgerItemRemoved,
        LedgerStatusChanged,
        LedgerAttemptAdded,
        FocusChanged,
        LedgerRead,
        BriefUpdated,
        MemoryEntry,
        BatonChanged,
        HubOpened,
        HubUpdated,
        HubSummaryChanged,
        InitiativeArchived,
        GitStateChanged,
        PromptChanged,
        CollectorStarted,
        Heartbeat,
        Warning,
        IterationScored,
        DwellChanged,
        Alert,
    ],
    Field(discriminator="kind"),
]

PAYLOAD_KINDS: tuple[str, ...] = tuple(
    m.model_fields["kind"].default for m in Payload.__origin__.__args__  # type: ignore[attr-defined]
)


class Envelope(_Model):
    """One event on the bus: where it came from, when, and its payload."""

    # The bytes `from_wire` read this envelope from: a slot, not a field (never
    # serialised, not carried by model_copy). An envelope read from the wire is stored
    # as it came (`json_text`) instead of being serialised a second time.
    __slots__ = ("_received",)

    v: int = SCHEMA_VERSION
    repo: str
    source: str  # collector name: commits, files, ledger, ..., scorer, bus
    stream: str = ""  # one collector run; sequence numbers count per (repo, source, stream)
    seq: int = 0
    time: datetime = Field(default_factory=utcnow)  # when it happened
    observed: datetime = Field(default_factory=utcnow)  # when loopmon saw it
    payload: Payload

    @property
    def kind(self) -> str:
        return self.payload.kind

    @property
    def key(self) -> str:
        """Natural identity: the same fact observed twice has the same key."""
        natural = getattr(self.payload, "natural_key", None)
        if natural is not None:
            return f"{self.repo}/{natural()}"
        if isinstance(self.payload, Alert):
            return f"{self.repo}/alert:{self.payload.key}"
        return f"{self.repo}/{self.source}/{self.stream}/{self.seq}"

    def to_wire(self) -> bytes:
        return self.model_dump_json(exclude_defaults=False).encode("utf-8")

    @classmethod
    def from_wire(cls, data: bytes | str) -> "Envelope":
        env = cls.model_validate_json(data)
        object.__setattr__(env, "_received", data)
        return env

    def json_text(self) -> str:
        """This envelope's JSON: the text it was read from (validated then), else serialised now."""
        try:
            data = object.__getattribute__(self, "_received")
        except AttributeError:
            return self.model_dump_json()
        return data.decode("utf-8") if isinstance(data, bytes) else data


_payload_adapter: TypeAdapter[Any] = TypeAdapter(Payload)


def parse_payload(data: dict[str, Any]) -> Any:
    """Validate a payload dict (with its `kind`) into its model."""
    return _payload_adapter.validate_python(data)


def digest(data: bytes | str) -> str:
    if isinstance(data, str):
        data = data.encode("utf-8", errors="surrogateescape")
    return hashlib.sha256(data).hexdigest()[:16]


def b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")
