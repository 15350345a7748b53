"""Evidence hubs: `plans/active/<INITIATIVE>/reports/<STAMP>/` and `reports/**/<STAMP>/`.

A hub is the first folder on a path that matches a `files.hubs` glob and whose
name is a UTC stamp. Each batch of changes re-measures only the hubs it touched.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from collectors.base import Collector, Emit
from collectors.watch import Change
from monitor.config import Settings
from monitor.events import HubOpened, HubSummaryChanged, HubUpdated, InitiativeArchived, digest
from monitor.paths import compile_globs

SUMMARY = "summary.md"
EXCERPT_CHARS = 500


class HubCollector(Collector):
    name = "hubs"

    def __init__(self, root: str | Path, settings: Settings, emit: Emit) -> None:
        super().__init__(root, settings, emit)
        self._hub_glob = compile_globs(settings.files.hubs)
        self._stamp = re.compile(settings.files.hub_stamp_pattern)
        self._archive = settings.files.archive.rstrip("/") + "/"
        self.hubs: dict[str, tuple[int, int]] = {}  # hub path -> (files, bytes)
        self.summaries: dict[str, str] = {}  # summary.md path -> digest
        self.archived: set[str] = set()
        self._resumed = False  # restored from a saved state: what changed since is news

    def state(self) -> dict | None:
        return {"hubs": {h: list(s) for h, s in self.hubs.items()}, "summaries": dict(self.summaries),
                "archived": sorted(self.archived)}

    def restore(self, state: dict) -> None:
        for hub, stats in (state.get("hubs") or {}).items():
            if isinstance(stats, list) and len(stats) == 2:
                self.hubs[hub] = (int(stats[0]), int(stats[1]))
        self.summaries.update({p: d for p, d in (state.get("summaries") or {}).items() if isinstance(d, str)})
        self.archived.update(str(a) for a in state.get("archived") or [])
        self._resumed = True

    # ----------------------------------------------------------------- locating

    def hub_of(self, path: str) -> str | None:
        """The hub folder containing `path` (or `path` itself), if any."""
        if self._hub_glob is None:
            return None
        parts = path.split("/")
        for i in range(1, len(parts) + 1):
            prefix = "/".join(parts[:i])
            if self._stamp.match(parts[i - 1]) and self._hub_glob.match(prefix):
                return prefix
        return None

    @staticmethod
    def initiative_of(hub: str) -> str | None:
        parts = hub.split("/")
        if len(parts) >= 3 and parts[0] == "plans" and parts[1] == "active":
            return parts[2]
        if len(parts) >= 2 and parts[0] == "reports":
            return parts[1]
        return None

    def _initiative_summary(self, path: str) -> str | None:
        """plans/active/<I>/summary.md: the long-lived hub summary some loops keep."""
        parts = path.split("/")
        if len(parts) == 4 and parts[:2] == ["plans", "active"] and parts[3] == SUMMARY:
            return parts[2]
        return None

    def wants(self, path: str) -> bool:
        return path.startswith(("plans/", "reports/")) or path.startswith(self._archive) or path == self._archive.rstrip("/")

    # ----------------------------------------------------------------- measuring

    def _measure(self, hub: str) -> tuple[int, int] | None:
        folder = self.root / hub
        if not folder.is_dir():
            return None
        files = size = 0
        for dirpath, _dirs, names in os.walk(folder):
            for name in names:
                try:
                    size += os.lstat(os.path.join(dirpath, name)).st_size
                    files += 1
                except OSError:
                    continue
        return files, size

    def _read_summary(self, rel: str) -> str | None:
        try:
            return (self.root / rel).read_bytes()[: 1 << 20].decode("utf-8", errors="replace")
        except OSError:
            return None

    def _check_summary(self, rel: str, hub: str, initiative: str | None, quiet: bool = False) -> None:
        text = self._read_summary(rel)
        if text is None:
            self.summaries.pop(rel, None)
            return
        d = digest(text)
        if self.summaries.get(rel) == d:
            return
        self.summaries[rel] = d
        if not quiet:
            self.emit(HubSummaryChanged(path=hub, initiative=initiative, excerpt=text[:EXCERPT_CHARS], digest=d), None)

    def _refresh(self, hub: str, existing: bool = False) -> None:
        stats = self._measure(hub)
        if stats is None:
            self.hubs.pop(hub, None)
            return
        initiative = self.initiative_of(hub)
        if hub not in self.hubs:
            stamp = hub.rsplit("/", 1)[-1]
            self.emit(HubOpened(path=hub, initiative=initiative, stamp=stamp, existing=existing), None)
        if self.hubs.get(hub) != stats:
            self.hubs[hub] = stats
            self.emit(HubUpdated(path=hub, initiative=initiative, files=stats[0], bytes=stats[1]), None)
        self._check_summary(f"{hub}/{SUMMARY}", hub, initiative)

    # ----------------------------------------------------------------- events

    def scan(self) -> None:
        for base in ("plans/active", "reports"):
            top = self.root / base
            if not top.is_dir():
                continue
            for dirpath, dirs, _names in os.walk(top):
                rel = Path(dirpath).relative_to(self.root).as_posix()
                if self.hub_of(rel) == rel:
                    dirs[:] = []  # nothing below a hub is another hub
                    self._refresh(rel, existing=not self._resumed)  # after a restart, a hub made meanwhile is new
        archive = self.root / self._archive
        if archive.is_dir():
            for name in sorted(p.name for p in archive.iterdir() if p.is_dir()):
                if name not in self.archived and self._resumed:
                    self.emit(InitiativeArchived(initiative=name, path=self._archive + name), None)
                self.archived.add(name)
        active = self.root / "plans/active"
        if active.is_dir():
            for folder in active.iterdir():
                path = f"plans/active/{folder.name}"
                self._check_summary(f"{path}/{SUMMARY}", path, folder.name, quiet=not self._resumed)

    def on_changes(self, changes: list[Change]) -> None:
        hubs: dict[str, None] = {}
        for change in changes:
            for path in (change.path, change.dest):
                if not path:
                    continue
                hub = self.hub_of(path)
                if hub is not None:
                    hubs[hub] = None
                initiative = self._initiative_summary(path)
                if initiative is not None:
                    self._check_summary(path, f"plans/active/{initiative}", initiative)
                if path.startswith(self._archive):
                    name = path[len(self._archive) :].split("/", 1)[0]
                    if name and name not in self.archived and (self.root / self._archive / name).is_dir():
                        self.archived.add(name)
                        self.emit(InitiativeArchived(initiative=name, path=self._archive + name), None)
        for hub in hubs:
            self._refresh(hub)
