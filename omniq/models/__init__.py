"""OmniQ's data models: Task, TaskStatus and Schedule."""

from __future__ import annotations

from omniq.models.schedule import Schedule
from omniq.models.task import Task, TaskStatus

__all__ = ["Schedule", "Task", "TaskStatus"]
