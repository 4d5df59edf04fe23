"""FileTaskQueue: one file per task under a directory, on local disk or any fsspec URL.

Layout under ``<base_dir>/<namespace>/`` (docs/backends/file.md explains it at length)::

    format                                   layout version
    lock                                     writers flock it; its first bytes change per write
    empty                                    (local disk) every empty entry below links to it
    version                                  (fsspec stores only) changes on every write
    journal                                  the last enqueue sequence number, and a write in
                                             progress (left pending if its writer died)
    tasks/<fid>.msgpack                      8-byte sequence number + the encoded task
    ready/<queue>/<prio>-<time>-<seq>-<fid>  empty; one per claimable task (sorts in claim order)
    state/<queue>/<status>/<seq>-<fid>       empty; one per task, for counts and listings
    deps/<fid of dependency>/<fid>           empty; one per dependency link
    paused/<queue>                           empty; present while the queue is paused

Writers hold the lock for a short critical section; readers take no lock (every file appears
whole: temp file + rename). A write touching several files is journalled first, and whoever
takes the lock next finishes a journalled write a killed writer left pending.
"""

from __future__ import annotations

import asyncio
import bisect
import errno
import hashlib
import os
import posixpath
import re
import shutil
import struct
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, suppress
from typing import Any, Protocol, TypeVar
from urllib.parse import unquote

from msgspec.structs import replace

from omniq.exceptions import BackendError, InvalidTaskError, SerializationError
from omniq.models.task import Task, TaskStatus, check_queue_name
from omniq.queue import rules
from omniq.queue.base import BaseTaskQueue, until_changed
from omniq.queue.unreadable import Unreadable
from omniq.queue.url import import_driver, redact
from omniq.serialization import decode, decode_task, encode, encode_task

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: only one process may use a directory
    fcntl = None  # type: ignore[assignment]

T = TypeVar("T")
# (kind, path relative to the namespace root, data): kind is "touch", "put", "write" or "rm";
# "write" rewrites an existing record, in place when the write is journalled.
Op = tuple[str, str, bytes | None]

FORMAT = 2  # 2: `seq` moved into `journal`; both it and records (framed) are rewritten in place
_TEMP = ".tmp-"
# A temp file this old belongs to a writer that died (a live one renames it within ms).
TEMP_MAX_AGE = 300.0
_PLAIN = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_.-")
_PLAIN_NAME = re.compile(r"^[a-z0-9_.-]*$")
# Path parts never start with "." (so never "." or "..", nor a temp file's name).
_REL = re.compile(r"^[a-z0-9_%~-][a-z0-9_.%~-]*(/[a-z0-9_%~-][a-z0-9_.%~-]*)*$")
_READY = re.compile(r"^\d{10}-\d{18}-\d{12}-[a-z0-9_.%~-]+$")
_PRIO_MAX = 2**31 - 1
# Ready times are kept as whole microseconds shifted to be positive for any datetime.
_OFFSET_US = 70_000_000_000 * 1_000_000
_RANK = {"touch": 0, "put": 1, "write": 1, "rm": 2}
# The journal file: sequence number, then the length and CRC-32 of a pending write (length 0:
# none) and that write. A torn write fails its CRC; its writer had not changed anything yet.
_HEAD = struct.Struct(">QQI")
_PENDING = struct.Struct(">QI")
# A record: the enqueue sequence number, a zero byte, the task's length and CRC-32, the task.
# Records are rewritten in place under the journal, so a reader without the lock may meet one
# half-written (its CRC fails) and reads it again. Layout 1 records hold the task right after
# the sequence number (msgpack never starts a task with a zero byte); they are still read.
_FRAME = struct.Struct(">QBII")
_PEEKS = 3  # lock-free reads of a record caught half-written before reading it under the lock
_LOCKS: dict[str, threading.Lock] = {}
_BINARY = getattr(os, "O_BINARY", 0)  # Windows would translate newlines without it
_datasync = getattr(os, "fdatasync", os.fsync)  # macOS has no fdatasync


def _escape(name: str) -> str:
    """A file-name-safe, case-insensitive-safe, reversible form of an id or queue name."""
    if _PLAIN_NAME.fullmatch(name):
        return name
    return "".join(c if c in _PLAIN else f"%{ord(c):02x}" for c in name)


def _fid(task_id: str) -> str:
    escaped = _escape(task_id)
    if len(escaped) <= 150:
        return escaped
    return "~" + hashlib.sha256(task_id.encode()).hexdigest()


def _record(task_id: str) -> str:
    return f"tasks/{_fid(task_id)}.msgpack"


def _tkey(seconds: float) -> int:
    return round(seconds * 1_000_000) + _OFFSET_US


def _frame(seq: int, task: Task) -> bytes:
    body = encode_task(task)
    return _FRAME.pack(seq, 0, len(body), zlib.crc32(body)) + body


def _unframe(data: bytes) -> tuple[int, bytes] | None:
    """A record's (sequence number, encoded task), or None if it is caught half-written."""
    if len(data) <= 8:
        return None
    seq = int.from_bytes(data[:8], "big")
    if data[8]:
        return seq, data[8:]  # layout 1
    if len(data) < _FRAME.size:
        return None
    _, _, size, crc = _FRAME.unpack_from(data)
    body = data[_FRAME.size : _FRAME.size + size]
    return (seq, body) if len(body) == size and zlib.crc32(body) == crc else None


def _record_of(data: bytes, where: str) -> tuple[int, Task]:
    record = _unframe(data)
    if record is None:
        raise SerializationError(f"{where} is torn, or half-written as it is rewritten")
    return record[0], decode_task(record[1])


def read_record(path: str) -> Task:
    """The task stored in a record file (for inspecting a queue directory by hand)."""
    with open(path, "rb") as f:
        return _record_of(f.read(), path)[1]


def _check_rel(rel: str) -> str:
    """Every path is built from escaped names; refuse anything that could leave the root."""
    if not _REL.fullmatch(rel):
        raise InvalidTaskError(f"unsafe path {rel!r} in the file queue")
    return rel


class _Store(Protocol):
    """The file operations the queue needs; each call is atomic on its own."""

    journaled: bool  # whether multi-file writes are journalled (process-local stores: no)
    threaded: bool  # whether calls block (run them in a thread)

    def read(self, rel: str) -> bytes | None: ...
    def read_range(self, rel: str, offset: int, size: int) -> bytes: ...
    def put(self, rel: str, data: bytes) -> None: ...
    # Bytes past ``data`` may be kept or dropped: its only reader (the journal's) frames them.
    def overwrite(self, rel: str, offset: int, data: bytes) -> None: ...
    def rewrite(self, rel: str, data: bytes) -> None: ...
    def touch(self, rel: str) -> None: ...
    def remove(self, rel: str) -> None: ...
    def names(self, rel: str) -> list[str]: ...
    def exists(self, rel: str) -> bool: ...
    def lock(self) -> AbstractContextManager[None]: ...
    def version(self) -> bytes: ...
    def bump(self) -> bytes: ...
    def drop(self) -> None: ...
    def clean(self, max_age: float) -> None: ...


class _LocalStore:
    """Local disk: temp file + fsync + os.replace; flock on ``lock`` between processes."""

    journaled = True
    threaded = True

    def __init__(self, root: str, fsync: bool) -> None:
        self.root = os.path.abspath(root)
        self.fsync = fsync
        self.empty = os.path.join(self.root, "empty")

    def path(self, rel: str) -> str:
        full = os.path.normpath(os.path.join(self.root, *_check_rel(rel).split("/")))
        if not full.startswith(self.root + os.sep):
            raise InvalidTaskError(f"path {rel!r} leaves the queue directory")
        return full

    def read(self, rel: str) -> bytes | None:
        try:
            with open(self.path(rel), "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None

    def read_range(self, rel: str, offset: int, size: int) -> bytes:
        try:
            fd = os.open(self.path(rel), os.O_RDONLY | _BINARY)
        except FileNotFoundError:
            return b""
        try:
            os.lseek(fd, offset, os.SEEK_SET)  # a fresh descriptor: no shared offset
            return os.read(fd, size)
        finally:
            os.close(fd)

    def put(self, rel: str, data: bytes) -> None:
        target = self.path(rel)
        tmp = os.path.join(os.path.dirname(target), _TEMP + uuid.uuid4().hex)
        fd = self._create(tmp, os.O_EXCL)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                if self.fsync:
                    os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException:
            with suppress(OSError):
                os.unlink(tmp)
            raise

    def overwrite(self, rel: str, offset: int, data: bytes) -> None:
        # In place: on some disks creating a file (a temp file) costs several times a write
        # and an fsync, and the journal is written twice per change. Readers of it frame it.
        with os.fdopen(self._create(self.path(rel), _BINARY, os.O_RDWR), "r+b") as f:
            f.seek(offset)
            f.write(data)  # all of it, or an error (a short os.write would pass silently)
            f.flush()
            if self.fsync:
                _datasync(f.fileno())

    def rewrite(self, rel: str, data: bytes) -> None:
        # In place (no new inode); only under the journal, which can redo a torn rewrite.
        self.overwrite(rel, 0, data)

    @staticmethod
    def _create(path: str, extra: int = 0, mode: int = os.O_WRONLY) -> int:
        flags = mode | os.O_CREAT | extra
        try:
            return os.open(path, flags, 0o644)
        except FileNotFoundError:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            return os.open(path, flags, 0o644)

    def touch(self, rel: str) -> None:
        # Index entries are empty files, so each is a hard link to one: a link costs a
        # directory entry, where a new file costs an inode, tens of times more on some disks.
        path = self.path(rel)
        for _ in range(3):
            try:
                os.link(self.empty, path)
                return
            except FileExistsError:
                return
            except FileNotFoundError:  # the folder, or `empty` itself, is missing
                os.makedirs(os.path.dirname(path), exist_ok=True)
                if not os.path.exists(self.empty):
                    self._renew_empty()
            except OSError as exc:
                if exc.errno != errno.EMLINK:
                    break  # no hard links on this filesystem
                self._renew_empty()  # this one has as many links as the filesystem allows
        os.close(self._create(path))

    def _renew_empty(self) -> None:
        tmp = os.path.join(self.root, _TEMP + uuid.uuid4().hex)
        os.close(self._create(tmp, os.O_EXCL))
        os.replace(tmp, self.empty)

    def remove(self, rel: str) -> None:
        path = self.path(rel)
        with suppress(FileNotFoundError):
            os.unlink(path)
        if rel.startswith("deps/"):
            with suppress(OSError):  # not empty yet, or gone: either is fine
                os.rmdir(os.path.dirname(path))

    def names(self, rel: str) -> list[str]:
        try:
            return [n for n in os.listdir(self.path(rel)) if not n.startswith(".")]
        except (FileNotFoundError, NotADirectoryError):
            return []

    def exists(self, rel: str) -> bool:
        return os.path.exists(self.path(rel))

    @contextmanager
    def lock(self) -> Iterator[None]:
        # A fresh descriptor per critical section: flock excludes other descriptors, even in
        # this process, and the kernel drops it if the holder is killed.
        fd = self._create(os.path.join(self.root, "lock"), mode=os.O_RDWR)
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            else:  # pragma: no cover
                with _LOCKS.setdefault(self.root, threading.Lock()):
                    yield
        finally:
            os.close(fd)

    def version(self) -> bytes:
        try:
            with open(os.path.join(self.root, "lock"), "rb") as f:
                return f.read(8)
        except FileNotFoundError:
            return b""

    def bump(self) -> bytes:
        # Another descriptor on the lock file: closing it does not release the flock.
        value = os.urandom(8)
        fd = self._create(os.path.join(self.root, "lock"))
        try:
            os.write(fd, value)  # a fresh descriptor writes at offset 0
        finally:
            os.close(fd)
        return value

    def drop(self) -> None:
        with self.lock(), suppress(FileNotFoundError):
            shutil.rmtree(self.root)

    def clean(self, max_age: float) -> None:
        limit = time.time() - max_age
        for folder in (self.root, os.path.join(self.root, "tasks")):
            with suppress(FileNotFoundError):
                for entry in os.scandir(folder):
                    if entry.name.startswith(_TEMP):
                        with suppress(FileNotFoundError):
                            if entry.stat().st_mtime < limit:
                                os.unlink(entry.path)


class _FsspecStore:
    """Any fsspec filesystem: each object written whole; a lock only within this process."""

    def __init__(self, fs: Any, root: str) -> None:
        self.fs = fs
        self.root = root.rstrip("/")
        protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
        # memory:// lives in this process: nothing survives a crash, and calls do not block.
        self.journaled = self.threaded = protocol != "memory"
        self._lock = _LOCKS.setdefault(f"{protocol}://{self.root}", threading.Lock())

    def path(self, rel: str) -> str:
        full = posixpath.normpath(posixpath.join(self.root, _check_rel(rel)))
        if not full.startswith(self.root + "/"):
            raise InvalidTaskError(f"path {rel!r} leaves the queue directory")
        return full

    def read(self, rel: str) -> bytes | None:
        try:
            return bytes(self.fs.cat_file(self.path(rel)))
        except FileNotFoundError:
            return None

    def read_range(self, rel: str, offset: int, size: int) -> bytes:
        try:
            return bytes(self.fs.cat_file(self.path(rel), start=offset, end=offset + size))
        except FileNotFoundError:
            return b""

    def put(self, rel: str, data: bytes) -> None:
        self.fs.pipe_file(self.path(rel), data)

    def overwrite(self, rel: str, offset: int, data: bytes) -> None:
        # One object, written whole: only the bytes before ``offset`` need reading.
        head = self.read_range(rel, 0, offset) if offset else b""
        self.put(rel, head.ljust(offset, b"\0") + data)

    def rewrite(self, rel: str, data: bytes) -> None:
        self.put(rel, data)  # an object is written whole anyway

    def touch(self, rel: str) -> None:
        self.fs.pipe_file(self.path(rel), b"")

    def remove(self, rel: str) -> None:
        with suppress(FileNotFoundError):
            self.fs.rm_file(self.path(rel))

    def names(self, rel: str) -> list[str]:
        try:
            found = self.fs.ls(self.path(rel), detail=False)
        except (FileNotFoundError, NotADirectoryError):
            return []
        return [posixpath.basename(p.rstrip("/")) for p in found]

    def exists(self, rel: str) -> bool:
        return self.read(rel) is not None

    @contextmanager
    def lock(self) -> Iterator[None]:
        with self._lock:
            yield

    def version(self) -> bytes:
        return self.read("version") or b""

    def bump(self) -> bytes:
        value = os.urandom(8)
        self.put("version", value)
        return value

    def drop(self) -> None:
        with self._lock, suppress(FileNotFoundError):
            self.fs.rm(self.root, recursive=True)

    def clean(self, max_age: float) -> None:
        return None  # objects are written whole; there are no temp files


def _make_store(base_dir: str, namespace: str, fsync: bool) -> _Store:
    if "://" not in base_dir and "::" not in base_dir:
        return _LocalStore(os.path.join(base_dir, namespace), fsync)
    fsspec = import_driver("fsspec")
    fs, path = fsspec.core.url_to_fs(base_dir)
    local = import_driver("fsspec.implementations.local").LocalFileSystem
    if isinstance(fs, local):
        return _LocalStore(os.path.join(path, namespace), fsync)
    return _FsspecStore(fs, posixpath.join(path, namespace))


class FileTaskQueue(BaseTaskQueue):
    """Tasks as files under ``base_dir`` (a local path, ``file://`` URL or any fsspec URL).

    On local disk several processes may share the directory: writes are atomic renames and
    claims hold an ``flock``. On object stores claims are atomic only within one process.
    ``fsync=False`` keeps crash safety for killed processes but not for power loss.
    """

    def __init__(
        self,
        base_dir: str,
        *,
        lease_timeout: float = 30.0,
        namespace: str = "omniq",
        max_payload: int = 1 << 20,
        fsync: bool = True,
        poll_interval: float = 0.05,
    ) -> None:
        super().__init__(lease_timeout=lease_timeout, namespace=namespace, max_payload=max_payload)
        self.base_dir = base_dir
        self.poll_interval = poll_interval
        self._store: _Store = _make_store(base_dir, namespace, fsync)
        self._lock = asyncio.Lock()
        # Sorted ready/ listings, valid while the version is the one this queue last saw
        # under the lock (every writer changes it before and after writing).
        self._ready: dict[str, list[str]] = {}
        self._seen: bytes | None = None
        self._seq = 0  # the last enqueue sequence number, read under the lock by _recover

    def _describe(self) -> str:
        return repr(redact(self.base_dir))

    # -- plumbing ---------------------------------------------------------------------------

    async def _io(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            if self._store.threaded:
                return await asyncio.to_thread(fn, *args)
            return fn(*args)
        except OSError as exc:
            raise BackendError(f"file queue {redact(self.base_dir)}: {exc}") from exc

    async def _write(self, fn: Callable[[list[Op]], T]) -> T:
        """Run ``fn`` under the lock; it reads, returns a result and lists the writes to make."""
        async with self._lock:
            return await self._io(self._locked, fn)

    def _locked(self, fn: Callable[[list[Op]], T]) -> T:
        store = self._store
        with store.lock():
            seen = store.version()
            if seen != self._seen:
                self._ready.clear()
            self._seen = None  # unknown until this section ends well
            if self._recover():
                seen = store.version()
            ops: list[Op] = []
            seq = self._seq
            result = fn(ops)
            if ops:
                self._commit(ops, seq)
                seen = store.bump()
            self._seen = seen
            return result

    def _commit(self, ops: list[Op], seq: int) -> None:
        """Apply ``ops``; ``seq`` is the sequence number before them, ``self._seq`` after."""
        # Hints in ready/ are checked against the record at every claim, so a write that
        # changes one record besides them needs no journal.
        store = self._store
        store.bump()  # before: a writer dying mid-way still invalidates others' listings
        journal = store.journaled and sum(not op[1].startswith("ready/") for op in ops) > 1
        if journal:
            data = encode([self._seq, ops])
            store.overwrite("journal", 8, _PENDING.pack(len(data), zlib.crc32(data)) + data)
        self._perform(ops, journal)
        if journal or self._seq != seq:
            # Synced like the journal: a lost clearing would replay it over later writes.
            self._settle(self._seq)

    def _perform(self, ops: Sequence[Op], journalled: bool) -> None:
        # New index entries first and stale ones last, so a reader never loses a task.
        final = {rel: (kind, rel, data) for kind, rel, data in ops}
        for kind, rel, data in sorted(final.values(), key=lambda op: _RANK[op[0]]):
            if kind == "write" and journalled:
                assert data is not None
                self._store.rewrite(rel, data)
            elif kind in ("put", "write"):
                assert data is not None
                self._store.put(rel, data)
            elif kind == "touch":
                self._store.touch(rel)
            else:
                self._store.remove(rel)
            folder, _, name = rel.rpartition("/")
            cached = self._ready.get(folder)
            if cached is not None:
                at = bisect.bisect_left(cached, name)
                present = at < len(cached) and cached[at] == name
                if kind == "touch" and not present:
                    cached.insert(at, name)
                elif kind == "rm" and present:
                    del cached[at]

    def _recover(self) -> bool:
        """Read the sequence number, and finish the write of a writer that died holding the
        lock (ops are idempotent)."""
        store = self._store
        head = store.read_range("journal", 0, _HEAD.size)
        self._seq, size, crc = _HEAD.unpack(head.ljust(_HEAD.size, b"\0"))
        if not size:
            return False
        data = store.read_range("journal", _HEAD.size, size)
        if len(data) == size and zlib.crc32(data) == crc:
            seq, ops = self._parse(data)
            store.bump()
            self._ready.clear()
            self._perform(ops, True)
            self._seq = seq
        # else torn: its writer died writing it, before any other change; nothing to finish.
        self._settle(self._seq)
        store.bump()
        return True

    def _settle(self, seq: int) -> None:
        """Write the journal as holding sequence number ``seq`` and no pending write."""
        self._store.overwrite("journal", 0, _HEAD.pack(seq, 0, 0))

    def _parse(self, data: bytes, *, bare: bool = False) -> tuple[int, list[Op]]:
        """A journalled write: the sequence number after it and its ops. A ``bare`` (layout 1)
        journal holds only the ops (its sequence number went to ``seq``)."""
        try:
            raw: Any
            seq, raw = (0, decode(data)) if bare else decode(data)
            ops: list[Op] = [(str(k), _check_rel(str(r)), d) for k, r, d in raw]
            if any(kind not in _RANK or (kind in ("put", "write")) != (data is not None)
                   for kind, _, data in ops):
                raise ValueError("unknown operation")
            return int(seq), ops
        except (ValueError, TypeError) as exc:
            raise BackendError(f"unreadable journal in {redact(self.base_dir)}: {exc}") from exc

    def _upgrade(self) -> None:
        """Layout 1 kept the sequence number in ``seq`` and a pending write as a bare journal;
        each step can be repeated if this is cut short, as ``format`` is written last."""
        store = self._store
        data = store.read("journal")
        if data and data[:1] != b"\0":  # a layout-1 journal (layout 2 starts with a zero byte)
            self._perform(self._parse(data, bare=True)[1], True)
        self._settle(int(store.read("seq") or b"0"))

    def _read(self, rel: str) -> tuple[int, Task] | None:
        """A record, read under the lock (where none is half-written once _recover has run)."""
        data = self._store.read(rel)
        return None if data is None else _record_of(data, f"record {rel}")

    def _peek(self, rel: str) -> tuple[int, Task] | None:
        """A record, read without the lock: one caught half-written is read again."""
        for _ in range(_PEEKS):
            with suppress(SerializationError):
                return self._read(rel)
            time.sleep(0.001)  # a rewrite takes microseconds
        with self._store.lock():  # a writer died mid-rewrite: finish its journal first
            self._recover()
            return self._read(rel)

    @staticmethod
    def _entries(seq: int, task: Task) -> set[str]:
        fq, fid = _escape(task.queue_name), _fid(task.id)
        entries = {f"state/{fq}/{task.status.value}/{seq:012d}-{fid}"}
        ready = rules.ready_at(task)
        if ready is not None:
            prio = _PRIO_MAX - task.priority
            entries.add(f"ready/{fq}/{prio:010d}-{_tkey(ready):018d}-{seq:012d}-{fid}")
        return entries

    def _change(self, ops: list[Op], seq: int, old: Task | None, new: Task | None) -> None:
        """List the writes that turn record ``old`` into ``new`` (None: absent)."""
        task = new or old
        assert task is not None
        before = self._entries(seq, old) if old else set()
        after = self._entries(seq, new) if new else set()
        ops.extend(("touch", rel, None) for rel in sorted(after - before))
        if new is None:
            ops.append(("rm", _record(task.id), None))
        else:
            ops.append(("put" if old is None else "write", _record(task.id), _frame(seq, new)))
        ops.extend(("rm", rel, None) for rel in sorted(before - after))

    def _queues(self, folder: str, queue_name: str | None) -> list[str]:
        return [_escape(queue_name)] if queue_name is not None else self._store.names(folder)

    # -- life cycle -------------------------------------------------------------------------

    async def _open(self) -> None:
        await self._io(self._prepare)

    def _prepare(self) -> None:
        self._store.clean(TEMP_MAX_AGE)
        with self._store.lock():
            found = self._store.read("format")
            layout = FORMAT if found is None else int(found.split()[-1])
            if layout > FORMAT:
                raise BackendError(
                    f"{redact(self.base_dir)} holds OmniQ file layout {layout}; "
                    f"this OmniQ knows {FORMAT} (upgrade OmniQ)"
                )
            if layout < FORMAT:
                self._upgrade()
            if found is None or layout < FORMAT:
                self._store.put("format", f"omniq-file {FORMAT}\n".encode())
                self._store.remove("seq")
            self._recover()

    async def _close(self) -> None:
        return None

    # -- primitives -------------------------------------------------------------------------

    async def _insert(self, tasks: list[Task]) -> list[bool]:
        def insert(ops: list[Op]) -> list[bool]:
            seq = self._seq
            inserted = []
            for task in tasks:
                new = not self._store.exists(_record(task.id))
                if new:
                    seq += 1
                    self._change(ops, seq, None, task)
                    fid = _fid(task.id)
                    ops.extend(("touch", f"deps/{_fid(d)}/{fid}", None) for d in task.depends_on)
                inserted.append(new)
            self._seq = seq
            return inserted

        return await self._write(insert)

    async def _get(self, task_ids: Sequence[str]) -> dict[str, Task]:
        def get() -> dict[str, Task]:
            found = {}
            for task_id in task_ids:
                record = self._peek(_record(task_id))
                if record is not None and record[1].id == task_id:
                    found[task_id] = record[1]
            return found

        return await self._io(get)

    async def _replace(self, task: Task, expected_revision: int) -> bool:
        return (await self._replace_many([(task, expected_revision)]))[0]

    async def _replace_many(self, changes: Sequence[tuple[Task, int]]) -> list[bool]:
        # One critical section (one lock, one journal) for a worker's batch of outcomes.
        def swap(ops: list[Op]) -> list[bool]:
            written = []
            for task, expected_revision in changes:
                record = self._read(_record(task.id))
                ok = record is not None and record[1].revision == expected_revision
                if ok:
                    assert record is not None
                    self._change(ops, record[0], record[1], task)
                written.append(ok)
            return written

        return await self._write(swap)

    async def _claim(
        self,
        queue_name: str,
        now: float,
        limit: int,
        worker_id: str | None,
        lease: str,
        lease_expires: float,
    ) -> list[Task | Unreadable]:
        folder = f"ready/{_escape(queue_name)}"
        cutoff = f"{_tkey(now):018d}"
        started, expires = rules.from_epoch(now), rules.from_epoch(lease_expires)

        def claim(ops: list[Op]) -> list[Task | Unreadable]:
            if self._store.exists(f"paused/{_escape(queue_name)}"):
                return []  # checked under the same lock as the claim
            # Names sort in claim order (priority, ready time, enqueue order): no decoding.
            names = self._ready.get(folder)
            if names is None:
                names = sorted(filter(_READY.fullmatch, self._store.names(folder)))
                self._ready[folder] = names
            taken: list[Task | Unreadable] = []
            for name in names:
                if len(taken) >= limit:
                    break
                if name[11:29] > cutoff:
                    continue
                try:
                    record = self._read(f"tasks/{name[43:]}.msgpack")
                except SerializationError as exc:
                    taken.append(self._unreadable(queue_name, f"{folder}/{name}", exc, ops))
                    continue
                if record is None or f"{folder}/{name}" not in self._entries(*record):
                    ops.append(("rm", f"{folder}/{name}", None))  # a stale hint
                    continue
                seq, task = record
                new = replace(
                    task, status=TaskStatus.RUNNING, lease=lease, worker_id=worker_id,
                    attempts=task.attempts + 1, started_at=started, lease_expires_at=expires,
                    revision=task.revision + 1,
                )
                self._change(ops, seq, task, new)
                taken.append(new)
            return taken

        return await self._write(claim)

    def _unreadable(self, queue_name: str, hint: str, exc: Exception, ops: list[Op]) -> Unreadable:
        # The record is left as it is (a claim cannot rewrite what it cannot decode); the
        # replacement compares its bytes. An id kept only as a hash cannot be recovered:
        # such a record loses its ready hint, so claims stop meeting it.
        fid = hint.rpartition("/")[2][43:]
        raw = self._store.read(f"tasks/{fid}.msgpack") or b""
        if fid.startswith("~"):
            ops.append(("rm", hint, None))
        return Unreadable(id=unquote(fid), queue_name=queue_name, reason=str(exc), raw=raw,
                          token=hint)

    async def _replace_unreadable(self, record: Unreadable, task: Task) -> bool:
        hint = str(record.token)
        seq = int(hint.rpartition("/")[2][30:42])  # ready hints name the enqueue sequence

        def swap(ops: list[Op]) -> bool:
            if self._store.read(_record(task.id)) != record.raw:
                return False  # changed meanwhile: someone else dealt with it
            fq, fid = _escape(task.queue_name), _fid(task.id)
            new = self._entries(seq, task)
            old = {hint, *(f"state/{fq}/{s.value}/{seq:012d}-{fid}" for s in TaskStatus)}
            ops.extend(("rm", rel, None) for rel in sorted(old - new)
                       if rel == hint or self._store.exists(rel))
            self._change(ops, seq, None, task)
            return True

        return await self._write(swap)

    async def _extend(self, task_id: str, lease: str, until: float) -> bool:
        def extend(ops: list[Op]) -> bool:
            record = self._read(_record(task_id))
            if record is None:
                return False
            seq, task = record
            if task.status is not TaskStatus.RUNNING or task.lease != lease:
                return False
            new = replace(task, lease_expires_at=rules.from_epoch(until),
                          revision=task.revision + 1)
            self._change(ops, seq, task, new)
            return True

        return await self._write(extend)

    async def _delete(self, task_ids: Sequence[str]) -> list[str]:
        def delete(ops: list[Op]) -> list[str]:
            deleted = []
            for task_id in dict.fromkeys(task_ids):
                record = self._read(_record(task_id))
                if record is None:
                    continue
                seq, task = record
                self._change(ops, seq, task, None)
                fid = _fid(task_id)
                ops.extend(("rm", f"deps/{_fid(d)}/{fid}", None) for d in task.depends_on)
                deleted.append(task_id)
            return deleted

        return await self._write(delete)

    async def _dependents(self, task_ids: Sequence[str]) -> set[str]:
        def dependents() -> set[str]:
            found: set[str] = set()
            for task_id in task_ids:
                for fid in self._store.names(f"deps/{_fid(task_id)}"):
                    if not fid.startswith("~"):
                        found.add(unquote(fid))
                    elif (record := self._peek(f"tasks/{fid}.msgpack")) is not None:
                        found.add(record[1].id)
            return found

        return await self._io(dependents)

    async def _list(
        self,
        queue_name: str | None,
        statuses: Sequence[TaskStatus] | None,
        limit: int | None,
        *,
        offset: int = 0,
        newest_first: bool = False,
    ) -> list[Task]:
        wanted = list(TaskStatus) if statuses is None else list(statuses)

        def listing() -> list[Task]:
            # Entry names start with the enqueue sequence number: sorting them is enqueue order.
            # A task caught between two status folders has the same name in both: one entry.
            names = sorted(
                {
                    name
                    for q in self._queues("state", queue_name)
                    for status in wanted
                    for name in self._store.names(f"state/{q}/{status.value}")
                },
                reverse=newest_first,
            )[offset:]
            found: dict[str, Task] = {}
            for name in names:
                if limit is not None and len(found) >= limit:
                    break
                record = self._peek(f"tasks/{name[13:]}.msgpack")
                if record is None:
                    continue  # deleted meanwhile
                task = record[1]
                if task.status in wanted and queue_name in (None, task.queue_name):
                    found.setdefault(task.id, task)
            return list(found.values())

        return await self._io(listing)

    async def _counts(self, queue_name: str | None) -> dict[TaskStatus, int]:
        def counts() -> dict[TaskStatus, int]:
            found: dict[TaskStatus, int] = {}
            for q in self._queues("state", queue_name):
                for status in TaskStatus:
                    n = len(self._store.names(f"state/{q}/{status.value}"))
                    if n:
                        found[status] = found.get(status, 0) + n
            return found

        return await self._io(counts)

    async def _queue_names(self) -> set[str]:
        def names() -> set[str]:
            found = {
                unquote(q)
                for q in self._store.names("state")
                if any(self._store.names(f"state/{q}/{s.value}") for s in TaskStatus)
            }
            return {n for n in found if _valid_queue(n)}

        return await self._io(names)

    async def _set_paused(self, queue_name: str, paused: bool) -> None:
        def mark(ops: list[Op]) -> None:
            ops.append(("touch" if paused else "rm", f"paused/{_escape(queue_name)}", None))

        await self._write(mark)

    async def _paused_queues(self) -> set[str]:
        def paused() -> set[str]:
            names = {unquote(n) for n in self._store.names("paused")}
            return {n for n in names if _valid_queue(n)}

        return await self._io(paused)

    async def _next_ready_at(self, queue_names: list[str], now: float) -> float | None:
        cutoff = _tkey(now)

        def earliest() -> float | None:
            queues = [_escape(n) for n in queue_names] or self._store.names("ready")
            keyed = (
                (int(name[11:29]), name)
                for q in queues
                for name in self._store.names(f"ready/{q}")
                if _READY.fullmatch(name)
            )
            best = min((k for k in keyed if k[0] > cutoff), default=None)
            if best is None:
                return None
            # The name holds whole microseconds; the record has the exact time.
            record = self._peek(f"tasks/{best[1][43:]}.msgpack")
            exact = rules.ready_at(record[1]) if record is not None else None
            return exact if exact is not None and exact > now else (best[0] - _OFFSET_US) / 1e6

        return await self._io(earliest)

    async def _remote_change(self, queue_names: list[str]) -> None:
        # Every write changes a few version bytes; polling them is one small read.
        await until_changed(lambda: self._io(self._store.version), self.poll_interval)

    async def _drop(self) -> None:
        async with self._lock:
            await self._io(self._store.drop)


def _valid_queue(name: str) -> bool:
    try:
        check_queue_name(name)
    except InvalidTaskError:
        return False
    return True
