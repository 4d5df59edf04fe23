"""OmniQ: an asyncio-native task queue with one interface over six backends.

    queue = omniq.connect("sqlite:///omniq.db")
    async with queue:
        task_id = await queue.enqueue(omniq.Task(func=send_email, kwargs={"to": "a@b.c"}))

Backend drivers are imported only when their queue class is first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from omniq.exceptions import (
    BackendError,
    DependencyError,
    InvalidTaskError,
    LeaseLostError,
    OmniQError,
    SerializationError,
    TaskCancelledError,
    TaskExpiredError,
    TaskFailedError,
    TaskNotAllowedError,
    TaskNotFoundError,
)
from omniq.models.schedule import Schedule
from omniq.models.task import Task, TaskStatus
from omniq.queue.url import connect
from omniq.registry import task

if TYPE_CHECKING:
    from omniq.queue.file import FileTaskQueue
    from omniq.queue.memory import MemoryTaskQueue
    from omniq.queue.nats import NATSTaskQueue
    from omniq.queue.postgres import PostgreSQLTaskQueue
    from omniq.queue.redis import RedisTaskQueue
    from omniq.queue.sqlite import SQLiteTaskQueue
    from omniq.worker import WorkerPool

__version__ = "0.1.0"

__all__ = [
    "BackendError",
    "DependencyError",
    "FileTaskQueue",
    "InvalidTaskError",
    "LeaseLostError",
    "MemoryTaskQueue",
    "NATSTaskQueue",
    "OmniQError",
    "PostgreSQLTaskQueue",
    "RedisTaskQueue",
    "SQLiteTaskQueue",
    "Schedule",
    "SerializationError",
    "Task",
    "TaskCancelledError",
    "TaskExpiredError",
    "TaskFailedError",
    "TaskNotAllowedError",
    "TaskNotFoundError",
    "TaskStatus",
    "WorkerPool",
    "connect",
    "task",
]


def __getattr__(name: str) -> Any:
    # Queue classes and the worker load on first use, keeping drivers out of `import omniq`.
    if name == "WorkerPool":
        from omniq.worker import WorkerPool

        return WorkerPool
    if name.endswith("TaskQueue"):
        import omniq.queue

        return getattr(omniq.queue, name)
    raise AttributeError(f"module 'omniq' has no attribute {name!r}")
