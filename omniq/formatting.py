"""Plain-text renderings of tasks and schedules shared by the CLI and the dashboard."""

from __future__ import annotations

from datetime import datetime, timedelta

from omniq.models.schedule import Schedule, as_utc
from omniq.models.task import Task, TaskStatus


def func_name(task: Task) -> str:
    """The task's function reference (``module:qualname``)."""
    return task.func if isinstance(task.func, str) else getattr(task.func, "__qualname__", "?")


def when(task: Task) -> datetime | None:
    """The time that matters for the task's status: due (queued), start (running), end."""
    if task.status.terminal:
        return task.finished_at
    return task.started_at if task.status is TaskStatus.RUNNING else task.run_at


def utc_text(moment: datetime | None) -> str:
    """``YYYY-MM-DD HH:MM:SS`` in UTC, or ``-``."""
    return "-" if moment is None else as_utc(moment).strftime("%Y-%m-%d %H:%M:%S")


def schedule_text(schedule: Schedule | None) -> str:
    """A one-line description: ``cron '0 9 * * 1-5' (UTC)``, ``every 30s``, ``once at ...``."""
    if schedule is None:
        return "-"
    if schedule.cron is not None:
        text = f"cron {schedule.cron!r} ({schedule.tz})"
    elif schedule.interval is not None:
        step = schedule.interval
        seconds = step.total_seconds() if isinstance(step, timedelta) else float(step)
        text = f"every {seconds:g}s"
    else:
        text = f"once at {utc_text(schedule.run_at)}"
    return text + (", paused" if schedule.paused else "")


def short(text: str, width: int) -> str:
    """``text`` on one line, cut to ``width`` characters with ``...``."""
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."
