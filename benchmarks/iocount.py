"""Round-trip counting for profiles: counts socket writes (one per request or pipeline sent,
whatever the driver), NATS messages published, aiosqlite calls (each one a hop to the
SQLite thread) and fsyncs (the File backend) in the worker process. The marks copy the
counters, so the driver gets the counts between the first and the N-th job start."""

from __future__ import annotations

import asyncio.selector_events
import os
import threading
from collections.abc import Callable
from typing import Any

from benchmarks.marks import COUNTERS

_LOCK = threading.Lock()  # fsyncs are counted from the File backend's threads


def _counting(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    COUNTERS.setdefault(name, 0)

    def counted(*args: Any, **kwargs: Any) -> Any:
        with _LOCK:
            COUNTERS[name] += 1
        return func(*args, **kwargs)

    return counted


def install() -> None:
    """Patch the counters in (before any connection is made)."""
    transport: Any = getattr(asyncio.selector_events, "_SelectorSocketTransport")  # noqa: B009
    transport.write = _counting("socket_writes", transport.write)
    os.fsync = _counting("fsyncs", os.fsync)
    try:
        import aiosqlite.core

        conn: Any = aiosqlite.core.Connection
        conn._execute = _counting("sqlite_calls", conn._execute)
    except ImportError:
        pass
    try:
        import nats.aio.client

        client: Any = nats.aio.client.Client
        client.publish = _counting("nats_publishes", client.publish)
    except ImportError:
        pass
