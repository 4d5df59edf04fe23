"""Taskiq on Redis (taskiq-redis) and on NATS JetStream (taskiq-nats); runs in
benchmarks/.venv-peers."""

from __future__ import annotations

from typing import Any

from taskiq import AsyncBroker
from taskiq.api import run_receiver_task

from benchmarks.marks import job_started
from benchmarks.systems.base import System


async def noop() -> None:
    """The benchmark's job: nothing but the start mark."""
    job_started()


class Taskiq(System):
    """A taskiq broker with a result backend, both with their defaults; names come from the
    run's namespace."""

    completion = "`await task.wait_result(check_interval=0.001)` (taskiq polls the result backend)"

    def __init__(self, ctx: Any) -> None:
        super().__init__(ctx)
        self.broker = self.make_broker()
        self.task = self.broker.task(task_name="noop")(noop)

    def make_broker(self) -> AsyncBroker:
        raise NotImplementedError

    async def open(self) -> None:
        # The producer's start-up declares the stream/consumer, so jobs queued before the
        # worker starts are delivered to it.
        await self.broker.startup()

    async def close(self) -> None:
        await self.broker.shutdown()

    async def enqueue(self) -> Any:
        return await self.task.kiq()

    async def wait(self, handle: Any) -> None:
        result = await handle.wait_result(check_interval=0.001, timeout=60)
        if result.is_err:
            raise RuntimeError(f"taskiq job failed: {result.error}")

    async def run_worker(self, concurrency: int) -> None:
        self.broker.is_worker_process = True
        await self.broker.startup()
        try:
            await run_receiver_task(self.broker, max_async_tasks=concurrency)
        finally:
            await self.broker.shutdown()


class TaskiqRedis(Taskiq):
    """``RedisStreamBroker`` (acknowledged deliveries) with ``RedisAsyncResultBackend``."""

    redis_patterns = ("{ns}", "{ns}:*", "autoclaim:{ns}:*")

    def make_broker(self) -> AsyncBroker:
        from taskiq_redis import RedisAsyncResultBackend, RedisStreamBroker

        ns = self.ctx.ns
        results: Any = RedisAsyncResultBackend(redis_url=self.ctx.redis, prefix_str=ns)
        broker = RedisStreamBroker(url=self.ctx.redis, queue_name=ns, consumer_group_name=ns)
        return broker.with_result_backend(results)

    async def outstanding(self, handles: list[Any]) -> int:
        return len(handles) - await self.completed(handles)

    async def completed(self, handles: list[Any]) -> int:
        from redis.asyncio import Redis

        backend: Any = self.broker.result_backend
        keys = [f"{self.ctx.ns}:{h.task_id}" for h in handles]
        done = 0
        async with Redis(connection_pool=backend.redis_pool) as redis:
            for i in range(0, len(keys), 1000):
                done += int(await redis.exists(*keys[i:i + 1000]))
        return done


class TaskiqNats(Taskiq):
    """``PullBasedJetStreamBroker`` with ``NATSObjectStoreResultBackend``. taskiq acknowledges a
    message after its result is saved, so the consumer's acknowledged count is the number of
    completed jobs."""

    def make_broker(self) -> AsyncBroker:
        from taskiq_nats import NATSObjectStoreResultBackend, PullBasedJetStreamBroker

        ns = self.ctx.ns
        results: Any = NATSObjectStoreResultBackend(self.ctx.nats, bucket_name=f"{ns}_results")
        broker = PullBasedJetStreamBroker(self.ctx.nats, subject=f"{ns}.tasks",
                                          stream_name=f"{ns}_tasks", durable=f"{ns}_durable")
        return broker.with_result_backend(results)

    async def _consumer(self) -> Any:
        broker: Any = self.broker
        return await broker.js.consumer_info(f"{self.ctx.ns}_tasks", f"{self.ctx.ns}_durable")

    async def outstanding(self, handles: list[Any]) -> int:
        info = await self._consumer()
        return int(info.num_pending or 0) + int(info.num_ack_pending or 0)

    async def completed(self, handles: list[Any]) -> int:
        info = await self._consumer()
        return int(info.ack_floor.stream_seq or 0) if info.ack_floor else 0
