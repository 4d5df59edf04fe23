"""Test helpers: waits that end on a condition (poll-with-deadline) or on a wake-up."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any

from omniq.queue.base import BaseTaskQueue

# A wake-up counts as prompt when it beats, by far, the fallback that would otherwise end the
# wait: tests that check one push that fallback to 10 s, so a wake-up that never comes still
# fails them, while a loaded machine (CI at a fraction of its usual speed took 0.4 s for a
# NOTIFY) does not.
PROMPT = 2.0
FALLBACK = 10.0


async def woken_by(
    waiter: BaseTaskQueue, action: Callable[[], Awaitable[Any]], *,
    queue_name: str = "default", since: int | None = None,
) -> float:
    """Seconds from ``action`` until ``waiter``, idle in ``wait_for_work`` with its fallback
    ``FALLBACK`` away, wakes up; fails if it wakes before the action or not at all."""
    waiting = asyncio.create_task(waiter.wait_for_work([queue_name], FALLBACK, since=since))
    await asyncio.sleep(0.2)
    assert not waiting.done(), "no wake-up without a change"
    start = time.monotonic()
    await action()
    await asyncio.wait_for(waiting, FALLBACK)
    return time.monotonic() - start


async def eventually(
    check: Callable[[], Awaitable[Any] | Any], timeout: float = 5.0, interval: float = 0.02
) -> Any:
    """Poll ``check`` until it returns something truthy; fail with its last value on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last value: {value!r})")
        await asyncio.sleep(interval)
