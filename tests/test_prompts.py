"""The loop's prompts: every change a prompt_changed with digests and line counts."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collectors.prompts import PromptCollector, PromptTracker, line_changes
from collectors.watch import Change
from monitor.config import Settings
from monitor.events import Envelope, PromptChanged, digest

MAIN = """\
# Main prompt

Required reading:
- docs/architecture/pytorch_design.md
- docs/pytorch_runtime_checklist.md

Pitfalls:
- Leaving artifacts outside the reports directory
"""

MAIN_EDITED = """\
# Main prompt

Required reading:
- docs/specs/spec-ptycho.md
- specs/data_contracts.md
- specs/overlap_metrics.md

Pitfalls:
- Storing bulky artifacts in-repo instead of linking externally or using `.artifacts/`
"""


def test_line_changes_count_added_and_removed_lines() -> None:
    assert line_changes(MAIN, MAIN_EDITED) == (4, 3)
    assert line_changes("", "a\nb\n") == (2, 0)
    assert line_changes("a\nb\n", "a\nb\n") == (0, 0)


def test_large_files_fall_back_to_a_multiset_count() -> None:
    old = "\n".join(f"line {i}" for i in range(3000))
    new = old.replace("line 5\n", "line five\n")

    assert line_changes(old, new) == (1, 1)


def test_tracker_first_sight_edit_and_deletion() -> None:
    tracker = PromptTracker()

    first = tracker.update("prompts/main.md", MAIN)
    same = tracker.update("prompts/main.md", MAIN)
    edited = tracker.update("prompts/main.md", MAIN_EDITED)
    deleted = tracker.update("prompts/main.md", None)
    gone_again = tracker.update("prompts/main.md", None)

    assert [(p.digest, p.previous_digest, p.lines_added, p.lines_removed) for p in first] == [(digest(MAIN), None, 8, 0)]
    assert same == []
    assert [(p.digest, p.previous_digest, p.lines_added, p.lines_removed, p.deleted) for p in edited] == [
        (digest(MAIN_EDITED), digest(MAIN), 4, 3, False)
    ]
    assert [(p.digest, p.previous_digest, p.lines_removed, p.deleted) for p in deleted] == [
        ("", digest(MAIN_EDITED), 9, True)
    ]
    assert gone_again == []


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(st.none(), st.text(max_size=200)), max_size=6))
def test_fuzz_any_sequence_of_contents(contents: list[str | None]) -> None:
    tracker = PromptTracker()
    previous: str | None = None
    for text in contents:
        events = tracker.update("prompts/p.md", text)
        if text == previous:
            assert events == []
        for event in events:
            assert event.lines_added >= 0 and event.lines_removed >= 0
            assert event.deleted == (text is None)
        previous = text


# --------------------------------------------------------------------------- the collector, on a real repo


def collector_for(root: Path, prompts: list[str] | None = None) -> tuple[PromptCollector, list]:
    events: list = []
    data = {"files": {"prompts": prompts}} if prompts is not None else {}
    collector = PromptCollector(root, Settings.model_validate(data), lambda payload, when: events.append(payload))
    return collector, events


def test_collector_scans_prompts_and_reports_edits_renames_and_deletions(repo) -> None:
    repo.commit(
        "initial prompts",
        {"prompts/main.md": MAIN, "prompts/supervisor.md": "# Supervisor\n", "prompts/notes.txt": "not a prompt\n"},
    )
    collector, events = collector_for(repo.root)

    collector.scan()
    assert sorted((e.path, e.previous_digest) for e in events) == [
        ("prompts/main.md", None),
        ("prompts/supervisor.md", None),
    ]
    events.clear()

    repo.commit("update main.md", {"prompts/main.md": MAIN_EDITED})
    collector.on_changes([Change("prompts/main.md", "modified")])
    (repo.root / "prompts/supervisor.md").rename(repo.root / "prompts/galph.md")
    collector.on_changes([Change("prompts/supervisor.md", "moved", dest="prompts/galph.md")])

    assert [(e.path, e.lines_added, e.lines_removed, e.deleted) for e in events] == [
        ("prompts/main.md", 4, 3, False),
        ("prompts/supervisor.md", 0, 1, True),
        ("prompts/galph.md", 1, 0, False),
    ]
    assert all(isinstance(e, PromptChanged) for e in events)


def test_collector_follows_configured_globs(repo) -> None:
    repo.write("agents/galph/PROMPT.md", "# galph\n")
    repo.write("agents/ralph/PROMPT.md", "# ralph\n")
    repo.write("agents/README.md", "# not a prompt\n")
    collector, events = collector_for(repo.root, ["agents/*/PROMPT.md"])

    collector.scan()

    assert sorted(e.path for e in events) == ["agents/galph/PROMPT.md", "agents/ralph/PROMPT.md"]
    assert collector.wants("agents/x/PROMPT.md") and not collector.wants("prompts/main.md")


def test_collector_survives_non_utf8_and_binary_prompts(repo) -> None:
    repo.write("prompts/main.md", b"# caf\xe9\n\xff\n")
    repo.write("prompts/blob.md", b"\x00\x01\x02\x03")
    collector, events = collector_for(repo.root)

    collector.scan()

    assert sorted((e.path, e.lines_added) for e in events) == [("prompts/blob.md", 1), ("prompts/main.md", 2)]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(st.none(), st.binary(max_size=200)), min_size=1, max_size=4))
def test_fuzz_collector_reads_any_bytes_or_none(contents: list[bytes | None]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "prompts").mkdir()
        collector, events = collector_for(Path(tmp))
        target = Path(tmp) / "prompts/main.md"
        for data in contents:
            if data is None:
                target.unlink(missing_ok=True)
            else:
                target.write_bytes(data)
            collector.on_changes([Change("prompts/main.md", "modified")])
        for payload in events:
            assert Envelope.from_wire(Envelope(repo="r", source="prompts", payload=payload).to_wire()).payload == payload
