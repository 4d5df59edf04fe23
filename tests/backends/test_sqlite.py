"""SQLite across processes: two `omniq worker` processes on one file, and crash recovery."""

from __future__ import annotations

import signal
import sqlite3
from pathlib import Path

import pytest

from omniq import BackendError, Task, TaskStatus
from omniq.queue.sqlite import SQLiteTaskQueue
from tests.backends import ledger_tasks
from tests.backends.processes import done_counts, ledger, start_worker, wait_for


async def test_two_worker_processes_run_each_task_exactly_once(tmp_path: Path) -> None:
    db, book = tmp_path / "q.db", tmp_path / "ledger.txt"
    async with SQLiteTaskQueue(str(db)) as queue:
        ids = await queue.enqueue_many(
            [Task(func=ledger_tasks.ledger, args=(str(book), f"k{i}", 0.005)) for i in range(500)]
        )
    url = f"sqlite:///{db}"
    workers = [start_worker(url, "--burst", "--concurrency", "8") for _ in range(2)]
    for worker in workers:
        _, err = worker.communicate(timeout=120)
        assert worker.returncode == 0, err.decode()[-2000:]
    counts = done_counts(book)
    assert set(counts) == {f"k{i}" for i in range(500)}
    assert set(counts.values()) == {1}, "no task ran twice"
    assert len({pid for _, _, pid in ledger(book)}) == 2, "both workers took part"
    async with SQLiteTaskQueue(str(db)) as queue:
        stats = await queue.stats()
        assert stats.completed == 500 and stats.total == 500
        results = {await queue.get_result(i) for i in ids}
        assert results == set(counts)


async def test_task_of_a_killed_worker_is_finished_by_another(tmp_path: Path) -> None:
    db, book = tmp_path / "q.db", tmp_path / "ledger.txt"
    async with SQLiteTaskQueue(str(db)) as queue:
        task_id = await queue.enqueue(Task(func=ledger_tasks.ledger, args=(str(book), "slow", 1.0)))
    url = f"sqlite:///{db}?lease_timeout=1"
    first = start_worker(url)
    try:
        wait_for(lambda: any(e == "start" for e, _, _ in ledger(book)), timeout=20)
    finally:
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=10)
    # Not --burst: a burst worker does not wait for leases held by others to run out.
    second = start_worker(url)
    try:
        wait_for(lambda: any(e == "done" for e, _, _ in ledger(book)), timeout=30)
    finally:
        second.send_signal(signal.SIGTERM)
        _, err = second.communicate(timeout=30)
    assert second.returncode == 0, err.decode()[-2000:]
    rows = ledger(book)
    assert [(e, k) for e, k, _ in rows] == [("start", "slow"), ("start", "slow"), ("done", "slow")]
    assert rows[0][2] == first.pid and rows[2][2] == second.pid
    async with SQLiteTaskQueue(str(db)) as queue:
        task = await queue.get_task(task_id)
        assert task is not None and task.status is TaskStatus.COMPLETED
        assert task.attempts == 2 and task.retries == 0, "a lost lease consumes no retry"


async def test_schema_is_idempotent_and_versioned(tmp_path: Path) -> None:
    db = tmp_path / "q.db"
    for _ in range(2):
        async with SQLiteTaskQueue(str(db), namespace="app") as queue:
            await queue.enqueue(Task(func=ledger_tasks.ledger, args=("x", "y"), id="same"))
    with sqlite3.connect(db) as conn:
        version = conn.execute("SELECT value FROM app_meta WHERE key='schema_version'").fetchone()
        mode = conn.execute("PRAGMA journal_mode").fetchone()
        conn.execute("UPDATE app_meta SET value='99' WHERE key='schema_version'")
    assert version == ("1",) and mode == ("wal",)
    with pytest.raises(BackendError, match="schema version 99"):
        await SQLiteTaskQueue(str(db), namespace="app").connect()
