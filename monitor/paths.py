"""The one path classifier: repo-relative path -> path class, from `[paths]` settings."""

from __future__ import annotations

import re
from functools import lru_cache

from monitor.config import PathSettings

# Order matters: bookkeeping classes first, so `plans/active/X/reports/test_log.py`
# is a hub file, not a test.
CLASS_ORDER = (
    "baton",
    "ledger",
    "brief",
    "memory",
    "prompt",
    "artifact",
    "hub",
    "plans",
    "test",
    "docs",
    "production",
)
CODE_CLASSES = frozenset({"production", "test"})


def glob_to_regex(glob: str) -> str:
    """Translate a path glob: `**` crosses folders, `*` and `?` stay inside one."""
    out: list[str] = []
    i = 0
    while i < len(glob):
        c = glob[i]
        if glob.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif glob.startswith("**", i):
            out.append(".*")
            i += 2
        elif c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(c))
            i += 1
    return "".join(out)


def compile_globs(globs: list[str]) -> re.Pattern[str] | None:
    if not globs:
        return None
    return re.compile("^(?:" + "|".join(glob_to_regex(g) for g in globs) + ")$", re.DOTALL)


class PathClassifier:
    def __init__(self, settings: PathSettings | None = None) -> None:
        settings = settings or PathSettings()
        self._rules = [(name, compile_globs(getattr(settings, name))) for name in CLASS_ORDER]
        self._plans_bin = (
            re.compile(r"^plans/active/[^/]+/bin/.*\.\w+$") if settings.plans_bin_is_production else None
        )
        self.classify = lru_cache(maxsize=65536)(self._classify)

    def _classify(self, path: str) -> str:
        while path.startswith("./"):
            path = path[2:]
        if self._plans_bin is not None and self._plans_bin.match(path):
            return "production"
        for name, pattern in self._rules:
            if pattern is not None and pattern.match(path):
                return name
        return "other"

    @staticmethod
    def is_code(path_class: str) -> bool:
        return path_class in CODE_CLASSES
