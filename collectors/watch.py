"""A thin layer over watchdog: one observer per repo, debounced changes handed to collectors.

One recursive observer serves every collector of a repo (inotify watches are a
per-user budget), and one dispatcher thread hands each collector the debounced
batch of changes it `wants`, so collectors never deal with watchdog's threads.
"""

from __future__ import annotations

import os
import queue
import stat
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

# Churn nobody reads: object writes during every commit, and loopmon's own store.
_DROPPED_PREFIXES = (".git/objects/", ".loopmon/", ".git/lfs/")
_DROPPED_EXACT = frozenset({".git/objects", ".loopmon", ".git/index", ".git/COMMIT_EDITMSG", ".git/FETCH_HEAD"})
_KINDS = {"created": "created", "modified": "modified", "deleted": "deleted", "moved": "moved", "closed": "modified"}


@dataclass(frozen=True)
class Change:
    """One change to a repo-relative posix path."""

    path: str
    kind: str  # created | modified | deleted | moved
    dest: str | None = None
    is_dir: bool = False


def coalesce(changes: Iterable[Change]) -> list[Change]:
    """Keep one change per path, in first-seen order: a create followed by writes stays a create."""
    merged: dict[tuple[str, str | None], Change] = {}
    for change in changes:
        key = (change.path, change.dest)
        previous = merged.get(key)
        if previous is not None and previous.kind == "created" and change.kind == "modified":
            continue
        if previous is not None:
            del merged[key]  # re-insert so the order is that of the last change
        merged[key] = change
    return list(merged.values())


class _Handler(FileSystemEventHandler):
    def __init__(self, watcher: "RepoWatcher") -> None:
        self.watcher = watcher

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type == "events_lost":
            self.watcher.events_lost()  # the kernel's queue overflowed: read everything again
            return
        kind = _KINDS.get(event.event_type)
        if kind is None:
            return
        if kind == "modified" and event.is_directory:
            return  # a folder's mtime moves with every file in it; the files say more
        src = self.watcher.relative(event.src_path)
        dest = self.watcher.relative(event.dest_path) if getattr(event, "dest_path", "") else None
        if src is None and dest is None:
            return
        if src is None:  # moved in from outside the repo: a creation
            src, kind, dest = dest, "created", None
        elif kind == "moved" and dest is None:  # moved out of the repo: a deletion
            kind = "deleted"
        assert src is not None
        if src == "" and kind in ("deleted", "moved"):
            self.watcher.root_lost()  # inotify stops watching a deleted folder: say so on the next tick
        if _dropped(src) and (dest is None or _dropped(dest)):
            return
        self.watcher.put(Change(src, kind, dest, event.is_directory))


def _dropped(path: str) -> bool:
    return path in _DROPPED_EXACT or path.startswith(_DROPPED_PREFIXES)


def completes_ref_update(change: Change) -> bool:
    """git updates a ref by renaming its lock file over it: the commit is then readable.

    Nothing git writes after that rename matters to a reader of refs, so the batch
    holding it is dispatched at once instead of waiting out the debounce."""
    dest = change.dest
    return (
        change.kind == "moved"
        and dest is not None
        and (dest.startswith(".git/refs/") or dest in (".git/HEAD", ".git/packed-refs"))
    )


class RepoWatcher:
    """Watches one repository and feeds its collectors.

    `subscribers` are objects with `name`, `wants(path)`, `on_changes(changes)` and
    `tick(now)` (see collectors.base.Collector). An exception in one subscriber is
    passed to `on_error` and never stops the others.
    """

    def __init__(
        self,
        root: str | Path,
        subscribers: list,
        *,
        debounce_ms: int = 20,
        tick_seconds: float = 1.0,
        on_error: Callable[[str, BaseException], None] | None = None,
        on_root: Callable[[str], None] | None = None,
    ) -> None:
        self.root = Path(os.path.realpath(root))
        self._root_prefix = str(self.root) + os.sep
        self.subscribers = list(subscribers)
        self.debounce = debounce_ms / 1000.0
        self.tick_seconds = tick_seconds
        self.on_error = on_error or (lambda name, exc: None)
        self._queue: queue.SimpleQueue[Change | None] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._observer: Observer | None = None
        self._thread: threading.Thread | None = None
        self.dispatched = 0
        # The repo folder itself going away ("gone") and coming back ("back", watched again),
        # or file events dropped by the kernel ("lost"): the collectors read everything again.
        self.on_root = on_root or (lambda state: None)
        self._root_identity: tuple[int, int] | None = None
        self._root_gone = False
        self._root_lost = threading.Event()
        self._events_lost = threading.Event()

    def relative(self, path: str | bytes) -> str | None:
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        if not path:
            return None
        if path == str(self.root):
            return ""
        if not path.startswith(self._root_prefix):
            return None
        return path[len(self._root_prefix) :].replace(os.sep, "/")

    def put(self, change: Change) -> None:
        self._queue.put(change)

    def start(self) -> None:
        self._root_identity = self._identity()
        self._start_observer()
        self._thread = threading.Thread(target=self._dispatch_loop, name="loopmon-watch", daemon=True)
        self._thread.start()

    def _start_observer(self) -> None:
        observer = Observer()
        observer.schedule(_Handler(self), str(self.root), recursive=True)
        observer.daemon = True
        observer.start()
        self._observer = observer

    def _identity(self) -> tuple[int, int] | None:
        """(device, inode) of the repo folder; None while it does not exist."""
        try:
            st = os.stat(self.root)
        except OSError:
            return None
        return (st.st_dev, st.st_ino) if stat.S_ISDIR(st.st_mode) else None

    def events_lost(self) -> None:
        """The kernel dropped file events (its inotify queue overflowed under a flood)."""
        self._events_lost.set()

    def root_lost(self) -> None:
        """The observer saw the repo folder itself deleted or moved away."""
        self._root_lost.set()

    def check_root(self) -> None:
        """Notice the repo folder going away and coming back, and watch it again when it does.

        inotify drops the watch of a deleted folder, so a folder deleted and created
        again (a re-clone) would otherwise never be heard from again."""
        if self._events_lost.is_set():
            self._events_lost.clear()
            self.on_root("lost")
        identity = self._identity()
        lost = self._root_lost.is_set()
        if identity is None:
            if not self._root_gone:
                self._root_gone = True
                self.on_root("gone")
            return
        if not (self._root_gone or lost or identity != self._root_identity):
            return
        if not self._root_gone:
            self.on_root("gone")  # deleted and recreated between two looks
        self._root_lost.clear()
        self._root_gone = False
        self._root_identity = identity
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(5.0)
        try:
            self._start_observer()
        except OSError:
            self._root_gone = True  # gone again already: the next look tries once more
            return
        self.on_root("back")

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._queue.put(None)
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout)
        if self._thread is not None:
            self._thread.join(timeout)

    def _collect_batch(self, first: Change) -> list[Change]:
        batch = [first]
        deadline = time.monotonic() + self.debounce
        settled = completes_ref_update(first)
        while not settled:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                item = self._queue.get(timeout=remaining)
            except queue.Empty:
                break
            if item is None:
                break
            batch.append(item)
            settled = completes_ref_update(item)
        # Whatever else is already waiting joins this batch: under a burst the
        # batches grow instead of the queue.
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                break
            batch.append(item)
        return batch

    def _dispatch_loop(self) -> None:
        next_tick = time.monotonic() + self.tick_seconds
        while not self._stop.is_set():
            timeout = max(0.0, next_tick - time.monotonic())
            try:
                first = self._queue.get(timeout=timeout)
            except queue.Empty:
                first = None
            if first is not None:
                self.dispatch(coalesce(self._collect_batch(first)))
            if time.monotonic() >= next_tick:
                self.check_root()
                if not self._root_gone:  # nothing to look at while the folder is gone
                    self.tick(datetime.now(timezone.utc))
                next_tick = time.monotonic() + self.tick_seconds

    def dispatch(self, changes: list[Change]) -> None:
        """Hand each subscriber the changes it wants."""
        self.dispatched += len(changes)
        for subscriber in self.subscribers:
            wanted = [c for c in changes if subscriber.wants(c.path) or (c.dest is not None and subscriber.wants(c.dest))]
            if not wanted:
                continue
            try:
                subscriber.on_changes(wanted)
            except Exception as exc:  # one broken collector must not stop the others
                self.on_error(getattr(subscriber, "name", "?"), exc)

    def tick(self, now: datetime) -> None:
        for subscriber in self.subscribers:
            try:
                subscriber.tick(now)
            except Exception as exc:
                self.on_error(getattr(subscriber, "name", "?"), exc)
