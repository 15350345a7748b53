"""Reading the files a loop rewrites in place: bytes in, text out, never an exception.

Agents and drivers rewrite the ledger, the brief, the memory file and the baton
while the monitor watches, so a read can land on a file that is half written
(truncated to zero, or cut mid-line). `read_settled` re-reads such a file after a
short pause, for as long as it keeps changing, before anyone diffs it.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from collectors.base import Collector, Emit
from monitor.config import Settings

# A loop file past this size is not a loop file; reading it all would only hurt.
MAX_BYTES = 32 * 1024 * 1024
# NUL bytes in the first block mark a binary file (what git's own heuristic looks at).
BINARY_SNIFF = 8192


@dataclass(frozen=True)
class FileRead:
    """One read of a repo-relative file."""

    path: str
    exists: bool
    raw: bytes = b""
    text: str = ""
    error: str | None = None  # why an existing path could not be read
    too_large: bool = False

    @property
    def binary(self) -> bool:
        return looks_binary(self.raw)


def looks_binary(raw: bytes | str) -> bool:
    """Whether the content looks like a binary file rather than text."""
    head = raw[:BINARY_SNIFF]
    return (b"\x00" in head) if isinstance(head, bytes) else ("\x00" in head)


def decode(raw: bytes) -> str:
    """UTF-8 with invalid bytes replaced: a stray byte must never stop a parse."""
    return raw.decode("utf-8", errors="replace")


def read_file(root: Path, rel: str) -> FileRead:
    """Read `root/rel`; a missing file, a folder or an unreadable file is reported, never raised."""
    target = root / rel
    try:
        with open(target, "rb") as handle:
            raw = handle.read(MAX_BYTES + 1)
    except FileNotFoundError:
        return FileRead(rel, exists=False)
    except IsADirectoryError:
        return FileRead(rel, exists=True, error="is a directory, not a file")
    except OSError as exc:
        if not os.path.lexists(target):
            return FileRead(rel, exists=False)
        return FileRead(rel, exists=True, error=exc.strerror or str(exc))
    if len(raw) > MAX_BYTES:
        return FileRead(rel, exists=True, error=f"larger than {MAX_BYTES} bytes", too_large=True)
    return FileRead(rel, exists=True, raw=raw, text=decode(raw))


def read_settled(
    root: Path,
    rel: str,
    looks_incomplete: Callable[[FileRead], bool],
    pause: Callable[[float], None],
    wait_seconds: float,
    attempts: int = 2,
) -> FileRead:
    """Read `rel`; while the read looks incomplete, pause and read again, up to `attempts` times.

    A file that reads the same after a pause has settled: it is returned as it is,
    and the caller decides what an incomplete-looking but stable file means.
    """
    current = read_file(root, rel)
    for _ in range(attempts):
        if not looks_incomplete(current):
            break
        pause(wait_seconds)
        again = read_file(root, rel)
        settled = again.raw == current.raw and again.exists == current.exists
        current = again
        if settled:
            break
    return current


def touched_paths(changes: Iterable[object], wants: Callable[[str], bool]) -> list[str]:
    """The wanted paths a batch of changes touched (source or destination), in first-seen order.

    Every kind of change is answered the same way, by reading the path again: an
    atomic rewrite (temp file moved over the target) arrives as a move whose
    destination is the file, and the disk is the only truth about what is there now.
    """
    seen: dict[str, None] = {}
    for change in changes:
        for path in (getattr(change, "path", None), getattr(change, "dest", None)):
            if path and not getattr(change, "is_dir", False) and wants(path):
                seen[path] = None
    return list(seen)


class OneFileCollector(Collector):
    """A collector of one loop file, read whole whenever it changes.

    A read that `incomplete` says was caught mid-write is read again after
    `watch.baton_retry_ms`; a file that cannot be read gives one warning per
    distinct error (`<name>_unreadable`). Subclasses set `path` and `tracker`
    and say what to do with the text in `refresh`.
    """

    path: str

    def __init__(self, root: str | Path, settings: Settings, emit: Emit) -> None:
        super().__init__(root, settings, emit)
        self.wait_seconds = settings.watch.baton_retry_ms / 1000.0
        self.pause = time.sleep  # the wait before a re-read; a test swaps in "the writer finishes"
        self._error: str | None = None

    def incomplete(self, read: FileRead) -> bool:
        raise NotImplementedError

    def wants(self, path: str) -> bool:
        return path == self.path

    def on_changes(self, changes: list[object]) -> None:
        if touched_paths(changes, self.wants):
            self.refresh()

    def refresh(self) -> None:
        raise NotImplementedError

    def read_text(self) -> str | None:
        """The file's settled text, or None when it is absent or unreadable (said once)."""
        read = read_settled(self.root, self.path, self.incomplete, self.pause, self.wait_seconds)
        if not read.exists:
            return None
        if read.error is not None:
            if self._error != read.error:
                self._error = read.error
                self.warn(f"{self.name}_unreadable", f"{self.path} cannot be read: {read.error}", path=self.path)
            return None
        self._error = None
        return read.text
