"""What each dashboard page shows, read through the public queue API only (so every backend
looks the same). Functions here return plain data for the templates; escaping is the
templates' job (autoescape is on)."""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from datetime import datetime
from typing import Any

import msgspec

from omniq.formatting import func_name, schedule_text, short, utc_text, when
from omniq.models.schedule import as_utc
from omniq.models.task import Task, TaskStatus
from omniq.queue.base import BaseTaskQueue, QueueStats
from omniq.serialization import encode_json

from .throughput import Throughput, all_stats

STATUSES = [s.value for s in TaskStatus]
# Longest JSON shown for arguments or a result; the rest is cut with a note.
MAX_JSON = 20_000


def pretty_json(value: Any) -> str:
    """Indented JSON of a task's arguments or result, cut at ``MAX_JSON`` characters."""
    text = msgspec.json.format(encode_json(value), indent=2).decode()
    if len(text) > MAX_JSON:
        return text[:MAX_JSON] + f"\n... ({len(text) - MAX_JSON} more characters not shown)"
    return text


def seconds_between(start: datetime | None, end: datetime | None) -> str:
    """``1.234 s`` (or ``-`` when either end is missing)."""
    if start is None or end is None:
        return "-"
    seconds = (as_utc(end) - as_utc(start)).total_seconds()
    return f"{seconds:.3f} s" if abs(seconds) < 100 else f"{seconds:,.0f} s"


def sparkline(series: list[int], width: int = 90, height: int = 18) -> str:
    """SVG polyline points for ``series`` scaled into ``width`` x ``height``."""
    top = max(series, default=0) or 1
    step = width / max(len(series) - 1, 1)
    return " ".join(
        f"{i * step:.1f},{height - 1 - (n / top) * (height - 2):.1f}" for i, n in enumerate(series)
    )


def task_row(task: Task) -> dict[str, Any]:
    """One line of a task table."""
    return {
        "id": task.id,
        "queue": task.queue_name,
        "status": task.status.value,
        "terminal": task.status.terminal,
        "func": short(func_name(task), 60),
        "priority": task.priority,
        "attempts": task.attempts,
        "when": utc_text(when(task)),
        "error": short(task.error or "", 80),
    }


async def overview(queue: BaseTaskQueue, throughput: Throughput) -> dict[str, Any]:
    """Every queue with its counts per status, state and recent throughput."""
    counts = await all_stats(queue)
    throughput.record(counts)  # the counts just read are a free sample
    rows = []
    for name, stats in counts.items():
        rate = throughput.rate(name)
        rows.append({
            "name": name,
            "counts": {s: getattr(stats, s) for s in STATUSES},
            "total": stats.total,
            "paused": stats.paused,
            "rate": rate,
            "spark": sparkline(rate.series) if rate else "",
        })
    totals = {s: sum(getattr(x, s) for x in counts.values()) for s in STATUSES}
    return {"rows": rows, "totals": totals, "total": sum(totals.values())}


async def task_list(
    queue: BaseTaskQueue,
    queue_name: str | None,
    status: TaskStatus | None,
    page: int,
    per_page: int,
) -> dict[str, Any]:
    """One page of tasks, newest first, with the numbers the pager needs."""
    offset = (page - 1) * per_page
    tasks, stats, names = await asyncio.gather(
        queue.list_tasks(queue_name, status, per_page, offset=offset, newest_first=True),
        queue.stats(queue_name),
        queue.queue_names(),
    )
    total = getattr(stats, status.value) if status is not None else stats.total
    pages = max(1, math.ceil(total / per_page))
    return {
        "tasks": [task_row(t) for t in tasks],
        "queue_name": queue_name,
        "status": status.value if status is not None else None,
        "queue_names": sorted({*names, queue_name}) if queue_name else names,
        "page": page,
        "pages": pages,
        "per_page": per_page,
        "first": offset + 1 if tasks else 0,
        "last": offset + len(tasks),
        "total": total,
        "has_next": page < pages,
    }


async def task_detail(queue: BaseTaskQueue, task: Task) -> dict[str, Any]:
    """Everything about one task, and the states of its dependencies."""
    deps = await queue.get_tasks(task.depends_on) if task.depends_on else {}
    shows_result = task.status is TaskStatus.COMPLETED or task.result is not None
    return {
        "task": task,
        "status": task.status.value,
        "func": func_name(task),
        "args": pretty_json(list(task.args)),
        "kwargs": pretty_json(task.kwargs),
        "result": pretty_json(task.result) if shows_result else None,
        "schedule": schedule_text(task.schedule),
        "recurring": task.recurring,
        "paused": task.paused,
        "dependencies": [
            {"id": d, "status": deps[d].status.value if d in deps else None}
            for d in task.depends_on
        ],
        "dependency_counts": sorted(
            Counter(deps[d].status.value if d in deps else "deleted"
                    for d in task.depends_on).items()
        ),
        "times": [
            ("created", utc_text(task.created_at)),
            ("due", utc_text(task.run_at)),
            ("started", utc_text(task.started_at)),
            ("finished", utc_text(task.finished_at)),
            ("lease expires", utc_text(task.lease_expires_at)),
            ("waited (due to start)", seconds_between(task.run_at, task.started_at)
                if task.started_at and task.run_at and task.started_at >= task.run_at else "-"),
            ("ran (start to finish)", seconds_between(task.started_at, task.finished_at)
                if task.started_at and task.finished_at else "-"),
        ],
        "limits": [
            ("priority", str(task.priority)),
            ("attempts", str(task.attempts)),
            ("retries", f"{task.retries} of {task.max_retries}"),
            ("retry delay", f"{task.retry_delay:g} s"),
            ("timeout", "-" if task.timeout is None else f"{task.timeout:g} s"),
            ("ttl", "-" if task.ttl is None else f"{task.ttl:g} s"),
            ("worker", task.worker_id or "-"),
        ],
    }


def purge_choices(stats: QueueStats) -> list[dict[str, Any]]:
    """Status checkboxes for the purge form: ended statuses ticked by default."""
    return [
        {"status": s.value, "count": getattr(stats, s.value), "checked": s.terminal}
        for s in TaskStatus
    ]
