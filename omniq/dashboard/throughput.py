"""Recent throughput per queue, measured by the dashboard from successive ``stats()`` samples.

The queue API keeps counts, not a history, so the dashboard samples the counts (every few
seconds, and whenever the overview is rendered) and turns the growth of the ``completed`` and
``failed`` counts into rates. Counts that shrink (a purge, a requeued failure) add nothing.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping

import msgspec

from omniq.queue.base import BaseTaskQueue, QueueStats

log = logging.getLogger("omniq.dashboard")


class Rate(msgspec.Struct, frozen=True):
    """Tasks per minute over a span, and the per-bucket counts for a sparkline."""

    completed: float
    failed: float
    series: list[int]


class Throughput:
    """A rolling window of ``(time, {queue: (completed, failed)})`` samples."""

    def __init__(
        self,
        window: float = 600.0,
        buckets: int = 30,
        min_gap: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.window, self.buckets, self.min_gap = window, buckets, min_gap
        self._clock = clock
        self._samples: deque[tuple[float, dict[str, tuple[int, int]]]] = deque()

    def record(self, counts: Mapping[str, QueueStats]) -> None:
        """Add a sample (ignored if the last one is under ``min_gap`` seconds old)."""
        now = self._clock()
        if self._samples and now - self._samples[-1][0] < self.min_gap:
            return
        self._samples.append((now, {q: (s.completed, s.failed) for q, s in counts.items()}))
        while self._samples and self._samples[0][0] < now - self.window:
            self._samples.popleft()

    def rate(self, queue_name: str, span: float = 60.0) -> Rate | None:
        """Completions and failures per minute over the last ``span`` seconds, or None until
        two samples at least a second apart cover some of it."""
        now = self._clock()
        recent = [s for s in self._samples if s[0] >= now - span]
        if len(recent) < 2 or recent[-1][0] - recent[0][0] < 1.0:
            return None
        done = failed = 0
        for (_, before), (_, after) in itertools.pairwise(recent):
            d, f = self._growth(queue_name, before, after)
            done, failed = done + d, failed + f
        minutes = (recent[-1][0] - recent[0][0]) / 60.0
        return Rate(done / minutes, failed / minutes, self.series(queue_name))

    def series(self, queue_name: str) -> list[int]:
        """Completions per bucket, oldest first, over the time the samples cover (at most
        the window): one bucket per sampling step at most, so none is empty by design."""
        if len(self._samples) < 2:
            return []
        now = self._clock()
        buckets = min(self.buckets, len(self._samples) - 1)
        width = max(now - self._samples[0][0], 1e-9) / buckets
        counts = [0] * buckets
        for (_, before), (at, after) in itertools.pairwise(self._samples):
            index = min(buckets - 1, max(0, buckets - 1 - int((now - at) // width)))
            counts[index] += self._growth(queue_name, before, after)[0]
        return counts

    @staticmethod
    def _growth(
        queue_name: str, before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]
    ) -> tuple[int, int]:
        b, a = before.get(queue_name, (0, 0)), after.get(queue_name, (0, 0))
        return max(0, a[0] - b[0]), max(0, a[1] - b[1])


async def all_stats(queue: BaseTaskQueue) -> dict[str, QueueStats]:
    """``stats()`` of every queue ``queue_names()`` reports."""
    names = await queue.queue_names()
    found = await asyncio.gather(*(queue.stats(name) for name in names))
    return dict(zip(names, found, strict=True))


async def sample_forever(queue: BaseTaskQueue, throughput: Throughput, interval: float) -> None:
    """Record a sample every ``interval`` seconds until cancelled; a failing backend is
    logged and tried again at the next interval."""
    while True:
        try:
            throughput.record(await all_stats(queue))
        except Exception as exc:  # the pages show backend trouble; sampling goes on
            log.warning("throughput sample failed: %s", exc)
        await asyncio.sleep(interval)
