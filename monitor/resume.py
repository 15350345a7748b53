"""Collectors that resume: each one's state, saved once the store holds what it describes.

A collector restarted after a crash (or `kill -9`) should emit what changed while it
was down, once, and nothing it had already published. So after every call that
emitted, the runtime takes the collector's `state()` together with its publisher's
sequence number, and saves that snapshot to `<repo>/.loopmon/collector/<name>.json`
only when the store has acknowledged every event up to that number. A snapshot is
therefore never ahead of the store: a crash between publishing and storing makes the
restarted collector emit those events again (the store keeps one of each), never skip
them.

Each saved file names the store that acknowledged it (`Receiver.store_token`). A
collector restarted against another store (a new or replaced database) does not
trust the file and scans from scratch, so the new store still gets the full picture.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Snapshots kept per collector while the store has not acknowledged them. Older ones
# are dropped past this: a later acknowledgement then saves a later snapshot, so the
# cost is only a longer wait before the next save.
PENDING_LIMIT = 32
FORMAT = 1


@dataclass(frozen=True)
class Saved:
    """A collector's state as the store `token` acknowledged it."""

    token: str
    state: dict[str, Any]


class StateFolder:
    """One JSON file per collector, replaced atomically (temporary file, fsync, rename).

    With an `anchor` (the repo folder, when the state lives inside it) the folder is
    only ever made below an existing anchor: saving must never recreate a repo folder
    someone deleted, which would stand in the way of its re-clone.
    """

    def __init__(self, folder: str | Path, anchor: str | Path | None = None) -> None:
        self.folder = Path(folder)
        self.anchor = Path(anchor) if anchor is not None else None

    def path(self, name: str) -> Path:
        return self.folder / f"{name}.json"

    def load(self, name: str) -> Saved | None:
        """The saved state, or None when there is none. Raises ValueError for a file that cannot be used."""
        try:
            text = self.path(name).read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"{self.path(name)} cannot be read: {exc}") from None
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ValueError(f"{self.path(name)} is not valid JSON: {exc}") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("state"), dict):
            raise ValueError(f"{self.path(name)} is not a loopmon collector state (format {FORMAT})")
        return Saved(str(data.get("store", "")), data["state"])

    def _make_folder(self) -> None:
        if self.anchor is None or not self.folder.is_relative_to(self.anchor):
            self.folder.mkdir(parents=True, exist_ok=True)
            return
        level = self.anchor
        for part in self.folder.relative_to(self.anchor).parts:
            level = level / part
            level.mkdir(exist_ok=True)  # no `parents`: a missing anchor raises FileNotFoundError

    def save(self, name: str, token: str, state: dict[str, Any]) -> None:
        """Raises OSError when it cannot (FileNotFoundError: the anchor is gone)."""
        self._make_folder()
        data = json.dumps({"format": FORMAT, "collector": name, "store": token, "state": state}, ensure_ascii=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=self.folder)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path(name))
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise


class Checkpoints:
    """One collector's snapshots, each waiting until the store has everything up to its seq."""

    def __init__(self, limit: int = PENDING_LIMIT) -> None:
        self._pending: deque[tuple[int, dict[str, Any]]] = deque()
        self._lock = threading.Lock()
        self.limit = limit

    def capture(self, seq: int, state: dict[str, Any]) -> None:
        """The collector's state now that its events up to `seq` are published."""
        with self._lock:
            self._pending.append((seq, state))
            while len(self._pending) > self.limit:
                self._pending.popleft()

    def due(self, acked: int) -> dict[str, Any] | None:
        """The newest snapshot whose events are all stored (and forget it and older ones)."""
        found = None
        with self._lock:
            while self._pending and self._pending[0][0] <= acked:
                found = self._pending.popleft()[1]
        return found

    @property
    def waiting(self) -> int:
        return len(self._pending)
