"""PostgreSQLTaskQueue: one table per namespace, batch claims with ``FOR UPDATE SKIP LOCKED``,
idle workers woken by LISTEN/NOTIFY."""

from __future__ import annotations

import asyncio
import functools
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, NoReturn, TypeVar
from urllib.parse import unquote, urlsplit

from omniq.exceptions import BackendError
from omniq.models.task import Task, TaskStatus
from omniq.queue.base import BaseTaskQueue
from omniq.queue.columns import (
    READ,
    WRITTEN,
    claimed_from_row,
    queue_names_sql,
    row_values,
    task_from_row,
)
from omniq.queue.unreadable import Unreadable
from omniq.queue.url import import_driver, redact

asyncpg = import_driver("asyncpg")

SCHEMA_VERSION = 2
_CHUNK_BYTES, _CHUNK_ROWS = 32 << 20, 5000
_COPY_ROWS, _COPY_BYTES = 100, 1 << 20  # per COPY data message (see _copy_data)
# COPY's text format: NULL, and the characters a text value must escape.
_NULL = "\\N"
_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
T = TypeVar("T")
_Row = tuple[Task, tuple[Any, ...]]  # a task and its column values
_HOT = ", ".join(WRITTEN)
# Where row_values holds these columns.
_STATUS, _READY = (WRITTEN.index(c) for c in ("status", "ready_at"))
_RUNNING = TaskStatus.RUNNING.value
# The rows of the "later" index: a pending task is due from when it was written, so only other
# statuses can be due later. Queries repeat it whole, so the planner can use that index.
_LATER = "ready_at IS NOT NULL AND status <> 'pending'"
_TERMINAL = ", ".join(f"'{s.value}'" for s in TaskStatus if s.terminal)
_HOT_TYPES = ("text", "text", "int4", "float8", "int8", "text", "text", "int8", "float8", "bytea")
# What the driver raises when the server or the connection is not there (or refused a
# statement): callers see BackendError and may retry later, the pool reconnects by itself.
# (InternalClientError: e.g. a statement on a connection the server killed a moment ago.)
_DRIVER_ERRORS = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError,
                  asyncpg.exceptions.InternalClientError)
# Of those, the ones that mean the connection is gone (not a statement timing out or failing).
_LOST = (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError,
         asyncpg.exceptions.InternalClientError, asyncpg.exceptions.AdminShutdownError,
         asyncpg.exceptions.CrashShutdownError)


async def _keep_session(connection: Any) -> None:
    # Our statements leave no session state behind (no LISTEN, no session locks, no SET), so
    # the pool's default reset query would only cost a round trip per release.
    return None


class PostgreSQLTaskQueue(BaseTaskQueue):
    """Tasks in PostgreSQL: many worker processes on many hosts share one database.

    Claims lock rows with ``FOR UPDATE SKIP LOCKED``, so concurrent workers never wait on each
    other nor get the same task; writes that make work ready ``NOTIFY`` the namespace's
    channel, and each queue object keeps one listening connection (opened when a worker first
    waits) so idle workers start new work within milliseconds.
    """

    def __init__(
        self,
        dsn: str,
        *,
        lease_timeout: float = 30.0,
        namespace: str = "omniq",
        max_payload: int = 1 << 20,
        min_pool_size: int = 1,
        max_pool_size: int = 10,
        connect_timeout: float = 10.0,
        command_timeout: float | None = 60.0,
        application_name: str = "omniq",
        pool_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(lease_timeout=lease_timeout, namespace=namespace, max_payload=max_payload)
        if not isinstance(dsn, str) or urlsplit(dsn).scheme not in ("postgres", "postgresql"):
            raise ValueError("dsn must be a postgresql:// or postgres:// URL")
        try:
            urlsplit(dsn).port  # noqa: B018 - raises ValueError for a bad port
        except ValueError:
            raise ValueError("dsn has an invalid port") from None
        if not 0 <= min_pool_size <= max_pool_size or max_pool_size < 1:
            raise ValueError("need 0 <= min_pool_size <= max_pool_size and max_pool_size >= 1")
        self._dsn = dsn
        self._secrets = _secrets(dsn)
        self.min_pool_size = min_pool_size
        self.max_pool_size = max_pool_size
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        self.application_name = application_name
        self.pool_options = dict(pool_options or {})
        self._pool: Any = None
        # One pooled connection kept out of the pool for whoever finds it free: taking and
        # giving back a pooled connection costs about as much as a short statement.
        self._lane: Any = None
        self._lane_busy = False
        self._listener: Any = None
        self._listen_task: asyncio.Task[None] | None = None
        # Per queue claimed from: NOTIFYs received, and that count as of the last claim.
        self._wakes: Counter[str] = Counter()
        self._seen: dict[str, int] = {}
        self._remote_waiters: set[tuple[frozenset[str], asyncio.Future[None]]] = set()
        ns = namespace
        self._tasks_table = f"{ns}_tasks"  # unquoted, for COPY (the driver quotes it)
        self._t, self._d = f'"{ns}_tasks"', f'"{ns}_deps"'
        self._q, self._m = f'"{ns}_queues"', f'"{ns}_meta"'
        self.channel = f"omniq:{ns}"

    @property
    def dsn(self) -> str:
        """The DSN with its password replaced by ``***``."""
        return self._scrub(redact(self._dsn))

    def _describe(self) -> str:
        return repr(self.dsn)

    # -- connections ------------------------------------------------------------------------

    def _connect_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {
            "timeout": self.connect_timeout,
            "command_timeout": self.command_timeout,
            "server_settings": {"application_name": self.application_name},
        }
        extra = dict(self.pool_options)
        options["server_settings"].update(extra.pop("server_settings", None) or {})
        options.update(extra)
        return options

    async def _open(self) -> None:
        try:
            self._pool = await asyncpg.create_pool(
                self._dsn, min_size=self.min_pool_size, max_size=self.max_pool_size,
                reset=_keep_session, **self._connect_options(),
            )
        except _DRIVER_ERRORS as exc:
            self._raise(exc, "cannot connect to")
        async def setup(conn: Any) -> None:
            async with conn.transaction():
                await self._create_schema(conn)

        try:
            await self._run(setup, idempotent=True)
        except BaseException:
            await self._close()
            raise

    async def _create_schema(self, conn: Any) -> None:
        # Serialise concurrent first starts: CREATE ... IF NOT EXISTS can still collide.
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", self.channel)
        version = None
        if await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", self._m):
            version = await conn.fetchval(
                f"SELECT value FROM {self._m} WHERE key = 'schema_version'")
        if version is not None and int(version) > SCHEMA_VERSION:
            raise BackendError(
                f"namespace {self.namespace!r} has OmniQ schema version {version}; this OmniQ "
                f"knows {SCHEMA_VERSION} (upgrade OmniQ)"
            )
        if version is not None and int(version) == SCHEMA_VERSION:
            return
        ns = self.namespace
        await conn.execute(
            f"""CREATE TABLE IF NOT EXISTS {self._m} (key text PRIMARY KEY, value text NOT NULL);
            CREATE TABLE IF NOT EXISTS {self._t} (
                seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                id text NOT NULL UNIQUE,
                queue_name text NOT NULL,
                status text NOT NULL,
                priority integer NOT NULL,
                ready_at double precision,
                revision bigint NOT NULL,
                lease text,
                worker_id text,
                attempts bigint NOT NULL,
                started_at double precision,
                body bytea NOT NULL);
            CREATE INDEX IF NOT EXISTS "{ns}_ready" ON {self._t}
                (queue_name, priority DESC, ready_at, seq) WHERE ready_at IS NOT NULL;
            CREATE INDEX IF NOT EXISTS "{ns}_later" ON {self._t} (queue_name, ready_at)
                WHERE {_LATER};
            DROP INDEX IF EXISTS "{ns}_due";
            CREATE INDEX IF NOT EXISTS "{ns}_by_status" ON {self._t} (queue_name, status);
            CREATE TABLE IF NOT EXISTS {self._d} (
                depends_on text NOT NULL, task_id text NOT NULL,
                PRIMARY KEY (depends_on, task_id));
            CREATE INDEX IF NOT EXISTS "{ns}_deps_task" ON {self._d} (task_id);
            CREATE TABLE IF NOT EXISTS {self._q} (name text PRIMARY KEY, paused boolean NOT NULL)"""
        )
        await conn.execute(
            f"INSERT INTO {self._m} VALUES ('schema_version', $1) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            str(SCHEMA_VERSION),
        )

    async def _close(self) -> None:
        pool, self._pool = self._pool, None
        lane, self._lane = self._lane, None
        if lane is not None and not self._lane_busy:  # a busy one is given back when done
            await _quietly(pool.release(lane))
        starting, self._listen_task = self._listen_task, None
        if starting is not None and not starting.done():
            starting.cancel()
            await asyncio.wait([starting])
        listener, self._listener = self._listener, None
        if listener is not None:
            if not await _quietly(listener.close()):
                listener.terminate()
        if pool is not None and not await _quietly(pool.close(), timeout=10):
            pool.terminate()

    def _connected_pool(self) -> Any:
        if self._pool is None:
            raise BackendError("queue is not connected: use 'async with queue' or connect()")
        return self._pool

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _raise(self, exc: BaseException, doing: str) -> NoReturn:
        detail = f"{type(exc).__name__}: {exc}"
        message = self._scrub(f"postgresql {doing} {self.dsn}: {detail}")
        # Keep the driver's exception as the cause unless its text held the password.
        cause = None if self._scrub(detail) != detail else exc
        raise BackendError(message) from cause

    async def _run(self, work: Callable[[Any], Awaitable[T]], *, idempotent: bool = False) -> T:
        """``work(connection)`` on a pooled connection, driver errors made BackendError.

        A connection found dead (server restart, killed backend) makes the pool replace all
        its connections, and the work is tried once more when that cannot apply it twice:
        it is ``idempotent``, or the driver refused it before sending anything.
        """
        pool = self._connected_pool()
        for attempt in range(2):
            try:
                if not self._lane_busy and self.max_pool_size > 1:
                    return await self._on_lane(pool, work)
                async with pool.acquire() as conn:
                    return await work(conn)
            except _DRIVER_ERRORS as exc:
                if not isinstance(exc, _LOST):
                    self._raise(exc, "error on")
                await pool.expire_connections()
                unsent = isinstance(exc, asyncpg.exceptions.InternalClientError)
                if attempt or not (idempotent or unsent):
                    self._raise(exc, "lost connection to")
        raise AssertionError("unreachable")

    async def _on_lane(self, pool: Any, work: Callable[[Any], Awaitable[T]]) -> T:
        """``work`` on the kept connection. After a failure or a cancellation the connection
        goes back to the pool, which resets or replaces it, and a new one is kept next time."""
        self._lane_busy = True
        conn, kept = self._lane, False
        if conn is not None and not _open(conn):
            conn = None  # the pool took it back already
        try:
            if conn is None:
                conn = await pool.acquire()
            result = await work(conn)
            kept = self._pool is pool  # not closing
            return result
        finally:
            self._lane_busy = False
            self._lane = conn if kept else None
            if conn is not None and not kept:
                await _quietly(pool.release(conn))

    async def _fetch(self, sql: str, *args: Any, idempotent: bool = False) -> list[Any]:
        """One statement's rows (see ``_run``)."""
        return await self._run(lambda conn: conn.fetch(sql, *args), idempotent=idempotent)

    async def _read(self, sql: str, *args: Any) -> list[Any]:
        return await self._fetch(sql, *args, idempotent=True)

    # -- primitives -------------------------------------------------------------------------

    async def _insert(self, tasks: list[Task]) -> list[bool]:
        if len(tasks) == 1 and not tasks[0].depends_on:
            return [await self._insert_one(tasks[0])]
        if not any(t.depends_on for t in tasks) and await self._run(
                functools.partial(self._copy, tasks)):
            return [True] * len(tasks)
        chunks = _chunks([(t, row_values(t)) for t in tasks])
        sql = self._insert_sql

        async def insert_all(conn: Any) -> list[Any]:
            if len(chunks) == 1:
                return list(await conn.fetch(sql, *self._insert_args(chunks[0])))
            async with conn.transaction():  # all or nothing, as one statement would be
                return [r for c in chunks for r in await conn.fetch(sql, *self._insert_args(c))]

        inserted = {row[0] for row in await self._run(insert_all)}
        return [t.id in inserted for t in tasks]

    async def _copy(self, tasks: list[Task], conn: Any) -> bool:
        """The bulk path: COPY the rows in, then wake workers. COPY costs less per row than
        INSERT ... ON CONFLICT but cannot skip a row, so an id that exists already makes it
        write nothing and return False (the caller then inserts). COPY is atomic by itself,
        and a NOTIFY is only delivered once the rows are committed either way."""
        woken: set[str] = set()
        try:
            await conn.copy_to_table(self._tasks_table, columns=["id", *WRITTEN],
                                     source=_copy_data(tasks, woken))
        except asyncpg.exceptions.UniqueViolationError:
            return False
        if woken:
            await conn.execute("SELECT pg_notify($1, q) FROM unnest($2::text[]) AS q",
                               self.channel, sorted(woken))
        return True

    async def _insert_one(self, task: Task) -> bool:
        # The common single enqueue: plain values instead of one-element arrays.
        marks = ", ".join(f"${i}" for i in range(1, len(WRITTEN) + 2))
        rows = await self._fetch(
            f"""WITH ins AS (
                INSERT INTO {self._t} (id, {_HOT}) VALUES ({marks})
                ON CONFLICT (id) DO NOTHING RETURNING queue_name, status, ready_at
            ) SELECT pg_notify(${len(WRITTEN) + 2}, queue_name) FROM ins
                WHERE ready_at IS NOT NULL AND status <> 'running'
              UNION ALL SELECT NULL FROM ins WHERE ready_at IS NULL OR status = 'running'""",
            task.id, *row_values(task), self.channel,
        )
        return len(rows) == 1

    @property
    def _insert_sql(self) -> str:
        # One statement: the rows, their dependency links and the wake-up commit together.
        arrays = ", ".join(f"${i}::{kind}[]" for i, kind in enumerate(("text", *_HOT_TYPES), 1))
        return f"""WITH ins AS (
                INSERT INTO {self._t} (id, {_HOT})
                SELECT id, {_HOT} FROM unnest({arrays})
                    WITH ORDINALITY AS r(id, {_HOT}, ord) ORDER BY ord
                ON CONFLICT (id) DO NOTHING
                RETURNING id, queue_name, status, ready_at
            ), links AS (
                INSERT INTO {self._d} (depends_on, task_id)
                SELECT l.dep, l.task_id FROM unnest($12::text[], $13::text[]) AS l(dep, task_id)
                WHERE l.task_id IN (SELECT id FROM ins)
                ON CONFLICT DO NOTHING
            ), woken AS (
                SELECT pg_notify($14, q.queue_name) FROM (SELECT DISTINCT queue_name FROM ins
                    WHERE ready_at IS NOT NULL AND status <> 'running') AS q
            )
            SELECT id, (SELECT count(*) FROM woken) FROM ins"""

    def _insert_args(self, chunk: list[_Row]) -> list[Any]:
        links = [(dep, t.id) for t, _ in chunk for dep in t.depends_on]
        columns = [list(c) for c in zip(*(values for _, values in chunk), strict=True)]
        return [[t.id for t, _ in chunk], *columns, [d for d, _ in links],
                [i for _, i in links], self.channel]

    async def _get(self, task_ids: Sequence[str]) -> dict[str, Task]:
        rows = await self._read(
            f"SELECT {READ} FROM {self._t} WHERE id = ANY($1::text[])", list(task_ids)
        )
        return {row[1]: task_from_row(row) for row in rows}

    async def _replace(self, task: Task, expected_revision: int) -> bool:
        return (await self._replace_many([(task, expected_revision)]))[0]

    async def _replace_many(self, changes: Sequence[tuple[Task, int]]) -> list[bool]:
        # One statement for the whole batch (a worker's group commit), fenced per row.
        rows = [(t, row_values(t)) for t, _ in changes]
        columns = [list(c) for c in zip(*(values for _, values in rows), strict=True)]
        arrays = ", ".join(f"${i}::{kind}[]" for i, kind in enumerate(_HOT_TYPES, 1))
        sets = ", ".join(f"{c} = v.{c}" for c in WRITTEN)
        n = len(WRITTEN)
        written = await self._fetch(
            f"""WITH v AS (
                SELECT * FROM unnest({arrays}, ${n + 1}::text[], ${n + 2}::int8[])
                    AS v({_HOT}, id, expected)
            ), u AS (
                UPDATE {self._t} AS t SET {sets} FROM v
                WHERE t.id = v.id AND t.revision = v.expected
                RETURNING t.id, t.queue_name, t.ready_at, t.status
            ), woken AS (
                SELECT pg_notify(${n + 3}, q.queue_name) FROM (SELECT DISTINCT queue_name FROM u
                    WHERE ready_at IS NOT NULL AND status <> 'running') AS q
            ), ended AS (  -- one "a task ended" (empty payload) per statement, for get_result
                SELECT pg_notify(${n + 3}, '') FROM (SELECT 1 FROM u
                    WHERE status IN ({_TERMINAL}) LIMIT 1) AS e
            )
            SELECT id, (SELECT count(*) FROM woken), (SELECT count(*) FROM ended) FROM u""",
            *columns, [t.id for t, _ in changes], [r for _, r in changes], self.channel,
        )
        done = {row[0] for row in written}
        return [t.id in done for t, _ in changes]

    async def _claim(
        self,
        queue_name: str,
        now: float,
        limit: int,
        worker_id: str | None,
        lease: str,
        lease_expires: float,
    ) -> list[Task | Unreadable]:
        # The lease expiry becomes the ready time, so a lost worker's task is due again when
        # its lease runs out and this same statement reclaims it.
        self._seen[queue_name] = self._wakes[queue_name]
        cols = ", ".join(f"t.{c.strip()}" for c in READ.split(","))
        rows = await self._fetch(
            f"""WITH picked AS (
                SELECT seq, ready_at AS was FROM {self._t}
                WHERE queue_name = $1 AND ready_at IS NOT NULL AND ready_at <= $2
                    AND NOT EXISTS (SELECT 1 FROM {self._q} WHERE name = $1 AND paused)
                ORDER BY priority DESC, ready_at, seq
                LIMIT $3
                FOR UPDATE SKIP LOCKED
            ), claimed AS (
                UPDATE {self._t} AS t SET status = 'running', lease = $4, worker_id = $5,
                    attempts = t.attempts + 1, started_at = $2, ready_at = $6,
                    revision = t.revision + 1
                FROM picked WHERE t.seq = picked.seq
                RETURNING {cols}, t.priority, picked.was
            )
            SELECT * FROM claimed ORDER BY priority DESC, was, seq""",
            queue_name, now, limit, lease, worker_id, lease_expires,
        )
        return [claimed_from_row(row, queue_name) for row in rows]

    async def _extend(self, task_id: str, lease: str, until: float) -> bool:
        rows = await self._read(  # repeating it changes nothing more
            f"UPDATE {self._t} SET ready_at = $3, revision = revision + 1 "
            "WHERE id = $1 AND status = 'running' AND lease = $2 RETURNING seq",
            task_id, lease, until,
        )
        return len(rows) == 1

    async def _delete(self, task_ids: Sequence[str]) -> list[str]:
        # Links *to* deleted tasks stay: their dependents are settled after the delete.
        rows = await self._fetch(
            f"""WITH gone AS (DELETE FROM {self._t} WHERE id = ANY($1::text[]) RETURNING id),
            links AS (DELETE FROM {self._d} WHERE task_id = ANY($1::text[]))
            SELECT id FROM gone""",
            list(task_ids),
        )
        return [row[0] for row in rows]

    async def _dependents(self, task_ids: Sequence[str]) -> set[str]:
        rows = await self._read(
            f"SELECT task_id FROM {self._d} WHERE depends_on = ANY($1::text[])", list(task_ids)
        )
        return {row[0] for row in rows}

    async def _list(
        self,
        queue_name: str | None,
        statuses: Sequence[TaskStatus] | None,
        limit: int | None,
        *,
        offset: int = 0,
        newest_first: bool = False,
    ) -> list[Task]:
        order = "DESC" if newest_first else "ASC"
        rows = await self._read(
            f"SELECT {READ} FROM {self._t} WHERE ($1::text IS NULL OR queue_name = $1) "
            f"AND ($2::text[] IS NULL OR status = ANY($2)) ORDER BY seq {order} "
            "LIMIT $3 OFFSET $4",
            queue_name, None if statuses is None else [s.value for s in statuses], limit, offset,
        )
        return [task_from_row(row) for row in rows]

    async def _queue_names(self) -> set[str]:
        rows = await self._read(queue_names_sql(self._t))
        return {row[0] for row in rows}

    async def _counts(self, queue_name: str | None) -> dict[TaskStatus, int]:
        rows = await self._read(
            f"SELECT status, count(*) FROM {self._t} WHERE ($1::text IS NULL OR queue_name = $1) "
            "GROUP BY status",
            queue_name,
        )
        return {TaskStatus(status): count for status, count in rows}

    async def _set_paused(self, queue_name: str, paused: bool) -> None:
        await self._read(  # an upsert: repeating it changes nothing more
            f"""WITH q AS (
                INSERT INTO {self._q} VALUES ($1, $2)
                ON CONFLICT (name) DO UPDATE SET paused = excluded.paused RETURNING name, paused
            ) SELECT pg_notify($3, name) FROM q WHERE NOT paused""",
            queue_name, paused, self.channel,
        )

    async def _paused_queues(self) -> set[str]:
        return {row[0] for row in await self._read(f"SELECT name FROM {self._q} WHERE paused")}

    async def _next_ready_at(self, queue_names: list[str], now: float) -> float | None:
        if not queue_names:
            rows = await self._read(
                f"SELECT min(ready_at) FROM {self._t} WHERE {_LATER} AND ready_at > $1", now)
            return rows[0][0] if rows else None
        # One index probe per queue: the cost does not grow with the backlog.
        rows = await self._read(
            f"""SELECT min(x.ready_at) FROM unnest($1::text[]) AS q(name),
            LATERAL (SELECT ready_at FROM {self._t} WHERE queue_name = q.name
                AND {_LATER} AND ready_at > $2 ORDER BY ready_at LIMIT 1) AS x""",
            queue_names, now,
        )
        return rows[0][0] if rows else None

    async def _drop(self) -> None:
        await self._read(f"DROP TABLE IF EXISTS {self._t}, {self._d}, {self._q}, {self._m}")

    # -- LISTEN/NOTIFY ----------------------------------------------------------------------

    async def _remote_change(self, queue_names: list[str]) -> None:
        # Payloads are queue names that have ready work, or "" when tasks ended (the same
        # channel, so one listening connection serves workers and get_result alike).
        queue_names = queue_names or [""]
        listener = self._listener
        if listener is None or listener.is_closed():
            self._connected_pool()
            if self._listen_task is None or self._listen_task.done():
                self._listen_task = asyncio.create_task(self._start_listener())
                self._listen_task.add_done_callback(_consume_error)
            # Shielded: a waiter cancelled mid-connect must not leave a half-open connection.
            await asyncio.shield(self._listen_task)
            return  # a NOTIFY sent before LISTEN took effect is gone: look once more
        if any(self._wakes[q] != self._seen[q] for q in queue_names if q in self._seen):
            return  # notified while the last claim ran, or since
        entry = (frozenset(queue_names), asyncio.get_running_loop().create_future())
        self._remote_waiters.add(entry)
        try:
            await entry[1]
        finally:
            self._remote_waiters.discard(entry)

    async def _start_listener(self) -> None:
        conn = None
        try:
            conn = await asyncpg.connect(self._dsn, **self._connect_options())
            conn.add_termination_listener(self._listener_gone)
            await conn.add_listener(self.channel, self._on_notification)
        except BaseException as exc:
            if conn is not None:
                conn.terminate()
            if isinstance(exc, _DRIVER_ERRORS):
                self._raise(exc, "cannot listen on")
            raise
        self._listener = conn

    def _listener_gone(self, conn: Any) -> None:
        if self._listener is conn:
            self._listener = None
        self._wake(None)  # waiters return; the next wait reconnects

    def _on_notification(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        if payload in self._seen:
            self._wakes[payload] += 1
        self._wake(payload)

    def _wake(self, queue_name: str | None) -> None:
        for names, waiter in self._remote_waiters:
            if (queue_name is None or queue_name in names) and not waiter.done():
                waiter.set_result(None)


async def _copy_data(tasks: list[Task], woken: set[str]) -> AsyncIterator[bytes]:
    """The rows of ``tasks`` in COPY's text format, up to ``_COPY_ROWS`` rows or about
    ``_COPY_BYTES`` at a time, each part encoded only when the previous one has been sent: the
    server stores rows as they arrive while the rest are encoded. Text rather than binary
    because the server writes buffered text rows every 64 kB, binary ones only every 1,000 rows
    (it counts their bytes as zero), so a batch of 1,000 would wait whole. Adds to ``woken``
    the queues of rows a worker may claim now."""
    lines: list[str] = []
    size = 0
    for task in tasks:
        values = row_values(task)
        if values[_READY] is not None and values[_STATUS] != _RUNNING:
            woken.add(task.queue_name)
        lines.append(_copy_line(task.id, *values))
        size += len(lines[-1])
        if len(lines) == _COPY_ROWS or size >= _COPY_BYTES:
            yield "".join(lines).encode()
            lines, size = [], 0
    if lines:
        yield "".join(lines).encode()


def _copy_line(task_id: str, queue: str, status: str, priority: int, ready: float | None,
               revision: int, lease: str | None, worker: str | None, attempts: int,
               started: float | None, body: bytes) -> str:
    # Ids, queue names and statuses were validated to a charset that needs no escaping; repr
    # of a float reads back as the same float.
    return (f"{task_id}\t{queue}\t{status}\t{priority}\t{_NULL if ready is None else repr(ready)}"
            f"\t{revision}\t{_NULL if lease is None else lease.translate(_ESCAPES)}"
            f"\t{_NULL if worker is None else worker.translate(_ESCAPES)}\t{attempts}"
            f"\t{_NULL if started is None else repr(started)}\t\\\\x{body.hex()}\n")


def _chunks(rows: list[_Row]) -> list[list[_Row]]:
    """Split an insert so no statement carries more than _CHUNK_BYTES of encoded tasks
    (a bind parameter is limited to 1 GB) or _CHUNK_ROWS rows."""
    chunks: list[list[_Row]] = [[]]
    size = 0
    for row in rows:
        body = len(row[1][-1])
        if chunks[-1] and (size + body > _CHUNK_BYTES or len(chunks[-1]) >= _CHUNK_ROWS):
            chunks.append([])
            size = 0
        chunks[-1].append(row)
        size += body
    return chunks


def _consume_error(task: asyncio.Task[None]) -> None:
    # The waiters that saw the failure raised it; nobody else needs to retrieve it.
    if not task.cancelled():
        task.exception()


def _secrets(dsn: str) -> list[str]:
    """The DSN's passwords (user info or ``?password=``), raw and percent-decoded."""
    parts = urlsplit(dsn)
    raw = [parts.password or ""]
    raw += [pair.partition("=")[2] for pair in parts.query.split("&")
            if pair.partition("=")[0] == "password"]
    found = {s for value in raw for s in (value, unquote(value)) if s}
    return sorted(found, key=len, reverse=True)


def _open(conn: Any) -> bool:
    """Whether a pooled connection is still ours and open: when its link drops, the pool
    takes it back by itself, and every call on it fails (before sending anything)."""
    try:
        return not conn.is_closed()
    except asyncpg.InterfaceError:
        return False


async def _quietly(closing: Any, timeout: float = 5) -> bool:
    """Await a close; False if it failed or took too long (the caller then terminates)."""
    try:
        await asyncio.wait_for(closing, timeout)
    except _DRIVER_ERRORS:  # TimeoutError is one of them
        return False
    return True
