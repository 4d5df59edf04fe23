"""OmniQ on each of its six backends (runs in the project's .venv)."""

from __future__ import annotations

import os
from typing import Any, ClassVar

import omniq
from benchmarks.marks import job_started
from benchmarks.systems.base import System
from omniq import Task, WorkerPool
from omniq.queue.base import BaseTaskQueue


@omniq.task
async def noop() -> None:
    """The benchmark's job: nothing but the start mark."""
    job_started()


class OmniQ(System):
    """OmniQ on one backend; subclasses say which."""

    backend: ClassVar[str]
    completion = "`await queue.get_result(id)`"

    def __init__(self, ctx: Any) -> None:
        super().__init__(ctx)
        self.queue: BaseTaskQueue | None = None

    def make_queue(self) -> BaseTaskQueue:
        """A new, unconnected queue in this run's namespace."""
        raise NotImplementedError

    @property
    def q(self) -> BaseTaskQueue:
        if self.queue is None:
            self.queue = self.make_queue()
        return self.queue

    async def open(self) -> None:
        await self.q.connect()

    async def close(self) -> None:
        await self.q.close()

    async def enqueue(self) -> str:
        return await self.q.enqueue(Task(func=noop))

    async def enqueue_batch(self, n: int) -> list[str]:
        return await self.q.enqueue_many([Task(func=noop) for _ in range(n)])

    async def wait(self, handle: str) -> None:
        await self.q.get_result(handle, timeout=60)

    async def outstanding(self, handles: list[Any]) -> int:
        stats = await self.q.stats("default")
        return stats.total - stats.completed - stats.failed - stats.cancelled - stats.expired

    async def completed(self, handles: list[Any]) -> int:
        return (await self.q.stats("default")).completed

    async def run_worker(self, concurrency: int) -> None:
        pool = WorkerPool(self.q, concurrency=concurrency, imports=[__name__],
                          handle_signals=False)
        try:
            await pool.run()
        finally:
            if not self.in_process:
                await self.q.close()

    async def cleanup(self) -> None:
        queue = self.make_queue()
        async with queue:
            await queue.drop_namespace()


class Memory(OmniQ):
    in_process = True

    def make_queue(self) -> BaseTaskQueue:
        return omniq.MemoryTaskQueue(namespace=self.ctx.ns)

    async def cleanup(self) -> None:
        await self.q.drop_namespace()


class SQLite(OmniQ):
    def make_queue(self) -> BaseTaskQueue:
        return omniq.SQLiteTaskQueue(os.path.join(self.ctx.workdir, "omniq.db"),
                                     namespace=self.ctx.ns)


class File(OmniQ):
    def make_queue(self) -> BaseTaskQueue:
        return omniq.FileTaskQueue(os.path.join(self.ctx.workdir, "files"), namespace=self.ctx.ns)


class PostgreSQL(OmniQ):
    def make_queue(self) -> BaseTaskQueue:
        return omniq.PostgreSQLTaskQueue(self.ctx.postgres, namespace=self.ctx.ns)


class Redis(OmniQ):
    def make_queue(self) -> BaseTaskQueue:
        return omniq.RedisTaskQueue(url=self.ctx.redis, namespace=self.ctx.ns)


class NATS(OmniQ):
    def make_queue(self) -> BaseTaskQueue:
        return omniq.NATSTaskQueue([self.ctx.nats], namespace=self.ctx.ns)


