"""Task transitions as log lines, in text or JSON.

``log_transitions(pool)`` writes one line per started, completed, failed, retried, cancelled
and expired task to the ``omniq.tasks`` logger, with the task id, queue, function, attempt
and duration (failures add the error). Arguments and results are never logged, at any level.
``JsonFormatter`` turns every record into one JSON object per line, these fields included.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import msgspec

from omniq.models.task import Task
from omniq.observe import function_name, run_seconds, wait_seconds

if TYPE_CHECKING:
    from omniq.worker import WorkerPool

log = logging.getLogger("omniq.tasks")

#: The level of each transition's line unless told otherwise. Starts and completions are
#: DEBUG: at tens of thousands of tasks a second, two INFO lines per task would cost more
#: than the tasks (and fill a pipe nobody reads); the rarer transitions stand out above them.
LEVELS: Mapping[str, int] = {
    "started": logging.DEBUG,
    "completed": logging.DEBUG,
    "retried": logging.INFO,
    "cancelled": logging.INFO,
    "failed": logging.WARNING,
    "expired": logging.WARNING,
}
#: The stdlib's text layout used by ``omniq`` commands.
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def log_transitions(
    pool: WorkerPool,
    *,
    logger: logging.Logger = log,
    levels: Mapping[str, int] | None = None,
) -> None:
    """Log a line for every task transition of ``pool`` (levels per event: ``LEVELS``)."""
    chosen = {**LEVELS, **(levels or {})}
    for event, level in chosen.items():
        pool.on(event, _hook(event, level, logger, pool.worker_id))


def fields(event: str, task: Task, worker_id: str | None = None) -> dict[str, Any]:
    """The structured fields of a transition: never arguments, results or secrets."""
    out: dict[str, Any] = {
        "event": event,
        "task_id": task.id,
        "queue": task.queue_name,
        "function": function_name(task),
        "attempt": task.attempts,
    }
    if event in ("started", "expired"):
        out["wait"] = _rounded(wait_seconds(task))
    else:
        out["duration"] = _rounded(run_seconds(task))
    if event == "retried":
        out["retry"] = f"{task.retries}/{task.max_retries}"
    if event in ("failed", "retried", "cancelled") and task.error:
        out["error"] = task.error
    if worker_id is not None:
        out["worker"] = worker_id
    return out


def _rounded(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 6)


def _hook(event: str, level: int, logger: logging.Logger, worker_id: str) -> Callable[[Task], None]:
    def hook(task: Task) -> None:
        if not logger.isEnabledFor(level):
            return
        data = fields(event, task, worker_id)
        shown = " ".join(
            f"{key}={_show(value)}" for key, value in data.items()
            if key not in ("event", "task_id", "worker", "error") and value is not None
        )
        error = f" error={data['error']}" if "error" in data else ""
        logger.log(level, "task %s %s %s%s", task.id, event, shown, error,
                   extra={"omniq": data})

    return hook


def _show(value: object) -> str:
    return f"{value:.3f}s" if isinstance(value, float) else str(value)


_json = msgspec.json.Encoder(enc_hook=str)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, the task
    fields of ``omniq.tasks`` records, and the traceback as ``exc`` when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as a JSON line."""
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(getattr(record, "omniq", None) or {})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return _json.encode(entry).decode()


def handler(fmt: str = "text") -> logging.Handler:
    """A stderr handler in ``fmt``: ``"text"`` (``TEXT_FORMAT``) or ``"json"``."""
    if fmt not in ("text", "json"):
        raise ValueError(f"unknown log format {fmt!r} (text or json)")
    out = logging.StreamHandler()
    out.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    return out
