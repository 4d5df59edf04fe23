"""Group commit for a worker: outcomes of finished tasks are written together.

The first outcome is written at once; outcomes that arrive while a write is in flight go into
the next write. An idle worker therefore adds no delay, and a busy one writes hundreds of
outcomes per round trip. Nothing is reported early: each outcome's callback runs once the
write that carried it is stored.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

from omniq.exceptions import BackendError, OmniQError
from omniq.models.task import Task
from omniq.queue.base import BaseTaskQueue, Outcome

log = logging.getLogger("omniq.worker")

#: Most outcomes written in one batch.
MAX_BATCH = 500
#: Longest wait between retries while the backend is down (work resumes within this of its
#: return).
MAX_BACKOFF = 2.0

#: Called with the task's new state, the error that stopped the write (``LeaseLostError``,
#: ``TaskNotFoundError``, ...), or the ``BackendError`` of a backend that stayed unavailable.
Recorded = Callable[[Task | OmniQError], None]


def cancelling() -> bool:
    """True when the current task was asked to stop. Some drivers report a cancellation that
    reaches them mid-request as a connection error; retrying it would swallow the request."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


class OutcomeWriter:
    """Writes one worker's outcomes through ``queue.report`` in batches.

    A batch the backend refuses (it is down) is retried with backoff for as long as the
    claims' leases could still hold; after that its callbacks get the ``BackendError`` and the
    tasks run again elsewhere once their leases expire (at-least-once).
    """

    def __init__(self, queue: BaseTaskQueue) -> None:
        self.queue = queue
        self._pending: list[tuple[Outcome, Recorded]] = []
        self._writer: asyncio.Task[None] | None = None

    @property
    def busy(self) -> bool:
        """True while outcomes are waiting or being written."""
        return self._writer is not None

    def submit(self, outcome: Outcome, recorded: Recorded) -> None:
        """Queue ``outcome`` for the next write; ``recorded`` is called once it is done."""
        self._pending.append((outcome, recorded))
        if self._writer is None:
            self._writer = asyncio.create_task(self._drain(), name="omniq-outcomes")

    async def flush(self) -> None:
        """Wait until every outcome submitted so far is written (or has failed)."""
        while self._writer is not None:
            await asyncio.wait([self._writer])

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
                outcomes = [outcome for outcome, _ in batch]
                try:
                    states = await self._persist(outcomes)
                except BackendError as exc:
                    states = [exc] * len(batch)
                for (outcome, recorded), state in zip(batch, states, strict=True):
                    try:
                        recorded(state)
                    except Exception:  # a callback's bug must not stop the other outcomes
                        log.exception("after recording task %s", outcome.task.id)
        finally:
            self._writer = None

    async def _persist(self, outcomes: Sequence[Outcome]) -> list[Task | OmniQError]:
        delay = 0.1
        deadline = time.monotonic() + self.queue.lease_timeout
        while True:
            try:
                return await self.queue.report(outcomes)
            except BackendError as exc:
                if cancelling():
                    raise asyncio.CancelledError from exc
                if time.monotonic() > deadline:
                    raise
                log.warning("recording %d outcome(s) failed (%s); retrying in %.1fs",
                            len(outcomes), exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_BACKOFF)
