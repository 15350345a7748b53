"""Nobody in: a server beyond loopback needs keys, keyed traffic flows, and the one check
that runs the watched repo's code is opt-in and bounded in time."""

from __future__ import annotations

import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from monitor.config import settings_from_dict
from monitor.events import BriefUpdated
from monitor.selectors import check_selectors, collect

from conftest import GitRepo

LOOPMON = [sys.executable, "-m", "monitor.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(args: list[str], output: Path) -> subprocess.Popen:
    return subprocess.Popen(
        LOOPMON + args, stdout=open(output.with_suffix(".out"), "w"), stderr=open(output.with_suffix(".err"), "w")
    )


def count(db: Path, sql: str, params: tuple = ()) -> int:
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    except sqlite3.OperationalError:
        return 0
    try:
        return conn.execute(sql, params).fetchone()[0]
    except sqlite3.OperationalError:
        return 0  # not created yet
    finally:
        conn.close()


def wait_until(predicate, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_serve_beyond_loopback_without_keys_exits_2_and_says_how_to_make_them(tmp_path: Path) -> None:
    done = subprocess.run(
        LOOPMON + ["serve", "--bind", f"tcp://0.0.0.0:{free_port()}", "--db", str(tmp_path / "s.db"), "--headless"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "reachable from other machines" in done.stderr and "loopmon keys generate" in done.stderr


def test_keyed_serve_and_collect_talk_over_tcp_and_a_collector_without_keys_gets_nothing_in(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    made = subprocess.run(LOOPMON + ["keys", "generate", str(keys)], capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    (tmp_path / "friend").mkdir()
    (tmp_path / "stranger").mkdir()
    friend, stranger = GitRepo(tmp_path / "friend"), GitRepo(tmp_path / "stranger")
    friend.commit("first", {"a.py": "a = 1\n"})
    stranger.commit("first", {"a.py": "a = 1\n"})
    db, endpoint = tmp_path / "store.db", f"tcp://127.0.0.1:{free_port()}"
    server = start(["serve", "--bind", endpoint, "--keys", str(keys), "--db", str(db), "--headless"], tmp_path / "serve")
    collectors = [
        start(["collect", "--repo", str(friend.root), "--connect", endpoint, "--keys", str(keys)], tmp_path / "friend"),
        start(["collect", "--repo", str(stranger.root), "--connect", endpoint], tmp_path / "stranger"),
    ]
    try:
        wait_until(lambda: count(db, "SELECT count(*) FROM events WHERE kind = 'collector_started'") == 1, "the keyed collector")
        sha = friend.commit("RALPH AUTO: over curve — tests: not run", {"b.py": "b = 1\n"})
        stranger.commit("RALPH AUTO: let me in — tests: not run", {"b.py": "b = 1\n"})
        wait_until(lambda: count(db, "SELECT count(*) FROM commits WHERE sha = ?", (sha,)) == 1, "the keyed commit")
        time.sleep(1.0)  # the stranger has had as long as the friend
    finally:
        for proc in collectors:
            proc.kill()
            proc.wait()
        server.send_signal(signal.SIGINT)
        assert server.wait(timeout=60) == 0
    assert count(db, "SELECT count(*) FROM repos WHERE id = 'stranger'") == 0, "nothing from the collector without keys"
    assert count(db, "SELECT count(*) FROM repos WHERE id = 'friend'") == 1


def test_the_selector_check_runs_only_when_enabled_and_is_cut_off_at_its_timeout(tmp_path: Path) -> None:
    hanging = [sys.executable, "-c", "import time; time.sleep(60)"]  # a repo whose test collection never ends
    brief = BriefUpdated(mapped_tests=["tests/test_x.py::test_y"], digest="d")
    off = settings_from_dict({"alerts": {"selector_command": hanging, "selector_timeout_seconds": 0.5}})
    assert check_selectors(tmp_path, brief, off) is None, "off by default: nothing runs"
    on = settings_from_dict(
        {"alerts": {"check_selectors": True, "selector_command": hanging, "selector_timeout_seconds": 0.5}}
    )
    result = collect(tmp_path, "tests/test_x.py::test_y", on)
    assert result.count is None and "timed out after 0.5 s" in result.output
    said: list[str] = []
    assert check_selectors(tmp_path, brief, on, on_error=said.append) is None, "no answer is not an empty selector"
    assert said and "gave no answer" in said[0] and "timed out" in said[0]
