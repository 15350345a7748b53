"""Wiring: the sending half (watcher + collectors + publishers) and the receiving half
(receiver + scorer + sinks). `loopmon run` puts both in one process on an inproc://
endpoint; `collect` and `serve` run them apart. It is the same code either way.
"""

from __future__ import annotations

import os
import re
import socket
import threading
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol

import zmq

from monitor import __version__
from monitor.bus import Publisher, Receiver, new_stream_id
from monitor.config import Settings
from monitor.events import CollectorStarted, Envelope, Warning

StreamKey = tuple[str, str, str]


class Sink(Protocol):
    def write(self, batch: list[Envelope]) -> None: ...
    def close(self) -> None: ...


def repo_id_for(root: str | Path, settings: Settings) -> str:
    """The repo's id on the bus and in the store: settings.repo_id, else the folder's name."""
    if settings.repo_id:
        return settings.repo_id
    name = Path(os.path.realpath(root)).name or "repo"
    return re.sub(r"\s+", "_", name)


def default_db_path(root: str | Path, settings: Settings) -> Path:
    db = Path(settings.store.db)
    return db if db.is_absolute() else Path(root) / db


def inproc_endpoint() -> str:
    return f"inproc://loopmon-{new_stream_id()}"


# --------------------------------------------------------------------------- receiving half


class Server:
    """Receives events, scores them, and hands batches to the sinks.

    Batches are written at least every `store.flush_ms` and as soon as
    `store.batch_size` events wait, so readers are never far behind.
    """

    def __init__(
        self,
        endpoint: str,
        sinks: list[Sink],
        settings: Settings,
        *,
        context: zmq.Context | None = None,
        scorer: Any | None = None,
        on_error: Callable[[str], None] | None = None,
        keys: Any | None = None,
    ) -> None:
        self.settings = settings
        self.receiver = Receiver(endpoint, settings=settings.bus, context=context, keys=keys)
        self.sinks = list(sinks)
        self.scorer = scorer
        self.on_error = on_error or (lambda message: None)
        self._stream = new_stream_id()
        self._seq = 0
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.written = 0

    @property
    def endpoint(self) -> str:
        return self.receiver.bound_endpoint

    def _derived(self, env: Envelope, payloads: Iterable[Any]) -> list[Envelope]:
        out = []
        for payload in payloads:
            self._seq += 1
            out.append(Envelope(repo=env.repo, source="scorer", stream=self._stream, seq=self._seq, time=env.time, payload=payload))
        return out

    def _score(self, envs: list[Envelope]) -> list[Envelope]:
        if self.scorer is None:
            return envs
        out: list[Envelope] = []
        for env in envs:
            out.append(env)
            try:
                out.extend(self._derived(env, self.scorer.process(env)))
            except Exception as exc:  # a scoring bug must not lose the event itself
                out.append(self._internal_warning(env.repo, "scorer_error", f"scorer failed on a {env.kind} event: {exc!r}", exc))
        return out

    def _internal_warning(self, repo: str, code: str, message: str, exc: BaseException | None = None) -> Envelope:
        self._seq += 1
        detail: dict[str, Any] = {}
        if exc is not None:
            detail["traceback"] = "".join(traceback.format_exception(exc))[-2000:]
        self.on_error(message)
        return Envelope(repo=repo, source="scorer", stream=self._stream, seq=self._seq, payload=Warning(code=code, message=message, detail=detail))

    def _tick(self) -> list[Envelope]:
        out = self.receiver.check_silence()
        if self.scorer is not None:
            now = datetime.now(timezone.utc)
            try:
                for repo, payload in self.scorer.tick(now):
                    self._seq += 1
                    out.append(Envelope(repo=repo, source="scorer", stream=self._stream, seq=self._seq, time=now, payload=payload))
            except Exception as exc:
                out.append(self._internal_warning("*", "scorer_error", f"scorer tick failed: {exc!r}", exc))
        return out

    def _flush(self, pending: list[Envelope]) -> None:
        if not pending:
            return
        for sink in self.sinks:
            try:
                sink.write(pending)
            except Exception as exc:
                # The batch stays in the other sinks; say loudly that this one failed.
                self.on_error(f"sink {type(sink).__name__} failed to write {len(pending)} events: {exc!r}")
                raise
        self.written += len(pending)

    def run(self, stop: threading.Event | None = None) -> None:
        """Serve until `stop` is set, then write what is still waiting."""
        stop = stop or self._stop
        flush_s = self.settings.store.flush_ms / 1000.0
        batch_size = self.settings.store.batch_size
        pending: list[Envelope] = []
        first_pending = 0.0
        next_tick = time.monotonic() + 1.0
        while True:
            stopping = stop.is_set()
            now = time.monotonic()
            wait = flush_s if not pending else max(0.0, first_pending + flush_s - now)
            wait = min(wait, max(0.0, next_tick - now))
            received = self.receiver.poll(int(wait * 1000) if not stopping else 50, max_messages=batch_size)
            if received:
                if not pending:
                    first_pending = time.monotonic()
                pending.extend(self._score(received))
            now = time.monotonic()
            if now >= next_tick:
                ticked = self._tick()
                if ticked and not pending:
                    first_pending = now
                pending.extend(ticked)
                next_tick = now + 1.0
            if pending and (len(pending) >= batch_size or now - first_pending >= flush_s or stopping):
                self._flush(pending)
                pending = []
            if not pending:
                self.receiver.acknowledge()  # everything received is written
            if stopping and not received:
                break

    def start(self) -> "Server":
        self._thread = threading.Thread(target=self._run_guarded, name="loopmon-server", daemon=True)
        self._thread.start()
        return self

    def _run_guarded(self) -> None:
        try:
            self.run(self._stop)
        except Exception as exc:
            self.on_error(f"server stopped: {exc!r}")
            self.error = exc

    error: BaseException | None = None

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        for sink in self.sinks:
            try:
                sink.close()
            except Exception as exc:
                self.on_error(f"sink {type(sink).__name__} failed to close: {exc!r}")
        self.receiver.close()


# --------------------------------------------------------------------------- sending half


def default_collector_classes() -> list[type]:
    """Every collector loopmon runs against a repo, in start order."""
    from collectors.files import FileCollector
    from collectors.gitstate import GitStateCollector
    from collectors.hubs import HubCollector

    classes: list[type] = []
    # Imported one by one so the set grows as collectors land.
    for module, name in (
        ("collectors.commits", "CommitCollector"),
        ("collectors.baton", "BatonCollector"),
        ("collectors.ledger", "LedgerCollector"),
        ("collectors.brief", "BriefCollector"),
        ("collectors.memory", "MemoryCollector"),
        ("collectors.prompts", "PromptCollector"),
    ):
        try:
            mod = __import__(module, fromlist=[name])
            classes.append(getattr(mod, name))
        except (ImportError, AttributeError):
            continue
    classes += [HubCollector, GitStateCollector, FileCollector]
    return classes


class CollectorSet:
    """Every collector of one repo, each with its own publisher (its own numbered stream)."""

    def __init__(
        self,
        root: str | Path,
        settings: Settings,
        endpoint: str,
        *,
        context: zmq.Context | None = None,
        repo_id: str | None = None,
        collector_classes: list[type] | None = None,
        keys: Any | None = None,
    ) -> None:
        from collectors.watch import RepoWatcher

        self.root = Path(os.path.realpath(root))
        self.settings = settings
        self.repo_id = repo_id or repo_id_for(self.root, settings)
        self.context = context or zmq.Context.instance()
        self.endpoint = endpoint
        self.keys = keys
        self.publishers: dict[str, Publisher] = {}
        self.collectors = []
        self._own = self._publisher("loopmon")
        for cls in collector_classes if collector_classes is not None else default_collector_classes():
            pub = self._publisher(cls.name)
            self.collectors.append(cls(self.root, settings, pub.publish))
        self.watcher = RepoWatcher(
            self.root, self.collectors, debounce_ms=settings.watch.debounce_ms, on_error=self._collector_failed
        )
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def _publisher(self, source: str) -> Publisher:
        pub = Publisher(self.endpoint, self.repo_id, source, settings=self.settings.bus, context=self.context, keys=self.keys)
        self.publishers[source] = pub
        return pub

    def _collector_failed(self, name: str, exc: BaseException) -> None:
        self._own.publish(
            Warning(
                code="collector_error",
                message=f"collector {name} failed and goes on: {exc!r}",
                detail={"collector": name, "traceback": "".join(traceback.format_exception(exc))[-2000:]},
            )
        )

    def start(self) -> "CollectorSet":
        from collectors.gitrepo import current_branch_and_head

        # Watch first, then scan, so nothing written during the scan is missed
        # (at worst it is read twice, and trackers emit only what changed).
        self.watcher.start()
        for collector in self.collectors:
            try:
                collector.scan()
            except Exception as exc:
                self._collector_failed(collector.name, exc)
        # Said last: from here on every change is collected.
        branch, head = current_branch_and_head(self.root)
        self._own.publish(
            CollectorStarted(
                path=str(self.root), branch=branch, head=head, host=socket.gethostname(), pid=os.getpid(), version=__version__
            )
        )
        self._beat = threading.Thread(target=self._heartbeats, name="loopmon-heartbeat", daemon=True)
        self._beat.start()
        return self

    def _heartbeats(self) -> None:
        while not self._stop.wait(self.settings.bus.heartbeat_seconds):
            for pub in list(self.publishers.values()):
                pub.heartbeat()

    def positions(self) -> dict[StreamKey, int]:
        return {(p.repo, p.source, p.stream): p.seq for p in self.publishers.values()}

    def stop(self) -> None:
        self._stop.set()
        self.watcher.stop()
        if self._beat is not None:
            self._beat.join(5)
        for collector in self.collectors:
            try:
                collector.close()
            except Exception as exc:
                self._collector_failed(collector.name, exc)
        for pub in self.publishers.values():
            pub.heartbeat(final=True)
        self.flush()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until the receiver has stored everything sent so far."""
        deadline = time.monotonic() + timeout
        return all(pub.flush(max(0.0, deadline - time.monotonic())) for pub in self.publishers.values())

    def close(self) -> None:
        for pub in self.publishers.values():
            pub.close()
