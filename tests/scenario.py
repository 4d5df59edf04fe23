"""One multi-process scenario: a queue in a fresh namespace, its ledger, the worker and
producer processes started against it (all killed and the namespace dropped at the end), and
the figures it measured.

Figures go to the JSON-lines file named by ``OMNIQ_RELIABILITY_OUT`` when it is set
(``scripts/reliability.py`` sets it and turns the lines into docs/reliability.md's table).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from omniq import BackendError, connect
from omniq.queue.base import BaseTaskQueue
from tests import ledger, processes
from tests.conftest import backend_url, new_namespace, require_server

DURABLE = ["file", "sqlite", "postgres", "redis", "nats"]


def record_figures(check: str, backend: str, **figures: Any) -> None:
    """Append this run's figures to $OMNIQ_RELIABILITY_OUT (if set)."""
    out = os.environ.get("OMNIQ_RELIABILITY_OUT")
    if out:
        with open(out, "a") as f:
            f.write(json.dumps({"check": check, "backend": backend, **figures}) + "\n")


def record_run(check: str, backend: str, report: ledger.Report, waits: list[float],
               **figures: Any) -> None:
    """A faulty run's figures: what its ledger counted, and the longest and mean of the waits
    it measured (kill to orphan running again, server back to work resuming)."""
    record_figures(
        check, backend, lost=len(report.lost), duplicates=report.duplicates,
        overlaps=len(report.overlaps), wait_max=round(max(waits), 2),
        wait_mean=round(sum(waits) / len(waits), 2), **figures,
    )


class Scenario:
    """Everything one scenario touches."""

    def __init__(self, backend: str, tmp_path: Path, base_url: str | None,
                 options: dict[str, Any]) -> None:
        self.backend = backend
        self.tmp = tmp_path
        self.namespace = new_namespace()
        if base_url is None:
            require_server(backend)
            url = backend_url(backend, tmp_path, self.namespace)
        else:
            url = f"{base_url}?namespace={self.namespace}"
        self.url = "&".join([url, *(f"{k}={v}" for k, v in options.items())])
        self.queue: BaseTaskQueue = connect(self.url)
        self.book = ledger.Book(tmp_path / "ledger")
        self.procs: list[processes.Process] = []
        self.producers: list[processes.Process] = []

    def worker(self, *args: str) -> processes.Process:
        """Start an ``omniq worker`` on this run's queue."""
        log = self.tmp / f"worker-{len(self.procs)}.log"
        proc = processes.worker(self.url, log, *args)
        self.procs.append(proc)
        return proc

    def producer(self, prefix: str, count: int, *args: str) -> processes.Process:
        """Start a producer process enqueuing ``count`` ledger tasks."""
        log = self.tmp / f"producer-{len(self.procs)}.log"
        proc = processes.producer(self.url, self.book.path, log, prefix, count, *args)
        self.procs.append(proc)
        self.producers.append(proc)
        return proc

    def kill(self, proc: processes.Process) -> float:
        """SIGKILL a process and note it in the ledger; the time of death (monotonic)."""
        proc.kill()
        ledger.append(self.book.path, "killed", "-", pid=proc.pid)
        return time.monotonic()

    async def until(self, predicate: Callable[[], object], timeout: float, what: str,
                    interval: float = 0.1) -> None:
        """Poll ``predicate`` (after refreshing the ledger) until true; fail naming ``what``."""
        deadline = time.monotonic() + timeout
        while not (self.book.refresh() and predicate()):
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: not within {timeout}s\n{self.logs()}")
            await asyncio.sleep(interval)

    def logs(self, tail: int = 1500) -> str:
        """The end of every process's output, for failure messages."""
        return "\n".join(f"--- {p.log.name} (pid {p.pid}):\n{p.output()[-tail:]}"
                         for p in self.procs)

    async def stop_all(self, timeout: float = 60) -> None:
        """Wait for the producers to finish, then SIGTERM every live worker; each process
        must exit 0."""
        codes = await asyncio.gather(*(asyncio.to_thread(p.wait, timeout) for p in self.producers))
        assert codes == [0] * len(codes), f"producer exit codes {codes}\n{self.logs()}"
        live = [p for p in self.procs if p.alive]
        codes = await asyncio.gather(*(asyncio.to_thread(p.stop) for p in live))
        assert codes == [0] * len(live), f"exit codes {codes}\n{self.logs()}"

    async def settled(self, task_ids: list[str], timeout: float = 30) -> dict[str, Any]:
        """The stored tasks, read (again while the backend is unavailable) until found."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return await self.queue.get_tasks(task_ids)
            except BackendError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)


@asynccontextmanager
async def scenario(
    backend: str, tmp_path: Path, *, base_url: str | None = None, **options: Any
) -> AsyncIterator[Scenario]:
    """A Scenario whose processes are killed and whose namespace is dropped afterwards."""
    run = Scenario(backend, tmp_path, base_url, options)
    async with run.queue:
        try:
            yield run
        finally:
            for proc in run.procs:
                if proc.alive:
                    proc.kill()
            await run.queue.drop_namespace()
