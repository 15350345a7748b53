"""The bus: real ZeroMQ sockets; every event is delivered, or its loss is visible."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import zmq
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from monitor.bus import Publisher, Receiver, is_loopback
from monitor.config import BusSettings
from monitor.events import Envelope, FileChanged, Heartbeat, Warning


def drain(receiver: Receiver, want: int, timeout: float = 10.0) -> list[Envelope]:
    got: list[Envelope] = []
    deadline = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        got.extend(receiver.poll(50))
    return got


def warnings(envs: list[Envelope], code: str) -> list[Warning]:
    return [e.payload for e in envs if isinstance(e.payload, Warning) and e.payload.code == code]


@pytest.fixture
def ipc(tmp_path: Path) -> str:
    return f"ipc://{tmp_path}/bus.sock"


def test_a_burst_over_ipc_arrives_whole_and_in_order(ipc: str) -> None:
    receiver = Receiver(ipc)
    publisher = Publisher(ipc, "loop", "files", context=zmq.Context())
    for i in range(20_000):  # the receiver is not reading yet: the sender queues, never drops
        publisher.publish(FileChanged(path=f"src/f{i}.py", change="modified"))
    got = drain(receiver, 20_000)
    assert [e.seq for e in got] == list(range(1, 20_001))
    assert [e.payload.path for e in got[:2]] == ["src/f0.py", "src/f1.py"]
    assert publisher.dropped == 0 and receiver.counters.missing == 0
    publisher.close()
    receiver.close()


def test_several_collectors_feed_one_receiver(ipc: str) -> None:
    receiver = Receiver(ipc)
    context = zmq.Context()
    pubs = [Publisher(ipc, f"repo{i}", "commits", context=context) for i in range(3)]
    for pub in pubs:
        for _ in range(100):
            pub.publish(FileChanged(path="a", change="created"))
    got = drain(receiver, 300)
    assert {e.repo for e in got} == {"repo0", "repo1", "repo2"}
    assert not warnings(got, "sequence_gap")


def pump(publisher: Publisher, receiver: Receiver, until, timeout: float = 15.0) -> list[Envelope]:
    """Run both ends as the runtime would: heartbeats, polls, acknowledgements."""
    got: list[Envelope] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not until(got):
        publisher.heartbeat()
        got.extend(receiver.poll(20))
        receiver.acknowledge()
    return got


def test_a_receiver_that_is_away_gets_everything_when_it_comes_back(ipc: str) -> None:
    tight = BusSettings(high_water_mark=10, send_timeout_ms=1, resend_seconds=0.2)
    publisher = Publisher(ipc, "loop", "files", settings=tight, context=zmq.Context())
    for i in range(2000):  # nobody listening and a tiny queue: the spool keeps them
        publisher.publish(FileChanged(path=f"f{i}", change="created"))
    assert publisher.pending > 1900 and publisher.dropped == 0
    receiver = Receiver(ipc, settings=tight)
    got = pump(publisher, receiver, lambda g: len({e.seq for e in g if e.kind == "file_changed"}) == 2000)
    files = [e for e in got if e.kind == "file_changed"]
    assert sorted(e.seq for e in files) == list(range(1, 2001)), "every event exactly once"
    pump(publisher, receiver, lambda g: publisher.pending <= 1)  # only the newest heartbeat may wait for its ack
    assert publisher.pending <= 1


def test_a_spool_overflow_is_counted_and_reported(ipc: str) -> None:
    tight = BusSettings(high_water_mark=10, send_timeout_ms=1, spool_limit=100, resend_seconds=0.2)
    publisher = Publisher(ipc, "loop", "files", settings=tight, context=zmq.Context())
    for i in range(500):
        publisher.publish(FileChanged(path=f"f{i}", change="created"))
    assert publisher.dropped == 400
    receiver = Receiver(ipc, settings=tight)
    got = pump(publisher, receiver, lambda g: warnings(g, "sender_dropped"))
    assert warnings(got, "sender_dropped")[0].detail["dropped"] >= 400
    assert warnings(got, "sequence_gap"), "the receiver sees the hole in the numbering too"


def test_a_receiver_killed_mid_stream_loses_nothing_and_stores_nothing_twice(ipc: str) -> None:
    settings = BusSettings(resend_seconds=0.2)
    publisher = Publisher(ipc, "loop", "files", settings=settings, context=zmq.Context())
    first = Receiver(ipc, settings=settings)
    for i in range(300):
        publisher.publish(FileChanged(path=f"f{i}", change="created"))
    stored: list[Envelope] = []
    while len(stored) < 100:
        stored += first.poll(50, max_messages=100 - len(stored))
    first.acknowledge()  # the first 100 are written...
    drain(first, 200)  # ...the next 200 were received, but the server dies before writing them
    first.close()
    for i in range(300, 600):
        publisher.publish(FileChanged(path=f"f{i}", change="created"))
    second = Receiver(ipc, settings=settings)
    second.resume({("loop", "files", publisher.stream): stored[-1].seq})
    later = pump(publisher, second, lambda g: len([e for e in g if e.kind == "file_changed"]) >= 500)
    later_files = [e for e in later if e.kind == "file_changed"]
    seqs = [e.seq for e in stored] + [e.seq for e in later_files]
    assert sorted(seqs) == list(range(1, 601))


def test_bad_traffic_is_dropped_counted_and_reported(ipc: str) -> None:
    receiver = Receiver(ipc, settings=BusSettings(max_message_bytes=10_000))
    raw = zmq.Context().socket(zmq.DEALER)
    raw.connect(ipc)
    good = Envelope(repo="loop", source="x", stream="s", seq=1, payload=FileChanged(path="a", change="created"))
    raw.send(b"{not json")
    raw.send(b"x" * 20_000)
    raw.send(good.to_wire().replace(b'"v":1', b'"v":99'))
    raw.send(good.to_wire().replace(b'"file_changed"', b'"no_such_kind"'))
    raw.send_multipart([b"a", b"b"])
    raw.send(good.to_wire())
    got = drain(receiver, 6)
    assert [e.kind for e in got] == ["warning"] * 5 + ["file_changed"]
    codes = [e.payload.code for e in got[:5]]
    assert codes == ["bus_malformed", "bus_oversized", "bus_wrong_version", "bus_malformed", "bus_malformed"]
    assert receiver.counters.malformed == 3 and receiver.counters.oversized == 1 and receiver.counters.wrong_version == 1


def test_a_silent_collector_is_reported_once_and_a_clean_stop_is_not(ipc: str) -> None:
    receiver = Receiver(ipc, settings=BusSettings(silence_seconds=0.2))
    context = zmq.Context()
    quiet = Publisher(ipc, "loop", "files", context=context)
    polite = Publisher(ipc, "loop", "commits", context=context)
    quiet.heartbeat()
    polite.heartbeat()
    polite.heartbeat(final=True)
    drain(receiver, 3)
    time.sleep(0.3)
    first = receiver.check_silence()
    assert [(w.payload.code, w.payload.detail["source"]) for w in first] == [("collector_silent", "files")]
    assert receiver.check_silence() == []
    quiet.heartbeat()
    back = drain(receiver, 2)
    assert warnings(back, "collector_back")


@hsettings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(frames=st.lists(st.binary(max_size=300), min_size=1, max_size=3))
def test_random_bytes_never_break_the_receiver(frames: list[bytes], tmp_path_factory: pytest.TempPathFactory) -> None:
    endpoint = f"ipc://{tmp_path_factory.mktemp('fuzz')}/b.sock"
    receiver = Receiver(endpoint)
    raw = zmq.Context.instance().socket(zmq.DEALER)
    raw.setsockopt(zmq.LINGER, 0)
    raw.connect(endpoint)
    raw.send_multipart(frames)
    got = drain(receiver, 1, timeout=5)
    # One warning per bad message, or per bad frame of something claiming to be a batch.
    assert got and all(e.kind == "warning" for e in got)
    good = Envelope(repo="loop", source="fuzz", stream="s", seq=1, payload=FileChanged(path="after", change="created"))
    raw.send(good.to_wire())
    after = drain(receiver, 1, timeout=5)
    assert [e.payload.path for e in after if e.kind == "file_changed"] == ["after"], "the receiver goes on"
    raw.close()
    receiver.close()


def test_only_loopback_and_ipc_count_as_local() -> None:
    assert is_loopback("ipc:///tmp/x.sock")
    assert is_loopback("tcp://127.0.0.1:5555")
    assert is_loopback("inproc://bus")
    assert not is_loopback("tcp://0.0.0.0:5555")
    assert not is_loopback("tcp://10.1.2.3:5555")


def test_heartbeats_take_sequence_numbers_so_a_trailing_loss_shows(ipc: str) -> None:
    receiver = Receiver(ipc)
    publisher = Publisher(ipc, "loop", "files", context=zmq.Context())
    publisher.publish(FileChanged(path="a", change="created"))
    publisher.seq += 2  # two events lost in transit, as a crash between number and send would
    publisher.heartbeat()
    got = drain(receiver, 3)
    gap = warnings(got, "sequence_gap")
    assert gap and gap[0].detail["first"] == 2 and gap[0].detail["last"] == 3
    assert isinstance(got[-1].payload, Heartbeat)


def test_a_keyed_server_lets_in_the_collector_with_keys_and_nobody_else(tmp_path: Path) -> None:
    from monitor.keys import CollectorKeys, ServerKeys, generate

    generate(tmp_path / "keys")
    context = zmq.Context()
    receiver = Receiver("tcp://127.0.0.1:*", context=context, keys=ServerKeys.load(tmp_path / "keys"))
    endpoint = receiver.bound_endpoint
    stranger = Publisher(endpoint, "loop", "intruder", context=zmq.Context(), settings=BusSettings(send_timeout_ms=100))
    stranger.publish(FileChanged(path="evil", change="created"))
    generate(tmp_path / "other")  # a collector key pair the server never authorized
    unknown = CollectorKeys.load(tmp_path / "other")
    unknown.server_public = ServerKeys.load(tmp_path / "keys").public
    impostor = Publisher(endpoint, "loop", "impostor", context=zmq.Context(), keys=unknown, settings=BusSettings(send_timeout_ms=100))
    impostor.publish(FileChanged(path="evil too", change="created"))
    friend = Publisher(endpoint, "loop", "files", context=zmq.Context(), keys=CollectorKeys.load(tmp_path / "keys"))
    friend.publish(FileChanged(path="good", change="created"))
    got = drain(receiver, 1, timeout=10)
    got += drain(receiver, 10, timeout=1.0)
    assert [e.payload.path for e in got if e.kind == "file_changed"] == ["good"]
    receiver.close()


def test_binding_beyond_loopback_without_keys_is_refused() -> None:
    from monitor.bus import InsecureEndpoint

    with pytest.raises(InsecureEndpoint, match="loopmon keys generate"):
        Receiver("tcp://0.0.0.0:0")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


@hsettings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(field=st.sampled_from(["v", "repo", "source", "stream", "seq", "time", "payload", "kind", "path", "change", "extra"]),
       value=json_values)
def test_envelopes_with_one_field_gone_wrong_are_each_one_warning_or_one_event(
    field: str, value: object, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Near-misses, not noise: a real envelope with one field replaced by any JSON value."""
    import json

    endpoint = f"ipc://{tmp_path_factory.mktemp('near')}/b.sock"
    receiver = Receiver(endpoint)
    raw = zmq.Context.instance().socket(zmq.DEALER)
    raw.setsockopt(zmq.LINGER, 0)
    raw.connect(endpoint)
    good = Envelope(repo="loop", source="files", stream="s", seq=1, payload=FileChanged(path="a", change="created"))
    data = json.loads(good.to_wire())
    target = data["payload"] if field in ("kind", "path", "change") else data
    target[field] = value
    raw.send(json.dumps(data).encode())
    after = Envelope(repo="loop", source="files", stream="s2", seq=1, payload=FileChanged(path="b", change="created"))
    raw.send(after.to_wire())
    got = drain(receiver, 2, timeout=5)
    assert got[-1].stream == "s2", "the receiver goes on after whatever came before"
    first = got[:-1]
    assert len(first) <= 2 and all(e.kind in ("warning", "file_changed") for e in first)
    problems = receiver.counters.malformed + receiver.counters.wrong_version
    assert problems == sum(1 for e in first if e.kind == "warning" and e.payload.code.startswith("bus_"))
    raw.close()
    receiver.close()
