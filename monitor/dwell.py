"""Dwell: consecutive iterations on a focus that landed no production or test change.

Counted only from what the diff shows, never from the agent's words, when an
iteration closes. A landing of at least `dwell.min_code_lines` code lines on a
focus resets it. Each tier alerts once on the way up and is re-armed by a reset.
The global count ("*") runs across all foci; it alerts only when its streak spans
more than one focus (otherwise the focus's own alert already said it).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from monitor.config import DwellSettings
from monitor.events import Alert, DwellChanged, Severity

GLOBAL = "*"


@dataclass
class DwellCount:
    value: int = 0
    iterations: list[int] = field(default_factory=list)  # indexes that make up the count
    numbers: list[int | None] = field(default_factory=list)
    alerted: set[str] = field(default_factory=set)
    reported: int | None = None  # the supervisor's own dwell=, when it wrote one

    def reset(self) -> None:
        self.value = 0
        self.iterations = []
        self.numbers = []
        self.alerted = set()


def _span(numbers: list[int | None], indexes: list[int]) -> str:
    known = [n for n in numbers if n is not None]
    if known:
        return f"loop iterations {known[0]}–{known[-1]}" if len(known) > 1 else f"loop iteration {known[0]}"
    return f"iterations #{indexes[0]}–#{indexes[-1]}" if len(indexes) > 1 else f"iteration #{indexes[0]}"


class DwellTracker:
    """Per-repo dwell counts, per focus and global."""

    def __init__(self, settings: DwellSettings) -> None:
        self.settings = settings
        self.tiers = sorted(settings.tiers.items(), key=lambda kv: (kv[1], kv[0]))
        self.counts: dict[str, DwellCount] = {}

    def count(self, focus: str) -> DwellCount:
        return self.counts.setdefault(focus, DwellCount())

    def value(self, focus: str | None) -> int:
        c = self.counts.get(focus or GLOBAL)
        return c.value if c else 0

    def severity(self, tier: str) -> Severity:
        names = [name for name, _ in self.tiers]
        if tier == names[-1]:
            return "critical"
        if tier == names[0]:
            return "notice"
        return "warning"

    def tier_of(self, value: int) -> str | None:
        reached = [name for name, threshold in self.tiers if value >= threshold]
        return reached[-1] if reached else None

    def close(
        self, index: int, number: int | None, focus: str | None, landed: bool
    ) -> tuple[list[DwellChanged], list[Alert]]:
        """Count one closed iteration. Returns the dwell values that changed and the tiers crossed."""
        changes: list[DwellChanged] = []
        alerts: list[Alert] = []
        keys = ([focus] if focus else []) + [GLOBAL]
        for key in keys:
            c = self.count(key)
            if landed:
                if c.value:
                    c.reset()
                    changes.append(self._changed(key, c))
                continue
            c.value += 1
            c.iterations.append(index)
            c.numbers.append(number)
            changes.append(self._changed(key, c))
            focus_value = self.value(focus) if focus else 0
            for tier, threshold in self.tiers:
                if c.value < threshold or tier in c.alerted:
                    continue
                c.alerted.add(tier)
                if key == GLOBAL and focus_value >= c.value:
                    continue  # one focus makes up the whole streak: its own alert says it
                alerts.append(self._alert(key, tier, threshold, c, index, focus))
        return changes, alerts

    def _changed(self, key: str, c: DwellCount) -> DwellChanged:
        return DwellChanged(
            focus=key, value=c.value, tier=self.tier_of(c.value), iterations=list(c.iterations), reported=c.reported
        )

    def _alert(self, key: str, tier: str, threshold: int, c: DwellCount, index: int, focus: str | None) -> Alert:
        where = "across all foci" if key == GLOBAL else f"on {key}"
        advice = {
            "notice": "check that the next brief asks for code.",
            "warning": "the supervisor is planning without landing code: make the next Do Now a small code step.",
            "critical": "escalate: block or split the focus, or hand it to a person.",
        }[self.severity(tier)]
        streak_start = c.iterations[0]
        return Alert(
            alert="dwell_tier",
            severity=self.severity(tier),
            key=f"dwell:{key}:{tier}:{streak_start}",
            iteration=index,
            focus=focus if key == GLOBAL else key,
            message=(
                f"Dwell tier {tier}: {c.value} iterations in a row {where} landed no production or test change "
                f"({_span(c.numbers, c.iterations)}); {advice}"
            ),
            detail={"tier": tier, "threshold": threshold, "dwell": c.value, "iterations": list(c.iterations), "scope": key},
        )

    def self_report(self, reported: int, focus: str | None, index: int, unclosed: bool | None = None) -> tuple[DwellChanged, Alert | None]:
        """Compare the supervisor's own `dwell=` with the measured count of its focus.

        The supervisor writes its tally before its own commit opens the next
        iteration, so the turn that just ran is counted too: `unclosed` says whether
        it landed code on this focus (True: the count restarts at 0), or not (False:
        one more), or that there is no such turn (None).
        """
        key = focus or GLOBAL
        c = self.count(key)
        c.reported = reported
        change = self._changed(key, c)
        measured = c.value if unclosed is None else (0 if unclosed else c.value + 1)
        if abs(reported - measured) < self.settings.self_report_tolerance:
            return change, None
        return change, Alert(
            alert="dwell_mismatch",
            severity="notice",
            key=f"dwell_mismatch:{key}:{index}:{reported}",
            iteration=index,
            focus=focus,
            message=(
                f"The supervisor reports dwell={reported} on {key}, but the diffs show {measured} "
                f"iteration(s) in a row without code"
                + (f" ({_span(c.numbers, c.iterations)})" if c.iterations else "")
                + ": check its memory file or the focus it tracks."
            ),
            detail={"reported": reported, "measured": measured, "iterations": list(c.iterations)},
        )
