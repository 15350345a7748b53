"""Commit messages: the shapes real loops write, read into role, iteration, SYNC, IDs and tests."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collectors.commit_message import MessageParser, parse_tests
from monitor.config import Settings, settings_from_dict

PARSER = MessageParser(Settings())


@pytest.mark.parametrize(
    ("message", "role", "iteration"),
    [
        ("SUPERVISOR AUTO (prompt=supervisor.md) (iter=00033): reports evidence — tests: not run", "supervisor", 33),
        (
            "RALPH AUTO (prompt=main.md) (iter=00034): D0 parity logger S3 complete — tests: pytest "
            "tests/tools/test_x.py::test_y -q (1 passed)",
            "engineer",
            34,
        ),
        ("SUPERVISOR: Phase L rerun directives - tests: not run", "supervisor", None),
        ("RALPH AUTO: reports evidence — tests: not run", "engineer", None),
        ("[TEST-GOLDEN-001] Phase B: Regenerate all 5 golden datasets", "engineer", None),
        ("[SYNC i=301] actor=galph status=running", "driver", 301),
        ("[SYNC i=302] actor=ralph → next=galph status=ok ralph_commit=c9ad556e", "driver", 302),
        ("Merge branch 'feature/x'", "other", None),
        ("rebase onto main", "other", None),
        ("WIP", "other", None),
        ("update prompts/supervisor.md", "other", None),
        ("refactor: inline step dispatch", "engineer", None),  # a single-agent loop: unmatched is the engineer
        ("galph: planning turn", "supervisor", None),
    ],
)
def test_the_spec_message_shapes(message: str, role: str, iteration: int | None) -> None:
    info = PARSER.parse(message)
    assert info.role == role
    assert info.iteration == iteration


def test_a_sync_hand_off_carries_actor_next_status_and_commits() -> None:
    info = PARSER.parse("[SYNC i=301] actor=galph → next=ralph status=ok galph_commit=0a595c40")
    assert info.sync is not None
    assert (info.sync.iteration, info.sync.actor, info.sync.next_actor, info.sync.status) == (301, "galph", "ralph", "ok")
    assert info.sync.galph_commit == "0a595c40"
    assert info.sync.ralph_commit is None
    start = PARSER.parse("[SYNC i=301] actor=ralph status=running").sync
    assert start is not None and start.next_actor is None and start.status == "running"
    ascii_arrow = PARSER.parse("[SYNC i=7] actor=ralph -> next=galph status=ok ralph_commit=abc1234").sync
    assert ascii_arrow is not None and ascii_arrow.next_actor == "galph" and ascii_arrow.ralph_commit == "abc1234"


def test_ledger_ids_are_read_from_the_whole_message_once_each() -> None:
    info = PARSER.parse("[TEST-GOLDEN-001] regenerate\n\nAlso touches [VECTOR-GAPS-002] and [TEST-GOLDEN-001].")
    assert info.ledger_ids == ["TEST-GOLDEN-001", "VECTOR-GAPS-002"]
    assert PARSER.parse("[SYNC i=3] actor=galph status=running").ledger_ids == []


@pytest.mark.parametrize(
    ("tail", "status", "passed", "failed", "selectors"),
    [
        ("not run", "not_run", None, None, []),
        ("pytest tests/tools/test_x.py::test_y -q (1 passed)", "passed", 1, None, ["tests/tools/test_x.py::test_y"]),
        ("3 passed, 1 failed", "failed", 3, 1, []),
        ("pytest tests/test_a.py tests/test_b.py::TestK::test_z (12 passed in 3.1s)", "passed", 12, None,
         ["tests/test_a.py", "tests/test_b.py::TestK::test_z"]),
        ("45/45 tests passing", "passed", 45, None, []),
        ("test_enable_oversampling_flag_required", "mentioned", None, None, ["test_enable_oversampling_flag_required"]),
        ("none — evidence-only", "not_run", None, None, []),
        ("FAILED (2 errors)", "failed", None, 2, []),
        ("all green", "passed", None, None, []),
    ],
)
def test_the_tests_tail_is_free_text(
    tail: str, status: str, passed: int | None, failed: int | None, selectors: list[str]
) -> None:
    report = PARSER.parse(f"RALPH AUTO (iter=00010): work — tests: {tail}").tests
    assert report.status == status
    assert (report.passed, report.failed) == (passed, failed)
    assert report.selectors == selectors
    assert report.raw == tail


def test_no_tests_tail_is_absent_and_a_verification_block_counts() -> None:
    assert PARSER.parse("[TEST-GOLDEN-001] Phase B").tests.status == "absent"
    report = parse_tests(
        "Fix loop step scoping regression tests\n\nVerification:\n- pytest -q tests/test_loop.py (7 passed)\n\nMore text"
    )
    assert report.status == "passed" and report.passed == 7 and report.selectors == ["tests/test_loop.py"]


def test_the_iteration_tag_in_the_subject_wins_over_the_body() -> None:
    assert PARSER.parse("RALPH AUTO (iter=00012): x\n\nsee iter=00099").iteration == 12
    assert PARSER.parse("work\n\nfollow-up of iter=00040").iteration == 40
    assert PARSER.parse("RALPH AUTO (iter=000000000000000000000000000001): absurd").iteration is None


def test_a_revert_names_the_commit_it_reverts() -> None:
    info = PARSER.parse('Revert "add x"\n\nThis reverts commit 0A1B2C3D4E5F60718293a4b5c6d7e8f901234567.')
    assert info.revert_of == "0a1b2c3d4e5f60718293a4b5c6d7e8f901234567"


def test_roles_and_tags_come_from_settings() -> None:
    custom = settings_from_dict(
        {
            "roles": {"driver": [r"^\[BATON\]"], "supervisor": [r"^PLAN:"], "engineer": [r"^DO:"], "other": [], "unmatched": "other"},
            "iterations": {"tag_patterns": [r"\bturn#(\d+)"], "ledger_id_pattern": r"\{(T-\d+)\}"},
        }
    )
    parser = MessageParser(custom)
    assert parser.parse("PLAN: turn#5 {T-12}").role == "supervisor"
    assert parser.parse("PLAN: turn#5 {T-12}").iteration == 5
    assert parser.parse("PLAN: turn#5 {T-12}").ledger_ids == ["T-12"]
    assert parser.parse("DO: it").role == "engineer"
    assert parser.parse("[BATON] pass").role == "driver"
    assert parser.parse("RALPH AUTO: x").role == "other"  # the default patterns are gone


def test_the_first_role_in_order_wins() -> None:
    # Matches both the driver pattern and (through its ID-like tag) nothing else: driver first.
    assert PARSER.parse("[SYNC i=4] actor=ralph status=running").role == "driver"
    both = MessageParser(settings_from_dict({"roles": {"supervisor": ["^X"], "engineer": ["^X"]}}))
    assert both.parse("X marks").role == "supervisor"


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=400))
def test_no_message_makes_the_parser_raise(message: str) -> None:
    info = PARSER.parse(message)
    assert info.role in ("driver", "supervisor", "engineer", "other")


_PIECES = st.sampled_from(
    ["[SYNC i=", "] actor=", "→ next=", "status=", "galph_commit=", "iter=", "tests:", " passed", " failed", "(", ")",
     "/", "::", "[A-1]", "999999999999", "0", "\n", " ", "—", "This reverts commit ", "Verification:", "\x00", "\udcff"]
)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(_PIECES, st.text(max_size=8)), max_size=40))
def test_messages_built_from_the_syntax_pieces_never_raise(pieces: list[str]) -> None:
    info = PARSER.parse("".join(pieces))
    if info.sync is not None:
        assert info.sync.iteration >= 0
