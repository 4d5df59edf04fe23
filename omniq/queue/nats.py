"""NATSTaskQueue: task records in a JetStream key-value bucket, claimed by compare-and-set.

JetStream has no sorted index, so every queue object mirrors its namespace's bucket in memory
(fed by an ordered KV watcher) and picks claim candidates locally; the bucket's per-key
revision makes each claim and update atomic. Design and guarantees: docs/backends/nats.md.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from contextlib import suppress
from types import TracebackType
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import msgspec
from msgspec.structs import replace

from omniq.exceptions import BackendError, InvalidTaskError, SerializationError
from omniq.models.task import Task, TaskStatus
from omniq.queue.base import BaseTaskQueue
from omniq.queue.nats_index import _decode, _encode, _Entry, _Head, _head, _Index, _Row, _task
from omniq.queue.unreadable import Unreadable
from omniq.queue.url import import_driver, redact
from omniq.serialization import encode_task

nats_client = import_driver("nats.aio.client")
nats_errors = import_driver("nats.errors")
js_api = import_driver("nats.js.api")
js_errors = import_driver("nats.js.errors")

_log = logging.getLogger(__name__)

_KV_OP = "KV-Operation"
_EXPECT = "Nats-Expected-Last-Subject-Sequence"
_WRONG_LAST = frozenset({10071, 10164})  # JetStream's "wrong last sequence" error codes
_CHUNK = 1000  # requests pipelined at once
_CAS_TRIES = 5  # per-key compare-and-set attempts; each failure means another writer won
_CLAIM_ROUNDS = 8  # candidate batches one claim tries before returning what it has
_STALL = 1.0  # seconds the watcher may lag a barrier before it is rebuilt
_HEARTBEAT = 2.0  # the watcher's idle heartbeat: a lost consumer is rebuilt after two misses
# Key ids use [A-Za-z0-9_.:-]; KV keys allow neither ':' nor empty '.'-tokens, so ':' -> '='
# and '.' -> '/' (ids never contain '=' or '/', so the mapping is reversible). str.replace,
# not str.translate: every write and every watched change maps a key, and replace is faster.
def _key(name: str) -> str:
    return name.replace(":", "=").replace(".", "/")


def _name(key: str) -> str:
    return key.replace("=", ":").replace("/", ".")


class _StreamState(msgspec.Struct):
    last_seq: int = 0


class _StreamInfo(msgspec.Struct):
    """What the barrier reads of JetStream's stream info reply (the rest is skipped)."""

    created: str = ""
    state: _StreamState = msgspec.field(default_factory=_StreamState)
    error: dict[str, Any] | None = None


_info_decoder = msgspec.json.Decoder(_StreamInfo)


def _stream_info(msg: Any) -> _StreamInfo:
    if not msg.data:  # a status reply: JetStream is not answering
        raise nats_errors.NoRespondersError()
    try:
        info = _info_decoder.decode(msg.data)
    except msgspec.DecodeError as exc:
        raise nats_errors.Error(f"unexpected stream info reply: {exc}") from None
    if info.error is not None:
        error = {k: info.error.get(k) for k in ("code", "err_code", "description")}
        js_errors.APIError.from_error(error)  # raises the matching error (NotFoundError...)
    return info


def _direct_get(msg: Any) -> tuple[int, bytes | None] | None:
    """A direct get's reply: (revision, value or None for a delete marker); None: no such key."""
    headers: dict[str, str] = msg.headers or {}
    status = headers.get("Status", "")
    if status == "404":
        return None
    if status == "503":
        raise nats_errors.NoRespondersError()
    if status or "Nats-Sequence" not in headers:
        raise js_errors.APIError(code=int(status) if status.isdigit() else None,
                                 description=headers.get("Description", "no message returned"))
    deleted = bool(headers.get(_KV_OP))
    return int(headers["Nats-Sequence"]), None if deleted else (msg.data or b"")


def _no_reply(acks: list[asyncio.Future[Any]]) -> None:
    for ack in acks:
        if not ack.done():
            ack.set_result(TimeoutError("no reply from the server"))


def _describe_url(url: str) -> str:
    # nats://token@host uses the user part as a secret token: hide it like a password.
    parts = urlsplit(url)
    if parts.password is None and parts.username:
        host = parts.netloc.rpartition("@")[2]
        return urlunsplit(parts._replace(netloc=f"***@{host}"))
    return redact(url)


def _secrets(url: str) -> set[str]:
    parts = urlsplit(url)
    secret = parts.password or parts.username
    return {secret, unquote(secret)} if secret else set()


class NATSTaskQueue(BaseTaskQueue):
    """Tasks in a NATS JetStream key-value bucket (``OMNIQ_<namespace>``), shared safely by
    any number of processes. ``timeout`` bounds each request, ``connect_timeout`` the first
    connection; afterwards the client reconnects by itself and calls fail with BackendError
    while the server is away."""

    @property
    def short_claim_drains(self) -> bool:
        # A claim gives up after a few rounds of compare-and-set races, with due tasks left.
        return self._drained

    def __init__(
        self,
        servers: Sequence[str] | str = ("nats://localhost:4222",),
        *,
        lease_timeout: float = 30.0,
        namespace: str = "omniq",
        max_payload: int = 1 << 20,
        timeout: float = 5.0,
        connect_timeout: float = 2.0,
        replicas: int = 1,
    ) -> None:
        super().__init__(lease_timeout=lease_timeout, namespace=namespace, max_payload=max_payload)
        self.servers = [servers] if isinstance(servers, str) else list(servers)
        if not self.servers:
            raise ValueError("NATSTaskQueue needs at least one server URL")
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.replicas = replicas
        self._where = ",".join(_describe_url(s) for s in self.servers)
        self._hidden = set().union(*(_secrets(s) for s in self.servers))
        self._bucket = f"OMNIQ_{namespace}"
        self._stream = f"KV_{self._bucket}"
        self._prefix = f"$KV.{self._bucket}."
        self._nc: Any = None
        self._js: Any = None
        self._sub: Any = None
        self._wanted = False  # connect() was called and close() was not
        self._ready = False  # connected, and the bucket exists
        self._following = False  # the watcher feeds the index (not needed just to write)
        self._drained = True  # the last claim ran out of candidates (see short_claim_drains)
        self._lock = asyncio.Lock()
        self._index = _Index()
        self._watch_gen = 0
        self._barriers: list[tuple[int, int, asyncio.Future[None]]] = []
        self._listeners: list[tuple[frozenset[str], asyncio.Future[None]]] = []
        self._background: set[asyncio.Task[None]] = set()
        self._acks: dict[str, asyncio.Future[Any]] = {}
        self._inbox = ""
        self._counter = 0

    def _describe(self) -> str:
        return repr([_describe_url(s) for s in self.servers])

    def _scrub(self, text: str) -> str:
        for secret in self._hidden:
            text = text.replace(secret, "***")
        return text

    # -- connection -------------------------------------------------------------------------

    def _errors(self, doing: str) -> _Translated:
        """``async with self._errors("doing X")``: NATS failures leave as BackendError."""
        return _Translated(self, doing)

    def _failure(self, doing: str, exc: BaseException) -> BackendError:
        if isinstance(exc, nats_errors.ConnectionClosedError | nats_errors.NoRespondersError
                      | js_errors.NoStreamResponseError | js_errors.NotFoundError):
            self._ready = False  # reconnect / re-create the bucket on the next call
        detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return BackendError(self._scrub(f"NATS ({self._where}) failed while {doing}: {detail}"))

    async def _open(self) -> None:
        self._wanted = True
        try:
            await self._ensure()
        except BaseException:
            self._wanted = False
            await self._teardown()
            raise

    async def _close(self) -> None:
        self._wanted = False
        await self._teardown()

    async def _teardown(self) -> None:
        self._ready = False
        self._following = False
        await self._unwatch()
        background = [t for t in self._background if t is not asyncio.current_task()]
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        for _, _, fut in self._barriers:
            if not fut.done():
                fut.set_exception(BackendError(f"NATS ({self._where}): connection closed"))
        self._barriers.clear()
        nc, self._nc, self._js = self._nc, None, None
        if nc is not None:
            with suppress(Exception):
                await nc.close()
        self._index.clear()

    async def _ensure(self) -> None:
        """Connect and create the bucket, unless already done."""
        if self._ready and self._nc is not None and not self._nc.is_closed:
            return
        if not self._wanted:
            raise BackendError("queue is not connected: use 'async with queue' or connect()")
        async with self._lock:
            if self._ready and self._nc is not None and not self._nc.is_closed:
                return
            async with self._errors("connecting"):
                if self._nc is None or self._nc.is_closed:
                    await self._teardown()
                    self._nc = await self._dial()
                    self._js = self._nc.jetstream(timeout=self.timeout)
                    self._inbox = self._nc.new_inbox()
                    await self._nc.subscribe(self._inbox + ".*", cb=self._on_ack)
                await self._create_bucket()
                if self._following:  # the bucket may be a new one: read it from the start
                    self._index.clear()
                    await self._watch()
                self._ready = True

    async def _follow(self) -> None:
        """Start feeding the index from the bucket, unless it is fed already. Only reads of
        the index need this: a process that just enqueues (or reads tasks by id) never has
        every write of the namespace pushed back to it."""
        while not self._following:
            await self._ensure()
            async with self._lock:
                if self._following or not self._ready:
                    continue  # done meanwhile, or the connection must be made again first
                async with self._errors("connecting"):
                    await self._watch()  # the index is empty but for what this process wrote
                    self._following = True

    async def _dial(self) -> Any:
        nc = nats_client.Client()
        try:
            await asyncio.wait_for(nc.connect(
                servers=self.servers, name=f"omniq-{self.namespace}",
                connect_timeout=self.connect_timeout, allow_reconnect=True,
                max_reconnect_attempts=-1, reconnect_time_wait=0.5,
                ping_interval=10, max_outstanding_pings=3,
                # Fail at once while disconnected instead of buffering writes that would be
                # applied after we reported them failed.
                pending_size=0,
                error_cb=self._on_error, disconnected_cb=self._on_disconnect,
                reconnected_cb=self._on_reconnect,
            ), self.connect_timeout)
        except BaseException:
            with suppress(Exception):
                await nc.close()
            raise
        return nc

    async def _create_bucket(self) -> None:
        try:
            await self._js.stream_info(self._stream)
        except js_errors.NotFoundError:
            await self._js.create_key_value(
                bucket=self._bucket, history=1, direct=True, replicas=self.replicas,
                description=f"OmniQ tasks of namespace {self.namespace}",
            )

    async def _on_error(self, exc: Exception) -> None:
        _log.debug("NATS client error: %s", self._scrub(f"{type(exc).__name__}: {exc}"))

    async def _on_disconnect(self) -> None:
        if self._nc is None:  # our own close()
            return
        _log.warning("lost the NATS connection (%s); reconnecting", self._where)
        # Replies to what was sent on the dropped connection never come: fail their waits.
        dropped = nats_errors.Error("the connection dropped before the server replied")
        for ack in self._acks.values():
            if not ack.done():
                ack.set_result(dropped)
        for _, fut in self._listeners:  # idle workers learn at once, and back off
            if not fut.done():
                fut.set_exception(BackendError(f"lost the NATS connection ({self._where})"))

    async def _on_reconnect(self) -> None:
        # The server may have lost our ephemeral watcher: rebuild it from where it stopped.
        _log.info("reconnected to NATS (%s)", self._where)
        task = asyncio.get_running_loop().create_task(self._rewatch())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _rewatch(self) -> None:
        try:
            async with self._lock:
                if self._ready and self._following:
                    await self._watch()
        except Exception as exc:  # the next barrier notices and tries again
            _log.debug("rebuilding the NATS watcher failed: %s", self._scrub(str(exc)))

    # -- the watcher and barriers -----------------------------------------------------------

    async def _watch(self) -> None:
        """(Re)start the ordered consumer that feeds the index, from the revision after
        ``seen``: with history 1 the stream holds exactly the latest version of every key."""
        await self._unwatch()
        self._watch_gen += 1
        gen = self._watch_gen

        async def deliver(msg: Any) -> None:
            if gen == self._watch_gen:  # a replaced watcher's leftovers are ignored
                self._on_msg(msg)

        config = js_api.ConsumerConfig(
            deliver_policy=js_api.DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=self._index.seen + 1,
        )
        self._sub = await self._js.subscribe(
            self._prefix + ">", stream=self._stream, cb=deliver, config=config,
            ordered_consumer=True, idle_heartbeat=_HEARTBEAT,
        )

    async def _unwatch(self) -> None:
        sub, self._sub = self._sub, None
        self._watch_gen += 1
        if sub is not None:
            with suppress(Exception):
                await sub.unsubscribe()

    def _on_msg(self, msg: Any) -> None:
        kv = int(msg.metadata.sequence.stream)
        deleted = bool(msg.headers and msg.headers.get(_KV_OP))
        kind, _, name = msg.subject[len(self._prefix):].partition(".")
        name = _name(name)
        if kind == "t":
            if deleted:
                old = self._index.remove(name, kv)
                if old is not None:
                    self._wake(old.head.queue, False)
            else:
                try:
                    head = _decode(msg.data)
                except msgspec.DecodeError as exc:
                    self._broken(name, kv, msg.data, exc, watched=True)
                else:
                    self._absorb(name, kv, head, watched=True)
        elif kind == "p":
            paused = not deleted and msg.data == b"1"
            (self._index.paused.add if paused else self._index.paused.discard)(name)
            self._wake(name, not paused)
        self._index.seen = max(self._index.seen, kv)
        while self._barriers and self._barriers[0][0] <= self._index.seen:
            fut = heapq.heappop(self._barriers)[2]
            if not fut.done():
                fut.set_result(None)

    def _absorb(self, task_id: str, kv: int, head: _Head, *, watched: bool = False) -> None:
        if self._indexes(kv, watched) and self._index.put(task_id, kv, head):
            self._wake(head.queue, head.ready_at is not None
                       and head.status is not TaskStatus.RUNNING)

    def _indexes(self, kv: int, watched: bool) -> bool:
        # A version read or written directly is newer than the index only if the watcher
        # has not delivered it yet; older ones are skipped so a later delete is never undone.
        # Without a watcher nothing would ever remove what is put, so nothing is kept.
        return watched or (self._following and kv > self._index.seen)

    def _broken(self, task_id: str, kv: int, raw: bytes, exc: Exception, *,
                watched: bool = False) -> None:
        # Claims of any queue report it (its queue cannot be read), so wake every worker.
        reason = f"cannot decode stored data: {exc}"
        if self._indexes(kv, watched) and self._index.mark_broken(task_id, kv, raw, reason):
            self._mark_ready()
            for _, fut in self._listeners:
                if not fut.done():
                    fut.set_result(None)

    def _wake(self, queue: str, ready: bool) -> None:
        if ready:
            self._mark_ready()  # a change between a worker's claim and its wait is not lost
        for names, fut in self._listeners:
            if not fut.done() and (not names or (ready and queue in names)):
                fut.set_result(None)

    async def _barrier(self) -> None:
        """Wait until the index reflects every write the server acknowledged before now."""
        async with self._errors("reading"):
            [reply] = await self._exchange(
                [(f"$JS.API.STREAM.INFO.{self._stream}", b"", None)], raw=True)
            info = _stream_info(reply)
            # The watcher may be ahead of the answer (writes land between the two), so only a
            # new creation time means the bucket was deleted and created again under us.
            if self._index.created is not None and info.created != self._index.created:
                _log.warning("NATS bucket %s was created again; reloading", self._bucket)
                self._index.clear()
                await self._watch()
            self._index.created = info.created
        await self._reach(info.state.last_seq)

    async def _reach(self, target: int) -> None:
        """Wait until the watcher delivered revision ``target``, rebuilding it if it stalls."""
        for wait in (_STALL, self.timeout):
            if self._index.seen >= target:
                return
            self._counter += 1
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            heapq.heappush(self._barriers, (target, self._counter, fut))
            try:
                await asyncio.wait_for(fut, wait)
                return
            except TimeoutError:
                async with self._errors("rebuilding the watcher"):
                    await self._watch()
        raise BackendError(f"NATS ({self._where}): the task index did not catch up")

    async def _sync(self) -> None:
        await self._follow()
        await self._barrier()

    # -- requests ---------------------------------------------------------------------------

    def _subject(self, kind: str, name: str) -> str:
        return f"{self._prefix}{kind}.{_key(name)}"

    async def _publish(
        self, items: Sequence[tuple[str, bytes, int | None, bool]], doing: str
    ) -> list[int | None]:
        """Publish (subject, value, expected revision, delete) in order, pipelined; per item
        the new revision, or None where the expected revision was not current."""
        # Our own ack inbox rather than js.publish_async: strict order, one round trip, and
        # error replies reach us (nats-py's async publish drops them).
        out: list[int | None] = []
        for start in range(0, len(items), _CHUNK):
            requests: list[tuple[str, bytes, dict[str, str] | None]] = []
            for subject, value, last, delete in items[start : start + _CHUNK]:
                headers = {} if last is None else {_EXPECT: str(last)}
                if delete:
                    headers[_KV_OP] = "DEL"
                requests.append((subject, value, headers or None))
            async with self._errors(doing):
                replies = await self._exchange(requests)
            for reply in replies:
                out.append(reply)
                if reply is not None:
                    self._index.written = max(self._index.written, reply)
        return out

    async def _exchange(
        self, requests: Sequence[tuple[str, bytes, dict[str, str] | None]], *, raw: bool = False
    ) -> list[Any]:
        """Send (subject, payload, headers) with replies to our inbox, pipelined in order, and
        return the replies: publish acks as ``_on_ack`` reads them, or (``raw``) the reply
        messages of JetStream API requests, left for the caller to read what it needs.
        nats-py's request would cost a helper task per reply and parse all of it."""
        loop = asyncio.get_running_loop()
        tokens: list[str] = []
        replies: list[asyncio.Future[Any]] = []
        try:
            for subject, payload, headers in requests:
                self._counter += 1
                token = f"r{self._counter}" if raw else str(self._counter)
                tokens.append(token)
                replies.append(loop.create_future())
                self._acks[token] = replies[-1]
                await self._nc.publish(subject, payload, reply=f"{self._inbox}.{token}",
                                       headers=headers)
            # Awaited in turn, without helper tasks, under one plain timer (cheaper than
            # asyncio.timeout's context manager): this is every write's hot path. A dropped
            # connection fails the pending replies at once (_on_disconnect), the timer those
            # that get none.
            timer = loop.call_later(self.timeout, _no_reply, replies)
            try:
                got = [await reply for reply in replies]
            finally:
                timer.cancel()
        finally:
            for token in tokens:
                self._acks.pop(token).cancel()
        for reply in got:
            if isinstance(reply, BaseException):
                raise reply
        return got

    async def _on_ack(self, msg: Any) -> None:
        token = msg.subject.rpartition(".")[2]
        fut = self._acks.get(token)
        if fut is None or fut.done():
            return
        if token[:1] == "r":  # a raw reply (see _exchange)
            fut.set_result(msg)
            return
        if not msg.data:  # a status reply: no stream listens on the subject
            fut.set_result(js_errors.NoStreamResponseError())
            return
        try:
            reply = msgspec.json.decode(msg.data)
            error = reply.get("error")
            if error is None:
                fut.set_result(int(reply["seq"]))
            elif error.get("err_code") in _WRONG_LAST:
                fut.set_result(None)
            else:
                fut.set_result(js_errors.APIError(
                    code=error.get("code"), err_code=error.get("err_code"),
                    description=error.get("description")))
        except (msgspec.DecodeError, AttributeError, KeyError, TypeError, ValueError) as exc:
            fut.set_result(nats_errors.Error(f"unexpected publish reply: {exc}"))

    async def _fetch(self, keys: Sequence[str]) -> dict[str, tuple[int, bytes | None]]:
        """The latest version of each key: (revision, value, None for a delete marker)."""
        found: dict[str, tuple[int, bytes | None]] = {}
        get = f"$JS.API.DIRECT.GET.{self._stream}."  # + subject: the last message on it
        async with self._errors("reading"):
            for start in range(0, len(keys), _CHUNK):
                chunk = keys[start : start + _CHUNK]
                replies = await self._exchange([(get + key, b"", None) for key in chunk],
                                               raw=True)
                for key, reply in zip(chunk, replies, strict=True):
                    got = _direct_get(reply)
                    if got is not None:
                        found[key] = got
        return found

    async def _load(
        self, task_ids: Sequence[str], unreadable: dict[str, str] | None = None
    ) -> dict[str, _Row]:
        """Read records straight from the server (feeding the index with what is newer).
        Records that do not decode are left out (and their reasons put in ``unreadable``)."""
        fetched = await self._fetch([self._subject("t", i) for i in task_ids])
        rows: dict[str, _Row] = {}
        for task_id in task_ids:
            got = fetched.get(self._subject("t", task_id))
            if got is not None and got[1] is not None:
                try:
                    head = _decode(got[1])
                except msgspec.DecodeError as exc:
                    self._broken(task_id, got[0], got[1], exc)
                    if unreadable is not None:
                        unreadable[task_id] = str(exc)
                    continue
                self._absorb(task_id, got[0], head)
                rows[task_id] = _Row(got[0], head.seq or got[0], head)
        return rows

    async def _cas(self, task_id: str, change: Callable[[_Row], _Head | None]) -> bool:
        """Write ``change(row)`` if the record is still that row; on a conflict re-read it
        and decide again. False when ``change`` declines or the task is gone."""
        row = self._index.rows.get(task_id)
        for _ in range(_CAS_TRIES):
            head = change(row) if row is not None else None
            if row is None or head is None:  # the cached row may be stale: ask the server
                row = (await self._load([task_id])).get(task_id)
                head = change(row) if row is not None else None
                if row is None or head is None:
                    return False
            [kv] = await self._publish(
                [(self._subject("t", task_id), _encode(head), row.kv, False)], "updating")
            if kv is not None:
                self._absorb(task_id, kv, head)
                return True
            row = None
        return False

    # -- primitives -------------------------------------------------------------------------

    async def _insert(self, tasks: list[Task]) -> list[bool]:
        await self._ensure()
        limit = int(self._nc.max_payload)
        heads, values = [], []
        for task in tasks:
            head = _head(task, 0)
            value = _encode(head)
            if len(value) + 512 > limit:  # headers share the server's message limit
                raise InvalidTaskError(
                    f"task {task.id} is {len(value)} bytes stored, over the NATS server's "
                    f"max_payload ({limit} bytes)")
            heads.append(head)
            values.append(value)
        subjects = [self._subject("t", t.id) for t in tasks]
        revs = await self._publish(
            [(s, v, 0, False) for s, v in zip(subjects, values, strict=True)], "enqueueing")
        conflicts = [i for i, kv in enumerate(revs) if kv is None]
        if conflicts:
            # A deleted id leaves a delete marker; creating it again must expect that revision.
            current = await self._fetch([subjects[i] for i in conflicts])
            again = [(i, current[subjects[i]][0]) for i in conflicts
                     if subjects[i] in current and current[subjects[i]][1] is None]
            retried = await self._publish(
                [(subjects[i], values[i], last, False) for i, last in again], "enqueueing")
            for (i, _), kv in zip(again, retried, strict=True):
                revs[i] = kv
        for task, head, kv in zip(tasks, heads, revs, strict=True):
            if kv is not None:
                self._absorb(task.id, kv, head)
        return [kv is not None for kv in revs]

    async def _get(self, task_ids: Sequence[str]) -> dict[str, Task]:
        await self._ensure()
        unreadable: dict[str, str] = {}
        rows = await self._load(task_ids, unreadable)
        for task_id, reason in unreadable.items():
            raise SerializationError(f"cannot decode stored task {task_id}: {reason}")
        return {i: _task(row.head) for i, row in rows.items()}

    async def _replace(self, task: Task, expected_revision: int) -> bool:
        await self._ensure()
        body = encode_task(task)

        def change(row: _Row) -> _Head | None:
            if row.head.revision != expected_revision:
                return None
            return _head(task, row.seq, body)

        return await self._cas(task.id, change)

    async def _replace_many(self, changes: Sequence[tuple[Task, int]]) -> list[bool]:
        # One pipelined round trip for the tasks whose indexed row is the expected revision
        # (a worker's own claims, usually); the others take the re-reading path one by one.
        await self._ensure()
        written = [False] * len(changes)
        batch: list[tuple[int, _Head, int]] = []
        for i, (task, revision) in enumerate(changes):
            row = self._index.rows.get(task.id)
            if row is not None and row.head.revision == revision:
                batch.append((i, _head(task, row.seq), row.kv))
        revs = await self._publish([
            (self._subject("t", changes[i][0].id), _encode(head), kv, False)
            for i, head, kv in batch
        ], "updating")
        for (i, head, _), kv in zip(batch, revs, strict=True):
            if kv is not None:
                self._absorb(changes[i][0].id, kv, head)
                written[i] = True
        for i, (task, revision) in enumerate(changes):
            if not written[i]:  # stale index or a conflict: re-read and decide
                written[i] = await self._replace(task, revision)
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
        await self._sync()
        if queue_name in self._index.paused:
            return []
        claimed: list[tuple[_Entry, Task | Unreadable]] = []
        # Records whose head does not decode have no queue or place: any claim reports them.
        broken = [
            Unreadable(id=i, queue_name=queue_name, reason=reason, raw=raw, token=kv)
            for i, (kv, raw, reason) in list(self._index.broken.items())[:limit]
        ]
        limit -= len(broken)
        self._drained = False
        for _ in range(_CLAIM_ROUNDS if limit else 0):
            self._index.promote(queue_name, now)
            batch = self._index.take(queue_name, limit - len(claimed))
            if not batch:
                self._drained = True
                break
            olds = [self._index.rows[e[4]].head for e in batch]
            heads = [replace(
                old, seq=e[2], status=TaskStatus.RUNNING, lease=lease, worker_id=worker_id,
                attempts=old.attempts + 1, started_at=now, ready_at=lease_expires,
                revision=old.revision + 1,
            ) for e, old in zip(batch, olds, strict=True)]
            try:
                revs = await self._publish([
                    (self._subject("t", e[4]), _encode(h), e[3], False)
                    for e, h in zip(batch, heads, strict=True)
                ], "claiming")
            except BaseException:
                for entry in batch:  # outcome unknown: keep them claimable here
                    heapq.heappush(self._index.due[queue_name], entry)
                raise
            lost = []
            for entry, head, kv in zip(batch, heads, revs, strict=True):
                if kv is None:
                    lost.append(entry[4])  # another worker (or writer) got there first
                else:
                    self._absorb(entry[4], kv, head)
                    claimed.append((entry, self._claimed(entry[4], head, queue_name)))
            if len(claimed) >= limit:
                break
            if lost:
                await self._load(lost)  # their new versions re-enter the heaps if ready
        claimed.sort(key=lambda pair: pair[0])
        return [*broken, *(task for _, task in claimed)]

    @staticmethod
    def _claimed(task_id: str, head: _Head, queue_name: str) -> Task | Unreadable:
        # The head decoded (the claim rewrote it) but the task in it may not: its revision,
        # kept in the head, fences the replacement.
        try:
            return _task(head)
        except SerializationError as exc:
            return Unreadable(id=task_id, queue_name=queue_name, reason=str(exc),
                              raw=head.body, revision=head.revision)

    async def _replace_unreadable(self, record: Unreadable, task: Task) -> bool:
        if record.token is None:
            return await super()._replace_unreadable(record, task)
        # Nothing of the record decodes: compare-and-set on its bucket revision.
        head = _head(task, int(record.token))
        [kv] = await self._publish(
            [(self._subject("t", task.id), _encode(head), int(record.token), False)], "updating")
        if kv is not None:
            self._absorb(task.id, kv, head)
        return kv is not None

    async def _extend(self, task_id: str, lease: str, until: float) -> bool:
        await self._ensure()

        def change(row: _Row) -> _Head | None:
            head = row.head
            if head.status is not TaskStatus.RUNNING or head.lease != lease:
                return None
            return replace(head, seq=row.seq, ready_at=until, revision=head.revision + 1)

        return await self._cas(task_id, change)

    async def _delete(self, task_ids: Sequence[str]) -> list[str]:
        await self._ensure()
        rows = {i: self._index.rows[i] for i in task_ids if i in self._index.rows}
        rows.update(await self._load([i for i in task_ids if i not in rows]))
        deleted: list[str] = []
        for _ in range(_CAS_TRIES):
            if not rows:
                break
            ids = list(rows)
            revs = await self._publish(
                [(self._subject("t", i), b"", rows[i].kv, True) for i in ids], "deleting")
            deleted.extend(i for i, kv in zip(ids, revs, strict=True) if kv is not None)
            # Conflicts were stale reads: delete the current version, if there still is one.
            rows = await self._load([i for i, kv in zip(ids, revs, strict=True) if kv is None])
        return deleted

    async def _dependents(self, task_ids: Sequence[str]) -> set[str]:
        # Called right after this process ended or deleted those tasks. A dependent created
        # before that write has a lower revision, so it is indexed once the watcher passes our
        # own newest write; one created after it reads the ended task itself when enqueued.
        await self._follow()
        await self._reach(self._index.written)
        return {kid for i in task_ids for kid in self._index.children.get(i, ())}

    async def _list(
        self,
        queue_name: str | None,
        statuses: Sequence[TaskStatus] | None,
        limit: int | None,
        *,
        offset: int = 0,
        newest_first: bool = False,
    ) -> list[Task]:
        await self._sync()
        rows = self._index.rows
        found = [
            (rows[i].seq, i)
            for (queue, status), ids in self._index.members.items()
            if (queue_name is None or queue == queue_name)
            and (statuses is None or status in statuses)
            for i in ids
        ]
        if limit is None:
            chosen = sorted(found, reverse=newest_first)[offset:]
        else:
            pick = heapq.nlargest if newest_first else heapq.nsmallest
            chosen = pick(offset + limit, found)[offset:]
        return [_task(rows[i].head) for _, i in chosen]

    async def _queue_names(self) -> set[str]:
        await self._sync()
        return {queue for (queue, _), ids in self._index.members.items() if ids}

    async def _counts(self, queue_name: str | None) -> dict[TaskStatus, int]:
        await self._sync()
        counts: dict[TaskStatus, int] = defaultdict(int)
        for (queue, status), ids in self._index.members.items():
            if queue_name is None or queue == queue_name:
                counts[status] += len(ids)
        return counts

    async def _set_paused(self, queue_name: str, paused: bool) -> None:
        await self._ensure()
        value = b"1" if paused else b"0"
        await self._publish([(self._subject("p", queue_name), value, None, False)], "pausing")

    async def _paused_queues(self) -> set[str]:
        await self._sync()
        return set(self._index.paused)

    async def _next_ready_at(self, queue_names: list[str], now: float) -> float | None:
        await self._sync()
        times = [self._index.next_ready(q, now) for q in queue_names or list(self._index.later)]
        return min((t for t in times if t is not None), default=None)

    def _known(self, task_id: str, read: Task | None) -> Task | None:
        # The watcher's mirror holds every record as its last change left it: an end shown
        # there is final unless a later write undoes it, which would show there too.
        row = self._index.rows.get(task_id) if self._following else None
        if row is None or not row.head.status.terminal:
            return None
        if read is not None and row.head.revision <= read.revision:
            return None
        try:
            return _task(row.head)
        except SerializationError:
            return None  # the read reports it

    async def _remote_change(self, queue_names: list[str]) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        listener = (frozenset(queue_names), fut)
        # Listening before the watcher starts: a first watcher's catch-up wakes it early
        # (the caller looks again), never too late.
        self._listeners.append(listener)
        try:
            await self._follow()
            if not self._nc.is_connected:
                raise BackendError(f"NATS ({self._where}) is unreachable; reconnecting")
            await fut
        finally:
            self._listeners.remove(listener)

    async def _drop(self) -> None:
        await self._ensure()
        async with self._lock:
            self._ready = False
            self._following = False
            await self._unwatch()
            self._index.clear()
            async with self._errors("dropping the namespace"):
                with suppress(js_errors.NotFoundError):
                    await self._js.delete_stream(self._stream)


class _Translated:
    # A class rather than @asynccontextmanager: it wraps every write, and a class costs less.
    __slots__ = ("doing", "queue")

    def __init__(self, queue: NATSTaskQueue, doing: str) -> None:
        self.queue, self.doing = queue, doing

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if isinstance(exc, nats_errors.Error | OSError | TimeoutError):
            raise self.queue._failure(self.doing, exc) from None
