"""The driver's baton (`sync/state.json`): iteration, expected actor, status, lease.

The driver rewrites the baton at every hand-off, so a read can catch it mid-write
(empty, or cut-off JSON). `parse_baton` raises `BatonError` for such bytes;
`BatonCollector` then reads again after `watch.baton_retry_ms`, once more after
the same wait, and only a baton still invalid after that becomes a `warning`
(`baton_invalid`, once per distinct content). `BatonTracker` emits
`baton_changed` only when a field changed.
"""

from __future__ import annotations

import json
import re
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from collectors.base import Collector, Emit
from collectors.textfile import decode, read_file, touched_paths
from monitor.config import Settings
from monitor.events import BatonChanged, digest

MAX_FIELD = 200
# Fields compared to decide whether the baton changed (everything but kind/path).
_COMPARED = ("iteration", "expected_actor", "status", "last_update", "lease_expires_at", "galph_commit", "ralph_commit", "last_prompt")


class BatonError(ValueError):
    """Bytes that are not a baton; the message says what was seen."""


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, (dict, list)):
        return None
    text = str(value).strip()
    return text[:MAX_FIELD] or None


def _iteration(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"\d{1,18}", value.strip(), re.ASCII):
        return int(value.strip())
    return None


def _when(value: Any) -> datetime | None:
    """ISO-8601 (`2025-10-11T05:32:44Z`) or epoch seconds, as an aware UTC datetime; junk is None."""
    try:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return datetime.fromtimestamp(value, tz=timezone.utc)
        if not isinstance(value, str) or not value.strip():
            return None
        parsed = datetime.fromisoformat(value.strip().replace("z", "Z"))
    except (ValueError, OverflowError, OSError):
        return None
    return parsed.replace(tzinfo=timezone.utc) if parsed.tzinfo is None else parsed.astimezone(timezone.utc)


def _describe(data: bytes) -> str:
    shown = decode(data[:80]).replace("\n", "\\n")
    return f"{len(data)} bytes starting {shown!r}" + ("…" if len(data) > 80 else "")


def parse_baton(data: bytes, path: str = "sync/state.json") -> BatonChanged:
    """The baton's fields. Raises `BatonError` for empty, non-JSON or non-object content.

    A field of the wrong type is read as absent (None) rather than failing the
    whole baton: one odd field should not hide the iteration and the lease.
    """
    if not data.strip():
        raise BatonError("empty file (caught mid-write?)")
    try:
        value = json.loads(decode(data))
    except json.JSONDecodeError as exc:
        raise BatonError(f"not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}): {_describe(data)}") from None
    except RecursionError:
        raise BatonError(f"JSON nested too deeply: {_describe(data)}") from None
    except ValueError as exc:  # e.g. an integer past Python's digit limit
        raise BatonError(f"unreadable JSON ({exc}): {_describe(data)}") from None
    if not isinstance(value, dict):
        raise BatonError(f"JSON {type(value).__name__}, not an object: {_describe(data)}")
    return BatonChanged(
        path=path,
        iteration=_iteration(value.get("iteration")),
        expected_actor=_text(value.get("expected_actor")),
        status=_text(value.get("status")),
        last_update=_when(value.get("last_update")),
        lease_expires_at=_when(value.get("lease_expires_at")),
        galph_commit=_text(value.get("galph_commit")),
        ralph_commit=_text(value.get("ralph_commit")),
        last_prompt=_text(value.get("last_prompt")),
    )


def baton_fields(baton: BatonChanged) -> tuple[Any, ...]:
    return tuple(getattr(baton, name) for name in _COMPARED)


class BatonTracker:
    """Emits `baton_changed` when a field differs from the last baton emitted for that path."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[Any, ...]] = {}

    def last(self, path: str) -> tuple[Any, ...] | None:
        return self._last.get(path)

    def update(self, path: str, data: bytes) -> list[BatonChanged]:
        """Raises `BatonError` for invalid bytes (the caller decides whether to read again)."""
        baton = parse_baton(data, path)
        fields = baton_fields(baton)
        if self._last.get(path) == fields:
            return []
        self._last[path] = fields
        return [baton]


class BatonCollector(Collector):
    """Reads `files.baton` whenever it changes; re-reads a baton caught mid-write."""

    name = "baton"

    def __init__(self, root: str | Path, settings: Settings, emit: Emit) -> None:
        super().__init__(root, settings, emit)
        self.path = settings.files.baton
        self.tracker = BatonTracker()
        self.wait_seconds = settings.watch.baton_retry_ms / 1000.0
        self.retries = 2  # one re-read after the wait, one more after "a short wait"
        self.pause = time.sleep  # the wait before a re-read; a test swaps in "the writer finishes"
        self._warned: str | None = None  # digest of the invalid content last warned about
        self._accepted: bytes | None = None  # the content of the last baton reported

    def state(self) -> dict[str, Any] | None:
        # latin-1 carries any bytes through JSON unchanged.
        return {"raw": self._accepted.decode("latin-1")} if self._accepted is not None else None

    def restore(self, state: dict[str, Any]) -> None:
        raw = state.get("raw")
        if isinstance(raw, str):
            try:
                self.tracker.update(self.path, raw.encode("latin-1"))
                self._accepted = raw.encode("latin-1")
            except (BatonError, UnicodeEncodeError):
                pass  # an unreadable saved baton: the next read reports the current one

    def wants(self, path: str) -> bool:
        return path == self.path

    def scan(self) -> None:
        self.refresh()

    def on_changes(self, changes: list[Any]) -> None:
        if touched_paths(changes, self.wants):
            self.refresh()

    def refresh(self) -> None:
        """Read the baton; on invalid content wait and read again, then warn if it stays invalid."""
        error: BatonError | None = None
        raw = b""
        for attempt in range(self.retries + 1):
            if attempt:
                self.pause(self.wait_seconds)
            read = read_file(self.root, self.path)
            if not read.exists:
                return  # no baton (yet, or any more): a single-agent loop has none
            if read.error is not None:
                error, raw = BatonError(read.error), b""
                continue
            raw = read.raw
            try:
                payloads = self.tracker.update(self.path, raw)
            except BatonError as exc:
                error = exc
                continue
            self._warned = None
            if payloads:
                self._accepted = raw
            for payload in payloads:
                self.emit(payload, None)
            return
        key = digest(raw) + str(error)
        if error is not None and self._warned != key:
            self._warned = key
            self.warn(
                "baton_invalid",
                f"{self.path} is not a valid baton after {self.retries} re-reads: {error}",
                path=self.path,
                bytes=len(raw),
            )
