"""Example task functions used by the demo (and a starting point for your own)."""

from __future__ import annotations

import asyncio
import hashlib
import time

import omniq

_attempts: dict[str, int] = {}


@omniq.task(queue_name="default", timeout=10)
async def send_email(to: str, subject: str) -> str:
    """An async task: runs on the worker's event loop."""
    await asyncio.sleep(0.05)  # stands in for an SMTP round trip
    return f"sent {subject!r} to {to}"


@omniq.task(timeout=10)
def make_thumbnail(name: str, size: int) -> str:
    """A sync, CPU-ish task: runs in a worker thread."""
    digest = hashlib.sha256(f"{name}:{size}".encode()).hexdigest()
    time.sleep(0.02)
    return f"{name}@{size}px:{digest[:8]}"


@omniq.task(max_retries=3, retry_delay=0.2)
async def flaky_call(key: str) -> str:
    """Fails on its first attempt, succeeds on the retry (shows backoff)."""
    _attempts[key] = _attempts.get(key, 0) + 1
    if _attempts[key] == 1:
        raise ConnectionError("upstream timed out")
    return f"{key} ok after {_attempts[key]} attempts"


@omniq.task
async def heartbeat() -> str:
    """A recurring task."""
    return time.strftime("%H:%M:%S")


@omniq.task
async def build_report(count: int) -> str:
    """Runs only after the thumbnails it depends on completed."""
    return f"report over {count} thumbnails"


@omniq.task(queue_name="payments", max_retries=1, retry_delay=0.1)
async def charge_card(order: str, cents: int) -> str:
    """Declines amounts over 1,000.00 (so the dashboard screenshots show failures)."""
    await asyncio.sleep(0.01)
    if cents > 100_000:
        raise ValueError(f"card declined for order {order}: {cents / 100:.2f} is over the limit")
    return f"charged {cents / 100:.2f} for {order}"
