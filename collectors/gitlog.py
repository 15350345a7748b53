"""Commits out of git as a stream: one `git log` process for any number of commits.

`LogReader.read(shas)` feeds the shas to `git log --no-walk=unsorted --stdin` and
parses, per commit, a header, the `--numstat -z` entries and the `-p -U0` hunks.
A history of thousands of commits is one process, parsed as it arrives.

When objects are missing (partial or shallow clones, blobs dropped for size) git
dies part way with `fatal: unable to read <sha>`. The reader then reads the
failing commit path by path (unreadable paths come back `unknown`) and resumes
the stream after it, so one hole costs a few processes, not the history.

`ObjectReader` keeps one `git cat-file --batch` (contents) and one
`--batch-check` (sizes) process open for the blobs the evidence needs.

Everything here is bytes: paths and messages are whatever the repo holds.
"""

from __future__ import annotations

import os
import queue
import re
import secrets
import subprocess
import threading
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Callable, Iterable, Iterator, Sequence

from collectors.gitrepo import git_dir

_HEX = re.compile(rb"^[0-9a-f]{40,64}$")
_HUNK = re.compile(rb"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@ ?(.*)$")
_INDEX = re.compile(rb"^index ([0-9a-f]+)\.\.([0-9a-f]+)")
_NUMSTAT = re.compile(rb"^(\d+|-)\t(\d+|-)\t(.*)$", re.DOTALL)

# The diff options every read uses. No textconv, no external diff: a watched
# repo's config must never make loopmon run its commands.
DIFF_OPTIONS = (
    "--numstat",
    "-z",
    "-p",
    "-U0",
    "--full-index",
    "--no-color",
    "--no-ext-diff",
    "--no-textconv",
    "--no-relative",
    "--no-diff-merges",
)
RENAMES = ("-M",)
NO_RENAMES = ("--no-renames",)


class GitError(Exception):
    """git could not be run or failed in a way that no commit explains."""


def git_env() -> dict[str, str]:
    """The environment for loopmon's git calls: no inherited repo, no network, C messages."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_") or k in _KEPT_GIT_VARS}
    env.update(
        {
            "LC_ALL": "C",
            "GIT_TERMINAL_PROMPT": "0",
            # Partial clones would otherwise fetch missing blobs from their remote
            # (git >= 2.44 honours this; older gits fail the read, which we handle).
            "GIT_NO_LAZY_FETCH": "1",
            "GIT_OPTIONAL_LOCKS": "0",
        }
    )
    return env


_KEPT_GIT_VARS = frozenset(
    {
        "GIT_AUTHOR_NAME",
        "GIT_AUTHOR_EMAIL",
        "GIT_COMMITTER_NAME",
        "GIT_COMMITTER_EMAIL",
        "GIT_CONFIG_NOSYSTEM",
        "GIT_CONFIG_GLOBAL",
        "GIT_EXEC_PATH",
        "GIT_CEILING_DIRECTORIES",
    }
)


def run_git(root: str | Path, args: Sequence[str | bytes], *, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    """One short git command in `root`, bytes in and out, never raising on its exit code."""
    try:
        return subprocess.run(
            ["git", "-C", str(root), *args], input=stdin, capture_output=True, env=git_env(), check=False
        )
    except OSError as exc:
        raise GitError(f"cannot run git: {exc}") from None


# --------------------------------------------------------------------------- records


@dataclass(slots=True)
class Hunk:
    """One `-U0` hunk: where it sits in the old and new file, and its lines (no +/- prefix)."""

    old_start: int
    old_count: int
    new_start: int
    new_count: int
    context: bytes = b""  # git's function context after the second @@
    removed: list[bytes] = field(default_factory=list)
    added: list[bytes] = field(default_factory=list)


@dataclass(slots=True)
class FileDiff:
    """One path of a commit: numstat counts, blob ids and (when wanted) its hunks."""

    path: bytes
    old_path: bytes | None = None  # renames
    insertions: int | None = None
    deletions: int | None = None
    binary: bool = False
    unknown: bool = False  # an object was missing: counts not known
    status: str = "M"  # A added, D deleted, M modified, R renamed
    old_oid: str | None = None
    new_oid: str | None = None
    new_mode: str | None = None
    hunks: list[Hunk] = field(default_factory=list)
    hunks_read: bool = False  # hunks were kept (wanted and under the cap)


@dataclass(slots=True)
class RawCommit:
    sha: str
    parents: list[str]
    author_name: bytes
    author_email: bytes
    authored_at: datetime
    committed_at: datetime
    message: bytes
    files: list[FileDiff] = field(default_factory=list)
    truncated: bool = False  # the hunk-line cap was reached
    problems: list[str] = field(default_factory=list)  # what could not be read, for a warning
    shallow: bool = False  # a shallow clone's boundary: its parents are absent, its diff unknown

    @property
    def unknown_paths(self) -> list[bytes]:
        return [f.path for f in self.files if f.unknown]


@dataclass(slots=True)
class Unreadable:
    """A commit git cannot read at all (its object is missing): only its sha is known."""

    sha: str
    reason: str


# --------------------------------------------------------------------------- parsing


class _Format:
    """A `--format` whose record markers carry a per-process nonce no message can forge."""

    def __init__(self) -> None:
        nonce = secrets.token_hex(8).encode()
        self.start = b"\x1eLOOPMON-" + nonce + b"\x1f"
        self.end = b"\x1fLOOPMON-END-" + nonce + b"\x1e"
        fields = "%x1f".join(["%H", "%P", "%an", "%ae", "%aI", "%cI", "%B"])
        self.arg = "--format=" + _escape_format(self.start) + fields + _escape_format(self.end)


def _escape_format(marker: bytes) -> str:
    return "".join(f"%x{b:02x}" if b < 0x20 or b == 0x25 else chr(b) for b in marker)


def _split_records(stream: Iterable[bytes], start: bytes) -> Iterator[bytes]:
    """Split a byte stream into records: the bytes after each start marker, up to the next."""
    buf = bytearray()
    scan_from = 0
    width = len(start)
    for chunk in stream:
        buf += chunk
        while True:
            first = buf.find(start)
            if first < 0:
                break
            nxt = buf.find(start, max(first + width, scan_from))
            if nxt < 0:
                # Resume the search where it stopped, less a marker's width (it may straddle chunks).
                scan_from = max(first + width, len(buf) - width + 1)
                break
            yield bytes(buf[first + width : nxt])
            del buf[:nxt]
            scan_from = 0
    first = buf.find(start)
    if first >= 0:
        yield bytes(buf[first + width :])


class _PatchBudget:
    """The hunk lines one commit may still keep."""

    def __init__(self, cap: int) -> None:
        self.left = cap
        self.exhausted = False


def parse_record(
    record: bytes,
    fmt: _Format,
    *,
    want_hunks: Callable[[bytes], bool],
    patch_lines_cap: int,
) -> RawCommit | None:
    """One commit out of a `git log` record; None when the header is incomplete."""
    end = record.find(fmt.end)
    if end < 0:
        return None
    header = record[:end].split(b"\x1f", 6)
    if len(header) != 7:
        return None
    sha, parents, an, ae, ad, cd, message = header
    try:
        authored = datetime.fromisoformat(ad.decode("ascii"))
        committed = datetime.fromisoformat(cd.decode("ascii"))
    except ValueError:
        return None
    if message.endswith(b"\n"):
        message = message[:-1]
    commit = RawCommit(
        sha=sha.decode("ascii"),
        parents=parents.decode("ascii").split(),
        author_name=an,
        author_email=ae,
        authored_at=authored,
        committed_at=committed,
        message=message,
    )
    rest = record[end + len(fmt.end) :]
    commit.files, patch_at = _parse_numstat(rest)
    if patch_at is not None and commit.files:
        budget = _PatchBudget(patch_lines_cap)
        _parse_patch(rest, patch_at, commit.files, want_hunks, budget)
        commit.truncated = budget.exhausted
    return commit


def _parse_numstat(rest: bytes) -> tuple[list[FileDiff], int | None]:
    """The `-z` numstat entries after the header; returns them and where the patch starts."""
    pos = 0
    if rest.startswith(b"\x00"):
        pos = 1
    if rest.startswith(b"\n", pos):
        pos += 1
    files: list[FileDiff] = []
    size = len(rest)
    while pos < size:
        nul = rest.find(b"\x00", pos)
        if nul < 0:
            break
        token = rest[pos:nul]
        if not token:  # the empty entry between numstat and patch
            return files, nul + 1
        match = _NUMSTAT.match(token)
        if match is None:
            return files, pos
        ins, dels, path = match.groups()
        diff = FileDiff(path=path)
        pos = nul + 1
        if not path:  # a rename: `ins\tdel\t\0old\0new\0`
            old_end = rest.find(b"\x00", pos)
            new_end = rest.find(b"\x00", old_end + 1) if old_end >= 0 else -1
            if new_end < 0:
                break
            diff.old_path = rest[pos:old_end]
            diff.path = rest[old_end + 1 : new_end]
            diff.status = "R"
            pos = new_end + 1
        if ins == b"-":
            diff.binary = True
        else:
            diff.insertions = int(ins)
            diff.deletions = int(dels)
        files.append(diff)
    return files, None


def _parse_patch(
    data: bytes, start: int, files: list[FileDiff], want_hunks: Callable[[bytes], bool], budget: _PatchBudget
) -> None:
    """Attach blob ids and hunks to `files`: the n-th `diff --git` section is the n-th numstat entry."""
    marker = b"\ndiff --git "
    if data.startswith(b"diff --git ", start):
        pos = start
    else:
        found = data.find(marker, start)
        if found < 0:
            return
        pos = found + 1
    index = 0
    size = len(data)
    while pos < size and index < len(files):
        nxt = data.find(marker, pos)
        section_end = size if nxt < 0 else nxt + 1
        _parse_section(data, pos, section_end, files[index], want_hunks, budget)
        index += 1
        pos = section_end


def _parse_section(
    data: bytes, start: int, end: int, diff: FileDiff, want_hunks: Callable[[bytes], bool], budget: _PatchBudget
) -> None:
    # Header lines run up to the first hunk (or the end, for binary, mode-only, pure renames).
    first_hunk = data.find(b"\n@@ ", start, end)
    header_end = end if first_hunk < 0 else first_hunk + 1
    for line in data[start:header_end].split(b"\n"):
        if line.startswith(b"index "):
            match = _INDEX.match(line)
            if match is not None:
                old, new = match.group(1).decode(), match.group(2).decode()
                diff.old_oid = None if set(old) == {"0"} else old
                diff.new_oid = None if set(new) == {"0"} else new
                tail = line[match.end() :].strip()
                if tail:
                    diff.new_mode = tail.decode("ascii", "replace")
        elif line.startswith(b"new file mode "):
            diff.status = "A"
            diff.new_mode = line[len(b"new file mode ") :].decode("ascii", "replace")
        elif line.startswith(b"deleted file mode "):
            diff.status = "D"
        elif line.startswith(b"new mode "):
            diff.new_mode = line[len(b"new mode ") :].decode("ascii", "replace")
        elif line.startswith(b"Binary files "):
            diff.binary = True
    if first_hunk < 0 or budget.exhausted or not want_hunks(diff.path):
        return
    diff.hunks_read = True
    hunk: Hunk | None = None
    for line in data[header_end:end].split(b"\n"):
        head = line[:1]
        if head == b"+":
            if hunk is not None:
                hunk.added.append(line[1:])
        elif head == b"-":
            if hunk is not None:
                hunk.removed.append(line[1:])
        elif head == b"@":
            match = _HUNK.match(line)
            if match is None:
                continue
            if budget.left <= 0:
                budget.exhausted = True
                return
            a, b, c, d, context = match.groups()
            hunk = Hunk(int(a), 1 if b is None else int(b), int(c), 1 if d is None else int(d), context)
            diff.hunks.append(hunk)
            budget.left -= hunk.old_count + hunk.new_count


# --------------------------------------------------------------------------- the stream


class LogReader:
    """Reads commits (given by sha, in the order given) through one streaming `git log`."""

    def __init__(
        self,
        root: str | Path,
        *,
        want_hunks: Callable[[bytes], bool] = lambda path: True,
        patch_lines_cap: int = 20_000,
        renames: bool = True,
    ) -> None:
        self.root = Path(root)
        self.want_hunks = want_hunks
        self.patch_lines_cap = patch_lines_cap
        self.renames = renames
        self._fmt = _Format()

    def _log_args(self, *, renames: bool, diff: bool = True) -> list[str]:
        args = ["log", "--no-walk=unsorted", "--encoding=UTF-8", "--no-show-signature", self._fmt.arg]
        if diff:
            args += [*DIFF_OPTIONS, *(RENAMES if renames else NO_RENAMES)]
        return args

    def read(self, shas: Sequence[str]) -> Iterator[RawCommit | Unreadable]:
        """Every commit of `shas`, in order, each once.

        A commit git dies on is read path by path (`read_tolerant`) and the stream
        resumes after it; a commit whose own object is missing comes out `Unreadable`."""
        pending = list(shas)
        boundary = shallow_boundary(self.root)
        bad: dict[str, str] = {}  # commits git cannot even parse, and why
        pos = 0  # pending[:pos] have been yielded

        def up_to(sha: str) -> Iterator[Unreadable]:
            """Yield the unreadable commits before `sha` and step past it."""
            nonlocal pos
            while pos < len(pending) and pending[pos] != sha:
                if pending[pos] in bad:
                    yield Unreadable(pending[pos], bad[pending[pos]])
                pos += 1
            pos += 1

        while pos < len(pending):
            feed = [sha for sha in pending[pos:] if sha not in bad]
            if not feed:
                yield from up_to("")
                return
            last: RawCommit | None = None
            proc = self._start(feed)
            stderr = _StderrDrain(proc)
            pump = _Pump(proc)
            try:
                for record in _split_records(pump, self._fmt.start):
                    commit = parse_record(
                        record, self._fmt, want_hunks=self.want_hunks, patch_lines_cap=self.patch_lines_cap
                    )
                    if commit is None:
                        continue
                    if commit.sha in boundary:
                        _forget_diff(commit)
                    if last is not None:
                        yield from up_to(last.sha)
                        yield last
                    last = commit
                rc = proc.wait()
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                pump.close()
            message = stderr.text()
            if rc == 0:
                if last is not None:
                    yield from up_to(last.sha)
                    yield last
                if any(sha not in bad for sha in pending[pos:]):
                    raise GitError(f"git log stopped early: {message or 'no reason given'}")
                continue
            culprit = _named_commit(message, pending[pos:])
            if culprit is not None and culprit not in bad and (last is None or culprit != last.sha):
                # git could not parse a commit it was given: it stops before any output.
                bad[culprit] = message
                continue
            # git died inside the commit after the last complete one: the record it left
            # (if any) is partial. That commit is read path by path; the stream resumes after it.
            if last is None and not _looks_like_missing_objects(message):
                raise GitError(f"git log failed: {message or f'exit {rc}'}")
            failing = next(sha for sha in pending[pos:] if sha not in bad)
            result = self.read_tolerant(failing, message)
            if isinstance(result, RawCommit) and result.sha in boundary:
                _forget_diff(result)
            yield from up_to(failing)
            yield result

    def _start(self, shas: Sequence[str]) -> subprocess.Popen[bytes]:
        try:
            proc = subprocess.Popen(
                ["git", "-C", str(self.root), *self._log_args(renames=self.renames), "--stdin"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=git_env(),
            )
        except OSError as exc:
            raise GitError(f"cannot run git: {exc}") from None
        assert proc.stdin is not None
        try:
            # git reads all of stdin before it writes anything, so this cannot deadlock.
            proc.stdin.write("".join(f"{sha}\n" for sha in shas).encode("ascii"))
            proc.stdin.close()
        except BrokenPipeError:
            pass
        return proc

    def read_tolerant(self, sha: str, why: str = "") -> RawCommit | Unreadable:
        """Read a commit whose objects are partly missing: readable paths whole, the rest `unknown`."""
        raw = run_git(self.root, ["diff-tree", "-r", "-z", "--raw", "--no-renames", "--root", "--no-commit-id", sha])
        entries = _parse_raw(raw.stdout) if raw.returncode == 0 else []
        missing = missing_objects(self.root, [sha, f"{sha}^@"]) if entries else set()
        readable: list[bytes] = []
        for entry in entries:
            if entry.mode == "160000":  # a submodule: nothing to read here
                readable.append(entry.path)
            elif entry.old_oid not in missing and entry.new_oid not in missing:
                readable.append(entry.path)
        args: list[str | bytes] = ["--literal-pathspecs", *self._log_args(renames=False, diff=bool(readable)), sha]
        if readable:
            args += ["--", *readable]
        proc = run_git(self.root, args)
        fmt = self._fmt
        records = list(_split_records([proc.stdout], fmt.start))
        commit = (
            parse_record(records[0], fmt, want_hunks=self.want_hunks, patch_lines_cap=self.patch_lines_cap)
            if records
            else None
        )
        if commit is None:
            # Not even the header: the commit object itself is missing.
            return Unreadable(sha, _last_line(proc.stderr) or why)
        if proc.returncode != 0:
            commit.files = []  # partial output: trust none of it
            readable = []
        by_path = {f.path: f for f in commit.files}
        files: list[FileDiff] = []
        unknown: list[bytes] = []
        for entry in entries:
            diff = by_path.get(entry.path)
            if diff is None:
                diff = FileDiff(path=entry.path, unknown=True, status=entry.status, old_oid=entry.old_oid, new_oid=entry.new_oid)
                unknown.append(entry.path)
            files.append(diff)
        commit.files = files
        if raw.returncode != 0:
            commit.problems.append(f"the tree of {sha[:12]} cannot be read: {_last_line(raw.stderr)}")
        if unknown:
            commit.problems.append(
                f"{len(unknown)} path(s) of {sha[:12]} cannot be read (objects missing): {_last_line(why.encode())}"
            )
        return commit


def shallow_boundary(root: str | Path) -> frozenset[str]:
    """The commits a shallow clone was cut at (git shows them as roots: their diff is the whole tree)."""
    try:
        text = (git_dir(root) / "shallow").read_text(encoding="ascii", errors="replace")
    except OSError:
        return frozenset()
    return frozenset(line.strip() for line in text.splitlines() if line.strip())


def _forget_diff(commit: RawCommit) -> None:
    """A shallow boundary's diff against nothing is no diff: keep none of it."""
    commit.shallow = True
    commit.truncated = True
    commit.files = []
    commit.problems.append(
        f"{commit.sha[:12]} is where this shallow clone was cut: its parents are absent, so what it changed is unknown"
    )


def missing_objects(root: str | Path, revs: Sequence[str]) -> set[str]:
    """Objects the trees of `revs` name but the repo lacks, listed without fetching or dying.

    (`cat-file` cannot do this: in a partial clone it dies on the first missing blob.)"""
    proc = run_git(root, ["rev-list", "--objects", "--missing=print", "--no-walk", *revs])
    return {line[1:].split()[0] for line in proc.stdout.decode("ascii", "replace").splitlines() if line.startswith("?")}


_SHA_IN_MESSAGE = re.compile(r"\b[0-9a-f]{40,64}\b")


def _named_commit(message: str, shas: Sequence[str]) -> str | None:
    """The commit of `shas` that git's error message names as unparsable, if any."""
    if not any(s in message for s in ("unable to parse commit", "bad object", "could not parse", "not a valid object")):
        return None
    wanted = set(shas)
    return next((m for m in _SHA_IN_MESSAGE.findall(message) if m in wanted), None)


def _looks_like_missing_objects(message: str) -> bool:
    return any(
        s in message.lower()
        for s in ("unable to read", "could not read", "could not fetch", "missing blob", "bad object", "promisor", "unable to parse")
    )


def _last_line(data: bytes) -> str:
    lines = [line for line in data.decode("utf-8", "replace").splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


class _Pump:
    """Reads a process's stdout on a thread, so git runs ahead while Python parses.

    Iterating yields the chunks in order; at most `depth` chunks wait in memory."""

    _END = b""

    def __init__(self, proc: subprocess.Popen[bytes], chunk: int = 1 << 20, depth: int = 32) -> None:
        self._queue: queue.Queue[bytes] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._stdout = proc.stdout
        self._chunk = chunk
        self._thread = threading.Thread(target=self._run, name="loopmon-gitlog", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        assert self._stdout is not None
        try:
            while not self._stop.is_set():
                data = self._stdout.read1(self._chunk)
                self._put(data)
                if not data:
                    return
        except (OSError, ValueError):
            self._put(self._END)

    def _put(self, data: bytes) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(data, timeout=0.1)
                return
            except queue.Full:
                continue

    def __iter__(self) -> Iterator[bytes]:
        while True:
            data = self._queue.get()
            if not data:
                return
            yield data

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        if self._stdout is not None:
            self._stdout.close()


class _StderrDrain:
    """Reads a process's stderr on a thread, so a chatty git never blocks on it."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self._data = b""
        self._thread = threading.Thread(target=self._run, args=(proc,), daemon=True)
        self._thread.start()

    def _run(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stderr is not None
        self._data = proc.stderr.read()[-20_000:]
        proc.stderr.close()

    def text(self) -> str:
        self._thread.join(5)
        return _last_line(self._data)


@dataclass(slots=True)
class _RawEntry:
    path: bytes
    mode: str
    old_oid: str | None
    new_oid: str | None
    status: str


def _parse_raw(data: bytes) -> list[_RawEntry]:
    """`diff-tree --raw -z` output: `:oldmode newmode old new status\\0path\\0`."""
    parts = data.split(b"\x00")
    entries: list[_RawEntry] = []
    i = 0
    while i + 1 < len(parts):
        meta = parts[i]
        if not meta.startswith(b":"):
            i += 1
            continue
        fields = meta[1:].split()
        if len(fields) < 5:
            i += 1
            continue
        old_mode, new_mode, old, new, status = (f.decode("ascii", "replace") for f in fields[:5])
        entries.append(
            _RawEntry(
                path=parts[i + 1],
                mode=new_mode if new_mode != "000000" else old_mode,
                old_oid=None if set(old) == {"0"} else old,
                new_oid=None if set(new) == {"0"} else new,
                status=status[:1],
            )
        )
        i += 2
    return entries


# --------------------------------------------------------------------------- revisions and refs


def rev_list(root: str | Path, include: Sequence[str], exclude: Sequence[str] = ()) -> list[str]:
    """Commits reachable from `include` but not from `exclude`, parents before children."""
    if not include:
        return []
    lines = [*include, *(f"^{sha}" for sha in exclude)]
    proc = run_git(root, ["rev-list", "--topo-order", "--reverse", "--stdin"], stdin="\n".join(lines).encode() + b"\n")
    if proc.returncode != 0:
        raise GitError(f"git rev-list failed: {_last_line(proc.stderr)}")
    return proc.stdout.decode("ascii").split()


def resolve(root: str | Path, rev: str) -> list[str]:
    """What a user's `--rev` names, as rev-list arguments (a range stays a range)."""
    proc = run_git(root, ["rev-parse", "--revs-only", rev, "--"])
    if proc.returncode != 0:
        raise GitError(f"unknown revision {rev!r}: {_last_line(proc.stderr)}")
    return proc.stdout.decode("ascii").split()


def read_tips(root: str | Path, prefixes: Sequence[str], head_file: Path | None) -> dict[str, str]:
    """ref name -> commit sha for every ref under `prefixes`, plus `HEAD` (tags peeled)."""
    proc = run_git(
        root,
        [
            "for-each-ref",
            "--format=%(objectname) %(objecttype) %(*objectname) %(*objecttype) %(refname)",
            *prefixes,
        ],
    )
    if proc.returncode != 0:
        raise GitError(f"git for-each-ref failed: {_last_line(proc.stderr)}")
    tips: dict[str, str] = {}
    for line in proc.stdout.decode("utf-8", "replace").splitlines():
        parts = line.split(" ", 4)
        if len(parts) != 5:
            continue
        sha, kind, peeled, peeled_kind, ref = parts
        if kind == "commit":
            tips[ref] = sha
        elif kind == "tag" and peeled_kind == "commit":
            tips[ref] = peeled
    head = _read_head(root, head_file, tips)
    if head is not None:
        tips["HEAD"] = head
    return tips


def _read_head(root: str | Path, head_file: Path | None, tips: dict[str, str]) -> str | None:
    """HEAD's commit: from the file when it is a sha or names a ref we listed, else asked of git."""
    if head_file is not None:
        try:
            text = head_file.read_text(encoding="ascii", errors="replace").strip()
        except OSError:
            text = ""
        if _HEX.match(text.encode()):
            return text
        if text.startswith("ref:"):
            target = text[4:].strip()
            if target in tips:
                return tips[target]
    proc = run_git(root, ["rev-parse", "-q", "--verify", "HEAD^{commit}"])
    sha = proc.stdout.decode("ascii", "replace").strip()
    return sha if proc.returncode == 0 and sha else None


# --------------------------------------------------------------------------- blobs


class ObjectReader:
    """One persistent `git cat-file --batch` and one `--batch-check`, opened on first use."""

    # Requests written before their answers are read: small enough that git's
    # stdin pipe never fills while its stdout waits for us.
    CHUNK = 512

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self._batch: subprocess.Popen[bytes] | None = None
        self._check: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._known_sizes: dict[str, int] = {}

    def _open(self, option: str) -> subprocess.Popen[bytes]:
        try:
            return subprocess.Popen(
                ["git", "-C", str(self.root), "cat-file", option],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                env=git_env(),
            )
        except OSError as exc:
            raise GitError(f"cannot run git cat-file: {exc}") from None

    def sizes(self, oids: Sequence[str]) -> dict[str, int | None]:
        """Object sizes in bytes; None for an object that is missing."""
        known = self._known_sizes
        if not known:
            return self._ask("_check", "--batch-check", oids, self._read_size)  # type: ignore[return-value]
        out: dict[str, int | None] = {}
        unknown: list[str] = []
        for oid in oids:
            size = known.get(oid)
            if size is None:
                unknown.append(oid)
            else:
                out[oid] = size
        if unknown:
            out.update(self._ask("_check", "--batch-check", unknown, self._read_size))  # type: ignore[arg-type]
        return out

    def preload_sizes(self, limit: int = 500_000) -> bool:
        """Learn every object's size in one go (a replay asks for most of them) when the repo is small enough."""
        counts = run_git(self.root, ["count-objects", "-v"])
        total = 0
        for line in counts.stdout.decode("ascii", "replace").splitlines():
            key, _, value = line.partition(":")
            if key in ("count", "in-pack") and value.strip().isdigit():
                total += int(value)
        if counts.returncode != 0 or total > limit:
            return False
        listing = run_git(
            self.root, ["cat-file", "--batch-all-objects", "--unordered", "--batch-check=%(objectname) %(objectsize)"]
        )
        if listing.returncode != 0:
            return False
        sizes: dict[str, int] = {}
        for line in listing.stdout.decode("ascii", "replace").splitlines():
            oid, _, size = line.partition(" ")
            if size.isdigit():
                sizes[oid] = int(size)
        self._known_sizes = sizes
        return True

    def contents(self, oids: Sequence[str]) -> dict[str, bytes | None]:
        """Blob contents; None for an object that is missing (or not a blob)."""
        return self._ask("_batch", "--batch", oids, self._read_content)  # type: ignore[return-value]

    def exists(self, oids: Sequence[str]) -> dict[str, bool]:
        return {oid: size is not None for oid, size in self.sizes(oids).items()}

    def parents(self, sha: str) -> list[str] | None:
        """A commit's parents, read from its object; None when it is missing or not a commit."""
        return self._ask("_batch", "--batch", [sha], self._read_parents).get(sha)  # type: ignore[return-value]

    # A process that dies on an object (a partial clone's cat-file dies on a blob it
    # cannot fetch) is restarted after it, this many times per call at most.
    MAX_RESTARTS = 20

    def _ask(self, name: str, option: str, oids: Sequence[str], read_one: Callable) -> dict[str, object]:
        out: dict[str, object] = {}
        pending = list(dict.fromkeys(o for o in oids if o))
        restarts = 0
        with self._lock:
            while pending:
                proc = getattr(self, name)
                if proc is None or proc.poll() is not None:
                    proc = self._open(option)
                    setattr(self, name, proc)
                part = pending[: self.CHUNK]
                try:
                    assert proc.stdin is not None and proc.stdout is not None
                    proc.stdin.write("".join(f"{o}\n" for o in part).encode("ascii"))
                    proc.stdin.flush()
                    for oid in part:
                        out[oid] = read_one(proc.stdout)
                    pending = pending[len(part) :]
                except (OSError, ValueError, GitError):
                    self._kill(name)
                    answered = sum(1 for oid in part if oid in out)
                    # The object git died on counts as missing; the rest are asked again.
                    out[part[answered]] = None
                    pending = pending[answered + 1 :]
                    restarts += 1
                    if restarts > self.MAX_RESTARTS:
                        raise GitError(f"git cat-file {option} keeps failing") from None
        return out

    @staticmethod
    def _read_size(stdout: IO[bytes]) -> int | None:
        line = stdout.readline()
        if not line:
            raise GitError("git cat-file ended")
        parts = line.split()
        return int(parts[2]) if len(parts) == 3 and parts[1] != b"missing" else None

    @staticmethod
    def _read_content(stdout: IO[bytes]) -> bytes | None:
        line = stdout.readline()
        if not line:
            raise GitError("git cat-file ended")
        parts = line.split()
        if len(parts) != 3 or parts[1] == b"missing":
            return None
        size = int(parts[2])
        data = stdout.read(size + 1)  # the content and its newline
        if len(data) != size + 1:
            raise GitError("git cat-file ended")
        return data[:size] if parts[1] == b"blob" else None

    @staticmethod
    def _read_parents(stdout: IO[bytes]) -> list[str] | None:
        line = stdout.readline()
        if not line:
            raise GitError("git cat-file ended")
        parts = line.split()
        if len(parts) != 3 or parts[1] == b"missing":
            return None
        size = int(parts[2])
        data = stdout.read(size + 1)
        if len(data) != size + 1:
            raise GitError("git cat-file ended")
        if parts[1] != b"commit":
            return None
        header = data[:size].split(b"\n\n", 1)[0]
        return [line[len(b"parent ") :].decode("ascii") for line in header.split(b"\n") if line.startswith(b"parent ")]

    def _kill(self, name: str) -> None:
        proc = getattr(self, name)
        setattr(self, name, None)
        if proc is not None:
            try:
                proc.kill()
                proc.wait(5)
            except OSError:
                pass

    def close(self) -> None:
        with self._lock:
            for name in ("_batch", "_check"):
                proc = getattr(self, name)
                setattr(self, name, None)
                if proc is None:
                    continue
                try:
                    if proc.stdin is not None:
                        proc.stdin.close()
                    proc.wait(5)
                except (OSError, subprocess.TimeoutExpired):
                    proc.kill()
                    proc.wait()
                finally:
                    if proc.stdout is not None:
                        proc.stdout.close()
