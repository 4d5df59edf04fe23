"""Writing raw bytes where a backend keeps a task, behind OmniQ's back (as disk corruption, a
bad migration or another program would)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import msgspec

from tests.conftest import NATS_URL, POSTGRES_DSN, REDIS_URL


async def overwrite(backend: str, tmp_path: Path, namespace: str, task_id: str, data: bytes,
                    *, whole: bool = True) -> None:
    """Replace the stored task ``task_id`` with ``data``. NATS keeps a small header around the
    task: ``whole`` replaces the entire value, otherwise only the task inside it."""
    if backend == "sqlite":
        with sqlite3.connect(tmp_path / "omniq.db") as db:
            db.execute(f'UPDATE "{namespace}_tasks" SET body = ? WHERE id = ?', (data, task_id))
    elif backend == "file":
        path = tmp_path / "queue" / namespace / "tasks" / f"{task_id}.msgpack"
        path.write_bytes(path.read_bytes()[:8] + data)  # keep the sequence number prefix
    elif backend == "postgres":
        import asyncpg

        conn = await asyncpg.connect(POSTGRES_DSN)
        try:
            await conn.execute(f'UPDATE "{namespace}_tasks" SET body = $1 WHERE id = $2',
                               data, task_id)
        finally:
            await conn.close()
    elif backend == "redis":
        import redis.asyncio

        client = redis.asyncio.from_url(REDIS_URL)
        try:
            await client.set(f"{{{namespace}}}:b:{task_id}", data)
        finally:
            await client.aclose()
    elif backend == "nats":
        await _nats_put(namespace, task_id, data, whole)
    else:
        raise ValueError(backend)


async def _nats_put(namespace: str, task_id: str, data: bytes, whole: bool) -> None:
    import nats

    client = await nats.connect(NATS_URL)
    try:
        kv = await client.jetstream().key_value(f"OMNIQ_{namespace}")
        key = f"t.{task_id}"
        if not whole:  # the record is a msgpack array whose last item is the task
            record: list[Any] = msgspec.msgpack.decode((await kv.get(key)).value or b"")
            record[-1] = data
            data = msgspec.msgpack.encode(record)
        await kv.put(key, data)
    finally:
        await client.close()
