"""`--headless`: one JSON line per event on stdout, for pipes, logs and CI."""

from __future__ import annotations

import sys
from typing import IO

from monitor.events import Envelope


class JsonLinesSink:
    """Writes every envelope as its wire JSON, one per line (heartbeats left out unless asked)."""

    def __init__(self, stream: IO[str] | None = None, *, heartbeats: bool = False) -> None:
        self.stream = stream or sys.stdout
        self.heartbeats = heartbeats

    def write(self, batch: list[Envelope]) -> None:
        lines = [env.json_text() for env in batch if self.heartbeats or env.kind != "heartbeat"]
        if lines:
            self.stream.write("\n".join(lines) + "\n")
            self.stream.flush()

    def close(self) -> None:
        try:
            self.stream.flush()
        except (BrokenPipeError, ValueError):
            pass
