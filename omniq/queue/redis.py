"""RedisTaskQueue: every transition is one Lua script, atomic on the server; idle workers block
on a pub/sub wake-up instead of polling.

Key layout (``P`` is ``{namespace}:``; the braces are a Redis Cluster hash tag keeping a
namespace's keys in one slot so a script may touch them together):

- ``P t:<id>``: hash of a task's hot fields ``st rev lease wid att sa ra`` (status, revision,
  lease, worker id, attempts, started_at, ready time), updated by a claim without re-encoding
  the task and overlaid on its body when read; also ``q pk tk seq sq dp``: queue, priority key,
  ready-time key, enqueue sequence (number and hex), dependencies. All small, so Redis keeps the
  hash compact (listpack).
- ``P b:<id>``: string, the msgpack-encoded task.
- ``P ready:<queue>``: zset of claimable tasks, all scored 0 so members sort by bytes: member =
  8 hex of (2**31-1 - priority) + 16 hex of ready time in µs + 16 hex of seq + id, which is
  priority DESC, ready time ASC, enqueue order ASC, exactly (no 53-bit double limit).
- ``P due:<queue>``: zset of tasks due later (schedules, retry backoff, lease expiry), the same
  members scored by ready time; a claim first moves the members now due into the ready set
  (without reading the tasks), at most ``redis_scripts._PROMOTE`` per claim.
- ``P s:<queue>:<status>``: zset id -> seq, for stats and listing in enqueue order.
- ``P dependents:<id>`` (set), ``P queues`` (set), ``P paused`` (set), ``P seq``, ``P meta``.
- Channel ``P wake``: write scripts publish the queue name when they make work ready; when
  tasks ended, "!" + the body of each for a few small ones (``get_result`` then needs no read),
  else "" once per script (``get_result`` waits for these).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any
from urllib.parse import unquote, urlsplit

from msgspec.structs import replace

from omniq.exceptions import BackendError, SerializationError
from omniq.models.task import PRIORITY_MAX, Task, TaskStatus
from omniq.queue import rules
from omniq.queue.base import BaseTaskQueue
from omniq.queue.redis_scripts import PRELUDE as _PRELUDE
from omniq.queue.redis_scripts import SCRIPTS as _SCRIPTS
from omniq.queue.unreadable import Unreadable
from omniq.queue.url import import_driver, redact
from omniq.serialization import decode_task, encode, encode_task

aioredis = import_driver("redis.asyncio")
_exc = import_driver("redis.exceptions")
_retry = import_driver("redis.asyncio.retry")
_backoff = import_driver("redis.backoff")

SCHEMA_VERSION = 1
# Probe an idle connection after 10 s, every 5 s, give up after 3 unanswered probes.
_KEEPALIVE = {
    getattr(socket, name): value
    for name, value in (("TCP_KEEPIDLE", 10), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 3))
    if hasattr(socket, name)
}
_CHUNK = 500
# Tasks per insert call: a batch is several calls pipelined, so that the server stores one
# chunk while the client encodes the next (and no call blocks the server for long).
_INSERT_CHUNK = 100
_SUBSCRIBE_TIMEOUT = 10.0
# Dependents of tasks that just ended, kept until the caller settles them (a shortcut).
_ENDED = 10 * _CHUNK
_STATUSES = [s.value for s in TaskStatus]

def _num(value: float | None) -> str:
    # repr round-trips a float exactly; Redis parses it back to the same double.
    return "" if value is None else repr(float(value))


def _time_key(ready: float | None) -> str:
    return "" if ready is None else f"{max(0, round(ready * 1_000_000)):016x}"


def _text(value: bytes | None) -> str:
    return value.decode() if value else ""


class RedisTaskQueue(BaseTaskQueue):
    """Tasks in Redis (5.0 or later): ``RedisTaskQueue(host, port, db)`` or ``url="redis://…"``.

    Claims, outcomes and lease extensions are single Lua scripts; idle workers wake through
    pub/sub. Durability is Redis's: enable AOF (``appendonly yes``) to keep tasks across a
    server restart.
    """

    def __init__(
        self,
        host: str = "localhost",
        port: int = 6379,
        db: int = 0,
        *,
        url: str | None = None,
        lease_timeout: float = 30.0,
        namespace: str = "omniq",
        max_payload: int = 1 << 20,
        password: str | None = None,
        socket_timeout: float | None = None,
        socket_connect_timeout: float | None = 5.0,
        max_connections: int = 50,
    ) -> None:
        super().__init__(lease_timeout=lease_timeout, namespace=namespace, max_payload=max_payload)
        self.host, self.port, self.db, self.url = host, port, db, url
        url_password = urlsplit(url).password if url is not None else None
        self._secrets = [p for p in (password, url_password and unquote(url_password)) if p]
        self._options: dict[str, Any] = {
            "password": password,
            # No per-command timeout by default: redis-py arms a timer around every reply,
            # about a quarter of a small command's cost. TCP keepalive finds a dead server
            # instead (after about 25 s of silence).
            "socket_timeout": socket_timeout,
            "socket_connect_timeout": socket_connect_timeout,
            "socket_keepalive": True,
            "socket_keepalive_options": _KEEPALIVE,
            # No client-side retries: a script whose reply was lost may have run, and re-running
            # it would misreport (e.g. a completed task's lease as lost). Errors surface as
            # BackendError; the pool reconnects on the next call.
            "retry": _retry.Retry(_backoff.NoBackoff(), 0),
            "client_name": f"omniq:{namespace}",
            # RESP2: with RESP3, redis-py (7+) skips its check for pooled connections the
            # server closed, so the first call after a server restart would fail.
            "protocol": 2,
        }
        self.max_connections = max_connections
        self._p = f"{{{namespace}}}:"
        self._client: Any = None
        # A client on one pooled connection, kept for whichever script call finds it free:
        # taking and giving back a pooled connection costs about a sixth of a script call.
        self._lane: Any = None
        self._lane_busy = False
        self._scripts: dict[str, Any] = {}
        self._listener: asyncio.Task[None] | None = None
        self._subscribing: asyncio.Task[None] | None = None
        self._ended: dict[str, set[str]] = {}
        self._wakes: Counter[str] = Counter()
        self._seen: dict[str, int] = {}
        # Tasks as they ended, published whole, for this process's get_result calls.
        self._finals: dict[str, Task] = {}
        # Tasks enqueued here while the listener ran: (listener, end notices seen, task).
        self._fresh: dict[str, tuple[asyncio.Task[None], int, Task]] = {}
        # Per queue, the next due time its latest claim found (see _next_ready_at).
        self._next_due: dict[str, float | None] = {}
        self._remote_waiters: set[tuple[frozenset[str], asyncio.Future[None]]] = set()

    def _describe(self) -> str:
        if self.url is not None:
            return repr(redact(self.url))
        return f"'{self.host}:{self.port}/{self.db}'"

    def _scrub(self, error: BaseException) -> str:
        text = f"{type(error).__name__}: {error}"
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    # -- connection -------------------------------------------------------------------------

    async def _open(self) -> None:
        # A blocking pool: coroutines beyond max_connections wait for a connection.
        pool_class = aioredis.BlockingConnectionPool
        options = {**self._options, "max_connections": self.max_connections, "timeout": 60.0}
        if self.url is not None:
            pool = pool_class.from_url(self.url, **options)
        else:
            pool = pool_class(host=self.host, port=self.port, db=self.db, **options)
        client = aioredis.Redis.from_pool(pool)
        self._client = client
        self._scripts = {
            name: client.register_script(_PRELUDE + source) for name, source in _SCRIPTS.items()
        }
        try:
            async with self._redis("connect") as r:
                await r.hsetnx(self._p + "meta", "schema_version", SCHEMA_VERSION)
                version = int(await r.hget(self._p + "meta", "schema_version"))
                if self.max_connections > 1:  # with one, the pool would have none left
                    self._lane = await aioredis.Redis(connection_pool=pool,
                                                      single_connection_client=True)
        except BaseException:
            await self._close()
            raise
        if version > SCHEMA_VERSION:
            await self._close()
            raise BackendError(
                f"namespace {self.namespace!r} has OmniQ schema version {version}; this OmniQ "
                f"knows {SCHEMA_VERSION} (upgrade OmniQ)"
            )

    async def _close(self) -> None:
        for background in (self._subscribing, self._listener):
            if background is not None:
                background.cancel()
                await asyncio.gather(background, return_exceptions=True)
        self._subscribing = self._listener = None
        lane, self._lane = self._lane, None
        if lane is not None:
            await lane.aclose()  # gives its connection back to the pool
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    @contextlib.asynccontextmanager
    async def _redis(self, what: str) -> AsyncIterator[Any]:
        if self._client is None:
            raise BackendError("queue is not connected: use 'async with queue' or connect()")
        try:
            yield self._client
        except (_exc.RedisError, OSError) as exc:
            raise self._failed(what, exc) from None

    def _failed(self, what: str, exc: BaseException) -> BackendError:
        return BackendError(f"redis {what} failed on {self._describe()}: {self._scrub(exc)}")

    async def _run(self, script: str, args: Sequence[Any]) -> Any:
        return (await self._run_each(script, (args,)))[0]

    async def _run_each(self, script: str, calls: Iterable[Sequence[Any]]) -> list[Any]:
        """Call ``script`` once per argument list, in order. On the kept connection the calls
        are pipelined: each is sent as soon as its arguments are built (the iterable may build
        them lazily) and the replies are read after, so the server runs one while the next is
        encoded."""
        keys = [self._p + "seq"]
        lane = self._lane
        if lane is None or self._lane_busy:
            async with self._redis(script):
                return [await self._scripts[script](keys=keys, args=[self._p, *args])
                        for args in calls]
        self._lane_busy = True
        try:
            link = lane.connection
            if not _link_open(link):
                # The server closed it (a restart): the pool checks its connections before
                # use, so do the same here; the connection opens again as it sends.
                await link.disconnect()
            # Packed and sent here rather than through the client's command layer, which
            # costs about a sixth of a small script call; a cancelled call still closes the
            # connection (read_response does), so no reply is left for the next one.
            sha, sent = self._scripts[script].sha, []
            try:
                for args in calls:
                    await link.send_packed_command(
                        _packed("EVALSHA", sha, 1, keys[0], self._p, *args), check_health=False)
                    sent.append(args)
            except BaseException:
                # Building a later call failed: the replies to those sent would be read as the
                # next call's, so they go with the connection (as a failed send's do).
                await link.disconnect(nowait=True)
                raise
            replies: list[Any] = []
            for _ in sent:
                try:
                    replies.append(await link.read_response())
                except _exc.ResponseError as exc:  # read whole: the next replies follow it
                    replies.append(exc)
            for i, reply in enumerate(replies):
                if isinstance(reply, _exc.NoScriptError):
                    # The server forgot its scripts (a restart, SCRIPT FLUSH): Script loads
                    # them and runs this call again (it did not run).
                    replies[i] = await self._scripts[script](
                        keys=keys, args=[self._p, *sent[i]], client=lane)
                elif isinstance(reply, _exc.ResponseError):
                    raise reply
            return replies
        except (_exc.RedisError, OSError) as exc:
            raise self._failed(script, exc) from None
        finally:
            self._lane_busy = False

    # -- records ----------------------------------------------------------------------------

    @staticmethod
    def _task(row: Sequence[bytes | None]) -> Task:
        body, st, rev, lease, wid, att, started, ready = row
        assert body is not None and st is not None
        status = TaskStatus(st.decode())
        return replace(
            decode_task(body),
            status=status,
            revision=int(rev or 0),
            lease=_text(lease) or None,
            worker_id=_text(wid) or None,
            attempts=int(att or 0),
            started_at=rules.from_epoch(float(started)) if started else None,
            lease_expires_at=(
                rules.from_epoch(float(ready)) if ready and status is TaskStatus.RUNNING else None
            ),
        )

    # -- primitives -------------------------------------------------------------------------

    async def _insert(self, tasks: list[Task]) -> list[bool]:
        now = _num(time.time())
        chunks = [tasks[start : start + _INSERT_CHUNK]
                  for start in range(0, len(tasks), _INSERT_CHUNK)]
        # Ids and fields of a chunk in one argument, then the bodies (Redis's Lua msgpack
        # predates the bin type): the client packs one value per task, not three. Built as
        # they are sent, so the server stores one chunk while the next is encoded.
        calls = ([now, encode([(t.id, _columns(t)) for t in chunk]),
                  *(encode_task(t) for t in chunk)] for chunk in chunks)
        # Noted before sending: an end notice for these can only come after.
        listener, ends = self._listening(), self._wakes[""]
        replies = await self._run_each("insert", calls)
        inserted = [bool(flag) for flags in replies for flag in flags]
        if listener is not None:
            if len(self._fresh) > _ENDED:
                self._fresh.clear()
            self._fresh.update(
                (t.id, (listener, ends, t)) for t, f in zip(tasks, inserted, strict=True) if f)
        return inserted

    async def _get(self, task_ids: Sequence[str]) -> dict[str, Task]:
        found: dict[str, Task] = {}
        for start in range(0, len(task_ids), _CHUNK):
            chunk = task_ids[start : start + _CHUNK]
            rows = await self._run("get", chunk)
            found.update((i, self._task(r)) for i, r in zip(chunk, rows, strict=True) if r[0])
        return found

    async def _replace(self, task: Task, expected_revision: int) -> bool:
        return (await self._replace_many([(task, expected_revision)]))[0]

    async def _replace_many(self, changes: Sequence[tuple[Task, int]]) -> list[bool]:
        if len(self._ended) > _ENDED:
            self._ended.clear()  # only a shortcut: _dependents asks the server without it
        written: list[bool] = []
        for start in range(0, len(changes), _CHUNK):
            chunk = changes[start : start + _CHUNK]
            rows = encode([(task.id, revision, _columns(task)) for task, revision in chunk])
            args = [_num(time.time()), rows, *(encode_task(task) for task, _ in chunk)]
            for (task, _), reply in zip(chunk, await self._run("replace", args), strict=True):
                written.append(int(reply[0]) != 0)
                if int(reply[0]) == 2:
                    self._ended[task.id] = {_text(m) for m in reply[1:]}
        return written

    async def _claim(
        self,
        queue_name: str,
        now: float,
        limit: int,
        worker_id: str | None,
        lease: str,
        lease_expires: float,
    ) -> list[Task | Unreadable]:
        # Wake-ups published from here on may concern work this claim does not see.
        self._seen[queue_name] = self._wakes[queue_name]
        self._next_due.pop(queue_name, None)
        due, *rows = await self._run("claim", [
            _num(now), queue_name, limit, worker_id or "", lease, _num(lease_expires),
            _time_key(lease_expires),
        ])
        self._next_due[queue_name] = None if due is None else float(due)
        return [self._claimed(row, queue_name) for row in rows]

    def _claimed(self, row: Sequence[bytes | None], queue_name: str) -> Task | Unreadable:
        # A claim row is a task row plus the id; the hash fields it bumped are intact even
        # when the body is not, so the revision fences the replacement.
        fields, task_id = row[:-1], _text(row[-1])
        try:
            if fields[0] is None:
                raise SerializationError("the task body is missing")
            return self._task(fields)
        except SerializationError as exc:
            return Unreadable(id=task_id, queue_name=queue_name, reason=str(exc),
                              raw=fields[0] or b"", revision=int(fields[2] or 0))

    async def _extend(self, task_id: str, lease: str, until: float) -> bool:
        args = [_num(time.time()), task_id, lease, _num(until), _time_key(until)]
        return bool(await self._run("extend", args))

    async def _delete(self, task_ids: Sequence[str]) -> list[str]:
        deleted: list[str] = []
        for start in range(0, len(task_ids), _CHUNK):
            gone = await self._run("delete", task_ids[start : start + _CHUNK])
            deleted.extend(_text(i) for i in gone)
        return deleted

    async def _dependents(self, task_ids: Sequence[str]) -> set[str]:
        # The base settles a task's dependents right after the write that ended it, which read
        # them atomically; later dependents see the task ended when they are enqueued.
        if all(i in self._ended for i in task_ids):
            return set().union(*(self._ended.pop(i) for i in task_ids))
        found: set[str] = set()
        async with self._redis("dependents") as r:
            for start in range(0, len(task_ids), _CHUNK):
                keys = [self._p + "dependents:" + i for i in task_ids[start : start + _CHUNK]]
                found.update(_text(m) for m in await r.sunion(keys))
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
        if limit is not None and limit <= 0:
            return []
        names = [] if queue_name is None else [queue_name]
        wanted = _STATUSES if statuses is None else [s.value for s in statuses]
        if not wanted:
            return []
        count = -1 if limit is None else limit
        rows = await self._run(
            "list", [count, offset, int(newest_first), len(names), *names, *wanted]
        )
        return [self._task(row) for row in rows]

    async def _queue_names(self) -> set[str]:
        return {_text(name) for name in await self._run("names", [])}

    async def _counts(self, queue_name: str | None) -> dict[TaskStatus, int]:
        names = [] if queue_name is None else [queue_name]
        counts = await self._run("counts", names)
        return {TaskStatus(s): int(n) for s, n in zip(_STATUSES, counts, strict=True) if n}

    async def _set_paused(self, queue_name: str, paused: bool) -> None:
        async with self._redis("pause") as r:
            if paused:
                await r.sadd(self._p + "paused", queue_name)
            else:
                async with r.pipeline(transaction=True) as pipe:
                    pipe.srem(self._p + "paused", queue_name)
                    pipe.publish(self._p + "wake", queue_name)
                    await pipe.execute()

    async def _paused_queues(self) -> set[str]:
        async with self._redis("paused") as r:
            return {_text(m) for m in await r.smembers(self._p + "paused")}

    async def _next_ready_at(self, queue_names: list[str], now: float) -> float | None:
        # An idle worker asks right after claiming: the claim told. Any write since that could
        # schedule earlier work published a wake-up, which either arrived (so ask) or is on
        # its way and ends the wait this answer is for.
        if self._listening() and queue_names and all(
            q in self._next_due and self._wakes[q] == self._seen[q] for q in queue_names
        ):
            return min((t for q in queue_names if (t := self._next_due[q]) is not None),
                       default=None)
        found = await self._run("next", [_num(now), *queue_names])
        return None if found is None else float(found)

    async def _drop(self) -> None:
        # Only this namespace's keys: SCAN by prefix, never FLUSHDB.
        async with self._redis("drop") as r:
            batch: list[bytes] = []
            async for key in r.scan_iter(match=self._p + "*", count=1000):
                batch.append(key)
                if len(batch) >= 1000:
                    await r.unlink(*batch)
                    batch = []
            if batch:
                await r.unlink(*batch)

    # -- wake-ups ---------------------------------------------------------------------------

    def _listening(self) -> asyncio.Task[None] | None:
        listener = self._listener
        return listener if listener is not None and not listener.done() else None

    async def _remote_change(self, queue_names: list[str]) -> None:
        # Wake-ups carry a queue name that has ready work, or "" when tasks ended.
        queue_names = queue_names or [""]
        if self._listening() is None:
            # Subscribing outlives a caller that gives up waiting, so short waits still get
            # the subscription made.
            if self._subscribing is None or self._subscribing.done():
                self._subscribing = asyncio.create_task(self._subscribe())
                self._subscribing.add_done_callback(lambda t: t.cancelled() or t.exception())
            await asyncio.shield(self._subscribing)
            return  # a wake-up published before the subscription was missed
        if any(self._wakes[q] != self._seen[q] for q in queue_names if q in self._seen):
            return  # published while the last claim ran, or since
        entry = (frozenset(queue_names), asyncio.get_running_loop().create_future())
        self._remote_waiters.add(entry)
        try:
            await entry[1]
        finally:
            self._remote_waiters.discard(entry)

    async def _subscribe(self) -> None:
        async with self._redis("subscribe") as r:
            pubsub = r.pubsub()
            try:
                await pubsub.subscribe(self._p + "wake")
                # Wait for the confirmation: from then on no publication can be missed.
                reply = await pubsub.get_message(timeout=_SUBSCRIBE_TIMEOUT)
                if not reply or reply.get("type") != "subscribe":
                    raise BackendError(f"redis did not confirm the subscription: {reply!r}")
            except BaseException:
                await pubsub.aclose()
                raise
        self._listener = asyncio.create_task(self._listen(pubsub))

    async def _listen(self, pubsub: Any) -> None:
        try:
            while True:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=None)
                if message is None or message.get("type") != "message":
                    continue
                data = message["data"]
                if data[:1] == b"!":  # a task ended, sent whole (see redis_scripts._REPLACE)
                    self._keep_final(data[1:])
                    data = b""
                queue = _text(data)
                self._wakes[queue] += 1
                self._wake(queue)
        except Exception:
            # Connection lost: wake everyone, so they find out by claiming; the next wait
            # subscribes again.
            self._wake(None)
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()

    def _keep_final(self, body: bytes) -> None:
        if not self._awaited:
            return  # nobody here waits for a result (a worker)
        try:
            task = decode_task(body)
        except SerializationError:
            return  # get_result reads it instead
        if task.id in self._awaited:
            if len(self._finals) >= _ENDED:
                self._finals.clear()  # of waits that ended otherwise (a timeout)
            self._finals[task.id] = task

    def _known(self, task_id: str, read: Task | None) -> Task | None:
        if read is not None:
            task = self._finals.pop(task_id, None)
            return task if task is not None and task.revision > read.revision else None
        # Enqueued here while listening, and no end notice since: any end is yet to come.
        fresh = self._fresh.pop(task_id, None)
        if fresh is None or fresh[0] is not self._listening():
            return None
        return fresh[2] if fresh[1] == self._wakes[""] else None

    def _wake(self, queue: str | None) -> None:
        """Wake the waiters for ``queue``; None: all of them."""
        for names, future in self._remote_waiters:
            if (queue is None or queue in names) and not future.done():
                future.set_result(None)


def _packed(*parts: str | bytes | int) -> bytes:
    """One command in the Redis protocol (RESP): an array of bulk strings."""
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        data = part if isinstance(part, bytes) else str(part).encode()
        out.append(b"$%d\r\n%b\r\n" % (len(data), data))
    return b"".join(out)


def _link_open(connection: Any) -> bool:
    """False once the server has closed ``connection`` (or it never connected)."""
    reader = getattr(connection, "_reader", None)  # the asyncio stream redis-py reads
    return reader is not None and not reader.at_eof()


def _columns(task: Task) -> list[Any]:
    """The hash fields of a task, in the order the scripts' ``store`` reads them."""
    ready = rules.ready_at(task)
    return [
        task.queue_name, task.status.value, task.revision, task.lease or "",
        task.worker_id or "", task.attempts, _num(rules.epoch(task.started_at)), _num(ready),
        f"{PRIORITY_MAX - task.priority:08x}", _time_key(ready), " ".join(task.depends_on),
    ]
