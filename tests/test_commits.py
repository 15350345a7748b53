"""Commit events, live and replayed, from real repositories."""

from __future__ import annotations

import subprocess
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from collectors.commits import CommitCollector, backfill
from collectors.gitlog import GitError
from collectors.watch import Change, RepoWatcher
from conftest import GitRepo
from monitor.config import Settings
from monitor.events import Commit, CommitOrphaned, Warning


class Sink:
    """What a collector emitted, in order (thread-safe: the watcher calls from its own thread)."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, datetime | None]] = []
        self._lock = threading.Lock()

    def __call__(self, payload: Any, time: datetime | None) -> None:
        with self._lock:
            self.events.append((payload, time))

    def of(self, kind: type) -> list[Any]:
        with self._lock:
            return [p for p, _t in self.events if isinstance(p, kind)]


def loop_history(repo: GitRepo) -> list[str]:
    """A few turns of a two-agent loop, as the spec shows them."""
    return [
        repo.commit("[SYNC i=301] actor=galph status=running", {"sync/state.json": '{"iteration": 301}\n'}),
        repo.commit(
            "SUPERVISOR AUTO (prompt=supervisor.md) (iter=00301): brief — tests: not run",
            {"input.md": "Focus: [TEST-GOLDEN-001]\n", "docs/fix_plan.md": "## [TEST-GOLDEN-001] x\n"},
        ),
        repo.commit("[SYNC i=301] actor=galph → next=ralph status=ok galph_commit=0a595c40", {"sync/state.json": "{}\n"}),
        repo.commit(
            "RALPH AUTO (prompt=main.md) (iter=00301): [TEST-GOLDEN-001] golden data — tests: pytest tests/test_g.py (2 passed)",
            {"pkg/golden.py": "def make():\n    return 1\n", "tests/test_g.py": "def test_make():\n    assert make() == 1\n"},
        ),
        repo.commit("[SYNC i=302] actor=ralph → next=galph status=ok ralph_commit=c9ad556e", {"sync/state.json": "{\n}\n"}),
    ]


def run_backfill(root: Path, **kwargs: Any) -> Sink:
    sink = Sink()
    backfill(root, Settings(), sink, **kwargs)
    return sink


def test_backfill_replays_a_loop_oldest_first(repo: GitRepo) -> None:
    shas = loop_history(repo)
    sink = run_backfill(repo.root)
    commits = sink.of(Commit)
    assert [c.sha for c in commits] == shas
    assert [c.role for c in commits] == ["driver", "supervisor", "driver", "engineer", "driver"]
    assert [c.iteration for c in commits] == [301, 301, 301, 301, 302]
    assert all(c.backfill for c in commits)
    assert commits[2].sync is not None and commits[2].sync.next_actor == "ralph"
    work = commits[3]
    assert work.ledger_ids == ["TEST-GOLDEN-001"]
    assert work.tests.status == "passed" and work.tests.passed == 2
    assert {f.path: f.path_class for f in work.files} == {"pkg/golden.py": "production", "tests/test_g.py": "test"}
    assert work.evidence.symbols_changed == ["pkg/golden.py::make"]
    assert work.evidence.test_functions == ["tests/test_g.py::test_make"]
    assert {f.path: f.path_class for f in commits[1].files} == {"input.md": "brief", "docs/fix_plan.md": "ledger"}
    assert commits[-1].refs == ["HEAD", "refs/heads/main"]
    # Each commit event is timed by its commit date.
    assert all(t == p.committed_at for p, t in sink.events if isinstance(p, Commit))


def test_backfill_twice_gives_the_same_events(repo: GitRepo) -> None:
    loop_history(repo)
    first = [p.model_dump() for p, _ in run_backfill(repo.root).events]
    second = [p.model_dump() for p, _ in run_backfill(repo.root).events]
    assert first == second and len(first) == 5
    assert len({Commit.model_validate(p).natural_key() for p in first}) == 5


def test_backfill_since_and_rev_narrow_the_range(repo: GitRepo) -> None:
    shas = loop_history(repo)
    assert [c.sha for c in run_backfill(repo.root, since=shas[1]).of(Commit)] == shas[2:]
    assert [c.sha for c in run_backfill(repo.root, rev="HEAD~2").of(Commit)] == shas[:3]
    assert [c.sha for c in run_backfill(repo.root, rev=f"{shas[0]}..{shas[2]}").of(Commit)] == shas[1:3]


def test_backfill_counts_and_reports_progress(repo: GitRepo) -> None:
    loop_history(repo)
    seen: list[tuple[int, int]] = []
    assert backfill(repo.root, Settings(), Sink(), progress=lambda done, total: seen.append((done, total))) == 5
    assert seen[0] == (0, 5) and seen[-1] == (5, 5)


def test_backfill_covers_every_branch(repo: GitRepo) -> None:
    base = repo.commit("base", {"a.py": "a = 1\n"})
    repo.git("checkout", "-q", "-b", "side")
    side = repo.commit("side work", {"b.py": "b = 1\n"})
    repo.git("checkout", "-q", "main")
    main = repo.commit("main work", {"a.py": "a = 2\n"})
    shas = [c.sha for c in run_backfill(repo.root).of(Commit)]
    assert shas[0] == base and set(shas) == {base, side, main}


def test_backfill_of_something_that_is_not_there_says_so(repo: GitRepo, tmp_path: Path) -> None:
    repo.commit("one", {"a.txt": "1\n"})
    with pytest.raises(GitError, match="unknown revision"):
        backfill(repo.root, Settings(), Sink(), rev="no-such-branch")
    with pytest.raises(GitError):
        backfill(tmp_path, Settings(), Sink())


def test_a_commit_with_a_missing_blob_still_goes_out_with_a_warning(repo: GitRepo) -> None:
    repo.commit("base", {"pkg/a.py": "a = 1\n"})
    lost = repo.commit("add artifact", {"model.ckpt": "weights\n", "pkg/a.py": "a = 2\n"})
    oid = repo.git("rev-parse", f"{lost}:model.ckpt")
    (repo.root / ".git" / "objects" / oid[:2] / oid[2:]).unlink()
    sink = run_backfill(repo.root)
    commit = next(c for c in sink.of(Commit) if c.sha == lost)
    files = {f.path: f for f in commit.files}
    assert files["model.ckpt"].unknown and files["model.ckpt"].insertions is None
    assert files["pkg/a.py"].insertions == 1 and not files["pkg/a.py"].unknown
    (warning,) = sink.of(Warning)
    assert warning.code == "git_objects_missing" and warning.detail["paths"] == ["model.ckpt"]


def test_a_shallow_clone_boundary_claims_no_diff(repo: GitRepo, tmp_path: Path) -> None:
    for i in range(4):
        repo.commit(f"c{i}", {f"pkg/m{i}.py": f"x = {i}\n"})
    clone = tmp_path / "shallow"
    subprocess.run(["git", "clone", "-q", "--depth", "2", f"file://{repo.root}", str(clone)], check=True, capture_output=True)
    sink = run_backfill(clone)
    boundary, last = sink.of(Commit)
    assert boundary.message == "c2" and boundary.files == [] and boundary.evidence.truncated
    assert [f.path for f in last.files] == ["pkg/m3.py"]
    (warning,) = sink.of(Warning)
    assert warning.code == "git_shallow_boundary" and warning.detail["sha"] == boundary.sha


def test_non_utf8_messages_and_paths_keep_their_bytes(repo: GitRepo) -> None:
    import os

    with open(os.path.join(os.fsencode(repo.root), b"r\xe9sum\xe9.py"), "wb") as handle:
        handle.write(b"x = 1\n")
    repo.git("add", "-A")
    tree = repo.git("write-tree")
    body = f"tree {tree}\nauthor A <a@x> 1700000000 +0000\ncommitter A <a@x> 1700000000 +0000\n\n".encode()
    sha = subprocess.run(
        ["git", "-C", str(repo.root), "hash-object", "-t", "commit", "-w", "--stdin"],
        input=body + b"RALPH AUTO: caf\xe9\n",
        capture_output=True,
        check=True,
    ).stdout.decode().strip()
    repo.git("update-ref", "refs/heads/main", sha)
    (commit,) = run_backfill(repo.root).of(Commit)
    assert commit.message_bytes == b"RALPH AUTO: caf\xe9"
    assert commit.message == "RALPH AUTO: caf\ufffd" and commit.role == "engineer"
    (stat,) = commit.files
    assert stat.path_bytes == b"r\xe9sum\xe9.py" and stat.path_class == "production"
    # The exact bytes travel through the wire format.
    assert Commit.model_validate_json(commit.model_dump_json()).message_bytes == b"RALPH AUTO: caf\xe9"


def test_a_ten_thousand_file_commit_is_one_event(repo: GitRepo) -> None:
    lines = [b"commit refs/heads/main", b"committer T <t@x> 1700000000 +0000", b"data 4", b"wide"]
    for i in range(10_000):
        lines += [f"M 100644 inline gen/d{i % 40}/m{i}.py".encode(), b"data 12", b"def f():  1\n"]
    subprocess.run(["git", "-C", str(repo.root), "fast-import", "--quiet"], input=b"\n".join(lines) + b"\n", check=True)
    (commit,) = run_backfill(repo.root).of(Commit)
    assert len(commit.files) == 10_000 and all(f.size == 12 for f in commit.files)


# --------------------------------------------------------------------------- live


def collector(repo: GitRepo) -> tuple[CommitCollector, Sink]:
    sink = Sink()
    return CommitCollector(repo.root, Settings(), sink), sink


REF_CHANGE = [Change(".git/refs/heads/main", "modified"), Change(".git/logs/HEAD", "modified")]


def test_it_wants_refs_head_packed_refs_and_logs_only() -> None:
    wants = CommitCollector(Path("."), Settings(), Sink()).wants
    for path in (".git/HEAD", ".git/packed-refs", ".git/refs/heads/main", ".git/refs/remotes/o/x", ".git/logs/HEAD"):
        assert wants(path)
    for path in (".git/index", ".git/objects/ab/cd", "refs/heads/x", ".git/config", "src/a.py"):
        assert not wants(path)


def test_a_commit_made_after_scan_is_emitted_and_history_is_not(repo: GitRepo) -> None:
    loop_history(repo)
    live, sink = collector(repo)
    live.scan()
    assert sink.events == []
    sha = repo.commit("RALPH AUTO (iter=00302): more — tests: not run", {"pkg/golden.py": "def make():\n    return 2\n"})
    live.on_changes(REF_CHANGE)
    (commit,) = sink.of(Commit)
    assert commit.sha == sha and not commit.backfill and commit.iteration == 302
    assert commit.refs == ["HEAD", "refs/heads/main"]
    assert commit.evidence.symbols_changed == ["pkg/golden.py::make"]
    live.on_changes(REF_CHANGE)  # nothing new: nothing emitted
    live.tick(datetime.now(timezone.utc))
    assert len(sink.of(Commit)) == 1
    live.close()


def test_several_commits_at_once_come_parents_first(repo: GitRepo) -> None:
    repo.commit("base", {"a.txt": "0\n"})
    live, sink = collector(repo)
    live.scan()
    made = [repo.commit(f"c{i}", {"a.txt": f"{i}\n"}) for i in range(1, 4)]
    live.tick(datetime.now(timezone.utc))  # a missed file event is caught by the tick
    assert [c.sha for c in sink.of(Commit)] == made
    live.close()


def test_a_reset_orphans_the_commits_it_dropped(repo: GitRepo) -> None:
    repo.commit("base", {"a.txt": "0\n"})
    dropped = [repo.commit("one", {"a.txt": "1\n"}), repo.commit("two", {"a.txt": "2\n"})]
    live, sink = collector(repo)
    live.scan()
    repo.git("reset", "-q", "--hard", "HEAD~2")
    live.on_changes(REF_CHANGE)
    orphans = sink.of(CommitOrphaned)
    assert [o.sha for o in orphans] == dropped
    assert {o.ref for o in orphans} == {"refs/heads/main"} and {o.reason for o in orphans} == {"history rewritten"}
    new = repo.commit("redo", {"a.txt": "3\n"})
    live.on_changes(REF_CHANGE)
    assert [c.sha for c in sink.of(Commit)] == [new] and len(sink.of(CommitOrphaned)) == 2
    live.close()


def test_a_rebase_orphans_the_old_commits_and_emits_their_copies(repo: GitRepo) -> None:
    repo.commit("base", {"a.txt": "0\n"})
    repo.git("checkout", "-q", "-b", "feature")
    old = [repo.commit("f1", {"f.txt": "1\n"}), repo.commit("f2", {"f.txt": "2\n"})]
    repo.git("checkout", "-q", "main")
    repo.commit("main moves", {"a.txt": "1\n"})
    repo.git("checkout", "-q", "feature")
    live, sink = collector(repo)
    live.scan()
    repo.git("rebase", "-q", "main")
    live.on_changes(REF_CHANGE)
    assert [(o.sha, o.ref) for o in sink.of(CommitOrphaned)] == [(old[0], "refs/heads/feature"), (old[1], "refs/heads/feature")]
    copies = sink.of(Commit)
    assert [c.message for c in copies] == ["f1", "f2"] and not {c.sha for c in copies} & set(old)
    live.close()


def test_an_amend_orphans_the_old_commit_and_emits_the_new(repo: GitRepo) -> None:
    repo.commit("base", {"a.txt": "0\n"})
    old = repo.commit("typo", {"a.txt": "1\n"})
    live, sink = collector(repo)
    live.scan()
    repo.git("commit", "-q", "--amend", "-m", "fixed")
    live.on_changes(REF_CHANGE)
    assert [o.sha for o in sink.of(CommitOrphaned)] == [old]
    assert [c.message for c in sink.of(Commit)] == ["fixed"]
    live.close()


def test_a_deleted_unmerged_branch_orphans_its_commits(repo: GitRepo) -> None:
    repo.commit("base", {"a.txt": "0\n"})
    repo.git("checkout", "-q", "-b", "experiment")
    lost = repo.commit("experiment", {"b.txt": "1\n"})
    repo.git("checkout", "-q", "main")
    live, sink = collector(repo)
    live.scan()
    repo.git("branch", "-q", "-D", "experiment")
    live.on_changes([Change(".git/refs/heads/experiment", "deleted")])
    (orphan,) = sink.of(CommitOrphaned)
    assert (orphan.sha, orphan.ref, orphan.reason) == (lost, "refs/heads/experiment", "ref deleted")
    live.close()


def test_work_on_a_detached_head_is_seen_and_orphaned_when_left(repo: GitRepo) -> None:
    base = repo.commit("base", {"a.txt": "0\n"})
    live, sink = collector(repo)
    live.scan()
    repo.git("checkout", "-q", "--detach", base)
    detached = repo.commit("detached", {"a.txt": "1\n"})
    live.on_changes([Change(".git/HEAD", "modified")])
    assert [c.sha for c in sink.of(Commit)] == [detached]
    repo.git("checkout", "-q", "main")
    live.on_changes([Change(".git/HEAD", "modified")])
    (orphan,) = sink.of(CommitOrphaned)
    assert (orphan.sha, orphan.ref) == (detached, "HEAD")
    live.close()


def test_scan_with_known_tips_catches_up(repo: GitRepo) -> None:
    seen = repo.commit("seen", {"a.txt": "0\n"})
    missed = [repo.commit("missed 1", {"a.txt": "1\n"}), repo.commit("missed 2", {"a.txt": "2\n"})]
    live, sink = collector(repo)
    live.scan(known_tips=[seen])
    assert [c.sha for c in sink.of(Commit)] == missed and sink.of(CommitOrphaned) == []
    live.close()


def test_scan_with_known_tips_orphans_what_was_rewritten_meanwhile(repo: GitRepo) -> None:
    repo.commit("base", {"a.txt": "0\n"})
    gone = repo.commit("dropped while loopmon was down", {"a.txt": "1\n"})
    repo.git("reset", "-q", "--hard", "HEAD~1")
    live, sink = collector(repo)
    live.scan(known_tips={"refs/heads/main": gone})
    (orphan,) = sink.of(CommitOrphaned)
    assert (orphan.sha, orphan.ref, orphan.reason) == (gone, "refs/heads/main", "history rewritten")
    live2, sink2 = collector(repo)
    live2.scan(known_tips=[gone])
    (orphan,) = sink2.of(CommitOrphaned)
    assert (orphan.sha, orphan.ref) == (gone, None)
    live.close()
    live2.close()


def test_ref_events_and_ticks_from_two_threads_emit_each_commit_once(repo: GitRepo) -> None:
    repo.commit("base", {"a.txt": "0\n"})
    live, sink = collector(repo)
    live.scan()
    made = [repo.commit(f"c{i}", {"a.txt": f"{i}\n"}) for i in range(5)]
    threads = [threading.Thread(target=live.on_changes, args=(REF_CHANGE,)) for _ in range(3)]
    threads += [threading.Thread(target=live.tick, args=(datetime.now(timezone.utc),)) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [c.sha for c in sink.of(Commit)] == made
    live.close()


def test_a_folder_that_is_not_a_repo_gives_a_warning_not_a_crash(tmp_path: Path) -> None:
    sink = Sink()
    live = CommitCollector(tmp_path, Settings(), sink)
    live.scan()
    live.tick(datetime.now(timezone.utc))
    live.tick(datetime.now(timezone.utc))
    (warning,) = sink.of(Warning)  # said once, not every second
    assert warning.code == "git_refs"
    # Once it is a repo, its existing history is not replayed; what comes after is seen.
    repo = GitRepo.__new__(GitRepo)
    repo.root = tmp_path
    repo.git("init", "-q", "-b", "main")
    repo.commit("before", {"a.txt": "0\n"})
    live.tick(datetime.now(timezone.utc))
    after = repo.commit("after", {"a.txt": "1\n"})
    live.tick(datetime.now(timezone.utc))
    assert [c.sha for c in sink.of(Commit)] == [after]
    live.close()


def test_a_real_watcher_delivers_a_new_commit(repo: GitRepo) -> None:
    repo.commit("base", {"a.txt": "0\n"})
    live, sink = collector(repo)
    watcher = RepoWatcher(repo.root, [live], debounce_ms=20, tick_seconds=3600)
    watcher.start()
    try:
        live.scan()
        sha = repo.commit("watched", {"a.txt": "1\n"})
        deadline = time.monotonic() + 10
        while not sink.of(Commit) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert [c.sha for c in sink.of(Commit)] == [sha]
    finally:
        watcher.stop()
        live.close()


def test_a_simulated_loop_matches_its_ground_truth(tmp_path: Path) -> None:
    from monitor.simulator import LoopSimulator

    records = LoopSimulator(tmp_path / "loop", scenario="mixed", seed=1).run(12)
    commits = {c.sha: c for c in run_backfill(tmp_path / "loop").of(Commit)}
    name = lambda flag: flag.split(".")[-1].lstrip("-").replace("-", "_")  # noqa: E731
    checked = 0
    for record in records:
        work = [commits[sha] for sha in record.work_shas]
        code: dict[str, tuple[int, int]] = {}
        for commit in work:
            for stat in commit.files:
                if stat.path_class in ("production", "test"):
                    ins, dels = code.get(stat.path, (0, 0))
                    code[stat.path] = (ins + (stat.insertions or 0), dels + (stat.deletions or 0))
        assert code == record.code, record
        evidence = [c.evidence for c in work]
        symbols = {s.split("::", 1)[1] for e in evidence for s in e.symbols_changed}
        assert set(record.symbols) <= symbols, record
        assert set(record.tests) <= {t for e in evidence for t in e.test_functions}, record
        assert {name(f) for f in record.flags_added + record.fields_added} <= {f for e in evidence for f in e.flags_added}
        assert {name(f) for f in record.flags_consumed} <= {f for e in evidence for f in e.flags_consumed}
        assert record.asserts == sum(e.asserts_added for e in evidence)
        for commit in work:
            if not commit.message.startswith("[SYNC"):
                assert commit.role == record.role, (commit.message, record.actor)
        checked += bool(record.code)
    assert checked >= 5  # the mixed scenario lands code in several turns
