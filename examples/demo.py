"""OmniQ demo: enqueue a batch of example tasks into the embedded SQLite default and drain them
with a worker, printing progress.

    python examples/demo.py            # uses sqlite:///omniq.db, namespace "demo"
    OMNIQ_BACKEND=redis://localhost:6379/0 python examples/demo.py
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import omniq  # noqa: E402
from examples import tasks  # noqa: E402
from omniq import Schedule, Task, TaskStatus, WorkerPool  # noqa: E402

BACKEND = os.environ.get("OMNIQ_BACKEND", "sqlite:///omniq.db")


def batch() -> tuple[list[Task], dict[str, str]]:
    thumbs = [Task(func=tasks.make_thumbnail, args=(f"photo{i}.jpg", 256)) for i in range(12)]
    emails = [
        Task(func=tasks.send_email, kwargs={"to": f"user{i}@example.com", "subject": "Welcome"},
             priority=5)
        for i in range(6)
    ]
    delayed = Task(func=tasks.send_email, kwargs={"to": "later@example.com", "subject": "Reminder"},
                   schedule=Schedule(run_at=datetime.now(UTC) + timedelta(seconds=2)))
    recurring = Task(func=tasks.heartbeat, schedule=Schedule(interval=1.0), id="demo-heartbeat")
    flaky = Task(func=tasks.flaky_call, args=("payments",))
    report = Task(func=tasks.build_report, args=(len(thumbs),), depends_on=[t.id for t in thumbs])
    named = {delayed.id: "delayed", recurring.id: "recurring", flaky.id: "retried",
             report.id: "dependent"}
    return [*thumbs, *emails, delayed, recurring, flaky, report], named


async def main() -> None:
    queue = omniq.connect(BACKEND, namespace="demo")
    async with queue:
        await queue.drop_namespace()  # a fresh demo each run; other namespaces untouched
        await queue.close()
        await queue.connect()
        work, named = batch()
        await queue.enqueue_many(work)
        print(f"enqueued {len(work)} tasks into {queue!r}")

        pool = WorkerPool(queue, concurrency=8, imports=["examples.tasks"])
        began = time.monotonic()
        beats = 0

        def show(event: str):  # type: ignore[no-untyped-def]
            def hook(task: Task) -> None:
                nonlocal beats
                beats += task.id == "demo-heartbeat" and event == "completed"
                label = named.get(task.id, task.func_ref.split(":")[1])
                done = pool.counts["completed"]
                print(f"[{time.monotonic() - began:5.2f}s] {event:9} {label:15} "
                      f"{task.id[:8]}  ({done} completed)")
            return hook

        for event in ("completed", "retried", "failed"):
            pool.on(event, show(event))
        runner = asyncio.create_task(pool.run())
        one_shots = [t.id for t in work if t.id != "demo-heartbeat"]
        for task_id in one_shots:
            await queue.get_result(task_id, timeout=30)
        while beats < 3:
            await asyncio.sleep(0.1)
        await queue.cancel("demo-heartbeat")  # ends the recurrence
        await pool.stop()
        await runner

        stats = await queue.stats()
        print(f"\nall one-off tasks done in {time.monotonic() - began:.2f}s; "
              f"recurring task ran {beats} times, then was cancelled")
        for label, task_id in ((v, k) for k, v in named.items()):
            task = await queue.get_task(task_id)
            assert task is not None
            shown = task.result if task.status is TaskStatus.COMPLETED else task.error
            print(f"  {label:10} {task.status.value:10} attempts={task.attempts} -> {shown}")
        print(f"  totals: completed={stats.completed} cancelled={stats.cancelled} "
              f"failed={stats.failed} pending={stats.pending}")


if __name__ == "__main__":
    asyncio.run(main())
