"""The six queue backends (imported lazily, so no driver loads with ``import omniq``) and
``connect(url)``, which picks one by URL scheme."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from omniq.queue.base import BaseTaskQueue, QueueStats
from omniq.queue.url import connect

if TYPE_CHECKING:
    from omniq.queue.file import FileTaskQueue as FileTaskQueue
    from omniq.queue.memory import MemoryTaskQueue as MemoryTaskQueue
    from omniq.queue.nats import NATSTaskQueue as NATSTaskQueue
    from omniq.queue.postgres import PostgreSQLTaskQueue as PostgreSQLTaskQueue
    from omniq.queue.redis import RedisTaskQueue as RedisTaskQueue
    from omniq.queue.sqlite import SQLiteTaskQueue as SQLiteTaskQueue

_LAZY = {
    "MemoryTaskQueue": "omniq.queue.memory",
    "FileTaskQueue": "omniq.queue.file",
    "SQLiteTaskQueue": "omniq.queue.sqlite",
    "PostgreSQLTaskQueue": "omniq.queue.postgres",
    "RedisTaskQueue": "omniq.queue.redis",
    "NATSTaskQueue": "omniq.queue.nats",
}

__all__ = ["BaseTaskQueue", "QueueStats", "connect", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'omniq.queue' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
