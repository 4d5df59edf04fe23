"""The SQL backends' row layout: hot columns a claim can update in place, plus the task body."""

from __future__ import annotations

from typing import Any

from msgspec.structs import replace

from omniq.exceptions import SerializationError
from omniq.models.task import Task, TaskStatus
from omniq.queue import rules
from omniq.queue.unreadable import Unreadable
from omniq.serialization import decode_task, encode_task

#: Written columns besides ``id``, in the order of ``row_values``.
WRITTEN = (
    "queue_name", "status", "priority", "ready_at", "revision", "lease", "worker_id",
    "attempts", "started_at", "body",
)
#: Columns read back, in the order ``task_from_row`` expects.
READ = "seq, id, status, ready_at, revision, lease, worker_id, attempts, started_at, body"


def row_values(task: Task) -> tuple[Any, ...]:
    """Values for ``WRITTEN``: the ready time is derived, so a claim can index on it."""
    return (
        task.queue_name,
        task.status.value,
        task.priority,
        rules.ready_at(task),
        task.revision,
        task.lease,
        task.worker_id,
        task.attempts,
        rules.epoch(task.started_at),
        encode_task(task),
    )


def task_from_row(row: Any) -> Task:
    """The task of a ``READ`` row: the body, with the hot columns laid over it (a claim
    updates only those)."""
    _seq, _id, status, ready, revision, lease, worker, attempts, started, body = row[:10]
    status = TaskStatus(status)
    return replace(
        decode_task(body),
        status=status,
        revision=revision,
        lease=lease,
        worker_id=worker,
        attempts=attempts,
        started_at=rules.from_epoch(started),
        lease_expires_at=rules.from_epoch(ready) if status is TaskStatus.RUNNING else None,
    )


def queue_names_sql(table: str) -> str:
    """The distinct queue names of ``table`` by a loose index scan: one probe of the
    ``queue_name`` index per queue, however many tasks there are."""
    return f"""WITH RECURSIVE q(name) AS (
        SELECT min(queue_name) FROM {table}
        UNION ALL
        SELECT (SELECT min(queue_name) FROM {table} WHERE queue_name > q.name)
        FROM q WHERE q.name IS NOT NULL)
    SELECT name FROM q WHERE name IS NOT NULL"""


def claimed_from_row(row: Any, queue_name: str) -> Task | Unreadable:
    """A claimed row's task, or ``Unreadable`` if its body does not decode (the revision
    column, which the claim just bumped, fences the replacement)."""
    try:
        return task_from_row(row)
    except SerializationError as exc:
        return Unreadable(id=row[1], queue_name=queue_name, reason=str(exc), raw=bytes(row[9]),
                          revision=row[4])
