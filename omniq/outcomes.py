"""Group commit for a worker: outcomes of finished tasks are written together.

The first outcome is written at once; outcomes that arrive while a write is in flight go into
the next write. An idle worker therefore adds no delay, and a busy one writes hundreds of
outcomes per round trip. Nothing is acknowledged early: each runner waits until its own
outcome is stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence

from omniq.exceptions import BackendError, OmniQError
from omniq.models.task import Task
from omniq.queue.base import BaseTaskQueue, Outcome

log = logging.getLogger("omniq.worker")

#: Most outcomes written in one batch.
MAX_BATCH = 500
_MAX_BACKOFF = 5.0


class OutcomeWriter:
    """Writes outcomes for one worker through ``queue.report`` in batches.

    A batch the backend refuses (it is down) is retried with backoff for as long as the
    claims' leases could still hold; after that it fails with ``BackendError`` and the tasks
    run again elsewhere once their leases expire (at-least-once).
    """

    def __init__(self, queue: BaseTaskQueue) -> None:
        self.queue = queue
        self._pending: list[tuple[Outcome, asyncio.Future[Task | OmniQError]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def write(self, outcome: Outcome) -> Task | OmniQError:
        """Store ``outcome``; the task's new state, or the error that stopped the write
        (``LeaseLostError``, ``TaskNotFoundError``, ...). Raises ``BackendError`` when the
        backend stayed unavailable."""
        future: asyncio.Future[Task | OmniQError] = asyncio.get_running_loop().create_future()
        self._pending.append((outcome, future))
        if self._writer is None:
            self._writer = asyncio.create_task(self._drain(), name="omniq-outcomes")
        # Shielded: a runner cancelled while waiting (shutdown) must not drop the write.
        return await asyncio.shield(future)

    async def flush(self) -> None:
        """Wait until every outcome handed over so far is written (or has failed)."""
        while self._writer is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._writer)

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
                try:
                    states = await self._persist([outcome for outcome, _ in batch])
                except Exception as exc:
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (_, future), state in zip(batch, states, strict=True):
                    if not future.done():
                        future.set_result(state)
        finally:
            self._writer = None

    async def _persist(self, outcomes: Sequence[Outcome]) -> list[Task | OmniQError]:
        delay = 0.1
        deadline = time.monotonic() + self.queue.lease_timeout
        while True:
            try:
                return await self.queue.report(outcomes)
            except BackendError as exc:
                if time.monotonic() > deadline:
                    raise
                log.warning("recording %d outcome(s) failed (%s); retrying in %.1fs",
                            len(outcomes), exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, _MAX_BACKOFF)
