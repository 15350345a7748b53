"""`loopmon serve --metrics`: the store's live figures in the Prometheus text format, over HTTP on loopback."""

from __future__ import annotations

import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from loop_store import SEED_TURNS, LoopStore, Turn, rows
from prometheus_client.parser import text_string_to_metric_families

from monitor.bus import BusCounters, Publisher
from monitor.cli import main
from monitor.config import Settings
from monitor.events import FileChanged, Heartbeat
from monitor.metrics import MetricsAddressError, MetricsServer, parse_address


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    """Every sample of a scrape: (name, sorted labels) -> value."""
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode("utf-8")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def store(tmp_path):
    s = LoopStore(tmp_path / "loopmon.db")
    for turn in SEED_TURNS:
        s.iteration(turn)
    s.alert("git_state", "rebase in progress", iteration=9, severity="critical")
    s.alert("bulky_artifact", "run.npz is 4 MB", iteration=5)
    s.alert("bulky_artifact", "model.pt is 9 MB", iteration=6)
    s.sink.write([s.envelope(Heartbeat(sent=40, dropped=3), source="files")])
    yield s
    s.close()


def test_a_scrape_shows_the_figures_of_the_store(store):
    server = MetricsServer("127.0.0.1:0", store.path, Settings())
    try:
        m = scrape(server.url)
    finally:
        server.close()
    repo = (("repo", "loop"),)
    its = rows(store.path, "SELECT * FROM iterations ORDER BY idx")
    assert m[("loopmon_store_up", ())] == 1
    assert m[("loopmon_iteration_current", repo)] == its[-1]["idx"]
    assert m[("loopmon_iteration_number", repo)] == its[-1]["number"] == 311
    assert m[("loopmon_aggregate_last", repo)] == its[-1]["aggregate"]
    assert m[("loopmon_aggregate_rolling_mean", repo)] == pytest.approx(statistics.fmean(r["aggregate"] for r in its[-10:]))
    for bucket in ("high", "medium", "low"):
        assert m[("loopmon_iterations", (("bucket", bucket), ("repo", "loop")))] == sum(r["bucket"] == bucket for r in its)
    for d in rows(store.path, "SELECT * FROM dwell"):
        labels = (("focus", d["focus"]), ("repo", "loop"))
        assert m[("loopmon_dwell", labels)] == d["value"]
        assert m[("loopmon_dwell_longest", labels)] == d["peak"]
        assert m[("loopmon_dwell_tier", labels)] == float(d["tier"] or 0)
    for a in rows(store.path, "SELECT alert, count(*) AS n FROM alerts GROUP BY alert"):
        assert m[("loopmon_alerts_total", (("kind", a["alert"]), ("repo", "loop")))] == a["n"]
    stored = rows(store.path, "SELECT sum(events) AS n FROM streams WHERE source NOT IN ('scorer', 'bus')")[0]["n"]
    assert m[("loopmon_events_received_total", repo)] == stored
    assert m[("loopmon_events_dropped_total", repo)] == 3


def test_every_scrape_reads_the_store_afresh_while_it_is_written(store):
    server = MetricsServer("127.0.0.1:0", store.path, Settings())
    stop = threading.Event()

    def writer() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            store.sink.write([store.envelope(FileChanged(path=f"ptycho/f{n}_{i}.py", change="created")) for i in range(100)])

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        seen = [scrape(server.url)[("loopmon_events_received_total", (("repo", "loop"),))] for _ in range(5)]
        store.iteration(Turn(312, 66, "INTEGRATE-PYTORCH-001", (("ptycho/x.py", 20, 0),)))
        after = scrape(server.url)
    finally:
        stop.set()
        thread.join()
        server.close()
    assert seen == sorted(seen)
    assert after[("loopmon_iteration_number", (("repo", "loop"),))] == 312
    assert after[("loopmon_aggregate_last", (("repo", "loop"),))] == 66


def test_the_receivers_counters_are_exposed_as_they_stand(store):
    counters = BusCounters(received=120, malformed=2, oversized=1, missing=4)
    server = MetricsServer("localhost:0", store.path, Settings(), counters=counters)
    try:
        m = scrape(server.url)
        counters.received += 5
        assert scrape(server.url)[("loopmon_bus_messages_received_total", ())] == 125
    finally:
        server.close()
    assert m[("loopmon_bus_messages_received_total", ())] == 120
    assert m[("loopmon_bus_messages_rejected_total", (("reason", "malformed"),))] == 2
    assert m[("loopmon_bus_messages_missing_total", ())] == 4


def test_an_unreadable_store_reports_down_instead_of_failing(tmp_path):
    server = MetricsServer("127.0.0.1:0", tmp_path / "gone.db", Settings())
    try:
        m = scrape(server.url)
    finally:
        server.close()
    assert m == {("loopmon_store_up", ()): 0}


@pytest.mark.parametrize("address, expected", [
    ("9464", ("127.0.0.1", 9464)),
    (":9464", ("127.0.0.1", 9464)),
    ("127.0.0.1:9464", ("127.0.0.1", 9464)),
    ("127.0.0.2:80", ("127.0.0.2", 80)),
    ("localhost:9464", ("localhost", 9464)),
    ("[::1]:9464", ("::1", 9464)),
])
def test_loopback_addresses_are_accepted(address, expected):
    assert parse_address(address) == expected


@pytest.mark.parametrize("address", ["0.0.0.0:9464", "[::]:9464", "10.1.2.3:9464", "example.com:9464", "127.0.0.1:http",
                                     "127.0.0.1:70000", "nowhere"])
def test_other_addresses_are_refused(address):
    with pytest.raises(MetricsAddressError):
        parse_address(address)


def test_serve_refuses_a_non_loopback_metrics_address(tmp_path, capsys):
    code = main(["serve", "--bind", f"ipc://{tmp_path}/bus.sock", "--db", str(tmp_path / "l.db"), "--headless",
                 "--metrics", "0.0.0.0:9464"])
    assert code == 2
    assert "loopback only" in capsys.readouterr().err
    assert not (tmp_path / "l.db").exists()  # refused before anything started


def test_serve_exposes_live_figures_of_what_collectors_send(tmp_path):
    """A real `loopmon serve --metrics` process, fed over the bus, scraped over HTTP."""
    port = free_port()
    bind = f"ipc://{tmp_path}/bus.sock"
    db = tmp_path / "fleet.db"
    url = f"http://127.0.0.1:{port}/metrics"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen([sys.executable, "-m", "monitor.cli", "serve", "--bind", bind, "--db", str(db), "--headless",
                             "--metrics", f"127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                scrape(url)
                break
            except OSError:
                assert proc.poll() is None, proc.stderr.read().decode()
                assert time.monotonic() < deadline, "the metrics endpoint never came up"
                time.sleep(0.1)
        publishers = {name: Publisher(bind, name, "files") for name in ("loop-a", "loop-b")}
        for name, pub in publishers.items():
            for i in range(7 if name == "loop-a" else 3):
                pub.publish(FileChanged(path=f"ptycho/f{i}.py", change="created"))
            pub.heartbeat()
            assert pub.flush(timeout=30)
        m = scrape(url)
        for pub in publishers.values():
            pub.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    assert m[("loopmon_store_up", ())] == 1
    assert m[("loopmon_events_received_total", (("repo", "loop-a"),))] == 7
    assert m[("loopmon_events_received_total", (("repo", "loop-b"),))] == 3
    assert m[("loopmon_events_dropped_total", (("repo", "loop-a"),))] == 0
    assert m[("loopmon_bus_messages_received_total", ())] >= 12  # events and heartbeats
    assert proc.returncode == 0
