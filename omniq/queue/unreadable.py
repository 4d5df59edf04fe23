"""Stored records a claim cannot decode (corrupted, or written by something else than OmniQ).

A backend's ``_claim`` returns an ``Unreadable`` in place of such a task; the queue then
stores ``failed_record(...)`` over it: the task ends ``FAILED`` with the reason in ``error``
and the undecodable bytes in ``result``, so workers move on and the dead-letter workflow
(inspect ``FAILED`` tasks) shows it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from omniq.models.task import Task, TaskStatus

#: The function reference of a replaced record: never registered, so it never runs.
PLACEHOLDER = "omniq.queue.unreadable:record"


class Unreadable(msgspec.Struct, frozen=True, kw_only=True):
    """A record met by a claim that does not decode into a Task."""

    id: str
    queue_name: str
    reason: str
    raw: bytes
    #: The stored revision, where the backend keeps it apart from the undecodable bytes.
    revision: int = 0
    #: What the backend needs to replace exactly this version (None: compare ``revision``).
    token: Any = None


def failed_record(record: Unreadable, now: datetime) -> Task:
    """What replaces an unreadable record: FAILED, with the reason and the raw bytes."""
    return Task(
        func=PLACEHOLDER, id=record.id, queue_name=record.queue_name,
        status=TaskStatus.FAILED, result=record.raw,
        error=f"SerializationError: stored task could not be decoded: {record.reason}",
        created_at=now, run_at=now, finished_at=now, revision=record.revision + 1,
    )
