"""Throughput measured from successive stats samples."""

from __future__ import annotations

import re

import httpx

from omniq import MemoryTaskQueue, Task, WorkerPool
from omniq.dashboard import create_app
from omniq.dashboard.throughput import Throughput
from omniq.queue.base import QueueStats
from tests.dashboard import tasks
from tests.dashboard.helpers import BASE
from tests.helpers import eventually


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def stats(completed: int, failed: int = 0) -> QueueStats:
    return QueueStats(completed=completed, failed=failed)


def test_rates_per_minute_from_count_growth() -> None:
    clock = Clock()
    meter = Throughput(window=600, buckets=10, clock=clock)
    assert meter.rate("a") is None
    for second, done in ((0, 100), (30, 130), (60, 190)):
        clock.now = second
        meter.record({"a": stats(done, failed=second // 30), "b": stats(5)})
    rate = meter.rate("a")
    assert rate is not None
    assert (rate.completed, rate.failed) == (90.0, 2.0)  # 90 done, 2 failed in one minute
    assert meter.rate("b") == rate.__class__(0.0, 0.0, [0, 0])
    assert rate.series == [30, 60]  # one bucket per sampling step while samples are few


def test_shrinking_counts_add_nothing_and_old_samples_drop_out() -> None:
    clock = Clock()
    meter = Throughput(window=120, buckets=4, clock=clock)
    for second, done in ((0, 50), (10, 60), (20, 0), (30, 12)):  # a purge at 20 s
        clock.now = second
        meter.record({"a": stats(done)})
    rate = meter.rate("a", span=60)
    assert rate is not None and rate.completed == 22 / 30 * 60  # 10 + 0 + 12 over 30 s
    clock.now = 30.5
    meter.record({"a": stats(99)})  # under min_gap: ignored
    assert meter.rate("a", span=60) == rate
    clock.now = 500
    meter.record({"a": stats(12)})
    assert meter.rate("a") is None  # only one sample left in the window


async def test_the_lifespan_samples_and_the_overview_shows_the_rate() -> None:
    async with MemoryTaskQueue() as queue:
        app = create_app(queue, sample_interval=0.05)
        transport = httpx.ASGITransport(app=app)
        async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=transport, base_url=BASE
        ) as http:
            assert "measuring" not in (await http.get("/")).text  # no queue yet
            await queue.enqueue_many([Task(func=tasks.echo, args=(i,)) for i in range(30)])
            await WorkerPool(queue, handle_signals=False).run(burst=True)

            async def rate_shown() -> float:
                page = (await http.get("/")).text
                found = re.search(r"<span>([\d.]+)/min</span>", page)
                return float(found.group(1)) if found else 0.0

            # 30 completions between two samples at least a second apart.
            assert await eventually(rate_shown, timeout=10) >= 30
