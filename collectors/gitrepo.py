"""Small, cheap reads of a git repository's state straight from `.git` (no subprocess)."""

from __future__ import annotations

from pathlib import Path


def git_dir(root: str | Path) -> Path:
    """The repo's git directory (follows a `.git` file, as in worktrees and submodules)."""
    dot = Path(root) / ".git"
    if dot.is_file():
        text = dot.read_text(encoding="utf-8", errors="replace").strip()
        if text.startswith("gitdir:"):
            target = Path(text[len("gitdir:") :].strip())
            return target if target.is_absolute() else (Path(root) / target).resolve()
    return dot


def read_head(root: str | Path) -> str | None:
    try:
        return (git_dir(root) / "HEAD").read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return None


def current_branch_and_head(root: str | Path) -> tuple[str | None, str | None]:
    """(branch name or None when detached/unborn, HEAD sha or None)."""
    head = read_head(root)
    if head is None:
        return None, None
    if not head.startswith("ref:"):
        return None, head or None
    ref = head[len("ref:") :].strip()
    branch = ref[len("refs/heads/") :] if ref.startswith("refs/heads/") else ref
    gd = git_dir(root)
    try:
        return branch, (gd / ref).read_text(encoding="utf-8").strip() or None
    except OSError:
        pass
    try:
        for line in (gd / "packed-refs").read_text(encoding="utf-8", errors="replace").splitlines():
            parts = line.split(" ", 1)
            if len(parts) == 2 and parts[1] == ref:
                return branch, parts[0]
    except OSError:
        pass
    return branch, None
