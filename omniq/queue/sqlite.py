"""SQLiteTaskQueue: the embedded default. WAL, BEGIN IMMEDIATE claims, one file shared safely by
several worker processes on one host."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from omniq.exceptions import BackendError
from omniq.models.task import Task, TaskStatus
from omniq.queue.base import BaseTaskQueue, until_changed
from omniq.queue.columns import (
    READ,
    WRITTEN,
    claimed_from_row,
    queue_names_sql,
    row_values,
    task_from_row,
)
from omniq.queue.unreadable import Unreadable
from omniq.queue.url import import_driver

aiosqlite = import_driver("aiosqlite")

SCHEMA_VERSION = 1
_CHUNK = 500
# Rows per multi-row statement (SQLite allows 32,766 bound values in one).
_ROWS = 2000
# At most how long an idle worker waits between checks whether another process wrote (a read
# of shared memory); it checks far more often right after activity.
_CHANGE_POLL = 0.05


def _chunks(items: Sequence[str]) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


def _marks(items: Sequence[Any]) -> str:
    return ",".join("?" * len(items))


class SQLiteTaskQueue(BaseTaskQueue):
    """Tasks in one SQLite file (``":memory:"`` for a private in-process database).

    ``synchronous="NORMAL"`` (the default) survives any process crash; ``"FULL"`` also
    survives power loss, at the cost of an fsync per commit.
    """

    def __init__(
        self,
        database_path: str,
        *,
        lease_timeout: float = 30.0,
        namespace: str = "omniq",
        max_payload: int = 1 << 20,
        busy_timeout: float = 30.0,
        synchronous: str = "NORMAL",
    ) -> None:
        super().__init__(lease_timeout=lease_timeout, namespace=namespace, max_payload=max_payload)
        if synchronous.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise ValueError(f"synchronous must be OFF, NORMAL, FULL or EXTRA, not {synchronous!r}")
        self.database_path = database_path
        self.busy_timeout = busy_timeout
        self.synchronous = synchronous.upper()
        self._db: Any = None
        self._lock = asyncio.Lock()
        ns = namespace
        self._t, self._d = f'"{ns}_tasks"', f'"{ns}_deps"'
        self._q, self._m = f'"{ns}_queues"', f'"{ns}_meta"'

    def _describe(self) -> str:
        return repr(self.database_path)

    # -- connection -------------------------------------------------------------------------

    async def _open(self) -> None:
        # Checked first: aiosqlite's thread outlives a failed connect and reports to a loop
        # that may be gone by then.
        if sqlite3.sqlite_version_info < (3, 35):  # UPDATE ... FROM and RETURNING
            raise BackendError(f"SQLite 3.35 or newer is needed, not {sqlite3.sqlite_version}")
        folder = Path(self.database_path).parent
        if self.database_path != ":memory:" and not folder.is_dir():
            raise BackendError(f"cannot open {self.database_path}: no directory {folder}")
        try:
            self._db = await aiosqlite.connect(self.database_path, isolation_level=None)
        except sqlite3.Error as exc:
            raise BackendError(f"cannot open {self.database_path}: {exc}") from exc
        try:
            await self._db.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
            await self._db.execute("PRAGMA journal_mode = WAL")
            await self._db.execute(f"PRAGMA synchronous = {self.synchronous}")
            async with self._transaction() as db:
                await self._create_schema(db)
        except BaseException:
            await self._db.close()
            self._db = None
            raise

    async def _create_schema(self, db: Any) -> None:
        ns = self.namespace
        await db.execute(f"CREATE TABLE IF NOT EXISTS {self._m} (key TEXT PRIMARY KEY, value TEXT)")
        row = await (await db.execute(
            f"SELECT value FROM {self._m} WHERE key = 'schema_version'")).fetchone()
        if row is not None and int(row[0]) > SCHEMA_VERSION:
            raise BackendError(
                f"{self.database_path} has OmniQ schema version {row[0]}; this OmniQ knows "
                f"{SCHEMA_VERSION} (upgrade OmniQ)"
            )
        await db.execute(
            f"""CREATE TABLE IF NOT EXISTS {self._t} (
                seq INTEGER PRIMARY KEY AUTOINCREMENT,
                id TEXT NOT NULL UNIQUE,
                queue_name TEXT NOT NULL,
                status TEXT NOT NULL,
                priority INTEGER NOT NULL,
                ready_at REAL,
                revision INTEGER NOT NULL,
                lease TEXT,
                worker_id TEXT,
                attempts INTEGER NOT NULL,
                started_at REAL,
                body BLOB NOT NULL)"""
        )
        await db.execute(
            f'CREATE INDEX IF NOT EXISTS "{ns}_ready" ON {self._t} '
            "(queue_name, priority DESC, ready_at, seq) WHERE ready_at IS NOT NULL"
        )
        await db.execute(
            f'CREATE INDEX IF NOT EXISTS "{ns}_by_status" ON {self._t} (queue_name, status)'
        )
        await db.execute(
            f"CREATE TABLE IF NOT EXISTS {self._d} (depends_on TEXT NOT NULL, task_id TEXT "
            "NOT NULL, PRIMARY KEY (depends_on, task_id)) WITHOUT ROWID"
        )
        await db.execute(
            f"CREATE TABLE IF NOT EXISTS {self._q} (name TEXT PRIMARY KEY, paused INTEGER NOT NULL)"
        )
        await db.execute(
            f"INSERT OR IGNORE INTO {self._m} VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
        )

    async def _close(self) -> None:
        if self._db is not None:
            db, self._db = self._db, None
            await db.close()

    @asynccontextmanager
    async def _conn(self) -> AsyncIterator[Any]:
        # One connection per queue object: statements of concurrent coroutines must not
        # interleave with an open transaction, so every use holds the lock.
        if self._db is None:
            raise BackendError("queue is not connected: use 'async with queue' or connect()")
        async with self._lock:
            try:
                yield self._db
            except sqlite3.OperationalError as exc:
                raise BackendError(f"sqlite error on {self.database_path}: {exc}") from exc

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[Any]:
        async with self._conn() as db:
            await db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                await db.execute("ROLLBACK")
                raise
            await db.execute("COMMIT")

    async def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        async with self._conn() as db:
            return list(await db.execute_fetchall(sql, params))

    # -- records ----------------------------------------------------------------------------

    # -- primitives -------------------------------------------------------------------------

    async def _insert(self, tasks: list[Task]) -> list[bool]:
        links = [(dep, t.id) for t in tasks for dep in t.depends_on]
        chunks = [tasks[i : i + _ROWS] for i in range(0, len(tasks), _ROWS)]
        columns = ", ".join(("id", *WRITTEN))
        marks = f"({_marks(range(len(WRITTEN) + 1))})"
        inserted: set[str] = set()

        async def insert(db: Any, chunk: list[Task]) -> None:
            rows = await db.execute_fetchall(
                f"INSERT INTO {self._t} ({columns}) VALUES {', '.join([marks] * len(chunk))} "
                "ON CONFLICT (id) DO NOTHING RETURNING id",
                [v for t in chunk for v in (t.id, *row_values(t))],
            )
            inserted.update(row[0] for row in rows)

        if len(chunks) == 1 and not links:
            async with self._conn() as db:  # one statement: atomic by itself
                await insert(db, chunks[0])
        else:
            async with self._transaction() as db:
                for chunk in chunks:
                    await insert(db, chunk)
                new_links = [link for link in links if link[1] in inserted]
                if new_links:
                    await db.executemany(f"INSERT OR IGNORE INTO {self._d} VALUES (?, ?)",
                                         new_links)
        return [t.id in inserted for t in tasks]

    async def _get(self, task_ids: Sequence[str]) -> dict[str, Task]:
        found: dict[str, Task] = {}
        for chunk in _chunks(task_ids):
            rows = await self._rows(
                f"SELECT {READ} FROM {self._t} WHERE id IN ({_marks(chunk)})", chunk
            )
            found.update((row[1], task_from_row(row)) for row in rows)
        return found

    async def _replace(self, task: Task, expected_revision: int) -> bool:
        return (await self._replace_many([(task, expected_revision)]))[0]

    async def _replace_many(self, changes: Sequence[tuple[Task, int]]) -> list[bool]:
        # One statement per chunk of rows, each fenced by its expected revision.
        sets = ", ".join(f"{c} = v.c{i}" for i, c in enumerate(WRITTEN))
        names = ", ".join(f"c{i}" for i in range(len(WRITTEN)))
        marks = f"({_marks(range(len(WRITTEN) + 2))})"
        written: set[str] = set()
        chunks = [changes[i : i + _ROWS] for i in range(0, len(changes), _ROWS)]
        async with self._transaction() if len(chunks) > 1 else self._conn() as db:
            for chunk in chunks:
                rows = await db.execute_fetchall(
                    f"WITH v(id, expected, {names}) AS (VALUES "
                    f"{', '.join([marks] * len(chunk))}) "
                    f"UPDATE {self._t} AS t SET {sets} FROM v "
                    "WHERE t.id = v.id AND t.revision = v.expected RETURNING id",
                    [x for task, rev in chunk for x in (task.id, rev, *row_values(task))],
                )
                written.update(row[0] for row in rows)
        return [task.id in written for task, _ in changes]

    async def _claim(
        self,
        queue_name: str,
        now: float,
        limit: int,
        worker_id: str | None,
        lease: str,
        lease_expires: float,
    ) -> list[Task | Unreadable]:
        # Pick, then take what is still due: the UPDATE re-checks readiness and the pause,
        # so a task another process took in between is skipped (a claim may come back short
        # under contention) and no task is ever taken twice. Two statements, no lock held
        # between them.
        paused = f"NOT EXISTS (SELECT 1 FROM {self._q} WHERE name = ? AND paused = 1)"
        picked = [row[0] for row in await self._rows(
            f"SELECT seq FROM {self._t} WHERE queue_name = ? AND ready_at IS NOT NULL "
            f"AND ready_at <= ? AND {paused} ORDER BY priority DESC, ready_at, seq LIMIT ?",
            (queue_name, now, queue_name, limit),
        )]
        if not picked:
            return []
        rows = await self._rows(
            f"UPDATE {self._t} SET status = 'running', lease = ?, worker_id = ?, "
            "attempts = attempts + 1, started_at = ?, ready_at = ?, revision = revision + 1 "
            f"WHERE seq IN ({_marks(picked)}) AND ready_at IS NOT NULL AND ready_at <= ? "
            f"AND {paused} RETURNING {READ}",
            (lease, worker_id, now, lease_expires, *picked, now, queue_name),
        )
        order = {seq: i for i, seq in enumerate(picked)}
        return [claimed_from_row(r, queue_name) for r in sorted(rows, key=lambda r: order[r[0]])]

    async def _extend(self, task_id: str, lease: str, until: float) -> bool:
        async with self._conn() as db:
            cursor = await db.execute(
                f"UPDATE {self._t} SET ready_at = ?, revision = revision + 1 "
                "WHERE id = ? AND status = 'running' AND lease = ?",
                (until, task_id, lease),
            )
            return bool(cursor.rowcount == 1)

    async def _delete(self, task_ids: Sequence[str]) -> list[str]:
        deleted: list[str] = []
        async with self._transaction() as db:
            for chunk in _chunks(task_ids):
                rows = await db.execute_fetchall(
                    f"DELETE FROM {self._t} WHERE id IN ({_marks(chunk)}) RETURNING id", chunk
                )
                await db.execute(f"DELETE FROM {self._d} WHERE task_id IN ({_marks(chunk)})", chunk)
                deleted.extend(r[0] for r in rows)
        return deleted

    async def _dependents(self, task_ids: Sequence[str]) -> set[str]:
        found: set[str] = set()
        for chunk in _chunks(task_ids):
            rows = await self._rows(
                f"SELECT task_id FROM {self._d} WHERE depends_on IN ({_marks(chunk)})", chunk
            )
            found.update(r[0] for r in rows)
        return found

    async def _list(
        self,
        queue_name: str | None,
        statuses: Sequence[TaskStatus] | None,
        limit: int | None,
        *,
        offset: int = 0,
        newest_first: bool = False,
    ) -> list[Task]:
        where, params = self._filter(queue_name, statuses)
        order = "DESC" if newest_first else "ASC"
        rows = await self._rows(
            f"SELECT {READ} FROM {self._t}{where} ORDER BY seq {order} LIMIT ? OFFSET ?",
            [*params, -1 if limit is None else limit, offset],
        )
        return [task_from_row(r) for r in rows]

    async def _queue_names(self) -> set[str]:
        rows = await self._rows(queue_names_sql(self._t))
        return {r[0] for r in rows}

    @staticmethod
    def _filter(
        queue_name: str | None, statuses: Sequence[TaskStatus] | None
    ) -> tuple[str, list[Any]]:
        clauses, params = [], []
        if queue_name is not None:
            clauses.append("queue_name = ?")
            params.append(queue_name)
        if statuses is not None:
            clauses.append(f"status IN ({_marks(statuses)})")
            params.extend(s.value for s in statuses)
        return (" WHERE " + " AND ".join(clauses) if clauses else ""), params

    async def _counts(self, queue_name: str | None) -> dict[TaskStatus, int]:
        where, params = self._filter(queue_name, None)
        rows = await self._rows(
            f"SELECT status, count(*) FROM {self._t}{where} GROUP BY status", params
        )
        return {TaskStatus(s): n for s, n in rows}

    async def _set_paused(self, queue_name: str, paused: bool) -> None:
        async with self._conn() as db:
            await db.execute(
                f"INSERT INTO {self._q} VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET "
                "paused = excluded.paused",
                (queue_name, int(paused)),
            )

    async def _paused_queues(self) -> set[str]:
        return {r[0] for r in await self._rows(f"SELECT name FROM {self._q} WHERE paused = 1")}

    async def _next_ready_at(self, queue_names: list[str], now: float) -> float | None:
        where = f"queue_name IN ({_marks(queue_names)}) AND " if queue_names else ""
        rows = await self._rows(
            f"SELECT min(ready_at) FROM {self._t} WHERE {where}ready_at > ?", [*queue_names, now]
        )
        return rows[0][0] if rows else None

    async def _remote_change(self, queue_names: list[str]) -> None:
        # data_version changes only when another connection commits, so this wakes a worker
        # for other processes' writes; this process's own writes wake it directly.
        async def version() -> int:
            rows = await self._rows("PRAGMA data_version")
            return int(rows[0][0])

        await until_changed(version, _CHANGE_POLL)

    async def _drop(self) -> None:
        ns = self.namespace
        async with self._transaction() as db:
            for table in (self._t, self._d, self._q, self._m):
                await db.execute(f"DROP TABLE IF EXISTS {table}")
            await db.execute(f'DROP INDEX IF EXISTS "{ns}_ready"')
            await db.execute(f'DROP INDEX IF EXISTS "{ns}_by_status"')
