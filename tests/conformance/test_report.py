"""report(): a worker's batch of outcomes, fenced per task by the claim's lease and revision."""

from __future__ import annotations

from omniq import LeaseLostError, Task, TaskStatus
from omniq.queue.base import BaseTaskQueue, Outcome
from tests.conformance import tasks
from tests.conftest import QueueFactory


async def test_a_batch_records_every_kind_of_outcome(queue: BaseTaskQueue) -> None:
    ok, retry, dead, blocked = (Task(func=tasks.add, args=(1, i)) for i in range(4))
    retry.max_retries = 2
    await queue.enqueue_many([ok, retry, dead, blocked])
    claimed = {t.id: t for t in await queue.dequeue_many("default", 4)}
    assert len(claimed) == 4
    states = await queue.report([
        Outcome(claimed[ok.id], result={"n": 1}),
        Outcome(claimed[retry.id], error="RuntimeError: again"),
        Outcome(claimed[dead.id], error="RuntimeError: dead"),
        Outcome(claimed[blocked.id], error="TaskNotAllowedError: no", retry=False),
    ])
    assert [s.status for s in states if isinstance(s, Task)] == [
        TaskStatus.COMPLETED, TaskStatus.RETRYING, TaskStatus.FAILED, TaskStatus.FAILED]
    stored = await queue.get_tasks([ok.id, retry.id, dead.id, blocked.id])
    assert stored[ok.id].status is TaskStatus.COMPLETED and stored[ok.id].result == {"n": 1}
    assert stored[retry.id].status is TaskStatus.RETRYING and stored[retry.id].retries == 1
    assert stored[dead.id].error == "RuntimeError: dead"
    assert stored[blocked.id].status is TaskStatus.FAILED and stored[blocked.id].retries == 0
    assert await queue.get_result(ok.id, timeout=5) == {"n": 1}


async def test_changes_since_the_claim_are_respected(queue: BaseTaskQueue) -> None:
    plain, beaten, cancelled = (Task(func=tasks.add, args=(2, i)) for i in range(3))
    await queue.enqueue_many([plain, beaten, cancelled])
    claimed = {t.id: t for t in await queue.dequeue_many("default", 3)}
    # A heartbeat moves the stored revision on: the write is decided again and still lands.
    assert await queue.extend_lease(beaten.id, 60, lease=claimed[beaten.id].lease)
    assert await queue.cancel(cancelled.id)
    states = await queue.report([Outcome(claimed[i], result=i) for i in
                                 (plain.id, beaten.id, cancelled.id)])
    assert isinstance(states[0], Task) and states[0].status is TaskStatus.COMPLETED
    assert isinstance(states[1], Task) and states[1].status is TaskStatus.COMPLETED
    assert isinstance(states[2], LeaseLostError)
    stored = await queue.get_tasks([plain.id, beaten.id, cancelled.id])
    assert stored[beaten.id].result == beaten.id
    assert stored[cancelled.id].status is TaskStatus.CANCELLED
    assert stored[cancelled.id].result is None


async def test_a_task_claimed_again_keeps_the_new_claim(make_queue: QueueFactory) -> None:
    queue = await make_queue(lease_timeout=0.2)
    task_id = await queue.enqueue(Task(func=tasks.add, args=(3, 4)))
    first = await queue.dequeue()
    assert first is not None
    second = None
    for _ in range(200):
        second = await queue.dequeue()
        if second is not None:
            break
        await queue.wait_for_work(["default"], 0.05)
    assert second is not None and second.lease != first.lease
    [state] = await queue.report([Outcome(first, result="stale")])
    assert isinstance(state, LeaseLostError)
    stored = await queue.get_task(task_id)
    assert stored is not None and stored.status is TaskStatus.RUNNING
    assert stored.lease == second.lease
