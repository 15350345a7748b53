"""The streaming git reader on real repositories: numstat, hunks, odd bytes, missing objects, size."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from collectors.gitlog import (
    LogReader,
    ObjectReader,
    RawCommit,
    Unreadable,
    _split_records,
    read_tips,
    rev_list,
)
from conftest import GitRepo


def read_all(root: Path, **kwargs) -> list[RawCommit | Unreadable]:
    tips = read_tips(root, ["refs/heads/"], None)
    return list(LogReader(root, **kwargs).read(rev_list(root, sorted(set(tips.values())))))


def by_path(commit: RawCommit) -> dict[bytes, object]:
    return {f.path: f for f in commit.files}


def drop_object(root: Path, oid: str) -> None:
    """Delete a loose object, as a partial copy or a size-pruned clone would lack it."""
    (root / ".git" / "objects" / oid[:2] / oid[2:]).unlink()


def test_numstat_binary_files_and_renames(repo: GitRepo) -> None:
    repo.commit("first", {"src/a.py": "x = 1\ny = 2\n", "data.bin": b"\x00\x01\x02", "notes.txt": "one\ntwo\nthree\n"})
    (repo.root / "docs").mkdir()
    repo.git("mv", "notes.txt", "docs/notes.txt")
    repo.commit("second", {"src/a.py": "x = 1\ny = 3\nz = 4\n", "data.bin": b"\x00\x09\x02\x03"})
    first, second = read_all(repo.root)
    assert isinstance(first, RawCommit) and isinstance(second, RawCommit)
    assert first.parents == [] and second.parents == [first.sha]
    files = by_path(second)
    a = files[b"src/a.py"]
    assert (a.insertions, a.deletions, a.status, a.binary) == (2, 1, "M", False)
    assert a.old_oid and a.new_oid and a.old_oid != a.new_oid
    binary = files[b"data.bin"]
    assert binary.binary and binary.insertions is None and binary.deletions is None
    moved = files[b"docs/notes.txt"]
    assert (moved.old_path, moved.status, moved.insertions, moved.deletions) == (b"notes.txt", "R", 0, 0)
    assert {f.status for f in first.files} == {"A"}


def test_hunks_keep_positions_lines_and_git_function_context(repo: GitRepo) -> None:
    body = "int other(void) {\n  return 0;\n}\n\nint compute(int x) {\n  int y = x;\n  return y;\n}\n"
    repo.commit("c", {"lib/calc.c": body})
    repo.commit("c2", {"lib/calc.c": body.replace("  return y;", "  y += 1;\n  return y * 2;")})
    change = by_path(read_all(repo.root)[-1])[b"lib/calc.c"]
    (hunk,) = change.hunks
    assert (hunk.old_start, hunk.old_count, hunk.new_start, hunk.new_count) == (7, 1, 7, 2)
    assert hunk.removed == [b"  return y;"] and hunk.added == [b"  y += 1;", b"  return y * 2;"]
    assert b"compute" in hunk.context
    assert change.hunks_read


def test_hunks_are_only_kept_for_wanted_paths_and_up_to_the_cap(repo: GitRepo) -> None:
    repo.commit("base", {"a.py": "a\n" * 50, "b.md": "b\n" * 50})
    repo.commit("edit", {"a.py": "A\n" * 50, "b.md": "B\n" * 50})
    commit = read_all(repo.root, want_hunks=lambda path: path.endswith(b".py"))[-1]
    files = by_path(commit)
    assert files[b"a.py"].hunks and not files[b"b.md"].hunks and not files[b"b.md"].hunks_read
    assert files[b"b.md"].insertions == 50  # numstat is complete whatever the hunks
    capped = read_all(repo.root, patch_lines_cap=30)[-1]
    assert capped.truncated
    assert not by_path(capped)[b"b.md"].hunks  # the cap was spent on a.py's 100 lines


def commit_raw_message(repo: GitRepo, message: bytes) -> str:
    """Commit the index with exactly these message bytes (git commit would re-encode them)."""
    repo.git("add", "-A")
    tree = repo.git("write-tree")
    parent = repo.git("rev-parse", "-q", "--verify", "HEAD", check=False)
    header = f"tree {tree}\n" + (f"parent {parent}\n" if parent else "")
    header += "author Loop Tester <t@example.invalid> 1700000000 +0000\n"
    header += "committer Loop Tester <t@example.invalid> 1700000000 +0000\n\n"
    proc = subprocess.run(
        ["git", "-C", str(repo.root), "hash-object", "-t", "commit", "-w", "--stdin"],
        input=header.encode() + message + b"\n",
        capture_output=True,
        check=True,
    )
    sha = proc.stdout.decode().strip()
    repo.git("update-ref", "refs/heads/main", sha)
    return sha


def test_messages_and_paths_that_are_not_utf8_survive_as_bytes(repo: GitRepo, tmp_path: Path) -> None:
    raw_message = b"caf\xe9 cr\xe8me \xff\xfe\n\nbody \x80"
    with open(os.path.join(os.fsencode(repo.root), b"caf\xe9.py"), "wb") as handle:
        handle.write(b"print(1)\n")
    commit_raw_message(repo, raw_message)
    message_file = tmp_path / "msg"
    message_file.write_bytes("déjà vu".encode("latin-1"))
    repo.git("-c", "i18n.commitEncoding=ISO-8859-1", "commit", "-q", "--allow-empty", "-F", str(message_file))
    raw, declared = read_all(repo.root)
    assert raw.message == raw_message
    assert [f.path for f in raw.files] == [b"caf\xe9.py"]
    # A message that declares its encoding is re-encoded by git: readable UTF-8 text.
    assert declared.message == "déjà vu".encode("utf-8")


def test_separator_bytes_inside_a_message_do_not_split_records(repo: GitRepo, tmp_path: Path) -> None:
    message = tmp_path / "msg"
    message.write_bytes(b"odd \x1e\x1f LOOPMON- \x1fLOOPMON-END- text\n")
    repo.write("a.txt", "1\n")
    repo.git("add", "-A")
    repo.git("commit", "-q", "-F", str(message))
    repo.commit("next", {"a.txt": "2\n"})
    first, second = read_all(repo.root)
    assert first.message == b"odd \x1e\x1f LOOPMON- \x1fLOOPMON-END- text"
    assert second.message == b"next"


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=30), max_size=8), st.lists(st.integers(min_value=1, max_value=9), max_size=20))
def test_records_come_out_whole_wherever_the_stream_is_cut(bodies: list[bytes], cuts: list[int]) -> None:
    marker = b"\x1eMARK\x1f"
    bodies = [b.replace(b"\x1e", b"") for b in bodies]
    stream = b"".join(marker + b for b in bodies)
    chunks, pos = [], 0
    for size in cuts:
        chunks.append(stream[pos : pos + size])
        pos += size
    chunks.append(stream[pos:])
    assert list(_split_records(chunks, marker)) == bodies


def test_a_missing_blob_marks_its_path_unknown_and_the_stream_goes_on(repo: GitRepo) -> None:
    repo.commit("base", {"keep.py": "k = 1\n"})
    lost = repo.commit("adds a big file", {"big.npz": "lots of data\n", "keep.py": "k = 2\n"})
    repo.commit("later", {"keep.py": "k = 3\n"})
    drop_object(repo.root, repo.git("rev-parse", f"{lost}:big.npz"))
    commits = read_all(repo.root)
    assert [c.message for c in commits] == [b"base", b"adds a big file", b"later"]
    damaged = by_path(commits[1])
    assert damaged[b"big.npz"].unknown and damaged[b"big.npz"].insertions is None
    assert not damaged[b"keep.py"].unknown and damaged[b"keep.py"].insertions == 1
    assert commits[1].problems and "cannot be read" in commits[1].problems[0]
    assert not commits[2].problems and by_path(commits[2])[b"keep.py"].insertions == 1


def test_a_partial_clone_whose_remote_is_gone(repo: GitRepo, tmp_path: Path) -> None:
    repo.commit("one", {"a.txt": "1\n"})
    repo.commit("two", {"a.txt": "1\n2\n", "b.py": "b = 1\n"})
    repo.git("config", "uploadpack.allowFilter", "true")
    clone = tmp_path / "clone"
    subprocess.run(
        ["git", "clone", "-q", "--no-checkout", "--filter=blob:none", f"file://{repo.root}", str(clone)],
        check=True,
        capture_output=True,
    )
    subprocess.run(["git", "-C", str(clone), "remote", "set-url", "origin", str(tmp_path / "gone")], check=True)
    one, two = read_all(clone)
    assert [f.path for f in two.files if f.unknown] == [b"a.txt", b"b.py"]
    assert one.message == b"one" and two.problems


def test_a_missing_commit_object_is_reported_unreadable(repo: GitRepo) -> None:
    first = repo.commit("one", {"a.txt": "1\n"})
    second = repo.commit("two", {"a.txt": "2\n"})
    third = repo.commit("three", {"a.txt": "3\n"})
    drop_object(repo.root, second)
    items = list(LogReader(repo.root).read([first, second, third]))
    assert isinstance(items[1], Unreadable) and items[1].sha == second
    assert [i.message for i in items if isinstance(i, RawCommit)] == [b"one", b"three"]


def fast_import_wide_commit(root: Path, count: int) -> None:
    """One commit of `count` new files, written by git fast-import (seconds faster than git add)."""
    lines = [b"commit refs/heads/main", b"committer Loop Tester <t@example.invalid> 1700000000 +0000", b"data 4", b"wide"]
    for i in range(count):
        data = f"line {i}\n".encode()
        lines += [f"M 100644 inline gen/dir{i % 50}/f{i}.py".encode(), b"data %d" % len(data), data]
    subprocess.run(["git", "-C", str(root), "fast-import", "--quiet"], input=b"\n".join(lines) + b"\n", check=True)


def test_ten_thousand_files_are_one_commit(repo: GitRepo) -> None:
    fast_import_wide_commit(repo.root, 10_000)
    (commit,) = read_all(repo.root, patch_lines_cap=2_000)
    assert len(commit.files) == 10_000
    assert all(f.insertions == 1 for f in commit.files)
    assert commit.truncated
    assert sum(len(f.hunks) for f in commit.files) == 2_000


def test_object_reader_sizes_contents_and_missing(repo: GitRepo) -> None:
    sha = repo.commit("c", {"a.txt": "hello\n", "b.txt": "x" * 1000})
    a = repo.git("rev-parse", f"{sha}:a.txt")
    b = repo.git("rev-parse", f"{sha}:b.txt")
    absent = "1" * 40
    reader = ObjectReader(repo.root)
    try:
        assert reader.sizes([a, b, absent]) == {a: 6, b: 1000, absent: None}
        assert reader.contents([a, absent]) == {a: b"hello\n", absent: None}
        # A dead process is replaced on the next call.
        assert reader._batch is not None
        reader._batch.kill()
        reader._batch.wait()
        assert reader.contents([b]) == {b: b"x" * 1000}
    finally:
        reader.close()


def test_tips_cover_branches_peeled_tags_and_a_detached_head(repo: GitRepo) -> None:
    first = repo.commit("one", {"a.txt": "1\n"})
    repo.git("tag", "-a", "v1", "-m", "release")
    repo.git("branch", "side")
    second = repo.commit("two", {"a.txt": "2\n"})
    tips = read_tips(repo.root, ["refs/heads/", "refs/tags/"], repo.root / ".git" / "HEAD")
    assert tips == {"refs/heads/main": second, "refs/heads/side": first, "refs/tags/v1": first, "HEAD": second}
    repo.git("checkout", "-q", "--detach", first)
    third = repo.commit("detached work", {"a.txt": "3\n"})
    assert read_tips(repo.root, ["refs/heads/"], repo.root / ".git" / "HEAD")["HEAD"] == third


def test_rev_list_puts_parents_before_children_across_branches(repo: GitRepo) -> None:
    base = repo.commit("base", {"a.txt": "0\n"})
    repo.git("checkout", "-q", "-b", "side")
    side = repo.commit("side", {"b.txt": "1\n"})
    repo.git("checkout", "-q", "main")
    main = repo.commit("main", {"a.txt": "1\n"})
    repo.git("merge", "-q", "--no-edit", "side")
    merge = repo.git("rev-parse", "HEAD")
    order = rev_list(repo.root, [merge])
    assert order[0] == base and order[-1] == merge and set(order) == {base, side, main, merge}
    assert rev_list(repo.root, [merge], [main]) == [side, merge]


def test_sizes_learnt_up_front_agree_with_asking_one_by_one(repo: GitRepo) -> None:
    sha = repo.commit("c", {"a.txt": "hello\n", "big.bin": b"\x00" * 5000})
    oids = [repo.git("rev-parse", f"{sha}:{name}") for name in ("a.txt", "big.bin")] + ["2" * 40]
    asked, preloaded = ObjectReader(repo.root), ObjectReader(repo.root)
    try:
        assert preloaded.preload_sizes()
        assert preloaded._check is None  # nothing asked yet
        assert preloaded.sizes(oids) == asked.sizes(oids) == {oids[0]: 6, oids[1]: 5000, oids[2]: None}
        assert not ObjectReader(repo.root).preload_sizes(limit=1)  # too many objects: asked as needed
    finally:
        asked.close()
        preloaded.close()
