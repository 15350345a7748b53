"""The short cuts that keep loopmon quick (docs/benchmarks.md), shown to keep their
meaning: each test sets the slow path's wait far beyond its own timeout, so only the
short cut can make it pass."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import zmq

from collectors.watch import Change, RepoWatcher, completes_ref_update
from monitor.bus import Publisher
from monitor.config import Settings, StoreSettings, WatchSettings
from monitor.events import FileChanged
from monitor.runtime import Server, inproc_endpoint

from conftest import GitRepo

A_MINUTE_MS = 60_000


class Changes:
    """A watcher subscriber that records what it is handed."""

    name = "changes"

    def __init__(self) -> None:
        self.batches: list[list[Change]] = []
        self.arrived = threading.Event()

    def wants(self, path: str) -> bool:
        return path.startswith(".git/refs/")

    def on_changes(self, changes: list[Change]) -> None:
        self.batches.append(changes)
        if any(completes_ref_update(c) for c in changes):
            self.arrived.set()

    def tick(self, now) -> None:  # noqa: ANN001
        pass


def test_a_ref_update_is_a_rename_of_its_lock_over_the_ref() -> None:
    assert completes_ref_update(Change(".git/refs/heads/main.lock", "moved", ".git/refs/heads/main"))
    assert completes_ref_update(Change(".git/packed-refs.lock", "moved", ".git/packed-refs"))
    assert completes_ref_update(Change(".git/HEAD.lock", "moved", ".git/HEAD"))
    assert not completes_ref_update(Change(".git/refs/heads/main.lock", "created"))
    assert not completes_ref_update(Change(".git/logs/HEAD", "modified"))
    assert not completes_ref_update(Change("src/a.py.tmp", "moved", "src/a.py"))


def test_a_commit_is_handed_over_without_waiting_out_the_debounce(repo: GitRepo) -> None:
    repo.commit("base", {"a.txt": "a\n"})
    changes = Changes()
    watcher = RepoWatcher(repo.root, [changes], debounce_ms=A_MINUTE_MS)
    watcher.start()
    try:
        time.sleep(0.2)  # the observer's watches are in place
        repo.commit("next", {"a.txt": "b\n"})
        assert changes.arrived.wait(20), changes.batches
    finally:
        watcher.stop()


def test_a_lone_event_is_stored_at_once_not_after_flush_ms(tmp_path: Path) -> None:
    from sinks.sqlite import SqliteSink

    settings = Settings(store=StoreSettings(flush_ms=A_MINUTE_MS), watch=WatchSettings())
    context = zmq.Context()
    endpoint = inproc_endpoint()
    sink = SqliteSink(tmp_path / "store.db", settings.store)
    server = Server(endpoint, [sink], settings, context=context).start()
    publisher = Publisher(endpoint, "loop", "files", settings=settings.bus, context=context)
    try:
        publisher.publish(FileChanged(path="src/a.py", change="modified"))
        deadline = time.monotonic() + 20
        stored = 0
        while time.monotonic() < deadline and not stored:
            stored = sink.counts()["events"]
            time.sleep(0.01)
        assert stored == 1
    finally:
        publisher.close()
        server.stop()
