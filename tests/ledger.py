"""A ledger kept outside the backend under test, and the checker that reads it.

Every process appends one line per event to its own file ``<book>/<pid>.log``::

    <event> <task id> <pid> <attempt> <time.monotonic_ns()>

``enqueued`` (by a producer, once the queue acknowledged the task), ``started`` and ``done``
(by the task itself, around its body) and ``killed`` (by a test, for a process it SIGKILLed;
the task id is ``-``). ``attempt`` is the n-th execution of that task, counted by the ledger
itself (one byte appended per start to ``<book>/attempts/<id>``). The monotonic clock is
system-wide on Linux, so times compare across processes.

Workers may run the task only when started with ``--import tests.ledger``.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import omniq

EVENTS = ("enqueued", "started", "done", "killed")


def append(book: str | Path, event: str, key: str, attempt: int = 0, pid: int = 0) -> None:
    """Append one event line to this process's file in ``book``."""
    pid = pid or os.getpid()
    line = f"{event} {key} {pid} {attempt} {time.monotonic_ns()}\n"
    # O_APPEND writes of one short line are atomic; each process has its own file anyway.
    fd = os.open(os.path.join(book, f"{os.getpid()}.log"),
                 os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def _next_attempt(book: str, key: str) -> int:
    folder = os.path.join(book, "attempts")
    os.makedirs(folder, exist_ok=True)
    fd = os.open(os.path.join(folder, key), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, b".")
        return os.fstat(fd).st_size
    finally:
        os.close(fd)


@omniq.task
async def record(book: str, key: str, seconds: float = 0.0, block: bool = False) -> int:
    """Log ``started``, take ``seconds`` (blocking the worker's event loop if ``block``, as a
    frozen worker would), log ``done``; return this process's pid."""
    attempt = _next_attempt(book, key)
    append(book, "started", key, attempt)
    if block:
        time.sleep(seconds)
    elif seconds:
        await asyncio.sleep(seconds)
    append(book, "done", key, attempt)
    return os.getpid()


@dataclass(frozen=True)
class Event:
    """One ledger line."""

    event: str
    key: str
    pid: int
    attempt: int
    at: float  # time.monotonic() seconds


@dataclass
class Report:
    """What the ledger shows about a run."""

    enqueued: set[str]
    done: set[str]
    executions: Counter[str]  # started lines per task id
    overlaps: list[tuple[str, int, int]] = field(default_factory=list)  # (id, pid, pid)

    @property
    def lost(self) -> set[str]:
        """Acknowledged by the queue, never finished by a worker."""
        return self.enqueued - self.done

    @property
    def duplicates(self) -> int:
        """Executions beyond the first, over all tasks."""
        return sum(n - 1 for n in self.executions.values() if n > 1)

    @property
    def rerun(self) -> set[str]:
        """Tasks that started more than once."""
        return {key for key, n in self.executions.items() if n > 1}


class Book:
    """Reads a ledger directory as it grows: ``refresh()`` picks up only the new lines."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.events: list[Event] = []
        self.counts: Counter[str] = Counter()
        self.enqueued: set[str] = set()
        self.done: set[str] = set()
        self.running: defaultdict[int, set[str]] = defaultdict(set)  # pid -> started, not done
        self._offsets: dict[Path, int] = {}

    def refresh(self) -> Book:
        """Read what was appended since the last call (complete lines only)."""
        for path in self.path.glob("*.log"):
            with open(path, "rb") as f:
                f.seek(self._offsets.get(path, 0))
                data = f.read()
            complete = data[: data.rfind(b"\n") + 1]
            self._offsets[path] = self._offsets.get(path, 0) + len(complete)
            for line in complete.decode().splitlines():
                event, key, pid, attempt, at = line.split()
                self.events.append(Event(event, key, int(pid), int(attempt), int(at) / 1e9))
                self.counts[event] += 1
                if event == "enqueued":
                    self.enqueued.add(key)
                elif event == "started":
                    self.running[int(pid)].add(key)
                elif event == "done":
                    self.done.add(key)
                    self.running[int(pid)].discard(key)
        return self

    def sorted(self) -> list[Event]:
        """Every event read so far, in time order."""
        return sorted(self.events, key=lambda e: e.at)


def check(book: str | Path) -> Report:
    """Lost, duplicated and overlapping executions, from the ledger alone."""
    events = Book(book).refresh().sorted()
    killed = {e.pid: e.at for e in events if e.event == "killed"}
    report = Report(
        enqueued={e.key for e in events if e.event == "enqueued"},
        done={e.key for e in events if e.event == "done"},
        executions=Counter(e.key for e in events if e.event == "started"),
    )
    # One interval per execution: from its start to its done, or to its process's death (or
    # forever, if that process was not killed and never finished it).
    runs: defaultdict[str, dict[tuple[int, int], list[float]]] = defaultdict(dict)
    for e in events:
        if e.event == "started":
            runs[e.key][(e.pid, e.attempt)] = [e.at, killed.get(e.pid, float("inf"))]
        elif e.event == "done" and (e.pid, e.attempt) in runs[e.key]:
            runs[e.key][(e.pid, e.attempt)][1] = e.at
    for key in report.rerun:
        latest, holder = float("-inf"), 0  # the run reaching furthest so far
        for start, end, pid in sorted((s, e, p) for (p, _), (s, e) in runs[key].items()):
            if start < latest:
                report.overlaps.append((key, holder, pid))
            if end > latest:
                latest, holder = end, pid
    return report


def starts_after(book: str | Path, moment: float) -> dict[int, float]:
    """Per worker pid, the time of its first ``started`` after ``moment``."""
    first: dict[int, float] = {}
    for e in Book(book).refresh().sorted():
        if e.event == "started" and e.at > moment:
            first.setdefault(e.pid, e.at)
    return first
