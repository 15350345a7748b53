"""The live view: what it shows for a loop, in how much room, and only when something changed."""

from __future__ import annotations

import io
import threading
from datetime import timedelta

import pytest
from rich.console import Console

from monitor.config import ViewSettings
from monitor.events import (
    Alert,
    BatonChanged,
    BriefUpdated,
    Commit,
    DwellChanged,
    FileStat,
    GitStateChanged,
    Heartbeat,
    IterationScored,
    LedgerItem,
    LedgerItemAdded,
    Reason,
    Warning,
)
from sink_streams import T0, commit, env, loop_history, observe, scored_iterations
from sinks.live import ROTATE_SECONDS, LiveView
from sinks.sqlite import SqliteSink
from sinks.store_schema import STORE_SCHEMA_VERSION, StoreError
from sinks.view_panels import ScoreBars, literal

NOW = T0 + timedelta(minutes=100)
MARKUP = "[bold red]x[/]"
LINK = "[link=file:///etc/passwd]y"


def console(width: int = 80, height: int = 24) -> Console:
    return Console(width=width, height=height, record=True, file=io.StringIO(), color_system="truecolor")


def view_of(batch, now=NOW, width: int = 80, height: int = 24, settings: ViewSettings | None = None) -> LiveView:
    view = LiveView(settings, console=console(width, height), clock=lambda: now)
    view.write(batch)
    return view


def shown(view: LiveView, width: int | None = None, height: int | None = None) -> str:
    """The view as a person would read it on the console."""
    view.console.print(view.render(width, height))
    return view.console.export_text()


def running_loop() -> list:
    """A loop mid-iteration: baton with a lease, seed scores with the last one open, dwell and an alert."""
    return [
        *loop_history()[:10],  # collector, baton, brief, ledger, focus, hub, memory, a file change
        *scored_iterations(open_last=True),
        env(DwellChanged(focus="STUDY-001", value=3, tier="1.5", iterations=[7, 8, 9])),
        env(DwellChanged(focus="*", value=1, iterations=[9])),
        env(Alert(alert="hub_sprawl", severity="warning", key="hub_sprawl:STUDY-001:1",
                  message="4 new hubs under STUDY-001 with no code between them"), minutes=100),
    ]


def test_the_view_fits_80x24_and_shows_what_people_ask_first():
    view = view_of(running_loop())
    text = shown(view)
    lines = text.splitlines()
    assert len(lines) <= 24 and max(len(line) for line in lines) <= 80
    header = "\n".join(lines[:2])
    for expected in ("loop", "branch main", "iter 303", "next ralph", "running-ralph", "focus STUDY-001"):
        assert expected in header
    assert "lease expired" in header  # the lease ran out 70 minutes before NOW
    assert "Last change iteration 311 (#10): +100/-20 in 3 files, scored 93 high  1m 00s ago" in text
    assert "Blocker" in text and "4 new hubs under STUDY-001" in text
    assert "Loop" in text and "stopped: lease expired" in text
    assert "open iteration 311 (#10) provisional 93 high" in text
    assert "+25 semantic: changed symbols exercised by changed tests" in text
    for section in ("Scores", "Dwell", "Alerts", "Events"):
        assert section in text
    assert [line.split()[:4] for line in text.split("Dwell")[1].splitlines()[1:3]] == [
        ["global", "1", "16:40:00", "warn"], ["STUDY-001", "3", "tier", "1.5"]]  # alerts beside dwell


def test_repo_text_is_shown_literally_never_as_markup():
    message = f"RALPH AUTO: {MARKUP} {LINK} \x1b[31mred\x1b[0m"
    batch = [
        env(BriefUpdated(focus=f"F-{MARKUP}", summary=LINK, digest="x")),
        commit("ab" * 20, message, [FileStat(path="src/x.py", insertions=9, deletions=1, path_class="production")],
               minutes=99, role="engineer"),
        env(Alert(alert="stale_brief", key="k", message=f"brief says {MARKUP}"), minutes=99),
    ]
    view = view_of(batch, width=120, height=30)
    text = shown(view)
    assert MARKUP in text and LINK in text
    assert f"F-{MARKUP}" in text and f"brief says {MARKUP}" in text
    assert "\x1b" not in text and "\\x1b[31mred" in text  # terminal controls made visible
    html = view.console.export_html(inline_styles=True)
    assert "<a " not in html and "href" not in html


def test_literal_text_keeps_every_character_and_no_style():
    t = literal(f"{MARKUP}\n{LINK}\u202e")
    assert t.plain == f"{MARKUP} {LINK}\\u202e"
    assert t.spans == []


def test_score_bars_are_coloured_by_bucket_and_scaled_to_the_score():
    its = [IterationScored(index=1, number=1, aggregate=100, bucket="high", provisional=False),
           IterationScored(index=2, number=2, aggregate=50, bucket="medium", provisional=False),
           IterationScored(index=3, number=3, aggregate=0, bucket="low", provisional=False),
           IterationScored(index=4, number=4, aggregate=30, bucket="low", provisional=True)]
    c = console(16, 10)  # 4 bars of width 2 with a gap, after the 4-column axis
    lines = c.render_lines(ScoreBars(its), c.options.update(width=16, height=5), pad=False)
    plot = [[(seg.text, seg.style) for seg in line] for line in lines[:4]]
    assert len(lines) == 5  # four rows of bars and the iteration numbers
    columns = [[row[1 + i] for row in plot] for i in range(4)]
    assert [text for text, _ in columns[0]] == ["██ "] * 4  # 100: full height
    assert [text for text, _ in columns[1]] == ["   ", "   ", "██ ", "██ "]  # 50: half
    assert columns[2][-1][0] == "·· " and all(t == "   " for t, _ in columns[2][:-1])  # 0: a baseline mark
    assert {style.color.name for _, style in columns[0]} == {"green"}
    assert columns[1][-1][1].color.name == "yellow" and columns[2][-1][1].color.name == "red"
    assert columns[3][-1][1].dim and not columns[0][-1][1].dim  # the open iteration is drawn dim
    assert "1  2  3  4" in "".join(seg.text for seg in lines[4])


def test_more_room_shows_more_iterations_rows_and_events():
    batch = running_loop() + [env(BriefUpdated(focus="STUDY-001", summary=f"note {i}", digest=str(i))) for i in range(30)]
    small, large = shown(view_of(batch)), shown(view_of(batch, width=160, height=50))
    assert len(large.splitlines()) > len(small.splitlines())
    assert large.count("brief: focus") > small.count("brief: focus")
    assert large.count("┤") > small.count("┤")  # taller bars
    assert "-8 code_diff: no test moved with the code" in large and "-8 code_diff" not in small


def test_a_tiny_terminal_still_gets_a_view_that_fits():
    text = shown(view_of(running_loop(), width=50, height=14))
    lines = text.splitlines()
    assert len(lines) <= 14 and max(len(line) for line in lines) <= 50
    assert "loop" in lines[0]


def test_the_current_blocker_is_the_git_state_then_alerts_then_the_blocked_focus_item():
    blocked = LedgerItem(id="STUDY-001", title="waits on a human", status="blocked")
    base = [env(BriefUpdated(focus="STUDY-001", digest="b")), env(LedgerItemAdded(path="docs/fix_plan.md", item=blocked))]
    assert "STUDY-001 blocked: waits on a human" in shown(view_of(base))
    alert = env(Alert(alert="focus_stagnation", key="s", message="same status for 10 iterations"), minutes=50)
    assert "focus_stagnation: same status for 10 iterations  (+1 more)" in shown(view_of(base + [alert]))
    git = env(GitStateChanged(state="rebase-merge", active=True, detail="stuck"), minutes=60)
    text = shown(view_of(base + [alert, git]))
    assert "git rebase-merge in progress: stuck  (+2 more)" in text
    cleared = env(GitStateChanged(state="rebase-merge", active=False), minutes=61)
    assert "git rebase-merge in progress" not in shown(view_of(base + [alert, git, cleared]))


def test_an_alert_older_than_the_last_code_is_no_longer_the_blocker():
    old_alert = env(Alert(alert="empty_selector", key="e", message="selector collects 0 tests"), minutes=1)
    text = shown(view_of([old_alert, *scored_iterations([80])]))
    assert "Blocker     none" in text


def test_why_the_loop_stopped():
    lease_ok = BatonChanged(iteration=5, expected_actor="galph", status="running-galph",
                            lease_expires_at=NOW + timedelta(minutes=10))
    assert "running" in shown(view_of([env(lease_ok)])).split("Loop", 1)[1].splitlines()[0]
    assert "lease 10:00 left" in shown(view_of([env(lease_ok)]))

    lease_gone = lease_ok.model_copy(update={"lease_expires_at": NOW - timedelta(minutes=3)})
    assert "stopped: lease expired 3m 00s ago waiting for galph" in shown(view_of([env(lease_gone)]))

    complete = lease_ok.model_copy(update={"status": "complete"})
    assert "stopped: baton says complete" in shown(view_of([env(complete)]))

    gate = env(DwellChanged(focus="PHASE-G", value=6, tier="3", iterations=[1, 2, 3, 4, 5, 6]))
    assert "stopped: gate: dwell tier 3 on PHASE-G (6 iterations without code)" in shown(view_of([env(lease_ok), gate]))

    git = env(GitStateChanged(state="index-lock-stale", active=True))
    assert "stopped: git state index-lock-stale" in shown(view_of([env(lease_ok), git]))


def test_the_last_meaningful_change_says_how_long_ago():
    code = FileStat(path="ptycho/loader.py", insertions=24, deletions=0, path_class="production")
    docs = FileStat(path="docs/notes.md", insertions=300, deletions=0, path_class="docs")
    batch = [commit("1" * 40, "RALPH AUTO: loader", [code], minutes=40),
             commit("2" * 40, "SUPERVISOR AUTO: notes", [docs], minutes=90)]
    text = shown(view_of(batch))
    assert "11111111 +24/-0 in 1 file: RALPH AUTO: loader  1h 00m ago" in text


def test_dwell_is_listed_per_focus_with_the_global_count_first():
    batch = [env(DwellChanged(focus="A-1", value=2, tier="1")), env(DwellChanged(focus="B-2", value=4, tier="2")),
             env(DwellChanged(focus="*", value=4, tier="2", reported=1))]
    text = shown(view_of(batch))
    dwell_lines = [line for line in text.split("Dwell")[1].split("Events")[0].splitlines() if "tier" in line]
    assert [line.split()[:3] for line in dwell_lines] == [["global", "4", "tier"], ["B-2", "4", "tier"],
                                                           ["A-1", "2", "tier"]]
    assert "says 1" in shown(view_of(batch, width=120, height=30))


def test_alerts_are_newest_first_and_events_tail_newest_last():
    batch = [env(Alert(alert="a", key=f"k{i}", message=f"alert number {i}"), minutes=i) for i in range(3)]
    text = shown(view_of(batch, width=120, height=30))
    alert_lines = [line for line in text.splitlines() if "warn  alert number" in line]
    assert [line.split("alert number ")[1].split()[0] for line in alert_lines] == ["2", "1", "0"]
    tail = [line for line in text.split("Events")[1].splitlines() if "a: alert number" in line]
    assert [line.split("a: alert number ")[1].split()[0] for line in tail] == ["0", "1", "2"]


def test_several_repos_side_by_side_when_wide_and_in_turn_when_narrow():
    batch = [env(BriefUpdated(focus="ONE-1", digest="1"), repo="alpha"),
             env(BriefUpdated(focus="TWO-2", digest="2"), repo="beta")]
    wide = shown(view_of(batch, width=170, height=24))
    assert "loopmon alpha" in wide and "loopmon beta" in wide
    first = shown(view_of(batch, now=NOW))
    later = shown(view_of(batch, now=NOW + timedelta(seconds=ROTATE_SECONDS)))
    names = {("loopmon alpha" in t, "loopmon beta" in t) for t in (first, later)}
    assert names == {(True, False), (False, True)}
    assert "in turn" in first


def test_redraws_only_when_something_shown_changed():
    clock = [NOW]
    view = LiveView(console=console(), clock=lambda: clock[0])
    assert view.dirty()
    view._drawn = view._draw_key()  # as after a draw
    assert not view.dirty()
    view.write([env(Heartbeat(sent=3))])
    assert not view.dirty()  # nothing on screen depends on a heartbeat
    view.write([env(BriefUpdated(focus="X-1", digest="a"))])
    assert view.dirty()
    view._drawn = view._draw_key()
    clock[0] += timedelta(seconds=5)
    assert not view.dirty()  # no countdown on screen: a few seconds change nothing shown
    view.write([env(BatonChanged(iteration=1, lease_expires_at=NOW + timedelta(minutes=5)))])
    view._drawn = view._draw_key()
    clock[0] += timedelta(seconds=1)
    assert view.dirty()  # the lease countdown ticks


def test_run_draws_once_for_a_quiet_view_and_returns_when_stopped():
    view = LiveView(ViewSettings(refresh_per_second=4), console=console(), clock=lambda: NOW)
    view.write(running_loop())
    stop = threading.Event()
    thread = threading.Thread(target=view.run, args=(stop,))
    thread.start()
    for _ in range(200):
        if view.draws:
            break
        stop.wait(0.01)
    view.write([env(BriefUpdated(focus="NEW-9", digest="n"))])
    for _ in range(200):
        if view.draws >= 2:
            break
        stop.wait(0.01)
    stop.set()
    thread.join(timeout=5)
    assert not thread.is_alive()
    assert view.draws == 2  # the clock is frozen and the lease expired: only the write redrew
    assert "NEW-9" in view.console.export_text()


def test_snapshot_writes_svg_and_html(tmp_path):
    view = view_of(running_loop() + [commit("cd" * 20, f"RALPH: {MARKUP}", [], minutes=98)])
    view.snapshot(tmp_path / "loop.svg")
    view.snapshot(tmp_path / "share" / "loop.html")
    svg = (tmp_path / "loop.svg").read_text()
    html = (tmp_path / "share" / "loop.html").read_text()
    assert svg.startswith("<svg") and "loopmon" in svg and "STUDY-001" in svg
    assert "[bold&#160;red]x[/]" in svg or "[bold red]x[/]" in svg
    assert "<html" in html.lower() and "[bold red]x[/]" in html and "STUDY-001" in html
    with pytest.raises(ValueError, match=r"\.svg or \.html"):
        view.snapshot(tmp_path / "loop.png")


def test_from_store_shows_what_the_live_view_showed(tmp_path):
    batch = running_loop()
    db = tmp_path / "loopmon.db"
    sink = SqliteSink(db)
    sink.write(batch)
    sink.write([env(BriefUpdated(focus="OTHER-1", digest="o"), repo="other")])
    sink.close()
    live = view_of(batch)
    rebuilt = LiveView.from_store(db, repo="loop", console=console(), clock=lambda: NOW)
    assert shown(rebuilt) == shown(live)
    assert set(LiveView.from_store(db, console=console(), clock=lambda: NOW).state.repos) == {"loop", "other"}


def test_from_store_takes_the_stored_scores_over_deduplicated_events(tmp_path):
    first, second = IterationScored(index=1, aggregate=40, bucket="medium"), IterationScored(index=1, aggregate=55, bucket="medium")
    db = tmp_path / "loopmon.db"
    sink = SqliteSink(db)
    sink.write([env(first), env(second), env(first)])  # the last restates the first: one event row
    sink.close()
    view = LiveView.from_store(db, console=console(), clock=lambda: NOW)
    assert view.state.repos["loop"].iterations[1].aggregate == 40


def test_from_store_refuses_a_missing_or_newer_store(tmp_path):
    with pytest.raises(StoreError, match="no such store"):
        LiveView.from_store(tmp_path / "absent.db")
    db = tmp_path / "new.db"
    SqliteSink(db).close()
    import sqlite3

    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version = {STORE_SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="newer loopmon"):
        LiveView.from_store(db)


def test_an_empty_view_says_it_is_waiting():
    assert "waiting for the first event" in shown(view_of([]))


def test_late_provisional_scores_never_replace_final_ones():
    final = IterationScored(index=3, number=9, aggregate=80, bucket="high", provisional=False)
    late = IterationScored(index=3, number=9, aggregate=20, bucket="low", provisional=True)
    view = view_of([env(final), env(late)])
    assert view.state.repos["loop"].iterations[3].aggregate == 80
    assert view.state.repos["loop"].open_iteration is None


def test_reasons_show_their_sign_and_score():
    it = IterationScored(index=1, number=1, provisional=True, aggregate=30, bucket="low",
                         reasons=[Reason(score="semantic", delta=-20, text="assertions removed from a test")])
    assert "-20 semantic: assertions removed from a test" in shown(view_of([env(it)]))


def test_a_commit_event_from_a_backfill_does_not_hide_a_newer_change():
    code = [FileStat(path="a.py", insertions=7, deletions=0, path_class="production")]
    newer = env(Commit(sha="9" * 40, authored_at=T0 + timedelta(minutes=80), committed_at=T0 + timedelta(minutes=80),
                       message="RALPH: newer", files=code))
    older = env(Commit(sha="8" * 40, authored_at=T0, committed_at=T0, message="RALPH: older", files=code, backfill=True))
    assert "RALPH: newer" in shown(view_of([newer, older])).split("Blocker")[0]


def test_a_simulated_loop_shown_live_and_rebuilt_from_the_store(tmp_path):
    from monitor.config import Settings
    from monitor.simulator import LoopSimulator

    root = tmp_path / "loop"
    LoopSimulator(root, scenario="dwell", seed=1).run(6)
    events = observe(root, Settings(), "run1", T0)
    sink = SqliteSink(tmp_path / "loopmon.db")
    sink.write(events)
    sink.close()
    now = max(e.time for e in events) + timedelta(minutes=5)
    live = view_of(events, now=now)
    text = shown(live)
    lines = text.splitlines()
    assert len(lines) <= 24 and max(len(line) for line in lines) <= 80
    state = live.state.repos["sim"]
    assert state.baton is not None and f"iter {state.baton.iteration}" in lines[0]
    assert len(state.iterations) >= 6 and "no iterations scored yet" not in text
    blocker = next(line for line in lines if line.startswith("Blocker"))
    raised = {e.payload.alert for e in events if e.kind == "alert" and e.payload.severity in ("warning", "critical")}
    assert blocker.split()[1].rstrip(":") in raised  # the dwell scenario leaves warnings standing
    assert text.split("Dwell ─")[1].splitlines()[1].split()[0] == "global"
    rebuilt = LiveView.from_store(tmp_path / "loopmon.db", console=console(), clock=lambda: now)
    assert shown(rebuilt) == text


def test_monitor_wide_warnings_go_to_every_repo_and_make_no_repo_of_their_own():
    bad = env(Warning(code="bus_malformed", message="dropped a malformed message"), repo="*", minutes=1)
    view = view_of([bad, env(BriefUpdated(focus="A-1", digest="a"), repo="alpha"),
                    env(BriefUpdated(focus="B-1", digest="b"), repo="beta")], width=170)
    assert set(view.state.repos) == {"alpha", "beta"}
    text = shown(view)
    assert text.count("bus_malformed: dropped a malformed message") == 2

