"""The watchdog layer and the working-tree collector, with real observers on real folders."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from collectors.files import FileCollector
from collectors.gitstate import GitStateCollector
from collectors.hubs import HubCollector
from collectors.watch import Change, RepoWatcher, coalesce
from monitor.config import Settings, WatchSettings

from conftest import GitRepo


class Recorder:
    """An emit target that tests can wait on."""

    def __init__(self) -> None:
        self.payloads: list[Any] = []
        self._cond = threading.Condition()

    def __call__(self, payload: Any, when: Any = None) -> None:
        with self._cond:
            self.payloads.append(payload)
            self._cond.notify_all()

    def wait_for(self, predicate, timeout: float = 10.0) -> list[Any]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [p for p in self.payloads if predicate(p)]
                if found or time.monotonic() > deadline:
                    return found
                self._cond.wait(0.05)

    def kinds(self) -> list[str]:
        return [p.kind for p in self.payloads]


def watching(root: Path, *collectors: Any) -> RepoWatcher:
    watcher = RepoWatcher(root, list(collectors), debounce_ms=20)
    watcher.start()
    time.sleep(0.2)  # inotify watches are in place once the observer thread has scheduled them
    return watcher


def test_a_file_write_becomes_one_file_changed_with_size_and_class(repo: GitRepo) -> None:
    got = Recorder()
    files = FileCollector(repo.root, Settings(), got)
    watcher = watching(repo.root, files)
    try:
        repo.write("ptycho/model.py", "def f():\n    return 1\n")
        found = got.wait_for(lambda p: p.kind == "file_changed" and p.path == "ptycho/model.py")
    finally:
        watcher.stop()
    assert found, got.payloads
    assert found[0].path_class == "production"
    assert found[0].size == len("def f():\n    return 1\n")


def test_git_internals_loopmon_store_and_gitignored_paths_are_not_reported(repo: GitRepo) -> None:
    repo.commit("init", {".gitignore": "build/\n"})
    got = Recorder()
    watcher = watching(repo.root, FileCollector(repo.root, Settings(), got))
    try:
        repo.write(".loopmon/loopmon.db", "x")
        repo.write("build/out.o", "x")
        repo.commit("a commit writes lots under .git", {"tests/test_a.py": "def test_a():\n    assert 1\n"})
        repo.write("last.txt", "marker")
        got.wait_for(lambda p: getattr(p, "path", "") == "last.txt")
    finally:
        watcher.stop()
    paths = {p.path for p in got.payloads if p.kind == "file_changed"}
    assert "tests/test_a.py" in paths and "last.txt" in paths
    assert not any(p.startswith((".git/", ".loopmon/", "build/")) for p in paths), paths


def test_a_flood_of_files_becomes_a_bounded_stream_of_summaries(repo: GitRepo) -> None:
    got = Recorder()
    settings = Settings(watch=WatchSettings(burst_threshold=50))
    watcher = watching(repo.root, FileCollector(repo.root, settings, got))
    try:
        for i in range(3000):
            repo.write(f"data/gen/{i // 100}/f{i}.json", "{}")
        repo.write("done.flag", "x")
        got.wait_for(lambda p: getattr(p, "path", None) == "done.flag" or "done.flag" in getattr(p, "sample", []))
        time.sleep(0.3)
    finally:
        watcher.stop()
    bursts = [p for p in got.payloads if p.kind == "files_burst"]
    singles = [p for p in got.payloads if p.kind == "file_changed"]
    assert bursts, "a flood is summarised"
    assert len(got.payloads) < 300, f"3000 files must not become {len(got.payloads)} events"
    assert sum(b.count for b in bursts) + len(singles) >= 3000


def test_changes_to_one_path_coalesce() -> None:
    changes = [Change("a", "created"), Change("a", "modified"), Change("b", "modified"), Change("a", "modified")]
    assert coalesce(changes) == [Change("a", "created"), Change("b", "modified")]


def test_a_broken_collector_is_reported_and_the_others_go_on(repo: GitRepo) -> None:
    class Broken(FileCollector):
        name = "broken"

        def on_changes(self, changes: list[Change]) -> None:
            raise RuntimeError("boom")

    got = Recorder()
    errors: list[tuple[str, BaseException]] = []
    watcher = RepoWatcher(repo.root, [Broken(repo.root, Settings(), got), FileCollector(repo.root, Settings(), got)], on_error=lambda n, e: errors.append((n, e)))
    watcher.start()
    time.sleep(0.2)
    try:
        repo.write("x.py", "x = 1\n")
        assert got.wait_for(lambda p: getattr(p, "path", "") == "x.py")
    finally:
        watcher.stop()
    assert errors and errors[0][0] == "broken"


def test_hubs_opened_measured_summarised_and_archived(repo: GitRepo) -> None:
    got = Recorder()
    hubs = HubCollector(repo.root, Settings(), got)
    repo.write("plans/active/OLD-001/reports/20251015T201831Z/summary.md", "old")
    hubs.scan()
    assert [(p.kind, getattr(p, "existing", None)) for p in got.payloads][:1] == [("hub_opened", True)]
    got.payloads.clear()
    watcher = watching(repo.root, hubs)
    try:
        hub = "plans/active/FEAT-001/reports/2026-01-23T173500Z"
        repo.write(f"{hub}/pytest_green.log", "1 passed\n")
        repo.write(f"{hub}/summary.md", "# Turn summary\nall green [bold]x[/]\n")
        got.wait_for(lambda p: p.kind == "hub_summary_changed")
        repo.write("plans/archive/OLD-001/reports/x.md", "moved")
        got.wait_for(lambda p: p.kind == "initiative_archived")
    finally:
        watcher.stop()
    opened = [p for p in got.payloads if p.kind == "hub_opened"]
    assert [(p.path, p.initiative, p.stamp, p.existing) for p in opened] == [(hub, "FEAT-001", "2026-01-23T173500Z", False)]
    updates = [p for p in got.payloads if p.kind == "hub_updated" and p.path == hub]
    assert updates[-1].files == 2
    summary = [p for p in got.payloads if p.kind == "hub_summary_changed"][0]
    assert "[bold]x[/]" in summary.excerpt
    assert [p.initiative for p in got.payloads if p.kind == "initiative_archived"] == ["OLD-001"]


def test_a_real_conflicted_rebase_is_seen_and_its_end_too(repo: GitRepo) -> None:
    repo.commit("base", {"a.txt": "base\n"})
    repo.git("checkout", "-q", "-b", "side")
    repo.commit("side", {"a.txt": "side\n"})
    repo.git("checkout", "-q", "main")
    repo.commit("main", {"a.txt": "main\n"})
    got = Recorder()
    state = GitStateCollector(repo.root, Settings(), got)
    state.scan()
    assert got.payloads == []  # a clean repo says nothing
    watcher = watching(repo.root, state)
    try:
        repo.git("checkout", "-q", "side")
        repo.git("rebase", "main", check=False)
        assert got.wait_for(lambda p: p.kind == "git_state_changed" and p.active)
        repo.git("rebase", "--abort")
        # HEAD is reattached before rebase-merge goes: wait for the rebase's own end.
        assert got.wait_for(lambda p: p.kind == "git_state_changed" and p.state == "rebase-merge" and not p.active)
    finally:
        watcher.stop()
    states = [(p.state, p.active) for p in got.payloads if p.kind == "git_state_changed"]
    assert ("rebase-merge", True) in states and ("rebase-merge", False) in states


def test_a_stale_index_lock_is_reported_by_the_tick(repo: GitRepo) -> None:
    import os

    repo.commit("base", {"a.txt": "a"})
    lock = repo.root / ".git" / "index.lock"
    lock.write_text("")
    old = time.time() - 120
    os.utime(lock, (old, old))
    got = Recorder()
    state = GitStateCollector(repo.root, Settings(), got)
    state.scan()
    assert [(p.state, p.active) for p in got.payloads] == [("index-lock-stale", True)]
    lock.unlink()
    from datetime import datetime, timezone

    state.tick(datetime.now(timezone.utc))
    assert [(p.state, p.active) for p in got.payloads][-1] == ("index-lock-stale", False)
