"""Bad input to a running monitor: it says what went wrong, keeps running, and loses nothing.

Each test runs the monitor as `loopmon run` builds it (store, scorer, collectors
over the bus, in one process), feeds it one kind of trouble, and checks three
things: the trouble is in the store as a warning (or, where it is data rather
than trouble, stored exactly), the monitor is still alive, and a good event
afterwards is still stored.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import zmq

from monitor.config import settings_from_dict
from monitor.runtime import CollectorSet, Server
from monitor.scorer import Scorer
from sinks.live import LiveView
from sinks.sqlite import SqliteSink
from conftest import GitRepo


class Monitor:
    """A running monitor on one repo, wired as `loopmon run` wires it, with its store outside the repo."""

    def __init__(self, tmp_path: Path, repo: Path, **overrides: dict) -> None:
        self.repo = repo
        self.settings = settings_from_dict({"bus": {"heartbeat_seconds": 0.3, "resend_seconds": 0.5}, **overrides})
        self.db = tmp_path / "store.db"
        self.errors: list[str] = []  # what the server prints on stderr
        self.context = zmq.Context()
        self.store = SqliteSink(self.db, self.settings.store)
        endpoint = f"inproc://faults-{uuid.uuid4().hex[:8]}"
        self.server = Server(
            endpoint, [self.store], self.settings, context=self.context, scorer=Scorer(self.settings), on_error=self.errors.append
        )
        self.server.receiver.resume(self.store.stream_positions(), stored=self.store.holds)
        self.server.start()
        self.collectors = CollectorSet(repo, self.settings, endpoint, context=self.context).start()
        self.wait(lambda: self.count("kind = 'collector_started'") == 1, "the collectors to start")

    def rows(self, sql: str, params: tuple = ()) -> list[tuple]:
        conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=10)
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()

    def count(self, where: str, params: tuple = ()) -> int:
        return self.rows(f"SELECT count(*) FROM events WHERE {where}", params)[0][0]

    def warnings(self, code: str) -> list[dict]:
        """Payloads of the stored warnings with this code."""
        found = self.rows("SELECT envelope FROM events WHERE kind = 'warning'")
        payloads = [json.loads(e)["payload"] for (e,) in found]
        return [p for p in payloads if p["code"] == code]

    def wait(self, predicate, what: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}; server said {self.errors}")

    def wait_warning(self, code: str, timeout: float = 20.0) -> dict:
        self.wait(lambda: self.warnings(code), f"a {code} warning", timeout)
        return self.warnings(code)[0]

    def alive(self) -> bool:
        """The receiving thread and the watcher's thread still run."""
        server = self.server._thread
        watcher = self.collectors.watcher._thread
        return bool(server and server.is_alive() and watcher and watcher.is_alive() and self.server.error is None)

    def still_collects(self, repo: GitRepo, message: str = "RALPH AUTO: after the trouble — tests: not run") -> None:
        """A good commit after the trouble reaches the store."""
        path = f"src/after_{uuid.uuid4().hex[:6]}.py"
        repo.write(path, "x = 1\n")
        repo.git("add", path)  # only this file: the trouble may have left others around
        repo.git("commit", "-q", "-m", message)
        sha = repo.git("rev-parse", "HEAD")
        self.wait(lambda: self.rows("SELECT count(*) FROM commits WHERE sha = ?", (sha,))[0][0] == 1, f"commit {sha[:8]}")

    def close(self) -> None:
        self.collectors.stop()
        self.server.stop()
        self.collectors.close()


@pytest.fixture
def loop(repo: GitRepo) -> GitRepo:
    repo.commit("Initial loop scaffold", {"src/app.py": "print('hi')\n", "docs/fix_plan.md": "# Fix Plan Ledger\n"})
    return repo


@pytest.fixture
def monitor(tmp_path: Path, loop: GitRepo):
    mon = Monitor(tmp_path, loop.root)
    yield mon
    mon.close()


# --------------------------------------------------------------------------- loop files


def test_a_truncated_baton_is_a_warning_and_the_next_good_one_counts(monitor: Monitor, loop: GitRepo) -> None:
    loop.write("sync/state.json", '{"iteration": 3, "expected_actor": "ral')  # cut mid-write, and it stays so
    warning = monitor.wait_warning("baton_invalid")
    assert "sync/state.json" in warning["message"]
    loop.write("sync/state.json", json.dumps({"iteration": 3, "expected_actor": "ralph", "status": "running-ralph"}))
    monitor.wait(lambda: monitor.rows("SELECT baton_iteration FROM repos")[0][0] == 3, "the good baton")
    assert monitor.alive()
    monitor.still_collects(loop)


def big_ledger(chars: int) -> tuple[str, int]:
    """A well-formed ledger of at least `chars` characters: (text, items)."""
    head = "# Fix Plan Ledger\n\n**Active Focus:**\n- `[BIG-00000]` first\n\n"
    parts, size, i = [head], len(head), 0
    while size < chars:
        attempts = "".join(
            f"  * [2025-10-15] Attempt #{k} — Result: ✅ success (step {k}). {'evidence and notes ' * 12}\n" for k in range(1, 6)
        )
        item = f"## [BIG-{i:05d}] Item {i}\n- Priority: High\n- Status: in_progress\n- Attempts History:\n{attempts}\n"
        parts.append(item)
        size += len(item)
        i += 1
    return "".join(parts), i


def test_a_5_mb_ledger_is_read_whole_and_flagged(monitor: Monitor, loop: GitRepo) -> None:
    text, items = big_ledger(5_000_000)
    loop.write("docs/fix_plan.md", text)
    monitor.wait(lambda: monitor.rows("SELECT count(*) FROM ledger_items")[0][0] == items, f"{items} ledger items", 60)
    monitor.wait(lambda: monitor.rows("SELECT count(*) FROM alerts WHERE alert = 'ledger_bloat'")[0][0] == 1, "ledger bloat")
    [(severity, message)] = monitor.rows("SELECT severity, message FROM alerts WHERE alert = 'ledger_bloat'")
    assert severity in ("notice", "warning") and "docs/fix_plan.md" in message
    assert monitor.alive()
    monitor.still_collects(loop)


def test_a_binary_file_named_fix_plan_is_a_warning_not_a_ledger(monitor: Monitor, loop: GitRepo) -> None:
    loop.write("docs/fix_plan.md", bytes(range(256)) * 40)
    warning = monitor.wait_warning("ledger_binary")
    assert warning["detail"]["path"] == "docs/fix_plan.md"
    assert monitor.rows("SELECT count(*) FROM ledger_items")[0][0] == 0
    loop.write("docs/fix_plan.md", "# Fix Plan Ledger\n\n## [REAL-001] A real item\n- Status: in_progress\n")
    monitor.wait(lambda: monitor.rows("SELECT item_id FROM ledger_items") == [("REAL-001",)], "the real ledger")
    assert monitor.alive()
    monitor.still_collects(loop)


# --------------------------------------------------------------------------- hostile text


def test_non_utf8_messages_and_paths_are_stored_byte_for_byte(monitor: Monitor, loop: GitRepo) -> None:
    message = b"RALPH AUTO: caf\xe9 \xff\xfe fix \xe2\x9c\x85 \xc3"
    path = b"src/caf\xe9_\xff.py"
    (loop.root / "src").mkdir(exist_ok=True)
    with open(os.path.join(os.fsencode(loop.root), path), "wb") as handle:
        handle.write(b"x = 1\n")
    loop.git("add", "-A")
    # `git commit` would re-encode the message; old and imported histories hold raw bytes.
    header = f"tree {loop.git('write-tree')}\nparent {loop.git('rev-parse', 'HEAD')}\n"
    header += "author Loop Tester <t@example.invalid> 1767600000 +0000\ncommitter Loop Tester <t@example.invalid> 1767600000 +0000\n\n"
    raw = header.encode() + message + b"\n"
    made = subprocess.run(["git", "-C", str(loop.root), "hash-object", "-t", "commit", "-w", "--stdin"], input=raw, capture_output=True, check=True)
    sha = made.stdout.decode().strip()
    loop.git("update-ref", "refs/heads/main", sha)
    monitor.wait(lambda: monitor.rows("SELECT count(*) FROM commits WHERE sha = ?", (sha,))[0][0] == 1, "the commit")
    [(stored_message, raw)] = monitor.rows("SELECT message, message_bytes FROM commits WHERE sha = ?", (sha,))
    assert raw.rstrip(b"\n") == message and "caf\ufffd" in stored_message  # readable text and the exact bytes
    [(readable, exact)] = monitor.rows("SELECT path, path_bytes FROM commit_files WHERE sha = ?", (sha,))
    assert exact == path and readable.startswith("src/caf")
    monitor.wait(lambda: monitor.count("kind = 'file_changed' AND json_extract(envelope, '$.payload.path') LIKE 'src/caf%'") > 0,
                 "the working-tree event")
    assert monitor.alive()
    monitor.still_collects(loop)


HOSTILE = "[bold red]PWNED[/] '); DROP TABLE commits; -- $(touch CANARY) `touch CANARY2` %s {0} \x1b[31m"


def test_markup_sql_and_shell_in_messages_and_paths_stay_text(monitor: Monitor, loop: GitRepo, tmp_path: Path) -> None:
    name = "src/[red]x[/red]; rm -rf $HOME $(touch CANARY).py"
    sha = loop.commit(f"RALPH AUTO: {HOSTILE} — tests: not run", {name: "x = 1\n"})
    loop.write("docs/fix_plan.md", f"# Fix Plan Ledger\n\n## [EVIL-001] {HOSTILE}\n- Status: in_progress\n")
    monitor.wait(lambda: monitor.rows("SELECT count(*) FROM commits WHERE sha = ?", (sha,))[0][0] == 1, "the commit")
    monitor.wait(lambda: monitor.rows("SELECT title FROM ledger_items WHERE item_id = 'EVIL-001'"), "the ledger item")
    [(message,)] = monitor.rows("SELECT message FROM commits WHERE sha = ?", (sha,))
    assert HOSTILE.strip() in message
    assert monitor.rows("SELECT path FROM commit_files WHERE sha = ?", (sha,)) == [(name,)]
    assert monitor.rows("SELECT title FROM ledger_items WHERE item_id = 'EVIL-001'")[0][0].startswith("[bold red]PWNED[/]")
    assert not list(loop.root.rglob("CANARY*")) and not list(Path.cwd().glob("CANARY*")), "no shell ran"
    monitor.still_collects(loop)
    snapshot = tmp_path / "view.html"
    LiveView.from_store(monitor.db).snapshot(snapshot)
    assert "[bold red]PWNED[/]" in snapshot.read_text(), "markup is shown as the text it is"
    assert monitor.alive()


# --------------------------------------------------------------------------- floods and a vanishing repo


def write_burst(root: Path, staging: Path, count: int) -> None:
    """`count` small files moved into root/burst/ as fast as Python goes: one change each."""
    (root / "burst").mkdir(exist_ok=True)
    staging.mkdir(exist_ok=True)
    for i in range(count):
        tmp = staging / f"f{i}"
        with open(tmp, "w") as handle:
            handle.write("x")
        os.rename(tmp, root / "burst" / f"f{i:06d}.txt")


def file_events_accounted(monitor: Monitor) -> int:
    """Changes the store holds under burst/: one by one, or counted in flood summaries."""
    single = monitor.count("kind = 'file_changed' AND json_extract(envelope, '$.payload.path') LIKE 'burst/%'")
    bursts = monitor.rows("SELECT sum(json_extract(envelope, '$.payload.count')) FROM events WHERE kind = 'files_burst'")
    return single + (bursts[0][0] or 0)


SOAK = [pytest.mark.soak, pytest.mark.skipif(not os.environ.get("LOOPMON_SOAK"), reason="soak: set LOOPMON_SOAK=1")]


@pytest.mark.parametrize("count", [20_000, pytest.param(100_000, marks=SOAK)])
def test_a_flood_of_files_becomes_summaries_and_the_monitor_keeps_up(monitor: Monitor, loop: GitRepo, tmp_path: Path, count: int) -> None:
    write_burst(loop.root, tmp_path / "staging", count)
    lost = []

    def settled() -> bool:
        lost[:] = monitor.warnings("watch_events_lost")
        return bool(lost) or file_events_accounted(monitor) >= count

    monitor.wait(settled, f"all {count} changes accounted for", timeout=120)
    if not lost:
        assert file_events_accounted(monitor) == count, "each change counted once"
    summaries = monitor.count("kind = 'files_burst'")
    assert 0 < summaries < 200 and monitor.count("kind = 'file_changed'") < count, "summaries, not one event per file"
    if lost:  # the kernel's queue overflowed: then the monitor says so, and reads the loop's files again
        assert "max_queued_events" in lost[0]["message"]
    assert monitor.alive()
    monitor.still_collects(loop)


def test_the_repo_deleted_and_recreated_is_watched_again(monitor: Monitor, loop: GitRepo, tmp_path: Path) -> None:
    backup = tmp_path / "backup"
    shutil.copytree(loop.root, backup, symlinks=True)
    shutil.rmtree(loop.root)
    gone = monitor.wait_warning("watch_root_gone")
    assert str(loop.root) in gone["message"]
    shutil.copytree(backup, loop.root, symlinks=True)  # a fresh clone in the same place
    monitor.wait_warning("watch_root_back")
    assert monitor.alive()
    monitor.still_collects(loop)
    loop.write("input.md", "Summary: after the re-clone\nFocus: NEW-001\n")
    monitor.wait(lambda: monitor.count("kind = 'brief_updated'") >= 1, "a file event in the new folder")


# --------------------------------------------------------------------------- git trouble


def test_a_force_push_is_a_warning_and_the_rewritten_commits_are_orphaned(tmp_path: Path) -> None:
    origin = tmp_path / "origin.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(origin)], check=True)
    (tmp_path / "elsewhere").mkdir()
    other = GitRepo(tmp_path / "elsewhere")
    base = other.commit("base", {"a.py": "a = 1\n"})
    other.git("remote", "add", "origin", str(origin))
    doomed = [other.commit(f"RALPH AUTO: step {i} — tests: not run", {f"s{i}.py": "x = 1\n"}) for i in range(2)]
    other.git("push", "-q", "origin", "main")
    watched = tmp_path / "loop"
    subprocess.run(["git", "clone", "-q", str(origin), str(watched)], check=True)
    loop = GitRepo(watched)  # the same clone, with the test's helpers
    mon = Monitor(tmp_path, watched)
    try:
        other.git("reset", "-q", "--hard", base)
        replacement = other.commit("RALPH AUTO: redone — tests: not run", {"r.py": "r = 1\n"})
        other.git("push", "-q", "--force", "origin", "main")
        loop.git("fetch", "-q", "origin")  # origin/main now points elsewhere...
        loop.git("reset", "-q", "--hard", "origin/main")  # ...and the loop follows it
        warning = mon.wait_warning("history_rewritten")
        assert warning["detail"]["ref"] == "refs/heads/main" and warning["detail"]["orphaned"] == 2
        mon.wait(lambda: mon.count("kind = 'commit_orphaned'") == 2, "the orphaned commits")
        orphaned = {json.loads(e)["payload"]["sha"] for (e,) in mon.rows("SELECT envelope FROM events WHERE kind = 'commit_orphaned'")}
        assert orphaned == set(doomed)
        mon.wait(lambda: mon.rows("SELECT count(*) FROM commits WHERE sha = ?", (replacement,))[0][0] == 1, "the replacement")
        assert mon.alive()
        mon.still_collects(loop)
    finally:
        mon.close()


def test_a_detached_head_is_reported_and_its_commits_still_count(monitor: Monitor, loop: GitRepo) -> None:
    loop.commit("second", {"b.py": "b = 1\n"})
    loop.git("checkout", "-q", "--detach", "HEAD~1")
    monitor.wait(
        lambda: monitor.count("kind = 'git_state_changed' AND json_extract(envelope, '$.payload.state') = 'detached-head'") >= 1,
        "the detached HEAD",
    )
    monitor.still_collects(loop, "RALPH AUTO: work on a detached HEAD — tests: not run")
    loop.git("checkout", "-q", "main")
    monitor.wait(
        lambda: monitor.rows(
            "SELECT json_extract(envelope, '$.payload.active') FROM events WHERE kind = 'git_state_changed' ORDER BY id DESC LIMIT 1"
        ) == [(0,)],
        "HEAD attached again",
    )
    assert monitor.alive()
    monitor.still_collects(loop)


def test_missing_git_objects_are_a_warning_and_the_commit_is_kept(monitor: Monitor, loop: GitRepo) -> None:
    def git_in(args: list[str], data: bytes) -> str:
        return subprocess.run(["git", "-C", str(loop.root), *args], input=data, capture_output=True, check=True).stdout.decode().strip()

    # A commit made by hand whose new file's blob is then removed from the object store.
    blob = git_in(["hash-object", "-w", "--stdin"], b"lost = 1\n" * 50)
    tree = git_in(["mktree"], (loop.git("ls-tree", "HEAD") + f"\n100644 blob {blob}\tlost.py\n").encode())
    commit = loop.git("commit-tree", tree, "-p", "HEAD", "-m", "RALPH AUTO: a commit whose blob is gone — tests: not run")
    os.remove(loop.root / ".git" / "objects" / blob[:2] / blob[2:])  # a partial clone, or a file dropped for size
    loop.git("update-ref", "refs/heads/side", commit)
    warning = monitor.wait_warning("git_objects_missing")
    assert warning["detail"]["sha"] == commit
    monitor.wait(lambda: monitor.rows("SELECT count(*) FROM commits WHERE sha = ?", (commit,))[0][0] == 1, "the commit itself")
    assert monitor.alive()
    monitor.still_collects(loop)


# --------------------------------------------------------------------------- a full disk


def test_a_full_disk_delays_events_tells_the_user_and_loses_nothing(monitor: Monitor, loop: GitRepo) -> None:
    store = monitor.store
    with store._lock:
        pages = store.conn.execute("PRAGMA page_count").fetchone()[0]
        store.conn.execute(f"PRAGMA max_page_count = {pages}")  # not one page more: the disk is full
    # Each commit needs pages of its own (a long message), so none fits in what is left.
    long = "a long report line\n" * 1000
    shas = [loop.commit(f"RALPH AUTO: while the disk is full {i} — tests: not run\n\n{long}", {f"src/full{i}.py": "x = 1\n"}) for i in range(3)]
    monitor.wait(lambda: any("cannot write" in e for e in monitor.errors), "the message on stderr")
    assert "database or disk is full" in next(e for e in monitor.errors if "cannot write" in e)
    time.sleep(1.5)  # a retry or two, still full
    stored = lambda: monitor.rows(f"SELECT count(*) FROM commits WHERE sha IN ({','.join('?' * len(shas))})", tuple(shas))[0][0]  # noqa: E731
    assert stored() == 0 and monitor.server.backlog > 0, "the events wait in memory"
    assert monitor.alive()
    with store._lock:
        store.conn.execute("PRAGMA max_page_count = 1073741823")  # space is back
    monitor.wait(lambda: stored() == 3, "the waiting commits")
    failed = monitor.wait_warning("sink_write_failed")
    recovered = monitor.wait_warning("sink_write_recovered")
    assert "database or disk is full" in failed["message"] and recovered["detail"]["written"] > 0
    assert monitor.count("kind = 'commit'") == len(set(loop.git("log", "--all", "--format=%H").split())) - 1  # all but the scaffold
    monitor.still_collects(loop)
