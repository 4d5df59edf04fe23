"""What a worker event tells about its task, shared by logging, metrics and tracing.

Times come from the task itself, so nothing is kept per running task: ``started_at`` is set
by the claim (this process's clock), ``run_at`` is when the task became due.
"""

from __future__ import annotations

import time

from omniq.models.task import Task
from omniq.registry import reference_or_name


def function_name(task: Task) -> str:
    """The task's function as ``"module:qualname"`` (a lambda's qualified name)."""
    return reference_or_name(task.func)


def run_seconds(task: Task) -> float | None:
    """Seconds from the claim (``started_at``) to now: the run time, at an outcome event."""
    if task.started_at is None:
        return None
    return max(time.time() - task.started_at.timestamp(), 0.0)


def wait_seconds(task: Task) -> float | None:
    """Seconds from becoming due (``run_at``) to the claim (``started_at``)."""
    if task.started_at is None or task.run_at is None:
        return None
    return max((task.started_at - task.run_at).total_seconds(), 0.0)
