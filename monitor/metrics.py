"""`loopmon serve --metrics ADDR`: the live figures in the Prometheus text format, for fleets.

A custom collector reads the store (read-only, one snapshot) on every scrape, so
the monitor's hot path does no work for metrics; the receiver's own counters
(messages received, rejected, lost in sequence gaps) are read as they stand. The
endpoint listens on loopback only: put a reverse proxy in front to reach it from
elsewhere.

Per repo: the current iteration, the last final aggregate and the rolling mean,
iterations per bucket, dwell per focus with its tier and longest streak, alerts by
kind, and events stored and dropped (as their senders report them).
"""

from __future__ import annotations

import ipaddress
import socket
import socketserver
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from monitor.config import Settings
from monitor.query import GLOBAL_FOCUS, QueryError, load_iterations, mean, open_readonly, snapshot

DEFAULT_HOST = "127.0.0.1"
_LOCALHOST_NAMES = ("localhost",)


class MetricsAddressError(ValueError):
    """An address the metrics endpoint will not listen on."""


def parse_address(text: str) -> tuple[str, int]:
    """`9464`, `:9464`, `127.0.0.1:9464`, `localhost:9464` or `[::1]:9464` -> (host, port); loopback only."""
    text = text.strip()
    if text.isdigit():
        host, port_text = DEFAULT_HOST, text
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            raise MetricsAddressError(f"--metrics {text}: give HOST:PORT or PORT (e.g. 127.0.0.1:9464)")
        host = host.strip("[]") or DEFAULT_HOST
    try:
        port = int(port_text)
    except ValueError:
        raise MetricsAddressError(f"--metrics {text}: {port_text!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise MetricsAddressError(f"--metrics {text}: port {port} is out of range")
    if host.lower() not in _LOCALHOST_NAMES:
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise MetricsAddressError(
                f"--metrics {text}: metrics are served on loopback only (127.0.0.1, ::1 or localhost); "
                "put a reverse proxy in front to reach them from other machines")
    return host, port


def tier_number(tier: str | None) -> float:
    """A dwell tier as a number for a gauge (0: no tier)."""
    if tier is None:
        return 0.0
    try:
        return float(tier)
    except ValueError:
        return 0.0


class StoreCollector(Collector):
    """Reads the store on every scrape and yields its figures."""

    def __init__(self, db: str | Path, settings: Settings, counters: Any | None = None) -> None:
        self.db = Path(db)
        self.settings = settings
        self.counters = counters  # monitor.bus.BusCounters of the serving receiver, if any
        self._lock = threading.Lock()  # one scrape at a time: each opens its own connection anyway

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("loopmon_store_up", "1 when the last scrape could read the store")
        try:
            with self._lock:
                families = self._from_store()
            up.add_metric([], 1.0)
        except (QueryError, sqlite3.Error):
            families = []
            up.add_metric([], 0.0)
        yield up
        yield from families
        yield from self._bus()

    def _from_store(self) -> list[Metric]:
        conn = open_readonly(self.db)
        try:
            with snapshot(conn):
                return self._read(conn)
        finally:
            conn.close()

    def _read(self, conn: sqlite3.Connection) -> list[Metric]:
        repo = ["repo"]
        current = GaugeMetricFamily("loopmon_iteration_current", "loopmon's index of the latest iteration", labels=repo)
        number = GaugeMetricFamily("loopmon_iteration_number", "the loop's own number of the latest iteration",
                                   labels=repo)
        provisional = GaugeMetricFamily("loopmon_iteration_provisional",
                                        "1 while the latest iteration's scores are provisional", labels=repo)
        last = GaugeMetricFamily("loopmon_aggregate_last", "aggregate score of the latest final iteration", labels=repo)
        rolling = GaugeMetricFamily("loopmon_aggregate_rolling_mean",
                                    f"mean aggregate of the last {self.settings.scores.rolling_window} final iterations",
                                    labels=repo)
        buckets = GaugeMetricFamily("loopmon_iterations", "final iterations per bucket", labels=["repo", "bucket"])
        dwell = GaugeMetricFamily("loopmon_dwell", 'current dwell per focus (focus "*": all foci)',
                                  labels=["repo", "focus"])
        tier = GaugeMetricFamily("loopmon_dwell_tier", "active dwell tier per focus (0: none)", labels=["repo", "focus"])
        longest = GaugeMetricFamily("loopmon_dwell_longest", "longest dwell streak seen per focus",
                                    labels=["repo", "focus"])
        alerts = CounterMetricFamily("loopmon_alerts", "alerts raised, by kind", labels=["repo", "kind"])
        received = CounterMetricFamily("loopmon_events_received", "events stored from the repo's collectors",
                                       labels=repo)
        dropped = CounterMetricFamily("loopmon_events_dropped", "events the repo's collectors gave up sending",
                                      labels=repo)
        window = self.settings.scores.rolling_window
        for (repo_id,) in conn.execute("SELECT id FROM repos ORDER BY id"):
            its = load_iterations(conn, repo_id)
            final = [i for i in its if not i.provisional]
            if its:
                current.add_metric([repo_id], its[-1].idx)
                if its[-1].number is not None:
                    number.add_metric([repo_id], its[-1].number)
                provisional.add_metric([repo_id], float(its[-1].provisional))
            if final:
                last.add_metric([repo_id], final[-1].aggregate)
                rolling.add_metric([repo_id], mean([i.aggregate for i in final[-window:]]))
            for b in ("high", "medium", "low"):
                buckets.add_metric([repo_id, b], sum(1 for i in final if i.bucket == b))
            for r in conn.execute("SELECT focus, value, tier, peak FROM dwell WHERE repo = ? ORDER BY focus != ?, focus",
                                  (repo_id, GLOBAL_FOCUS)):
                dwell.add_metric([repo_id, r["focus"]], r["value"])
                tier.add_metric([repo_id, r["focus"]], tier_number(r["tier"]))
                longest.add_metric([repo_id, r["focus"]], max(r["peak"] or 0, r["value"]))
            for r in conn.execute("SELECT alert, count(*) AS n FROM alerts WHERE repo = ? GROUP BY alert ORDER BY alert",
                                  (repo_id,)):
                alerts.add_metric([repo_id, r["alert"]], r["n"])
            r = conn.execute("SELECT coalesce(sum(events), 0), coalesce(sum(dropped), 0) FROM streams "
                             "WHERE repo = ? AND source NOT IN ('scorer', 'bus')", (repo_id,)).fetchone()
            received.add_metric([repo_id], r[0])
            dropped.add_metric([repo_id], r[1])
        return [current, number, provisional, last, rolling, buckets, dwell, tier, longest, alerts, received, dropped]

    def _bus(self) -> Iterator[Metric]:
        c = self.counters
        if c is None:
            return
        received = CounterMetricFamily("loopmon_bus_messages_received", "messages the receiver took off the bus")
        received.add_metric([], c.received)
        yield received
        rejected = CounterMetricFamily("loopmon_bus_messages_rejected", "messages refused, by reason", labels=["reason"])
        for reason in ("malformed", "oversized", "wrong_version"):
            rejected.add_metric([reason], getattr(c, reason))
        yield rejected
        missing = CounterMetricFamily("loopmon_bus_messages_missing", "messages lost in sequence gaps")
        missing.add_metric([], c.missing)
        yield missing
        if hasattr(c, "duplicates"):
            duplicates = CounterMetricFamily("loopmon_bus_messages_duplicate", "messages received twice (resends)")
            duplicates.add_metric([], c.duplicates)
            yield duplicates


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass  # a scrape every few seconds would flood stderr


class _Server(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Server6(_Server):
    address_family = socket.AF_INET6


class MetricsServer:
    """The HTTP endpoint (`/metrics`, prometheus_client's WSGI app) in a daemon thread, over its own registry."""

    POLL_SECONDS = 0.05  # how soon close() returns

    def __init__(self, address: str, db: str | Path, settings: Settings, counters: Any | None = None) -> None:
        self.host, port = parse_address(address)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(StoreCollector(db, settings, counters))
        server_class = _Server6 if ":" in self.host else _Server
        self._httpd = make_server(self.host, port, make_wsgi_app(self.registry), server_class, _QuietHandler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(self.POLL_SECONDS,),
                                        name="loopmon-metrics", daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)
