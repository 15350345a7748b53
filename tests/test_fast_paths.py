"""The short cuts that keep loopmon quick (docs/benchmarks.md), shown to keep their
meaning: each test sets the slow path's wait far beyond its own timeout, so only the
short cut can make it pass."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import zmq

from collectors.watch import Change, RepoWatcher, completes_ref_update
from monitor.bus import Publisher
from monitor.config import Settings, StoreSettings, WatchSettings
from monitor.events import FileChanged
from monitor.runtime import Server, inproc_endpoint

from conftest import GitRepo

A_MINUTE_MS = 60_000


class Changes:
    """A watcher subscriber that records what it is handed."""

    name = "changes"

    def __init__(self) -> None:
        self.batches: list[list[Change]] = []
        self.arrived = threading.Event()

    def wants(self, path: str) -> bool:
        return path.startswith(".git/refs/")

    def on_changes(self, changes: list[Change]) -> None:
        self.batches.append(changes)
        if any(completes_ref_update(c) for c in changes):
            self.arrived.set()

    def tick(self, now) -> None:  # noqa: ANN001
        pass


def test_a_ref_update_is_a_rename_of_its_lock_over_the_ref() -> None:
    assert completes_ref_update(Change(".git/refs/heads/main.lock", "moved", ".git/refs/heads/main"))
    assert completes_ref_update(Change(".git/packed-refs.lock", "moved", ".git/packed-refs"))
    assert completes_ref_update(Change(".git/HEAD.lock", "moved", ".git/HEAD"))
    assert not completes_ref_update(Change(".git/refs/heads/main.lock", "created"))
    assert not completes_ref_update(Change(".git/logs/HEAD", "modified"))
    assert not completes_ref_update(Change("src/a.py.tmp", "moved", "src/a.py"))


def test_a_commit_is_handed_over_without_waiting_out_the_debounce(repo: GitRepo) -> None:
    repo.commit("base", {"a.txt": "a\n"})
    changes = Changes()
    watcher = RepoWatcher(repo.root, [changes], debounce_ms=A_MINUTE_MS)
    watcher.start()
    try:
        time.sleep(0.2)  # the observer's watches are in place
        repo.commit("next", {"a.txt": "b\n"})
        assert changes.arrived.wait(20), changes.batches
    finally:
        watcher.stop()


def test_a_lone_event_is_stored_at_once_not_after_flush_ms(tmp_path: Path) -> None:
    from sinks.sqlite import SqliteSink

    settings = Settings(store=StoreSettings(flush_ms=A_MINUTE_MS), watch=WatchSettings())
    context = zmq.Context()
    endpoint = inproc_endpoint()
    sink = SqliteSink(tmp_path / "store.db", settings.store)
    server = Server(endpoint, [sink], settings, context=context).start()
    publisher = Publisher(endpoint, "loop", "files", settings=settings.bus, context=context)
    try:
        publisher.publish(FileChanged(path="src/a.py", change="modified"))
        deadline = time.monotonic() + 20
        stored = 0
        while time.monotonic() < deadline and not stored:
            stored = sink.counts()["events"]
            time.sleep(0.01)
        assert stored == 1
    finally:
        publisher.close()
        server.stop()


def engineer_session(commits: int) -> list:
    """One iteration: a supervisor commit, then `commits` engineer commits with code."""
    from scorer_streams import Stream

    s = Stream()
    s.commit("SUPERVISOR AUTO (prompt=supervisor.md) (iter=00001): plan — tests: not run", files={"input.md": (5, 1)})
    for i in range(commits):
        s.commit(f"RALPH AUTO (prompt=main.md) (iter=00001): step {i} — tests: pytest tests/test_a.py -q (1 passed)",
                 files={f"pkg/a{i}.py": (10, 0), "tests/test_a.py": (4, 0)})
    return s.envelopes


def test_a_batch_rescores_its_open_iteration_once_and_the_score_is_the_same() -> None:
    from monitor.scorer import Scorer

    envelopes = engineer_session(6)
    scorer = Scorer(Settings())
    each = [p for env in envelopes for p in scorer.process(env) if p.kind == "iteration_scored"]
    batched = Scorer(Settings())
    deferred = [p for env in envelopes for p in batched.process(env, defer=True) if p.kind == "iteration_scored"]
    settled = [p for _, p in batched.settle()]
    assert len(each) > 2 and deferred == [], "each commit moved the score; deferred, none came out yet"
    assert len(settled) == 1 and settled[0] == each[-1], "one provisional score for the batch: the last one"
    assert batched.settle() == [], "nothing more to settle"


def test_a_server_batch_carries_one_provisional_score_per_repo() -> None:
    from monitor.scorer import Scorer

    settings = Settings()
    server = Server(inproc_endpoint(), [], settings, context=zmq.Context(), scorer=Scorer(settings))
    try:
        out = server._score(engineer_session(6))
    finally:
        server.receiver.close()
    scores = [e for e in out if e.kind == "iteration_scored"]
    assert len(scores) == 1 and scores[0].payload.provisional and scores[0].payload.engineer_commits
    assert out[-1] is scores[0], "after the events that moved it"


def test_an_envelope_read_from_the_wire_is_stored_as_it_came(tmp_path: Path) -> None:
    from monitor.events import Envelope
    from sinks.sqlite import SqliteSink

    sent = Envelope(repo="loop", source="files", stream="s", seq=1, payload=FileChanged(path="a.py", change="created"))
    # Another sender's spelling of the same JSON: valid, read, and kept byte for byte.
    wire = sent.to_wire().replace(b'"repo":', b'"repo" : ')
    got = Envelope.from_wire(wire)
    assert got == sent and got.json_text() == wire.decode()
    assert sent.json_text() == sent.model_dump_json(), "made here: serialised"
    assert got.model_copy(update={"seq": 2}).json_text() == sent.model_copy(update={"seq": 2}).model_dump_json()
    sink = SqliteSink(tmp_path / "store.db")
    sink.write([got])
    assert sink.conn.execute("SELECT envelope FROM events").fetchone()[0] == wire.decode()
    sink.close()


def drain(receiver, want: int, timeout: float = 10.0) -> list:
    got: list = []
    deadline = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        got.extend(receiver.poll(50))
    return got


def test_a_batch_travels_as_one_message_and_arrives_as_numbered_events(tmp_path: Path) -> None:
    from monitor.bus import BATCH_ENVELOPES, Receiver

    endpoint = f"ipc://{tmp_path}/bus.sock"
    receiver = Receiver(endpoint)
    publisher = Publisher(endpoint, "loop", "files", context=zmq.Context())
    with publisher.batch():
        for i in range(BATCH_ENVELOPES + 10):  # one full batch goes out early, the rest at the end
            publisher.publish(FileChanged(path=f"f{i}", change="created"))
        assert receiver.counters.received == 0
    got = drain(receiver, BATCH_ENVELOPES + 10)
    assert [e.seq for e in got] == list(range(1, BATCH_ENVELOPES + 11))
    assert receiver.counters.received == BATCH_ENVELOPES + 10, "each envelope counts as a message received"
    publisher.close()
    receiver.close()


def test_a_bad_envelope_in_a_batch_is_reported_and_the_others_pass(tmp_path: Path) -> None:
    from monitor.bus import BATCH_FRAME, Receiver
    from monitor.events import Envelope

    endpoint = f"ipc://{tmp_path}/bus.sock"
    receiver = Receiver(endpoint)
    raw = zmq.Context().socket(zmq.DEALER)
    raw.connect(endpoint)
    good = [Envelope(repo="loop", source="x", stream="s", seq=i, payload=FileChanged(path=f"f{i}", change="created")).to_wire()
            for i in (1, 2)]
    raw.send_multipart([BATCH_FRAME, good[0], b"{not json", good[1]])
    got = drain(receiver, 3)
    assert [e.kind for e in got] == ["file_changed", "warning", "file_changed"]
    assert got[1].payload.code == "bus_malformed"
    raw.close(0)
    receiver.close()


def test_a_batch_sent_while_nobody_listens_is_resent_event_by_event(tmp_path: Path) -> None:
    from monitor.bus import Receiver
    from monitor.config import BusSettings

    endpoint = f"ipc://{tmp_path}/bus.sock"
    tight = BusSettings(high_water_mark=2, send_timeout_ms=1, resend_seconds=0.2)
    publisher = Publisher(endpoint, "loop", "files", settings=tight, context=zmq.Context())
    with publisher.batch():
        for i in range(1000):
            publisher.publish(FileChanged(path=f"f{i}", change="created"))
    assert publisher.pending == 1000 and publisher.dropped == 0
    receiver = Receiver(endpoint, settings=tight)
    files: dict[int, int] = {}
    deadline = time.monotonic() + 20
    while len(files) < 1000 and time.monotonic() < deadline:
        publisher.heartbeat()
        for env in receiver.poll(20):
            if env.kind == "file_changed":
                files[env.seq] = files.get(env.seq, 0) + 1
        receiver.acknowledge()
    assert sorted(files) == list(range(1, 1001)) and set(files.values()) == {1}, "every event exactly once"
    publisher.close(0)
    receiver.close()


def test_a_receiver_woken_from_another_thread_stops_waiting(tmp_path: Path) -> None:
    from monitor.bus import Receiver

    receiver = Receiver(f"ipc://{tmp_path}/bus.sock")
    got: list = []
    waiter = threading.Thread(target=lambda: got.append(receiver.poll(A_MINUTE_MS)))
    waiter.start()
    time.sleep(0.1)
    receiver.wake()
    waiter.join(20)
    assert not waiter.is_alive() and got == [[]]
    assert receiver.poll(0) == [], "the wake is used up: the next poll waits again"
    receiver.close()


def test_one_commit_on_a_known_tip_is_read_without_git_rev_list(repo: GitRepo, monkeypatch) -> None:
    from collectors import commits
    from collectors.commits import CommitCollector
    from monitor.events import Commit

    repo.commit("base", {"a.txt": "0\n"})
    emitted: list = []
    live = CommitCollector(repo.root, Settings(), lambda payload, when: emitted.append(payload))
    live.scan()
    listed: list = []
    real_rev_list = commits.rev_list
    monkeypatch.setattr(commits, "rev_list", lambda *a, **k: listed.append(a) or real_rev_list(*a, **k))
    one = repo.commit("one", {"a.txt": "1\n"})
    live.refresh()
    assert [c.sha for c in emitted if isinstance(c, Commit)] == [one] and listed == []
    # Two at once, or a tip whose parent is no known tip: git lists them, parents first.
    two, three = repo.commit("two", {"a.txt": "2\n"}), repo.commit("three", {"a.txt": "3\n"})
    live.refresh()
    assert [c.sha for c in emitted if isinstance(c, Commit)] == [one, two, three] and len(listed) == 1
    live.close()


def test_a_new_merge_of_two_known_tips_is_read_without_git_rev_list(repo: GitRepo, monkeypatch) -> None:
    from collectors import commits
    from collectors.commits import CommitCollector
    from monitor.events import Commit

    repo.commit("base", {"a.txt": "0\n"})
    repo.git("checkout", "-q", "-b", "side")
    repo.commit("side", {"b.txt": "1\n"})
    repo.git("checkout", "-q", "main")
    repo.commit("main", {"a.txt": "1\n"})
    emitted: list = []
    live = CommitCollector(repo.root, Settings(), lambda payload, when: emitted.append(payload))
    live.scan()
    monkeypatch.setattr(commits, "rev_list", lambda *a, **k: pytest.fail("rev-list asked"))
    repo.git("merge", "-q", "--no-edit", "side")
    live.refresh()
    (merge,) = [c for c in emitted if isinstance(c, Commit)]
    assert merge.sha == repo.git("rev-parse", "HEAD") and len(merge.parents) == 2
    live.close()


def test_a_stream_that_said_goodbye_and_resends_what_was_not_yet_acknowledged_is_not_back(tmp_path: Path) -> None:
    from monitor.bus import Receiver
    from monitor.config import BusSettings

    endpoint = f"ipc://{tmp_path}/bus.sock"
    quick = BusSettings(resend_seconds=0.1)
    receiver = Receiver(endpoint, settings=quick)
    publisher = Publisher(endpoint, "loop", "files", settings=quick, context=zmq.Context())
    publisher.publish(FileChanged(path="a", change="created"))
    publisher.heartbeat(final=True)
    got = drain(receiver, 2)
    assert [e.kind for e in got] == ["file_changed", "heartbeat"]
    # No acknowledgement yet (a busy store): the stopping collector sends both again.
    publisher.flush(0.5)
    again = drain(receiver, 1, timeout=1.0)
    assert receiver.counters.duplicates >= 2
    assert again == [], [e.payload for e in again]
    publisher.close(0)
    receiver.close()
