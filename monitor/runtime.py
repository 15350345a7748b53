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
from monitor.resume import Checkpoints, Saved, StateFolder

# A sink that failed is tried again this often.
_RETRY_SECONDS = 1.0
# While a sink fails, the server holds at most this many batches before it stops receiving.
_BACKLOG_BATCHES = 20


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

    A batch is written as soon as the socket has nothing more waiting: one event
    alone is stored at once, and under load the batches grow by themselves (up to
    `store.batch_size`), one transaction each. `store.flush_ms` bounds how long
    anything waits in any case.
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
        self._backlog: dict[int, list[Envelope]] = {}  # sink index -> events it has not taken yet
        self._failing: dict[int, tuple[float, str, int]] = {}  # sink index -> (since, error, waiting)
        self._retry_at = 0.0
        for sink in self.sinks:
            token = getattr(sink, "store_token", None)
            if token is not None:
                self.receiver.store_token = token
                break

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
        last: dict[str, Envelope] = {}  # each repo's last event in the batch
        for env in envs:
            out.append(env)
            last[env.repo] = env
            try:
                # Provisional scores once per batch (settle), not once per event: under
                # load a batch holds many events of one open iteration.
                out.extend(self._derived(env, self.scorer.process(env, defer=True)))
            except Exception as exc:  # a scoring bug must not lose the event itself
                out.append(self._internal_warning(env.repo, "scorer_error", f"scorer failed on a {env.kind} event: {exc!r}", exc))
        try:
            for repo, payload in self.scorer.settle():
                out.extend(self._derived(last[repo], [payload]))
        except Exception as exc:
            out.append(self._internal_warning("*", "scorer_error", f"scorer failed to settle a batch: {exc!r}", exc))
        return out

    def _internal_warning(self, repo: str, code: str, message: str, exc: BaseException | None = None) -> Envelope:
        self._seq += 1
        detail: dict[str, Any] = {}
        if exc is not None:
            detail["traceback"] = "".join(traceback.format_exception(exc))[-2000:]
        self.on_error(message)
        return Envelope(repo=repo, source="scorer", stream=self._stream, seq=self._seq, payload=Warning(code=code, message=message, detail=detail))

    def _tick(self) -> list[Envelope]:
        # While a sink cannot write the server stops reading, so collectors are not silent.
        out = self.receiver.check_silence() if not self._backlog else []
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
        """Hand `pending` to every sink. A sink that fails keeps what it has not taken
        (its backlog) and is retried; nothing is acknowledged to the collectors until
        every sink has everything, so a full disk delays events but never loses them."""
        problems = self._write_all(pending)
        self.written += len(pending)
        self._retry_at = time.monotonic() + _RETRY_SECONDS
        if problems:
            # Said to every sink now (the live view shows it); a failing store takes it
            # with its backlog once it can write again.
            self._write_all(problems)

    def _write_all(self, pending: list[Envelope]) -> list[Envelope]:
        """Write backlog + `pending` to each sink; the warnings about sinks that failed or recovered."""
        problems: list[Envelope] = []
        for i, sink in enumerate(self.sinks):
            backlog = self._backlog.pop(i, None)
            batch = backlog + pending if backlog else pending
            if not batch:
                continue
            try:
                sink.write(batch)
            except Exception as exc:
                self._backlog[i] = list(batch)
                problems.extend(self._sink_failed(i, sink, exc))
                continue
            if i in self._failing:
                problems.append(self._sink_recovered(i, sink, len(backlog or ())))
        return problems

    def _sink_failed(self, index: int, sink: Sink, exc: BaseException) -> list[Envelope]:
        """Tell the user (stderr now, every sink as a warning) once per distinct failure."""
        name = type(sink).__name__
        waiting = len(self._backlog.get(index, ()))
        text = f"{type(exc).__name__}: {exc}"
        first = self._failing.get(index)
        if first is not None and first[1] == text:
            return []
        self._failing[index] = (first[0] if first else time.monotonic(), text, waiting)
        message = (
            f"sink {name} cannot write ({text}); {waiting} event(s) wait in memory and are retried every "
            f"{_RETRY_SECONDS:.0f} s, and collectors keep what is not yet stored (nothing is lost)"
        )
        self.on_error(message)
        return [self._warning_envelope("*", "sink_write_failed", message, sink=name, error=text, waiting=waiting)]

    def _sink_recovered(self, index: int, sink: Sink, written: int) -> Envelope:
        since, text, _ = self._failing.pop(index)
        name = type(sink).__name__
        message = (
            f"sink {name} writes again after {time.monotonic() - since:.0f} s ({text}); "
            f"the {written} event(s) that waited are stored"
        )
        self.on_error(message)
        return self._warning_envelope("*", "sink_write_recovered", message, sink=name, error=text, written=written)

    def _warning_envelope(self, repo: str, code: str, message: str, **detail: Any) -> Envelope:
        self._seq += 1
        return Envelope(repo=repo, source="scorer", stream=self._stream, seq=self._seq, payload=Warning(code=code, message=message, detail=detail))

    @property
    def backlog(self) -> int:
        """Events some sink has not taken yet (waiting for a retry)."""
        return max((len(b) for b in self._backlog.values()), default=0)

    def run(self, stop: threading.Event | None = None) -> None:
        """Serve until `stop` is set, then write what is still waiting."""
        stop = stop or self._stop
        flush_s = self.settings.store.flush_ms / 1000.0
        batch_size = self.settings.store.batch_size
        # While a sink cannot write, take in no more than this: the rest waits in the
        # collectors' spools, where it is resent once acknowledgements resume.
        backlog_cap = batch_size * _BACKLOG_BATCHES
        pending: list[Envelope] = []
        first_pending = 0.0
        next_tick = time.monotonic() + 1.0
        while True:
            stopping = stop.is_set()
            now = time.monotonic()
            wait = flush_s if not pending else max(0.0, first_pending + flush_s - now)
            wait = min(wait, max(0.0, next_tick - now))
            if self._backlog:
                wait = min(wait, max(0.0, self._retry_at - now))
            if self.backlog + len(pending) >= backlog_cap and not stopping:
                time.sleep(wait)
                received = []
            else:
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
            # Nothing more waiting on the socket: write now (latency), while a busy
            # socket fills the batch first (throughput). A failing sink waits its retry.
            drained = len(received) < batch_size and not self._backlog
            if pending and (drained or len(pending) >= batch_size or now - first_pending >= flush_s or stopping):
                self._flush(pending)
                pending = []
            elif self._backlog and now >= self._retry_at:
                self._flush([])
            if not pending and not self._backlog:
                self.receiver.acknowledge()  # everything received is written
            if stopping and not received:
                break
        if self._backlog:
            self._flush([])  # one last try
        if self._backlog:
            self.on_error(
                f"{self.backlog} event(s) could not be stored before stopping; collectors still running "
                "keep them and send them again to the next server"
            )

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
        self.receiver.wake()
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
    from collectors.baton import BatonCollector
    from collectors.brief import BriefCollector
    from collectors.commits import CommitCollector
    from collectors.files import FileCollector
    from collectors.gitstate import GitStateCollector
    from collectors.hubs import HubCollector
    from collectors.ledger import LedgerCollector
    from collectors.memory import MemoryCollector
    from collectors.prompts import PromptCollector

    return [
        CommitCollector,
        BatonCollector,
        LedgerCollector,
        BriefCollector,
        MemoryCollector,
        PromptCollector,
        HubCollector,
        GitStateCollector,
        FileCollector,
    ]


class Guarded:
    """A collector as the watcher and the start-up scan call it: one call at a time, and
    its state captured (monitor/resume.py) after each call that emitted something."""

    def __init__(self, collector: Any, publisher: Publisher, checkpoints: Checkpoints | None) -> None:
        self.collector = collector
        self.name = collector.name
        self.publisher = publisher
        self.checkpoints = checkpoints
        self._lock = threading.Lock()
        self._sent = -1  # the publisher's count at the last capture; -1: capture the first call

    def wants(self, path: str) -> bool:
        return self.collector.wants(path)

    def on_changes(self, changes: list[Any]) -> None:
        self._call(self.collector.on_changes, changes)

    def tick(self, now: datetime) -> None:
        self._call(self.collector.tick, now)

    def scan(self) -> None:
        self._call(self.collector.scan)

    def rescan(self) -> None:
        self._call(self.collector.rescan)

    def _call(self, method: Callable[..., None], *args: Any) -> None:
        with self._lock:
            with self.publisher.batch():  # what one call emits travels together
                method(*args)
            if self.checkpoints is not None and self.publisher.sent != self._sent:
                # Taken under the lock, after the call: the state is never ahead of what
                # was handed to the publisher, whose numbers go up to `seq` now.
                self._sent = self.publisher.sent
                state = self.collector.state()
                if state is not None:
                    self.checkpoints.capture(self.publisher.seq, state)


class CollectorSet:
    """Every collector of one repo, each with its own publisher (its own numbered stream).

    Collectors resume (monitor/resume.py): what each has published and the store has
    acknowledged is saved under `watch.state_dir`, and a restarted set restores it
    before scanning, so it emits only what changed while it was down.
    """

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
        state_dir = settings.watch.state_dir
        self.states = StateFolder(self.root / state_dir, anchor=self.root) if state_dir else None
        self.guarded: list[Guarded] = []
        for cls in collector_classes if collector_classes is not None else default_collector_classes():
            pub = self._publisher(cls.name)
            collector = cls(self.root, settings, pub.publish)
            self.collectors.append(collector)
            self.guarded.append(Guarded(collector, pub, Checkpoints() if self.states is not None else None))
        self.watcher = RepoWatcher(
            self.root,
            self.guarded,
            debounce_ms=settings.watch.debounce_ms,
            on_error=self._collector_failed,
            on_root=self._root_changed,
        )
        self._unsaved: str | None = None  # the last state-saving error reported
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

    def _root_changed(self, state: str) -> None:
        """The repo folder went away or came back, or file events were lost (watcher thread): say so, and read it all again."""
        if state == "gone":
            self._warn(
                "watch_root_gone",
                f"{self.root} was deleted or moved away; loopmon waits for it to come back",
                path=str(self.root),
            )
            return
        if state == "lost":
            self._warn(
                "watch_events_lost",
                "the kernel dropped file events (more changes at once than fs.inotify.max_queued_events); "
                "the loop's files and refs are read again, but single working-tree changes of that moment "
                "are not all reported",
                path=str(self.root),
            )
        else:
            self._warn("watch_root_back", f"{self.root} is back and watched again; reading it anew", path=str(self.root))
        for g in self.guarded:
            try:
                g.rescan()
            except Exception as exc:
                self._collector_failed(g.name, exc)

    def _warn(self, code: str, message: str, **detail: Any) -> None:
        self._own.publish(Warning(code=code, message=message, detail=detail))

    def _load_saved(self) -> dict[str, Saved]:
        saved: dict[str, Saved] = {}
        if self.states is None:
            return saved
        for g in self.guarded:
            try:
                found = self.states.load(g.name)
            except ValueError as exc:
                self._warn("collector_state_unreadable", f"{exc}; collector {g.name} scans from scratch", collector=g.name)
                continue
            if found is not None:
                saved[g.name] = found
        return saved

    def _store_token(self) -> str | None:
        """Ask the store who it is (any acknowledgement says); None when it does not answer in time."""
        self._own.heartbeat()
        if not self._own.flush(self.settings.watch.resume_wait_seconds):
            return None
        return self._own.store_token

    def _restore(self) -> None:
        """Give each collector back what it published before, if the store answering holds it."""
        saved = self._load_saved()
        if not saved:
            return
        token = self._store_token()
        if token is None:
            self._warn(
                "collector_state_unconfirmed",
                f"the receiver did not answer within {self.settings.watch.resume_wait_seconds:g} s, so the saved "
                "collector state cannot be matched to its store; collectors scan from scratch (commits made "
                "while they were down are not read: `loopmon backfill` adds them)",
                collectors=sorted(saved),
            )
            return
        other = []
        for g in self.guarded:
            found = saved.get(g.name)
            if found is None:
                continue
            if found.token != token:
                other.append(g.name)
                continue
            try:
                g.collector.restore(found.state)
            except Exception as exc:
                self._warn(
                    "collector_state_unreadable",
                    f"collector {g.name} could not take back its saved state ({exc!r}) and scans from scratch",
                    collector=g.name,
                )
        if other:
            self._warn(
                "collector_state_other_store",
                f"the saved state of {', '.join(other)} belongs to another store; they scan from scratch",
                collectors=other,
            )

    def start(self) -> "CollectorSet":
        from collectors.gitrepo import current_branch_and_head

        self._restore()
        # Watch first, then scan, so nothing written during the scan is missed
        # (at worst it is read twice, and trackers emit only what changed).
        self.watcher.start()
        for g in self.guarded:
            try:
                g.scan()
            except Exception as exc:
                self._collector_failed(g.name, exc)
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
            self.save_states()

    def save_states(self) -> None:
        """Save each collector's newest state whose events the store has all acknowledged."""
        if self.states is None:
            return
        for g in self.guarded:
            token = g.publisher.store_token
            if token is None or g.checkpoints is None:
                continue  # no acknowledgement yet: nothing is known stored
            state = g.checkpoints.due(g.publisher.acked)
            if state is None:
                continue
            try:
                self.states.save(g.name, token, state)
            except FileNotFoundError:
                continue  # the repo folder is gone (the watcher says so); a later state is saved once it is back
            except (OSError, TypeError, ValueError) as exc:
                if str(exc) != self._unsaved:
                    self._unsaved = str(exc)
                    self._warn(
                        "collector_state_unsaved",
                        f"collector {g.name} cannot save its state in {self.states.folder}: {exc}; "
                        "after a restart it would scan from an older state (nothing is lost, some events come again)",
                        collector=g.name,
                    )

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
        self.save_states()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until the receiver has stored everything sent so far."""
        deadline = time.monotonic() + timeout
        return all(pub.flush(max(0.0, deadline - time.monotonic())) for pub in self.publishers.values())

    def close(self) -> None:
        for pub in self.publishers.values():
            pub.close()
