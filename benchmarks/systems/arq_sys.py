"""arq on Redis (runs in benchmarks/.venv-peers)."""

from __future__ import annotations

import uuid
from typing import Any

from arq import create_pool
from arq.connections import ArqRedis, RedisSettings
from arq.constants import result_key_prefix
from arq.worker import Worker

from benchmarks.marks import job_started
from benchmarks.systems.base import System


async def noop(ctx: dict[str, Any]) -> None:
    """The benchmark's job: nothing but the start mark."""
    job_started()


class Arq(System):
    """arq with its defaults (worker ``poll_delay`` 0.5 s); the queue is the run's namespace and
    job ids carry it, so cleanup finds every key."""

    completion = "`await job.result(poll_delay=0.001)` (arq polls for results)"
    redis_patterns = ("{ns}", "{ns}:*", "arq:*:{ns}-*")

    def __init__(self, ctx: Any) -> None:
        super().__init__(ctx)
        self.pool: ArqRedis | None = None

    def _settings(self) -> RedisSettings:
        return RedisSettings.from_dsn(self.ctx.redis)

    async def open(self) -> None:
        self.pool = await create_pool(self._settings(), default_queue_name=self.ctx.ns)

    async def close(self) -> None:
        assert self.pool is not None
        await self.pool.aclose()

    async def enqueue(self) -> Any:
        assert self.pool is not None
        job = await self.pool.enqueue_job("noop", _job_id=f"{self.ctx.ns}-{uuid.uuid4().hex}")
        assert job is not None
        return job

    async def wait(self, handle: Any) -> None:
        await handle.result(timeout=60, poll_delay=0.001)

    async def outstanding(self, handles: list[Any]) -> int:
        assert self.pool is not None
        return int(await self.pool.zcard(self.ctx.ns))

    async def completed(self, handles: list[Any]) -> int:
        assert self.pool is not None
        keys = [result_key_prefix + job.job_id for job in handles]
        done = 0
        for i in range(0, len(keys), 1000):
            done += int(await self.pool.exists(*keys[i:i + 1000]))
        return done

    async def run_worker(self, concurrency: int) -> None:
        worker = Worker(functions=[noop], redis_settings=self._settings(), queue_name=self.ctx.ns,
                        max_jobs=concurrency, handle_signals=False)
        try:
            await worker.async_run()
        finally:
            await worker.close()
