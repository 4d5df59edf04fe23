"""SAQ on Redis and on PostgreSQL (runs in benchmarks/.venv-peers)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from saq import Queue, Worker
from saq.job import TERMINAL_STATUSES, Status

from benchmarks.marks import job_started
from benchmarks.systems.base import System


async def noop(ctx: dict[str, Any]) -> None:
    """The benchmark's job: nothing but the start mark."""
    job_started()


class Saq(System):
    """SAQ with its defaults; the queue name is the run's namespace."""

    completion = ("`queue.listen([job.key], ..., poll_interval=0.001)` as "
                  "`job.refresh(until_complete=...)` runs it (Redis: pub/sub; PostgreSQL: polls)")

    def __init__(self, ctx: Any) -> None:
        super().__init__(ctx)
        self.queue: Any = None

    def url(self) -> str:
        raise NotImplementedError

    async def open(self) -> None:
        self.queue = Queue.from_url(self.url(), name=self.ctx.ns)
        await self.queue.connect()

    async def close(self) -> None:
        await self.queue.disconnect()

    async def enqueue(self) -> Any:
        job = await self.queue.enqueue("noop")
        assert job is not None
        return job

    async def wait(self, handle: Any) -> None:
        # What job.refresh(until_complete=) does, with two changes: the listener is registered
        # before the status is read (so a completion in between is not missed) and the
        # PostgreSQL status poll runs every 1 ms instead of 0.5 s.
        listener = asyncio.ensure_future(self.queue.listen(
            [handle.key], lambda _id, status: status in TERMINAL_STATUSES, timeout=60,
            poll_interval=0.001))
        try:
            await asyncio.sleep(0)
            while True:
                await handle.refresh()
                if handle.status in TERMINAL_STATUSES:
                    break
                # Safety net: SAQ subscribes lazily, so its first message can be lost.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(listener), 1.0)
        finally:
            listener.cancel()
        if handle.status != Status.COMPLETE:
            raise RuntimeError(f"SAQ job ended {handle.status}")

    async def outstanding(self, handles: list[Any]) -> int:
        return int(await self.queue.count("incomplete"))

    async def completed(self, handles: list[Any]) -> int:
        done = 0
        for i in range(0, len(handles), 1000):
            jobs = await self.queue.jobs([job.key for job in handles[i:i + 1000]])
            done += sum(1 for job in jobs if job is not None and job.status == Status.COMPLETE)
        return done

    async def run_worker(self, concurrency: int) -> None:
        await self.open()
        worker = Worker(self.queue, functions=[noop], concurrency=concurrency)
        try:
            await worker.start()
        finally:
            await asyncio.shield(worker.stop())


class SaqRedis(Saq):
    redis_patterns = ("saq:{ns}:*", "saq:job:{ns}:*")

    def url(self) -> str:
        return self.ctx.redis


class SaqPostgres(Saq):
    def url(self) -> str:
        return self.ctx.postgres
