"""Test helpers: poll-with-deadline instead of sleeps."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any

# A wake-up counts as prompt when it beats, by far, the fallback that would otherwise end the
# wait: tests that check one push that fallback to 10 s, so a wake-up that never comes still
# fails them, while a loaded machine (CI at a fraction of its usual speed took 0.4 s for a
# NOTIFY) does not.
PROMPT = 2.0
FALLBACK = 10.0


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
