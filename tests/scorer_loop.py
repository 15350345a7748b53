"""A simulated loop (monitor/simulator.py) read turn by turn by the real collectors.

After each turn the loop-file collectors read what the turn wrote (baton, brief,
memory, ledger, prompts, hubs, git state) and then the commit collector reads the
new commits, as the watcher would deliver them. Events carry the simulator's
virtual clock, so a run is deterministic and can be scored twice.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from collectors.baton import BatonCollector
from collectors.brief import BriefCollector
from collectors.commits import CommitCollector
from collectors.gitstate import GitStateCollector
from collectors.hubs import HubCollector
from collectors.ledger import LedgerCollector
from collectors.memory import MemoryCollector
from collectors.prompts import PromptCollector
from collectors.watch import Change
from monitor.config import Settings
from monitor.events import Envelope
from monitor.simulator import START_TIME, LoopSimulator, TurnRecord


class WatchedLoop:
    """Plays turns into a real repo and collects the events they leave, in order."""

    def __init__(self, root: Path, *, scenario: str = "productive", seed: int = 0, settings: Settings | None = None, repo_id: str = "sim") -> None:
        self.settings = settings or Settings()
        self.sim = LoopSimulator(root, scenario=scenario, seed=seed)
        self.root = root
        self.repo_id = repo_id
        self.clock: datetime = START_TIME
        self.envelopes: list[Envelope] = []
        self._seq = 0
        s = self.settings
        self.files = [
            BatonCollector(root, s, self._emit),
            BriefCollector(root, s, self._emit),
            MemoryCollector(root, s, self._emit),
            LedgerCollector(root, s, self._emit),
            PromptCollector(root, s, self._emit),
        ]
        for collector in self.files:
            collector.pause = lambda seconds: None  # type: ignore[attr-defined]
        self.hubs = HubCollector(root, s, self._emit)
        self.gitstate = GitStateCollector(root, s, self._emit)
        self.commits = CommitCollector(root, s, self._emit)
        self.commits.scan()  # the scaffold is history: the loop starts now
        self.hubs.scan()
        self.envelopes.clear()

    def _emit(self, payload: Any, when: datetime | None) -> None:
        self._seq += 1
        time = when or self.clock
        self.envelopes.append(Envelope(repo=self.repo_id, source="sim", stream="s", seq=self._seq, time=time, observed=time, payload=payload))

    def read(self, record: TurnRecord) -> TurnRecord:
        """Collect what a turn left: loop files first (written before the commit), then commits."""
        if record.ended_at is not None:
            self.clock = record.ended_at
        changes = [Change(path=p, kind="modified") for p in record.files]
        changes += [Change(path=p, kind="modified") for p in ("sync/state.json", "input.md", "galph_memory.md", "docs/fix_plan.md")]
        for collector in self.files:
            collector.on_changes(changes)
        self.hubs.on_changes(changes)
        self.gitstate.tick(self.clock)
        self.commits.refresh()
        return record

    def supervisor(self, **kw: Any) -> TurnRecord:
        self.sim.supervisor_turn(**kw)
        return self.read(self.sim.records[-1])

    def engineer(self, **kw: Any) -> TurnRecord:
        self.sim.engineer_turn(**kw)
        return self.read(self.sim.records[-1])

    def recover(self) -> None:
        self.sim.recover()
        self.gitstate.tick(self.clock)
        self.commits.refresh()

    def run(self, iterations: int) -> list[TurnRecord]:
        return self.sim.run(iterations, on_turn=self.read)

    def close(self) -> None:
        self.commits.close()
