"""SQLite specifics: the schema is idempotent and versioned. (Worker processes sharing one
file, killed workers and the rest: tests/chaos, on every durable backend.)"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from omniq import BackendError, Task
from omniq.queue.sqlite import SQLiteTaskQueue
from tests import ledger


async def test_schema_is_idempotent_and_versioned(tmp_path: Path) -> None:
    db = tmp_path / "q.db"
    for _ in range(2):
        async with SQLiteTaskQueue(str(db), namespace="app") as queue:
            await queue.enqueue(Task(func=ledger.record, args=("x", "y"), id="same"))
    with sqlite3.connect(db) as conn:
        version = conn.execute("SELECT value FROM app_meta WHERE key='schema_version'").fetchone()
        mode = conn.execute("PRAGMA journal_mode").fetchone()
        conn.execute("UPDATE app_meta SET value='99' WHERE key='schema_version'")
    assert version == ("1",) and mode == ("wal",)
    with pytest.raises(BackendError, match="schema version 99"):
        await SQLiteTaskQueue(str(db), namespace="app").connect()
