"""Procrastinate and PgQueuer on PostgreSQL (run in benchmarks/.venv-peers). Each run has a
fresh database, so both use their default table names."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from benchmarks.marks import job_started
from benchmarks.systems.base import System


async def noop() -> None:
    """The benchmark's job (Procrastinate): nothing but the start mark."""
    job_started()


async def noop_job(job: Any) -> None:
    """The benchmark's job (PgQueuer): nothing but the start mark."""
    job_started()


class Procrastinate(System):
    """Procrastinate with its defaults (``PsycopgConnector``, LISTEN/NOTIFY wake-ups)."""

    completion = ("polls `job_manager.get_job_status_async(id)` every 1 ms "
                  "(Procrastinate has no result API)")

    def __init__(self, ctx: Any) -> None:
        super().__init__(ctx)
        from procrastinate import App, PsycopgConnector

        self.app = App(connector=PsycopgConnector(conninfo=ctx.postgres))
        self.task = self.app.task(name="noop")(noop)

    async def open(self) -> None:
        await self.app.open_async()
        if not await self._installed():
            await self.app.schema_manager.apply_schema_async()

    async def _installed(self) -> bool:
        row = await self.app.connector.execute_query_one_async(
            "SELECT to_regclass('procrastinate_jobs') IS NOT NULL AS ok")
        return bool(row["ok"])

    async def close(self) -> None:
        await self.app.close_async()

    async def enqueue(self) -> int:
        return int(await self.task.defer_async())

    async def enqueue_batch(self, n: int) -> list[int]:
        return list(await self.task.batch_defer_async(*({} for _ in range(n))))

    async def wait(self, handle: int) -> None:
        from procrastinate.jobs import Status

        while True:
            status = await self.app.job_manager.get_job_status_async(handle)
            if status == Status.SUCCEEDED:
                return
            if status in (Status.FAILED, Status.CANCELLED, Status.ABORTED):
                raise RuntimeError(f"Procrastinate job ended {status}")
            await asyncio.sleep(0.001)

    async def _count(self, where: str) -> int:
        row = await self.app.connector.execute_query_one_async(
            f"SELECT count(*) AS n FROM procrastinate_jobs WHERE {where}")
        return int(row["n"])

    async def outstanding(self, handles: list[Any]) -> int:
        return await self._count("status IN ('todo', 'doing')")

    async def completed(self, handles: list[Any]) -> int:
        return await self._count("status = 'succeeded'")

    async def run_worker(self, concurrency: int) -> None:
        async with self.app.open_async():
            await self.app.run_worker_async(concurrency=concurrency,
                                            install_signal_handlers=False)


class PgQueuer(System):
    """PgQueuer with its defaults (one asyncpg connection, LISTEN/NOTIFY). It refuses a
    worker cap below twice the batch size, so the batch is ``min(10, concurrency // 2)``."""

    completion = "`CompletionWatcher(debounce=0).wait_for(id)` (LISTEN/NOTIFY)"

    def __init__(self, ctx: Any) -> None:
        super().__init__(ctx)
        self.conn: Any = None
        self.driver: Any = None
        self.queries: Any = None
        self.watcher: Any = None

    async def open(self) -> None:
        import asyncpg
        from pgqueuer.db import AsyncpgDriver
        from pgqueuer.queries import Queries

        self.conn = await asyncpg.connect(self.ctx.postgres)
        self.driver = AsyncpgDriver(self.conn)
        self.queries = Queries(self.driver)
        if not await self.queries.schema_is_installed():
            await self.queries.install()

    async def close(self) -> None:
        if self.watcher is not None:
            await self.watcher.__aexit__(None, None, None)
        await self.conn.close()

    async def enqueue(self) -> Any:
        return (await self.queries.enqueue("noop", None))[0]

    async def enqueue_batch(self, n: int) -> list[Any]:
        return list(await self.queries.enqueue(["noop"] * n, [None] * n, [0] * n))

    async def wait(self, handle: Any) -> None:
        if self.watcher is None:  # one watcher (one LISTEN) serves every wait
            from pgqueuer.core.completion import CompletionWatcher

            self.watcher = CompletionWatcher(self.driver, queries=self.queries,
                                             debounce=timedelta(0))
            await self.watcher.__aenter__()
        status = await asyncio.wait_for(self.watcher.wait_for(handle), 60)
        if status != "successful":
            raise RuntimeError(f"PgQueuer job ended {status}")

    async def _count(self, sql: str) -> int:
        rows = await self.driver.fetch(sql)
        return int(rows[0]["n"])

    async def outstanding(self, handles: list[Any]) -> int:
        return await self._count("SELECT count(*) AS n FROM pgqueuer")

    async def completed(self, handles: list[Any]) -> int:
        return await self._count(
            "SELECT count(*) AS n FROM pgqueuer_log WHERE status = 'successful'")

    async def run_worker(self, concurrency: int) -> None:
        import asyncpg
        from pgqueuer import PgQueuer as App
        from pgqueuer.db import AsyncpgDriver

        app = App(AsyncpgDriver(await asyncpg.connect(self.ctx.postgres)))
        app.entrypoint("noop")(noop_job)
        await app.run(batch_size=max(1, min(10, concurrency // 2)),
                      max_concurrent_tasks=concurrency)
