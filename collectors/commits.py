"""Commits, live and replayed: `commit` and `commit_orphaned` events.

Live (`CommitCollector`): the watcher hands over changes to `.git/HEAD`,
`.git/packed-refs`, `.git/refs/**` and `.git/logs/**`; the collector lists the ref
tips (`git for-each-ref`, cheap) and reads the commits reachable from the new tips
but not from the old ones, parents first, through the streaming reader. Commits
reachable before and from no ref now are `commit_orphaned` (rebase, reset,
force-push, a deleted branch, a detached HEAD left behind). `tick` compares the
tips again, once a second, in case a file event was missed.

Replay (`backfill`): the same reader and the same builder over a whole history,
one `git log` process, oldest first, each commit flagged `backfill=True`. Commit
events carry the natural key `commit:<sha>`, so a replay stored twice adds nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable

from collectors.base import Collector, Emit
from collectors.commit_message import MessageParser
from collectors.diffs import ChangedFile, EvidenceExtractor
from collectors.gitlog import GitError, LogReader, ObjectReader, RawCommit, Unreadable, read_tips, resolve, rev_list
from collectors.gitrepo import git_dir
from monitor.config import Settings
from monitor.events import Commit, CommitOrphaned, FileStat, Warning, decode_text
from monitor.paths import CODE_CLASSES, PathClassifier

# Paths of a commit named in a missing-objects warning (the event itself has them all).
_WARNING_PATHS = 50
# Stand-in ref names for tips a store remembered without their refs.
_KNOWN = "known:"
# Python blobs read per commit for the evidence; a commit with more is marked truncated.
_MAX_BLOBS_PER_COMMIT = 2000
# Commits whose blobs are asked of git together (one round trip instead of one each).
_BATCH = 64
# ...unless their diffs already hold this many hunk lines.
_BATCH_LINES = 200_000


@dataclass
class _Fetched:
    sizes: dict[str, int | None] = field(default_factory=dict)
    blobs: dict[str, bytes | None] = field(default_factory=dict)
    problem: str | None = None


class _Prefetch:
    """`CommitBuilder.fetch` on a thread: git reads the next batch's blobs while this one is built."""

    def __init__(self, builder: "CommitBuilder", raws: list[RawCommit]) -> None:
        self._result: _Fetched | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(builder, raws), name="loopmon-blobs", daemon=True)
        self._thread.start()

    def _run(self, builder: "CommitBuilder", raws: list[RawCommit]) -> None:
        try:
            self._result = builder.fetch(raws)
        except BaseException as exc:  # handed to the caller's thread
            self._error = exc

    def result(self) -> _Fetched:
        self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result


class CommitBuilder:
    """Turns a RawCommit from git into a `Commit` event (message parsed, paths classified, evidence)."""

    def __init__(self, settings: Settings, objects: ObjectReader) -> None:
        self.settings = settings
        self.parser = MessageParser(settings)
        self.classifier = PathClassifier(settings.paths)
        self.extractor = EvidenceExtractor(
            ast_max_bytes=settings.commits.ast_max_bytes, hashes_cap=settings.commits.hashes_cap
        )
        self.objects = objects

    def want_hunks(self, path: bytes) -> bool:
        """Only production and test files feed the evidence: other hunks are skipped unread."""
        return self.classifier.classify(path.decode("utf-8", "replace")) in CODE_CLASSES

    def build(self, raw: RawCommit, *, backfill: bool = False, refs: list[str] | None = None) -> tuple[Commit, list[Warning]]:
        """One commit event (and its warnings)."""
        return self.build_many([raw], backfill=backfill, refs={raw.sha: refs or []})[0]

    def build_many(
        self, raws: list[RawCommit], *, backfill: bool = False, refs: Mapping[str, list[str]] | None = None
    ) -> list[tuple[Commit, list[Warning]]]:
        """Commit events for several commits, their blob sizes and contents asked of git in one go each."""
        return self.assemble(raws, self.fetch(raws), backfill=backfill, refs=refs)

    def fetch(self, raws: list[RawCommit]) -> "_Fetched":
        """What git must still tell about these commits: blob sizes, and the Python blobs to outline.

        Only git I/O: safe to run on a thread while other commits are assembled."""
        fetched = _Fetched()
        try:
            fetched.sizes = self.objects.sizes(
                [f.new_oid for raw in raws for f in raw.files if f.new_oid and not f.unknown]
            )
        except GitError as exc:
            fetched.problem = f"blob sizes not read: {exc}"
        cap = self.extractor.ast_max_bytes
        wanted: list[str] = []
        for raw in raws:
            taken = 0
            for diff in raw.files:
                oid = diff.new_oid
                if oid is None or (fetched.sizes.get(oid) or 0) > cap or taken >= _MAX_BLOBS_PER_COMMIT:
                    continue
                path = diff.path.decode("utf-8", "replace")
                path_class = self.classifier.classify(path)
                if path_class in CODE_CLASSES and self.extractor.wants_blob(ChangedFile(path, path_class, diff)):
                    wanted.append(oid)
                    taken += 1
        if wanted:
            try:
                fetched.blobs = self.objects.contents(wanted)
            except GitError as exc:
                fetched.problem = f"blobs not read: {exc}"
        return fetched

    def assemble(
        self,
        raws: list[RawCommit],
        fetched: "_Fetched",
        *,
        backfill: bool = False,
        refs: Mapping[str, list[str]] | None = None,
    ) -> list[tuple[Commit, list[Warning]]]:
        """The commit events, from the commits and what `fetch` got for them."""
        refs = refs or {}
        out: list[tuple[Commit, list[Warning]]] = []
        for raw in raws:
            files, changed = self._stage(raw, fetched.sizes)
            for c in changed:
                if c.diff.new_oid:
                    c.blob = fetched.blobs.get(c.diff.new_oid)
            commit = self._finish(raw, files, changed, backfill, refs.get(raw.sha) or [])
            warnings = self._problems(raw, files)
            if fetched.problem:
                warnings.append(Warning(code="git_objects", message=f"commit {raw.sha[:12]}: {fetched.problem}"))
            out.append((commit, warnings))
        return out

    def _stage(self, raw: RawCommit, sizes: dict[str, int | None]) -> tuple[list[FileStat], list[ChangedFile]]:
        files: list[FileStat] = []
        changed: list[ChangedFile] = []
        for diff in raw.files:
            path, path_bytes = decode_text(diff.path)
            path_class = self.classifier.classify(path)
            files.append(
                FileStat(
                    path=path,
                    path_bytes=path_bytes,
                    old_path=decode_text(diff.old_path)[0] if diff.old_path is not None else None,
                    insertions=None if diff.unknown else diff.insertions,
                    deletions=None if diff.unknown else diff.deletions,
                    path_class=path_class,  # type: ignore[arg-type]
                    binary=diff.binary,
                    unknown=diff.unknown,
                    size=sizes.get(diff.new_oid) if diff.new_oid else None,
                )
            )
            if path_class in CODE_CLASSES:
                changed.append(ChangedFile(path, path_class, diff))
        return files, changed

    def _finish(
        self,
        raw: RawCommit,
        files: list[FileStat],
        changed: list[ChangedFile],
        backfill: bool,
        refs: list[str],
    ) -> Commit:
        message, message_bytes = decode_text(raw.message)
        info = self.parser.parse(message)
        evidence = self.extractor.extract(changed, message=message, truncated=raw.truncated)
        for c in changed:
            c.blob = None  # blobs can be large: keep none past their commit
        return Commit(
            sha=raw.sha,
            parents=raw.parents,
            author_name=decode_text(raw.author_name)[0],
            author_email=decode_text(raw.author_email)[0],
            authored_at=raw.authored_at,
            committed_at=raw.committed_at,
            message=message,
            message_bytes=message_bytes,
            refs=refs,
            role=info.role,
            iteration=info.iteration,
            sync=info.sync,
            ledger_ids=info.ledger_ids,
            tests=info.tests,
            files=files,
            evidence=evidence,
            backfill=backfill,
        )

    @staticmethod
    def _problems(raw: RawCommit, files: list[FileStat]) -> list[Warning]:
        if not raw.problems:
            return []
        if raw.shallow:
            return [Warning(code="git_shallow_boundary", message="; ".join(raw.problems), detail={"sha": raw.sha})]
        unknown = [f.path for f in files if f.unknown]
        return [
            Warning(
                code="git_objects_missing",
                message=f"commit {raw.sha[:12]}: {'; '.join(raw.problems)}. Its line counts for "
                f"{len(unknown)} path(s) are unknown.",
                detail={"sha": raw.sha, "paths": unknown[:_WARNING_PATHS], "unknown_paths": len(unknown)},
            )
        ]


def _unreadable_warning(item: Unreadable) -> Warning:
    return Warning(
        code="git_commit_unreadable",
        message=f"commit {item.sha[:12]} cannot be read (its object is missing): {item.reason}",
        detail={"sha": item.sha},
    )


def _refs_by_sha(tips: Mapping[str, str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for ref, sha in sorted(tips.items()):
        out.setdefault(sha, []).append(ref)
    return out


def _emit_commits(
    reader: LogReader,
    builder: CommitBuilder,
    shas: list[str],
    emit: Emit,
    *,
    backfill: bool,
    refs: Mapping[str, list[str]],
    progress: Callable[[int, int], None] | None = None,
    on_commit: Callable[[Commit], None] | None = None,
) -> int:
    """Read, build and emit `shas` in order; returns how many commit events went out."""
    total = len(shas)
    step = max(1, total // 200)
    state = {"done": 0, "count": 0}

    def flush(batch: list[RawCommit | Unreadable], fetching: _Prefetch | None) -> None:
        raws = [item for item in batch if isinstance(item, RawCommit)]
        built = iter(builder.assemble(raws, fetching.result(), backfill=backfill, refs=refs)) if fetching else iter(())
        for item in batch:
            if isinstance(item, Unreadable):
                emit(_unreadable_warning(item), None)
            else:
                commit, warnings = next(built)
                if on_commit is not None:
                    on_commit(commit)
                emit(commit, commit.committed_at)
                for warning in warnings:
                    emit(warning, None)
                state["count"] += 1
            state["done"] += 1
            if progress is not None and (state["done"] % step == 0 or state["done"] == total):
                progress(state["done"], total)

    # A pipeline: while batch k is assembled here, git reads batch k+1's blobs on a
    # thread and streams the commits after it through the log reader's pump.
    waiting: tuple[list[RawCommit | Unreadable], _Prefetch | None] | None = None

    def hand_over(batch: list[RawCommit | Unreadable]) -> None:
        nonlocal waiting
        raws = [item for item in batch if isinstance(item, RawCommit)]
        fetching = _Prefetch(builder, raws) if raws else None
        if waiting is not None:
            flush(*waiting)
        waiting = (batch, fetching)

    batch: list[RawCommit | Unreadable] = []
    lines = 0
    for item in reader.read(shas):
        batch.append(item)
        if isinstance(item, RawCommit):
            lines += sum(len(h.added) + len(h.removed) for f in item.files for h in f.hunks)
        if len(batch) >= _BATCH or lines >= _BATCH_LINES:
            hand_over(batch)
            batch, lines = [], 0
    if batch:
        hand_over(batch)
    if waiting is not None:
        flush(*waiting)
    return state["count"]


def _reader(root: Path, settings: Settings, builder: CommitBuilder) -> LogReader:
    return LogReader(root, want_hunks=builder.want_hunks, patch_lines_cap=settings.commits.patch_lines_cap)


def backfill(
    root: str | Path,
    settings: Settings,
    emit: Emit,
    *,
    rev: str | None = "--all",
    since: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Replay history, oldest first, through the commit builder into `emit`; returns the commit count.

    `rev` is every ref (`--all`: settings.commits.refs and HEAD), or a branch, tag, sha
    or range; `since` leaves out that commit and everything before it. Raises
    GitError, with a message for a person, when the repo or a revision cannot be read.
    """
    root = Path(root)
    tips = read_tips(root, settings.commits.refs, git_dir(root) / "HEAD")
    if rev in (None, "", "--all"):
        include = sorted(set(tips.values()))
    else:
        include = resolve(root, rev)
    exclude = [sha for sha in resolve(root, since) if not sha.startswith("^")] if since else []
    shas = rev_list(root, include, exclude)
    if progress is not None:
        progress(0, len(shas))
    objects = ObjectReader(root)
    try:
        if len(shas) > _BATCH:
            objects.preload_sizes()
        builder = CommitBuilder(settings, objects)
        return _emit_commits(
            _reader(root, settings, builder),
            builder,
            shas,
            emit,
            backfill=True,
            refs=_refs_by_sha(tips),
            progress=progress,
        )
    finally:
        objects.close()


class CommitCollector(Collector):
    """Live commits: new ones as `commit`, rewritten-away ones as `commit_orphaned`."""

    name = "commits"

    def __init__(self, root: str | Path, settings: Settings, emit: Emit) -> None:
        super().__init__(root, settings, emit)
        self._lock = threading.RLock()
        self._objects = ObjectReader(self.root)
        self._builder = CommitBuilder(settings, self._objects)
        self._reader = _reader(self.root, settings, self._builder)
        self._head_file = git_dir(self.root) / "HEAD"
        self._tips: dict[str, str] | None = None
        self._restored: dict[str, str] | None = None  # the tips a saved state last published
        self._last_error: str | None = None
        self.orphaned: set[str] = set()

    def wants(self, path: str) -> bool:
        return (
            path == ".git/HEAD"
            or path == ".git/packed-refs"
            or path.startswith(".git/refs/")
            or path.startswith(".git/logs/")
        )

    def on_changes(self, changes: list) -> None:
        self.refresh()

    def tick(self, now: datetime) -> None:
        self.refresh()

    def state(self) -> dict | None:
        """The ref tips whose commits are published (all of them, parents first)."""
        with self._lock:
            tips = self._tips if self._tips is not None else self._restored
            return {"tips": dict(tips)} if tips is not None else None

    def restore(self, state: dict) -> None:
        """Resume from saved tips: `scan` reads the commits made since, orphans those rewritten away."""
        tips = state.get("tips")
        if isinstance(tips, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in tips.items()):
            self._restored = dict(tips)

    def scan(self, known_tips: Mapping[str, str] | Iterable[str] | None = None) -> None:
        """Remember the current tips (history is the backfill's job).

        With `known_tips` (what a store last saw: ref -> sha, or shas; by default the
        restored state's) the commits made since then are read now, and those rewritten
        away since then are orphaned."""
        with self._lock:
            if known_tips is None:
                known_tips = self._restored
            tips = self._read_tips()
            if tips is None:
                return  # asked again on the next refresh: never a replay of the history
            self._restored = None
            if known_tips is None:
                self._tips = tips
                return
            if isinstance(known_tips, Mapping):
                self._tips = dict(known_tips)
            else:
                self._tips = {f"{_KNOWN}{sha}": sha for sha in known_tips}
            self._apply(tips)

    def rescan(self) -> None:
        """After the repo folder was replaced: git's object reader reads the new one, then the tips are compared."""
        self._objects.close()  # reopened on first use, in the folder as it is now
        self.refresh()

    def refresh(self) -> None:
        """Compare the ref tips with the last ones and emit what changed."""
        with self._lock:
            if self._tips is None:
                self.scan()
                return
            tips = self._read_tips()
            if tips is not None and tips != self._tips:
                self._apply(tips)

    def close(self) -> None:
        self._objects.close()

    # ------------------------------------------------------------------ internals

    def _read_tips(self) -> dict[str, str] | None:
        try:
            tips = read_tips(self.root, self.settings.commits.refs, self._head_file)
        except GitError as exc:
            self._warn_once("git_refs", f"cannot list the refs of {self.root}: {exc}")
            return None
        return tips

    def _warn_once(self, code: str, message: str) -> None:
        if message != self._last_error:
            self._last_error = message
            self.warn(code, message)

    def _apply(self, tips: dict[str, str]) -> None:
        old = self._tips or {}
        old_shas = set(old.values())
        new_shas = set(tips.values())
        fresh = self._one_new_commit(old_shas, new_shas)
        try:
            if fresh is None:
                fresh = rev_list(self.root, sorted(new_shas), self._existing(sorted(old_shas - new_shas)) + sorted(old_shas & new_shas))
        except GitError as exc:
            self._warn_once("git_rev_list", f"cannot list new commits: {exc}")
            return
        parents_of_fresh: set[str] = set()

        def seen(commit: Commit) -> None:
            parents_of_fresh.update(commit.parents)
            self.orphaned.discard(commit.sha)

        if fresh:
            _emit_commits(
                self._reader, self._builder, fresh, self.emit, backfill=False, refs=_refs_by_sha(tips), on_commit=seen
            )
        self._orphans(old, tips, new_shas, parents_of_fresh)
        self._tips = tips
        self._last_error = None

    def _orphans(self, old: dict[str, str], tips: dict[str, str], new_shas: set[str], kept: set[str]) -> None:
        """Commits reachable from a ref's old tip and from no tip now."""
        checked: set[str] = set()
        # Real refs first, HEAD last: a rewritten branch names the branch, not HEAD.
        for ref in sorted(old, key=lambda r: (r == "HEAD", r)):
            sha = old[ref]
            if tips.get(ref) == sha or sha in new_shas or sha in kept or sha in checked:
                continue
            checked.add(sha)
            if not self._existing([sha]):
                continue  # pruned already: nothing left to list
            try:
                gone = rev_list(self.root, [sha], sorted(new_shas))
            except GitError as exc:
                self._warn_once("git_rev_list", f"cannot list commits rewritten away from {ref}: {exc}")
                continue
            known = ref.startswith(_KNOWN)
            reason = "history rewritten" if ref in tips or known else "ref deleted"
            left = [orphan for orphan in gone if orphan not in self.orphaned]
            for orphan in left:
                self.orphaned.add(orphan)
                self.emit(CommitOrphaned(sha=orphan, ref=None if known else ref, reason=reason), None)
            if left and reason == "history rewritten" and not known and ref != "HEAD":
                # A force-push, reset or rebase: one warning a person sees, beside the per-commit events.
                self.warn(
                    "history_rewritten",
                    f"{ref} was rewritten (force-push, reset or rebase): {len(left)} commit(s) it held are "
                    f"no longer reachable; it moved from {sha[:12]} to {tips[ref][:12]}",
                    ref=ref,
                    old=sha,
                    new=tips[ref],
                    orphaned=len(left),
                )

    def _one_new_commit(self, old_shas: set[str], new_shas: set[str]) -> list[str] | None:
        """The common case read without a `git rev-list` process (commit latency): one new
        tip whose parents were all tips already, as after `git commit`. None: ask git.

        (Were that commit already reachable from another old tip, it is sent again; the
        store and the scorer know a commit by its sha and take it once.)"""
        added = new_shas - old_shas
        if len(added) != 1 or not old_shas:
            return None
        sha = next(iter(added))
        try:
            parents = self._objects.parents(sha)
        except GitError:
            return None
        return [sha] if parents and set(parents) <= old_shas else None

    def _existing(self, shas: list[str]) -> list[str]:
        if not shas:
            return []
        try:
            present = self._objects.exists(shas)
        except GitError:
            return shas
        return [sha for sha in shas if present.get(sha)]
