"""Git plumbing for the loop simulator: commits with fixed identity and dates, and
real broken git states (a conflicted rebase or merge, a stale index lock).

Every call runs with the system and global git config switched off, so a user's
settings (hooks, signing, rerere, diff tools) can neither change the shas nor
stop a commit. The broken states are made on a scratch branch built with
plumbing, so the loop's own branch never gains a commit from them.
"""

from __future__ import annotations

import os
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path

AUTHOR_NAME = "Loop Operator"
AUTHOR_EMAIL = "loop@example.invalid"
# Prefix of the scratch branch (and ref) a broken state is built on; what follows
# the prefix names the branch to return to.
SCRATCH_PREFIX = "loopmon-sim/"
UPSTREAM_REF = "refs/loopmon-sim/upstream"
GIT_STATES = ("rebase-merge", "rebase-apply", "merge", "index.lock")

_CONFIG = (
    "-c", "core.hooksPath=/dev/null",
    "-c", "core.autocrlf=false",
    "-c", "core.safecrlf=false",
    "-c", "commit.gpgsign=false",
    "-c", "gc.auto=0",
    "-c", "maintenance.auto=false",
    "-c", "rerere.enabled=false",
    "-c", "advice.detachedHead=false",
    "-c", "init.defaultBranch=main",
)
_LOCK_RETRIES = 40
STALE_LOCK_SECONDS = 10.0  # an index.lock older than this was left by a crash, not held by a live git


class SimulatorError(Exception):
    """The simulator cannot go on; the message says why and what to do."""


def git_date(when: datetime) -> str:
    """A date git takes verbatim in GIT_AUTHOR_DATE: seconds since the epoch, UTC."""
    return f"{int(when.astimezone(timezone.utc).timestamp())} +0000"


class Git:
    """Runs git in one worktree with the simulator's fixed environment."""

    def __init__(self, repo: Path) -> None:
        self.repo = Path(repo)
        env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
        env.update(
            GIT_CONFIG_NOSYSTEM="1",
            GIT_CONFIG_GLOBAL=os.devnull,
            GIT_AUTHOR_NAME=AUTHOR_NAME,
            GIT_AUTHOR_EMAIL=AUTHOR_EMAIL,
            GIT_COMMITTER_NAME=AUTHOR_NAME,
            GIT_COMMITTER_EMAIL=AUTHOR_EMAIL,
            GIT_TERMINAL_PROMPT="0",
            GIT_EDITOR="true",
            GIT_SEQUENCE_EDITOR="true",
            GIT_MERGE_AUTOEDIT="no",
            LC_ALL="C",
        )
        self.env = env
        self._git_dir: Path | None = None

    # ------------------------------------------------------------------ running

    def run(
        self,
        *args: str,
        when: datetime | None = None,
        check: bool = True,
        input: bytes | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[bytes]:
        """Run one git command; retry while another process holds the index lock."""
        env = self.env
        if when is not None or extra_env:
            env = dict(env)
            if when is not None:
                env["GIT_AUTHOR_DATE"] = env["GIT_COMMITTER_DATE"] = git_date(when)
            env.update(extra_env or {})
        cmd = ["git", *_CONFIG, *args]
        for attempt in range(_LOCK_RETRIES):
            proc = subprocess.run(cmd, cwd=self.repo, env=env, input=input, capture_output=True)
            if proc.returncode == 0 or not check:
                return proc
            # A watcher's `git status` may hold index.lock for a moment: wait it out.
            if b"index.lock" in proc.stderr and attempt < _LOCK_RETRIES - 1 and not self._our_lock():
                time.sleep(0.05)
                continue
            break
        raise SimulatorError(
            f"git {' '.join(args[:3])} failed in {self.repo} (exit {proc.returncode}): "
            f"{proc.stderr.decode('utf-8', 'replace').strip()}"
        )

    def out(self, *args: str) -> str:
        return self.run(*args).stdout.decode("utf-8", "replace").strip()

    def _our_lock(self) -> bool:
        return (self.git_dir / "index.lock.loopmon-sim").exists()

    # ------------------------------------------------------------------ repository

    def is_repo(self) -> bool:
        proc = self.run("rev-parse", "--show-toplevel", check=False)
        if proc.returncode != 0:
            return False
        top = Path(proc.stdout.decode().strip())
        return top.resolve() == self.repo.resolve()

    def init(self) -> None:
        self.repo.mkdir(parents=True, exist_ok=True)
        self.run("init", "-q", "-b", "main")

    @property
    def git_dir(self) -> Path:
        if self._git_dir is None:
            path = Path(self.out("rev-parse", "--git-dir"))
            self._git_dir = path if path.is_absolute() else (self.repo / path)
        return self._git_dir

    def has_commits(self) -> bool:
        return self.run("rev-parse", "-q", "--verify", "HEAD^{commit}", check=False).returncode == 0

    def head(self) -> str:
        """HEAD's sha, read from the ref file when it is loose (saves a process)."""
        try:
            head = (self.git_dir / "HEAD").read_text().strip()
            if head.startswith("ref: "):
                sha = (self.git_dir / head[5:]).read_text().strip()
            else:
                sha = head
            if len(sha) == 40:
                return sha
        except OSError:
            pass
        return self.out("rev-parse", "HEAD")

    def branch(self) -> str | None:
        proc = self.run("symbolic-ref", "-q", "--short", "HEAD", check=False)
        name = proc.stdout.decode().strip()
        return name or None

    def head_time(self) -> datetime | None:
        if not self.has_commits():
            return None
        return datetime.fromtimestamp(int(self.out("log", "-1", "--format=%ct")), timezone.utc)

    def commit(self, paths: list[str], message: str, when: datetime, new: set[str] | None = None) -> str:
        """Commit exactly `paths` (changed, deleted, or new ones listed in `new`); the new sha.

        Paths git already tracks need no `git add`: `git commit -- <paths>` takes them
        from the worktree, so a turn that created no file costs one git process.
        """
        paths = sorted(set(paths))
        untracked = sorted(set(paths) & set(new or ()))
        if untracked:
            self.run("add", "-A", "--", *untracked)
        if paths:
            proc = self.run("commit", "-q", "--no-verify", "--allow-empty", "-m", message, "--", *paths, when=when, check=False)
            if proc.returncode != 0:
                # a file left untracked by an interrupted run: stage everything, then commit
                self.run("add", "-A", "--", *paths)
                self.run("commit", "-q", "--no-verify", "--allow-empty", "-m", message, "--", *paths, when=when)
        else:
            self.run("commit", "-q", "--no-verify", "--allow-empty", "-m", message, when=when)
        return self.head()

    # ------------------------------------------------------------------ broken states

    def active_states(self) -> list[str]:
        """The broken states present now, by their names in GIT_STATES."""
        found = []
        if (self.git_dir / "rebase-merge").is_dir():
            found.append("rebase-merge")
        if (self.git_dir / "rebase-apply").is_dir():
            found.append("rebase-apply")
        if (self.git_dir / "MERGE_HEAD").exists():
            found.append("merge")
        if (self.git_dir / "index.lock").exists():
            found.append("index.lock")
        return found

    def blocking_states(self) -> list[str]:
        """The broken states that stop a turn: a foreign index.lock only once it is stale.

        A watcher's `git status` holds index.lock for a moment; commits wait that out.
        """
        states = self.active_states()
        if "index.lock" in states and not self._our_lock():
            try:
                age = time.time() - (self.git_dir / "index.lock").stat().st_mtime
            except OSError:
                age = 0.0
            if age < STALE_LOCK_SECONDS:
                states.remove("index.lock")
        return states

    def _conflicting_pair(self, path: str, ours: str, theirs: str, when: datetime) -> tuple[str, str]:
        """Two commits on top of HEAD that set `path` to different contents."""
        base = self.head()
        shas = []
        for text, label in ((ours, "wip: local sync notes"), (theirs, "upstream sync notes")):
            blob = self.run("hash-object", "-w", "--stdin", input=text.encode()).stdout.decode().strip()
            index = self.git_dir / "loopmon-sim.index"
            extra = {"GIT_INDEX_FILE": str(index)}
            self.run("read-tree", base, extra_env=extra)
            self.run("update-index", "--add", "--cacheinfo", f"100644,{blob},{path}", extra_env=extra)
            tree = self.run("write-tree", extra_env=extra).stdout.decode().strip()
            index.unlink(missing_ok=True)
            sha = self.run("commit-tree", tree, "-p", base, "-m", label, when=when).stdout.decode().strip()
            shas.append(sha)
        return shas[0], shas[1]

    def make_state(self, state: str, path: str, ours: str, theirs: str, when: datetime, lock_age: float) -> None:
        """Leave the repository in `state`: a real conflicted rebase or merge, or an index lock."""
        if state not in GIT_STATES:
            raise SimulatorError(f"unknown git state {state!r}; known: {', '.join(GIT_STATES)}")
        if self.blocking_states():
            raise SimulatorError(f"git state already broken ({', '.join(self.blocking_states())}); clear it first")
        if state == "index.lock":
            lock = self.git_dir / "index.lock"
            lock.write_bytes(b"")
            (self.git_dir / "index.lock.loopmon-sim").write_bytes(b"")
            past = time.time() - lock_age
            os.utime(lock, (past, past))
            return
        origin = self.branch()
        if origin is None:
            raise SimulatorError("HEAD is detached; the simulator needs a branch checked out")
        local, upstream = self._conflicting_pair(path, ours, theirs, when)
        scratch = SCRATCH_PREFIX + origin
        self.run("branch", "-f", scratch, local)
        self.run("update-ref", UPSTREAM_REF, upstream)
        if state == "merge":
            self.run("checkout", "-q", scratch)
            proc = self.run("merge", "--no-ff", "--no-edit", UPSTREAM_REF, when=when, check=False)
        else:
            backend = "--merge" if state == "rebase-merge" else "--apply"
            proc = self.run("rebase", backend, UPSTREAM_REF, scratch, when=when, check=False)
        if proc.returncode == 0 or not self.blocking_states():
            raise SimulatorError(f"could not provoke a conflicted {state}: {proc.stderr.decode(errors='replace')}")

    def clear_states(self) -> list[str]:
        """Abort a rebase or merge in progress, drop a lock we (or a crash) left; the states cleared."""
        cleared = self.active_states()
        if "index.lock" in cleared:
            lock = self.git_dir / "index.lock"
            ours = self.git_dir / "index.lock.loopmon-sim"
            stale = not lock.exists() or time.time() - lock.stat().st_mtime > STALE_LOCK_SECONDS
            if ours.exists() or stale:
                lock.unlink(missing_ok=True)
                ours.unlink(missing_ok=True)
            else:
                cleared.remove("index.lock")
        if "rebase-merge" in cleared or "rebase-apply" in cleared:
            self.run("rebase", "--abort")
        if "merge" in cleared:
            self.run("merge", "--abort")
        branch = self.branch()
        if branch and branch.startswith(SCRATCH_PREFIX):
            self.run("checkout", "-q", branch[len(SCRATCH_PREFIX):])
        for ref in self.out("for-each-ref", "--format=%(refname)", "refs/heads/" + SCRATCH_PREFIX, "refs/loopmon-sim/").split():
            self.run("update-ref", "-d", ref)
        return cleared
