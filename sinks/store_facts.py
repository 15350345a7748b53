"""Restatements: state a restarted collector reports again is not a new fact.

At start every collector reads the repo and reports what it finds: the ledger's
items, the brief, the baton, the hubs, the prompts. After a restart those events
come again under a new stream, so their `Envelope.key` is new although nothing
changed. The store recognises them by comparing each with the latest stored state
of the same thing (the entity): an event that would leave it as it is is a
restatement and is not stored again. A real change back to an earlier state
(brief A, then B, then A) is a change and is stored.

Ledger items are compared with their row in `ledger_items`, which status and
attempt events keep current; everything else with the `facts` table.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from monitor.events import Envelope, LedgerItem, digest

LEDGER_ITEM_KINDS = frozenset({"ledger_item_added", "ledger_item_removed", "ledger_status_changed",
                               "ledger_attempt_added"})
_FACT_SQL = """INSERT INTO facts (repo, entity, digest) VALUES (?,?,?)
 ON CONFLICT (repo, entity) DO UPDATE SET digest = excluded.digest"""
_LEDGER_ROW_SQL = """SELECT title, priority, status, status_text, section, attempts, last_result, present
 FROM ledger_items WHERE repo = ? AND path = ? AND item_id = ?"""
_LEDGER_FIELDS = ("title", "priority", "status", "status_text", "section", "attempts", "last_result", "present")


def fact_of(env: Envelope) -> tuple[str, str] | None:
    """(entity, content) for an event that restates readable state; None for events that never do."""
    p = env.payload
    k = p.kind
    if k == "brief_updated":
        return f"brief:{p.path}", p.digest or digest(p.model_dump_json())
    if k == "focus_changed":
        return f"focus:{p.path}", json.dumps(p.new)
    if k == "ledger_read":
        return f"ledger_read:{p.path}", json.dumps([p.chars, p.items, p.duplicate_ids])
    if k == "baton_changed":
        return f"baton:{p.path}", digest(p.model_dump_json())
    if k == "prompt_changed":  # previous_digest and line counts differ after a restart: not compared
        return f"prompt:{p.path}", f"{p.digest}:{p.deleted}"
    if k == "hub_opened":
        return f"hub_opened:{p.path}", p.stamp
    if k == "hub_updated":
        return f"hub:{p.path}", f"{p.files}:{p.bytes}"
    if k == "hub_summary_changed":
        return f"hub_summary:{p.path}", p.digest or digest(p.excerpt)
    if k == "memory_entry":
        entity = f"memory:{p.path}:{p.heading}" + (f"#{p.occurrence}" if p.occurrence else "")
        return entity, digest(p.model_dump_json(exclude={"occurrence"}))
    if k == "initiative_archived":
        return f"archived:{p.initiative}", p.path
    if k == "git_state_changed":
        return f"git:{p.state}", f"{p.active}"
    return None


def item_state(item: LedgerItem) -> dict[str, Any]:
    """A ledger item as its `ledger_items` row holds it."""
    return {"title": item.title, "priority": item.priority, "status": item.status, "status_text": item.status_text,
            "section": item.section, "attempts": len(item.attempts),
            "last_result": item.attempts[-1].result if item.attempts else None, "present": 1}


class Restatements:
    """Decides, event by event within one write transaction, what is a restatement.

    Call `restates(env)` for each event not stored before, in order; then `flush()`
    to record the new latest state of every entity the batch changed.
    """

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self._facts: dict[tuple[str, str], str | None] = {}
        self._changed: set[tuple[str, str]] = set()
        self._items: dict[tuple[str, str, str], dict[str, Any] | None] = {}

    def restates(self, env: Envelope) -> bool:
        if env.kind in LEDGER_ITEM_KINDS:
            return self._ledger(env)
        fact = fact_of(env)
        if fact is None:
            return False
        key = (env.repo, fact[0])
        if key not in self._facts:
            row = self.conn.execute("SELECT digest FROM facts WHERE repo = ? AND entity = ?", key).fetchone()
            self._facts[key] = row[0] if row else None
        if self._facts[key] == fact[1]:
            return True
        self._facts[key] = fact[1]
        self._changed.add(key)
        return False

    def _item(self, key: tuple[str, str, str]) -> dict[str, Any] | None:
        if key not in self._items:
            row = self.conn.execute(_LEDGER_ROW_SQL, key).fetchone()
            self._items[key] = dict(zip(_LEDGER_FIELDS, row)) if row else None
        return self._items[key]

    def _ledger(self, env: Envelope) -> bool:
        p = env.payload
        item_id = p.item.id if p.kind == "ledger_item_added" else p.item_id
        key = (env.repo, p.path, item_id)
        state = self._item(key)
        if p.kind == "ledger_item_added":
            target = item_state(p.item)
            if state == target:
                return True
            self._items[key] = target
            return False
        state = dict(state) if state else {f: None for f in _LEDGER_FIELDS} | {"attempts": 0, "present": 1}
        if p.kind == "ledger_item_removed":
            state["present"] = 0
        elif p.kind == "ledger_status_changed":
            state["status"] = p.new
        else:
            state["attempts"] += 1
            state["last_result"] = p.attempt.result
        self._items[key] = state
        return False

    def flush(self) -> None:
        self.conn.executemany(_FACT_SQL, [(repo, entity, self._facts[(repo, entity)]) for repo, entity in self._changed])
