"""Events per second through SqliteSink.write, in the runtime's batch size.

Run: .venv/bin/python bench/store_write.py [N]
"""

from __future__ import annotations

import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from monitor.config import StoreSettings
from monitor.events import Commit, Envelope, FileChanged, FileStat
from sinks.sqlite import SqliteSink


def measure(sink: SqliteSink, envs: list[Envelope], batch: int) -> float:
    start = time.perf_counter()
    for i in range(0, len(envs), batch):
        sink.write(envs[i : i + batch])
    return len(envs) / (time.perf_counter() - start)


def main(n: int = 100_000) -> None:
    batch = StoreSettings().batch_size
    now = datetime.now(timezone.utc)
    files = [Envelope(repo="r", source="files", stream="s1", seq=i,
                      payload=FileChanged(path=f"src/f{i}.py", change="modified", size=10, path_class="production"))
             for i in range(n)]
    commits = [Envelope(repo="r", source="commits", stream="s2", seq=i,
                        payload=Commit(sha=f"{i:040x}", authored_at=now, committed_at=now,
                                       message=f"RALPH AUTO: step {i} — tests: not run",
                                       files=[FileStat(path=f"src/a{j}.py", insertions=3, deletions=1,
                                                       path_class="production") for j in range(3)]))
               for i in range(n // 10)]
    with tempfile.TemporaryDirectory() as tmp:
        sink = SqliteSink(Path(tmp) / "bench.db")
        print(f"file_changed events:  {measure(sink, files, batch):>9,.0f}/s")
        print(f"same events replayed: {measure(sink, files, batch):>9,.0f}/s")
        print(f"commits with 3 files: {measure(sink, commits, batch):>9,.0f}/s")
        sink.close()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)
