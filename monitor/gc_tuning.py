"""Garbage-collector settings for a loopmon process (docs/benchmarks.md, "throughput").

Every event becomes a handful of Python objects that live until their batch is
stored. With the default thresholds the cyclic collector runs every 700 new
container objects, and each young collection walks everything allocated since:
profiles of the receiving half show it taking more than half the time spent
reading messages. Nothing in loopmon relies on prompt cycle collection (its
objects are freed by reference counting), so collections are made rarer.
"""

from __future__ import annotations

import gc

# New objects between young collections (default 700): a few batches' worth.
YOUNG_THRESHOLD = 50_000
OLDER_THRESHOLDS = (20, 10)


def tune_for_streaming() -> None:
    """Collect cycles less often: a process that streams events calls this once, at start."""
    gc.set_threshold(YOUNG_THRESHOLD, *OLDER_THRESHOLDS)
