"""The worker's claim loop: a full worker waits for a free slot instead of claiming in a loop,
a finished task's slot frees before its outcome is written (and is claimed for first), and an
idle worker claims when work arrives, not when its tasks finish."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from omniq import MemoryTaskQueue, Task, TaskStatus, WorkerPool
from omniq.exceptions import BackendError, OmniQError
from omniq.queue.base import Claim, Outcome

release = asyncio.Event()


async def hold() -> str:
    await release.wait()
    return "held"


async def quick() -> str:
    return "quick"


class CountingQueue(MemoryTaskQueue):
    """A real memory queue that counts claims and can hold outcome writes."""

    def __init__(self) -> None:
        super().__init__()
        self.claims = 0
        self.calls: list[str] = []  # "claim" and "report", in the order they were made
        self.writes_open = asyncio.Event()
        self.writes_open.set()

    async def claim(self, queue_name: str, limit: int, *, worker_id: str | None = None) -> Claim:
        self.claims += 1
        self.calls.append("claim")
        return await super().claim(queue_name, limit, worker_id=worker_id)

    async def report(self, outcomes: Sequence[Outcome]) -> list[Task | OmniQError]:
        self.calls.append("report")
        await self.writes_open.wait()
        return await super().report(outcomes)


async def test_a_full_worker_does_not_spin_on_claims() -> None:
    release.clear()
    async with CountingQueue() as queue:
        # A quick task first: a slot frees once, then the pool is full again.
        await queue.enqueue_many([Task(func=quick), *(Task(func=hold) for _ in range(3))])
        pool = WorkerPool(queue, concurrency=2, handle_signals=False)
        runner = asyncio.create_task(pool.run(burst=True))
        await asyncio.wait_for(_until(lambda: pool.counts["completed"] == 1
                                      and pool.active == 2), 5)
        before = queue.claims
        await asyncio.sleep(0.3)  # the interval being measured, not synchronisation
        assert queue.claims - before <= 1, f"{queue.claims - before} claims while full"
        release.set()
        await asyncio.wait_for(runner, 10)
        assert (await queue.stats()).completed == 4


async def test_a_slot_frees_while_the_outcome_is_written() -> None:
    release.set()
    async with CountingQueue() as queue:
        first, second = Task(func=hold), Task(func=hold)
        await queue.enqueue(first)
        queue.writes_open.clear()  # outcome writes wait
        pool = WorkerPool(queue, concurrency=1, handle_signals=False)
        runner = asyncio.create_task(pool.run(burst=True))
        await asyncio.wait_for(_until(lambda: pool.active == 0 and queue.claims >= 1), 5)
        await queue.enqueue(second)
        # The second task is claimed while the first one's outcome is still unwritten.
        await asyncio.wait_for(_until(lambda: queue._tasks[second.id].attempts == 1), 5)
        stored = await queue.get_tasks([first.id, second.id])
        assert stored[first.id].status is TaskStatus.RUNNING  # its outcome waits
        assert stored[second.id].status is TaskStatus.RUNNING
        assert not runner.done(), "a burst worker waits for its outcomes to be written"
        queue.writes_open.set()
        await asyncio.wait_for(runner, 10)
        assert pool.counts["completed"] == 2
        assert (await queue.stats()).completed == 2


async def test_freed_slots_are_claimed_for_before_the_outcomes_are_written() -> None:
    # The next tasks' claim goes out first, so they run while the outcomes are written (with a
    # server backend the two requests overlap instead of following each other).
    async with CountingQueue() as queue:
        await queue.enqueue_many([Task(func=quick) for _ in range(4)])
        pool = WorkerPool(queue, concurrency=2, handle_signals=False)
        await asyncio.wait_for(pool.run(burst=True), 10)
        assert (await queue.stats()).completed == 4
        assert queue.calls[:3] == ["claim", "claim", "report"], queue.calls


async def test_an_idle_worker_claims_when_work_arrives_not_when_a_task_finishes() -> None:
    async with CountingQueue() as queue:
        pool = WorkerPool(queue, concurrency=4, handle_signals=False, idle_timeout=30)
        runner = asyncio.create_task(pool.run())
        try:
            await asyncio.wait_for(_until(lambda: queue.claims == 1), 5)  # found nothing
            for i in range(5):
                task_id = await queue.enqueue(Task(func=quick))
                assert await queue.get_result(task_id, timeout=5) == "quick"
                await asyncio.wait_for(_until(lambda: not pool._outcomes.busy), 5)
                # One claim at start, then one per arrival: finishing asks for nothing.
                assert queue.claims == i + 2, f"{queue.claims} claims for {i + 1} task(s)"
        finally:
            await pool.stop()
            await asyncio.wait_for(runner, 5)


async def _until(predicate: object) -> None:
    while not predicate():  # type: ignore[operator]
        await asyncio.sleep(0.005)


class RewordingQueue(MemoryTaskQueue):
    """A real memory queue whose next-due lookup is a slow request that reports being cut off
    by a cancellation as a backend failure, as some drivers do."""

    async def next_ready_at(self, queue_names: Sequence[str]) -> float | None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            raise BackendError("connection closed mid-request") from None
        return await super().next_ready_at(queue_names)


async def test_cancelling_run_stops_even_when_a_driver_rewords_it() -> None:
    async with RewordingQueue() as queue:
        pool = WorkerPool(queue, concurrency=2, handle_signals=False, idle_timeout=30)
        runner = asyncio.create_task(pool.run())
        await asyncio.sleep(0.2)  # let it go idle; the interval is not synchronisation
        runner.cancel()
        done, _ = await asyncio.wait([runner], timeout=5)
        assert runner in done and runner.cancelled()


async def test_a_stop_before_run_returns_without_claiming() -> None:
    async with CountingQueue() as queue:
        await queue.enqueue(Task(func=quick))
        pool = WorkerPool(queue, handle_signals=False)
        await pool.stop()
        await asyncio.wait_for(pool.run(), 5)
        assert queue.claims == 0 and (await queue.stats()).pending == 1
        # The stop was used up: the pool runs again.
        await asyncio.wait_for(pool.run(burst=True), 5)
        assert (await queue.stats()).completed == 1
