"""The bus over ZeroMQ: collectors publish, the scorer/sinks side receives.

Pattern: each publisher is a DEALER connected to one ROUTER bound by the receiver.
Unlike PUB/SUB, a DEALER never drops at its high-water mark: it blocks, and a
send that stays blocked past `send_timeout_ms` is *counted* as dropped, so a burst
is either delivered or visibly lost. Every message carries a per-stream sequence
number (heartbeats too), so the receiver sees any gap, and heartbeats carry the
sender's own sent/dropped counts. The same code runs embedded (inproc://) and
split across processes or machines (ipc://, tcp://); only the endpoint differs.
"""

from __future__ import annotations

import json
from collections import OrderedDict, deque
import os
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

import zmq
from pydantic import ValidationError

from monitor.config import BusSettings
from monitor.events import SCHEMA_VERSION, Envelope, Heartbeat, Warning, utcnow

if TYPE_CHECKING:
    from monitor.keys import CollectorKeys, ServerKeys

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]", "::1")
# A publisher reads acknowledgements after this many events, or this long, at most.
SERVICE_EVERY = 64
SERVICE_SECONDS = 0.05
_now = time.monotonic
# A batch message: this first frame, then one envelope per frame (see Publisher.batch).
BATCH_FRAME = b"loopmon-batch"
# A publisher's batch goes out at this many envelopes or bytes, whichever comes first.
BATCH_ENVELOPES = 256
BATCH_BYTES = 1 << 20


class InsecureEndpoint(Exception):
    """A non-loopback endpoint without CurveZMQ keys."""


def new_stream_id() -> str:
    return uuid.uuid4().hex[:12]


def is_loopback(endpoint: str) -> bool:
    """ipc://, inproc:// and tcp:// on a loopback address stay on this machine."""
    if endpoint.startswith(("ipc://", "inproc://")):
        return True
    if endpoint.startswith("tcp://"):
        host = endpoint[len("tcp://") :].rsplit(":", 1)[0]
        return host in LOOPBACK_HOSTS or host.startswith("127.")
    return False


class Publisher:
    """One collector's sending end: numbers its messages and never loses one silently.

    Every message stays in an in-memory spool until the receiver acknowledges that
    it is stored, and is sent again when acknowledgements stop coming (a receiver
    killed and restarted): the store drops what it already has, so each event ends
    in the store once. Only a spool overflow (`bus.spool_limit`) loses events, and
    those are counted and reported in the heartbeats.
    """

    def __init__(
        self,
        endpoint: str,
        repo: str,
        source: str,
        *,
        settings: BusSettings | None = None,
        context: zmq.Context | None = None,
        stream: str | None = None,
        keys: "CollectorKeys | None" = None,
    ) -> None:
        self.settings = settings or BusSettings()
        self.repo = repo
        self.source = source
        self.stream = stream or new_stream_id()
        self.endpoint = endpoint
        self._context = context or zmq.Context.instance()
        self._socket = self._context.socket(zmq.DEALER)
        self._socket.setsockopt(zmq.SNDHWM, self.settings.high_water_mark)
        self._socket.setsockopt(zmq.SNDTIMEO, self.settings.send_timeout_ms)
        self._socket.setsockopt(zmq.LINGER, 2000)
        if keys is not None:
            keys.apply(self._socket)
        self._socket.connect(endpoint)
        self._lock = threading.Lock()
        self.seq = 0  # last sequence number used
        self.sent = 0  # events handed to the socket (resends not counted)
        self.dropped = 0  # events lost for good (spool overflow)
        self.acked = 0  # highest seq the receiver has stored, all before it too
        # Which store acknowledges (Receiver.store_token): a collector's saved state is
        # only trusted by the store that holds the events it describes.
        self.store_token: str | None = None
        self.resent = 0
        self._unacked: OrderedDict[int, bytes] = OrderedDict()
        self._last_progress = time.monotonic()
        self._last_resend = 0.0
        self._resend: deque[int] = deque()
        self._blocked = False  # a send timed out: do not wait again until the receiver answers
        self._last_service = 0.0
        self._unserviced = 0  # events published since acknowledgements were last read
        self._batching = 0  # depth of `batch()` blocks open
        self._outbox: list[bytes] = []  # envelopes of the open batch, spooled already
        self._outbox_bytes = 0

    def envelope(self, payload: Any, time: datetime | None = None) -> Envelope:
        """Number and wrap a payload (the caller holds the lock)."""
        self.seq += 1
        now = utcnow()
        return Envelope(
            repo=self.repo, source=self.source, stream=self.stream, seq=self.seq, time=time or now, observed=now, payload=payload
        )

    def publish(self, payload: Any, time: datetime | None = None) -> bool:
        """Send one event; False when it is only spooled for now (it is sent again later)."""
        with self._lock:
            env = self.envelope(payload, time)
            data = env.to_wire()
            self._spool(env.seq, data)
            if not isinstance(payload, Heartbeat):
                self.sent += 1
            if self._batching:
                self._outbox.append(data)
                self._outbox_bytes += len(data)
                ok = True
                if len(self._outbox) >= BATCH_ENVELOPES or self._outbox_bytes >= BATCH_BYTES:
                    ok = self._send_outbox()
            else:
                ok = self._send(data)
            # Reading acknowledgements costs more than sending: in a burst, do it every
            # SERVICE_EVERY events or SERVICE_SECONDS (and at once while blocked).
            self._unserviced += 1
            if self._blocked or self._unserviced >= SERVICE_EVERY or _now() - self._last_service >= SERVICE_SECONDS:
                self._service()
            return ok

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Events published inside go out together, several envelopes to a ZeroMQ message.

        Each keeps its own sequence number, spool entry and acknowledgement; only the
        sending is shared (one send, one receive for up to BATCH_ENVELOPES events). The
        batch leaves when the block ends, or sooner when it is full.
        """
        with self._lock:
            self._batching += 1
        try:
            yield
        finally:
            with self._lock:
                self._batching -= 1
                if not self._batching:
                    self._send_outbox()

    def _send_outbox(self) -> bool:
        if not self._outbox:
            return True
        frames, self._outbox, self._outbox_bytes = [BATCH_FRAME, *self._outbox], [], 0
        try:
            self._socket.send_multipart(frames, zmq.NOBLOCK if self._blocked else 0)
        except zmq.Again:
            self._blocked = True  # the spool has them all: they go again with the next resend pass
            return False
        return True

    def heartbeat(self, final: bool = False) -> bool:
        """Say we are alive (with our counts); also collects acks and resends what is overdue."""
        with self._lock:
            self._send_outbox()  # what waits in an open batch goes before the beat, in order
            self._service()
            beat = Heartbeat(sent=self.sent, dropped=self.dropped, interval=self.settings.heartbeat_seconds, final=final)
            env = self.envelope(beat)
            data = env.to_wire()
            self._spool(env.seq, data)
            return self._send(data)

    @property
    def pending(self) -> int:
        """Messages not yet acknowledged as stored."""
        return len(self._unacked)

    def _spool(self, seq: int, data: bytes) -> None:
        self._unacked[seq] = data
        while len(self._unacked) > self.settings.spool_limit:
            self._unacked.popitem(last=False)
            self.dropped += 1

    def _send(self, data: bytes) -> bool:
        # Wait (up to send_timeout_ms) while the receiver keeps up; once a send has
        # timed out, stop waiting until it acknowledges again: the spool holds the rest.
        try:
            self._socket.send(data, zmq.NOBLOCK if self._blocked else 0, copy=len(data) < 65536)
        except zmq.Again:
            self._blocked = True
            return False
        return True

    def _service(self) -> None:
        """Read acknowledgements; resend everything unacknowledged when they stall."""
        self._unserviced = 0
        self._last_service = time.monotonic()
        while True:
            try:
                frames = self._socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            if len(frames) in (2, 3) and frames[0] == b"ack":
                try:
                    acked = int(frames[1])
                except ValueError:
                    continue
                self.store_token = frames[2].decode("utf-8", "replace") if len(frames) == 3 else ""
                if acked > self.acked:
                    self.acked = acked
                    self._last_progress = time.monotonic()
                    self._blocked = False
                    while self._unacked and next(iter(self._unacked)) <= acked:
                        self._unacked.popitem(last=False)
        now = time.monotonic()
        overdue = self.settings.resend_seconds
        if self._unacked and not self._resend and now - self._last_progress > overdue and now - self._last_resend > overdue:
            self._resend = deque(self._unacked)  # a pass over everything unacknowledged, oldest first
        while self._resend:
            seq = self._resend[0]
            data = self._unacked.get(seq)
            if data is not None:
                try:
                    self._socket.send(data, zmq.NOBLOCK)
                except zmq.Again:
                    break  # the queue is full: the pass goes on at the next call
                self.resent += 1
            self._resend.popleft()
            self._last_resend = now

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until the receiver has stored everything sent so far."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                self._send_outbox()
                self._service()
                if not self._unacked:
                    return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)

    def close(self, linger_ms: int | None = None) -> None:
        with self._lock:
            self._send_outbox()
            if linger_ms is not None:
                self._socket.setsockopt(zmq.LINGER, linger_ms)
            self._socket.close()


@dataclass
class StreamState:
    repo: str
    source: str
    stream: str
    last_seq: int = 0
    last_heard: float = field(default_factory=time.monotonic)
    received: int = 0
    missing: int = 0
    silent_reported: bool = False
    sender_dropped: int = 0
    holes: set[int] = field(default_factory=set)  # seqs skipped over, still expected (resends)
    identity: bytes | None = None  # the sender's socket, for acknowledgements
    # Up to this seq the store may hold the events already (Receiver.resume); whether it
    # holds each one is asked of the store, since it may have stored later ones before a hole.
    resumed_through: int = 0

    @property
    def stored_through(self) -> int:
        """Every seq up to this one has arrived."""
        return min(self.holes) - 1 if self.holes else self.last_seq


@dataclass
class BusCounters:
    received: int = 0
    malformed: int = 0
    oversized: int = 0
    wrong_version: int = 0
    gaps: int = 0
    missing: int = 0
    duplicates: int = 0
    refilled: int = 0


class Receiver:
    """The receiving end: validates every message, tracks each stream's sequence and silence.

    Problems become `warning` envelopes (source "bus") mixed into what `poll` returns,
    so every sink sees them.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        settings: BusSettings | None = None,
        context: zmq.Context | None = None,
        keys: "ServerKeys | None" = None,
    ) -> None:
        self.settings = settings or BusSettings()
        self.endpoint = endpoint
        if keys is None and not is_loopback(endpoint):
            raise InsecureEndpoint(
                f"{endpoint} is reachable from other machines: loopmon only binds it with CurveZMQ keys "
                "(make them with `loopmon keys generate DIR`, then pass --keys DIR)"
            )
        self._context = context or zmq.Context.instance()
        self._socket = self._context.socket(zmq.ROUTER)
        self._socket.setsockopt(zmq.RCVHWM, self.settings.high_water_mark)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._auth = keys.apply(self._socket, self._context) if keys is not None else None
        if endpoint.startswith("ipc://"):
            path = endpoint[len("ipc://") :]
            if path and os.path.exists(path):
                os.unlink(path)  # a stale socket file from a killed server
        self._socket.bind(endpoint)
        self.stream = new_stream_id()
        self.seq = 0
        self.streams: dict[tuple[str, str, str], StreamState] = {}
        self.counters = BusCounters()
        # repo -> the identity of the store that keeps its events, sent with every ack.
        self.store_token: Callable[[str], str] | None = None
        self._touched: set[tuple[str, str, str]] = set()
        self._stored: Callable[[Envelope], bool] | None = None
        self._poller = zmq.Poller()
        self._poller.register(self._socket, zmq.POLLIN)
        # `wake` (from another thread) ends a `poll` at once: a server asked to stop
        # does not sit out its poll's timeout.
        address = f"inproc://loopmon-wake-{new_stream_id()}"
        self._wake_in = self._context.socket(zmq.PAIR)
        self._wake_in.bind(address)
        self._wake_out = self._context.socket(zmq.PAIR)
        self._wake_out.connect(address)
        self._poller.register(self._wake_in, zmq.POLLIN)

    @property
    def bound_endpoint(self) -> str:
        return self._socket.getsockopt_string(zmq.LAST_ENDPOINT)

    def warning(self, repo: str, code: str, message: str, **detail: Any) -> Envelope:
        self.seq += 1
        return Envelope(
            repo=repo, source="bus", stream=self.stream, seq=self.seq, payload=Warning(code=code, message=message, detail=detail)
        )

    def poll(self, timeout_ms: int, max_messages: int = 10_000) -> list[Envelope]:
        """Wait up to `timeout_ms` for traffic, then drain what is there (about `max_messages` envelopes at most:
        a batch message is taken whole)."""
        out: list[Envelope] = []
        ready = self._poller.poll(timeout_ms)
        if not ready:
            return out
        if len(ready) > 1 or ready[0][0] is self._wake_in:
            self._drain_wakes()
        while len(out) < max_messages:
            try:
                frames = self._socket.recv_multipart(zmq.NOBLOCK, copy=True)
            except zmq.Again:
                break
            self._accept(frames, out)
        return out

    def _accept(self, frames: list[bytes], out: list[Envelope]) -> None:
        if len(frames) > 2 and frames[1] == BATCH_FRAME:  # a publisher's batch: one envelope a frame
            for data in frames[2:]:
                self._accept_one(frames[0], data, out)
            return
        if len(frames) != 2:
            self.counters.received += 1
            self.counters.malformed += 1
            sender = frames[0].hex() if frames else "?"
            out.append(self.warning("*", "bus_malformed", f"dropped a message of {len(frames)} frames", sender=sender))
            return
        self._accept_one(frames[0], frames[1], out)

    def _accept_one(self, identity: bytes, data: bytes, out: list[Envelope]) -> None:
        """One envelope (counted as one message received), checked, parsed and tracked."""
        self.counters.received += 1
        if len(data) > self.settings.max_message_bytes:
            self.counters.oversized += 1
            out.append(
                self.warning(
                    "*",
                    "bus_oversized",
                    f"dropped a {len(data)}-byte message (limit {self.settings.max_message_bytes})",
                    sender=identity.hex(),
                    size=len(data),
                )
            )
            return
        try:
            env = Envelope.from_wire(data)
        except ValidationError as err:
            out.append(self._invalid(data, err, identity.hex()))
            return
        if env.v != SCHEMA_VERSION:
            self.counters.wrong_version += 1
            out.append(self._wrong_version(env.v, identity.hex()))
            return
        warnings, fresh = self._track(env, identity)
        out.extend(warnings)
        if fresh:
            out.append(env)

    def _invalid(self, data: bytes, err: ValidationError, sender: str) -> Envelope:
        version = None
        try:
            version = json.loads(data).get("v")
        except Exception:
            pass
        if version is not None and version != SCHEMA_VERSION:
            self.counters.wrong_version += 1
            return self._wrong_version(version, sender)
        self.counters.malformed += 1
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        return self.warning(
            "*", "bus_malformed", f"dropped a malformed message ({where}: {first['msg']})", sender=sender, size=len(data)
        )

    def _wrong_version(self, version: Any, sender: str) -> Envelope:
        return self.warning(
            "*",
            "bus_wrong_version",
            f"dropped a message of schema version {version!r}; this loopmon reads version {SCHEMA_VERSION}",
            sender=sender,
        )

    def _track(self, env: Envelope, identity: bytes) -> tuple[list[Envelope], bool]:
        """Sequence bookkeeping: (warnings, whether the event is new)."""
        key = (env.repo, env.source, env.stream)
        state = self.streams.get(key)
        if state is None:
            state = self.streams[key] = StreamState(env.repo, env.source, env.stream)
        state.last_heard = time.monotonic()
        state.received += 1
        state.identity = identity
        self._touched.add(key)
        warnings: list[Envelope] = []
        if env.seq <= state.last_seq:
            if env.seq in state.holes:  # a resend fills a gap
                self._sending_again(state, env, warnings)
                state.holes.discard(env.seq)
                self.counters.refilled += 1
                if not state.holes:
                    warnings.append(
                        self.warning(
                            env.repo,
                            "sequence_gap_filled",
                            f"the missing events from collector {env.source} arrived after all",
                            source=env.source,
                            stream=env.stream,
                        )
                    )
                return warnings, True
            if env.seq <= state.resumed_through and self._stored is not None and not isinstance(env.payload, Heartbeat):
                if not self._stored(env):  # a hole the last run left in the store
                    self._sending_again(state, env, warnings)
                    self.counters.refilled += 1
                    return warnings, True
            # Already stored: a resend after a restart, or of what was not acknowledged yet
            # (a stream that said goodbye resends its last events while it waits): nothing new.
            self.counters.duplicates += 1
            return warnings, False
        self._sending_again(state, env, warnings)
        expected = state.last_seq + 1
        if env.seq > expected:
            lost = env.seq - expected
            state.holes.update(range(expected, env.seq))
            state.missing += lost
            self.counters.gaps += 1
            self.counters.missing += lost
            warnings.append(
                self.warning(
                    env.repo,
                    "sequence_gap",
                    f"{lost} event(s) from collector {env.source} have not arrived (seq {expected}..{env.seq - 1})",
                    source=env.source,
                    stream=env.stream,
                    first=expected,
                    last=env.seq - 1,
                )
            )
        state.last_seq = env.seq
        if isinstance(env.payload, Heartbeat):
            if env.payload.final:
                state.silent_reported = True  # ended cleanly: never report it silent
            if env.payload.dropped > state.sender_dropped:
                newly = env.payload.dropped - state.sender_dropped
                state.sender_dropped = env.payload.dropped
                warnings.append(
                    self.warning(
                        env.repo,
                        "sender_dropped",
                        f"collector {env.source} lost {newly} event(s): its spool overflowed while the receiver was away",
                        source=env.source,
                        stream=env.stream,
                        dropped=env.payload.dropped,
                    )
                )
        return warnings, True

    def _sending_again(self, state: StreamState, env: Envelope, warnings: list[Envelope]) -> None:
        """A stream reported silent (or resumed, or stopped cleanly) sends something new."""
        if state.silent_reported:
            state.silent_reported = False
            warnings.append(
                self.warning(env.repo, "collector_back", f"collector {env.source} is sending again", source=env.source, stream=env.stream)
            )

    def resume(
        self, positions: dict[tuple[str, str, str], int], stored: Callable[[Envelope], bool] | None = None
    ) -> None:
        """Start from what the store already holds, so resent events are recognised.

        `positions` are each stream's highest stored seq. A run killed while a gap was
        being refilled stored events past the gap's holes; with `stored` (whether the
        store holds an event) a resend at or below the position is taken unless stored.
        """
        self._stored = stored
        for (repo, source, stream), seq in positions.items():
            state = self.streams.setdefault((repo, source, stream), StreamState(repo, source, stream))
            state.last_seq = max(state.last_seq, seq)
            state.resumed_through = max(state.resumed_through, seq)
            state.silent_reported = True  # not heard from in this run yet: not "silent" either

    def acknowledge(self) -> None:
        """Tell each sender heard from since the last call how far its events are stored.

        Call only when everything received so far has been written.
        """
        for key in self._touched:
            state = self.streams.get(key)
            if state is None or state.identity is None:
                continue
            frames = [state.identity, b"ack", str(state.stored_through).encode()]
            token = self.store_token(state.repo) if self.store_token is not None else ""
            if token:
                frames.append(token.encode("utf-8"))
            try:
                self._socket.send_multipart(frames, zmq.NOBLOCK)
            except zmq.ZMQError:
                pass  # the sender is gone; it resends on its own when it comes back
        self._touched.clear()

    def check_silence(self) -> list[Envelope]:
        """Warn once about each stream not heard from for `silence_seconds`."""
        now = time.monotonic()
        out = []
        for state in self.streams.values():
            if not state.silent_reported and now - state.last_heard > self.settings.silence_seconds:
                state.silent_reported = True
                out.append(
                    self.warning(
                        state.repo,
                        "collector_silent",
                        f"collector {state.source} has sent nothing for {now - state.last_heard:.0f} s",
                        source=state.source,
                        stream=state.stream,
                    )
                )
        return out

    def forget(self, repo: str, source: str, stream: str) -> None:
        """A stream that ended cleanly is no longer expected to speak."""
        self.streams.pop((repo, source, stream), None)

    def position(self, repo: str, source: str, stream: str) -> int:
        state = self.streams.get((repo, source, stream))
        return state.last_seq if state else 0

    def wake(self) -> None:
        """End the current (or next) `poll` now; safe from any one other thread."""
        try:
            self._wake_out.send(b"", zmq.NOBLOCK)
        except zmq.ZMQError:
            pass  # already awake, or closed

    def _drain_wakes(self) -> None:
        while True:
            try:
                self._wake_in.recv(zmq.NOBLOCK)
            except zmq.Again:
                return

    def close(self) -> None:
        self._socket.close()
        self._wake_out.close(0)
        self._wake_in.close(0)
        if self._auth is not None:
            self._auth.stop()
