"""Telling a person about an alert: a configured command, and a desktop notification.

`settings.alerts.command` (an argument list, never a shell line) runs once per
alert with the alert as JSON on stdin and a timeout; `notify-send` runs where it
exists and `settings.alerts.desktop_notify` is on. Both run on a worker thread so
the scorer's hot path never waits for them. Text from the watched repo goes only
into stdin and argument values, with the markup notify-send understands escaped.
"""

from __future__ import annotations

import json
import queue
import shutil
import subprocess
import threading
from dataclasses import dataclass
from typing import Callable

from monitor.config import AlertSettings
from monitor.events import Alert

_URGENCY = {"info": "low", "notice": "low", "warning": "normal", "critical": "critical"}


@dataclass
class Delivery:
    """The outcome of one command run for one alert."""

    key: str
    argv: list[str]
    returncode: int | None  # None: it did not finish (timeout) or could not start
    error: str | None = None


def alert_json(repo: str, alert: Alert) -> bytes:
    """What the command reads on stdin: the alert's fields plus the repo id."""
    return json.dumps({"repo": repo, **alert.model_dump(mode="json")}, ensure_ascii=False).encode("utf-8")


def escape_markup(text: str) -> str:
    """notify-send bodies may be read as markup: keep repo text literal."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class Notifier:
    """Runs the alert command and desktop notification for each alert, off the caller's thread."""

    def __init__(
        self,
        settings: AlertSettings,
        *,
        on_error: Callable[[str], None] | None = None,
        notify_send: str | None = None,
    ) -> None:
        self.settings = settings
        self.on_error = on_error or (lambda message: None)
        self.notify_send = notify_send if notify_send is not None else (shutil.which("notify-send") if settings.desktop_notify else None)
        self.deliveries: list[Delivery] = []
        self._queue: queue.Queue[tuple[str, Alert] | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return bool(self.settings.command) or bool(self.settings.desktop_notify and self.notify_send)

    def notify(self, repo: str, alert: Alert) -> None:
        """Queue an alert; returns at once."""
        if not self.enabled:
            return
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="loopmon-notify", daemon=True)
                self._thread.start()
        self._queue.put((repo, alert))

    def close(self, timeout: float | None = None) -> None:
        """Deliver what is queued, then stop the worker."""
        with self._lock:
            thread = self._thread
            self._thread = None
        if thread is not None:
            self._queue.put(None)
            thread.join(timeout)

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            try:
                self.deliver(*item)
            except Exception as exc:  # a notifier must never take the monitor down
                self.on_error(f"alert notification failed: {exc!r}")

    def deliver(self, repo: str, alert: Alert) -> list[Delivery]:
        """Run the command and notify-send for one alert, now, on this thread."""
        out: list[Delivery] = []
        if self.settings.command:
            out.append(self._run(list(self.settings.command), alert.key, alert_json(repo, alert)))
        if self.settings.desktop_notify and self.notify_send:
            title = f"loopmon {repo}: {alert.alert} ({alert.severity})"
            argv = [self.notify_send, "--app-name=loopmon", f"--urgency={_URGENCY.get(alert.severity, 'normal')}", "--", title, escape_markup(alert.message)]
            out.append(self._run(argv, alert.key, None))
        with self._lock:
            self.deliveries.extend(out)
        return out

    def _run(self, argv: list[str], key: str, stdin: bytes | None) -> Delivery:
        try:
            proc = subprocess.run(
                argv,
                input=stdin if stdin is not None else b"",
                capture_output=True,
                timeout=self.settings.command_timeout_seconds,
                check=False,
            )
        except subprocess.TimeoutExpired:
            message = f"alert command {argv[0]} timed out after {self.settings.command_timeout_seconds} s"
            self.on_error(message)
            return Delivery(key, argv, None, message)
        except OSError as exc:
            message = f"alert command {argv[0]} could not run: {exc}"
            self.on_error(message)
            return Delivery(key, argv, None, message)
        if proc.returncode != 0:
            tail = proc.stderr.decode("utf-8", errors="replace").strip()[-300:]
            self.on_error(f"alert command {argv[0]} exited {proc.returncode}: {tail}")
            return Delivery(key, argv, proc.returncode, tail or None)
        return Delivery(key, argv, 0)
