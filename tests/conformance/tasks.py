"""Task functions the conformance suite runs (module level, so every backend can store them)."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import omniq

calls: list[str] = []
started = threading.Event()


@omniq.task
async def add(a: int, b: int) -> int:
    return a + b


@omniq.task
def multiply(a: int, b: int) -> int:
    # Sync on purpose: runs in a worker thread.
    return a * b


@omniq.task
def thread_name() -> str:
    return threading.current_thread().name


@omniq.task
async def record(label: str) -> str:
    calls.append(label)
    return label


@omniq.task
async def boom(message: str = "boom") -> None:
    raise RuntimeError(message)


@omniq.task
async def sleep_for(seconds: float) -> str:
    await asyncio.sleep(seconds)
    return "slept"


@omniq.task
def blocking_sleep(seconds: float) -> str:
    time.sleep(seconds)
    return "slept"


@omniq.task
async def append_line(path: str, line: str) -> None:
    with Path(path).open("a") as handle:
        handle.write(line + "\n")


@omniq.task
async def unserialisable_result() -> object:
    return object()


@omniq.task(queue_name="mail", priority=7, max_retries=2, timeout=30.0)
async def with_defaults() -> str:
    return "ok"


async def not_registered() -> str:
    # Deliberately not decorated; the worker may run it only when passed as a callable
    # in its own process or when its module is imported by the worker.
    return "ran"
