"""The task life cycle as pure functions: each takes a task and returns its next state.

The queue base class applies these and persists the result with compare-and-set, so every
backend follows the same rules.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from msgspec.structs import replace

from omniq.models.task import Task, TaskStatus
from omniq.retry import backoff

READY_STATUSES = frozenset({TaskStatus.PENDING, TaskStatus.SCHEDULED, TaskStatus.RETRYING})
FAILED_DEPENDENCY = frozenset({TaskStatus.FAILED, TaskStatus.CANCELLED, TaskStatus.EXPIRED})


def epoch(moment: datetime | None) -> float | None:
    """Seconds since the epoch, or None."""
    return None if moment is None else moment.timestamp()


def from_epoch(seconds: float | None) -> datetime | None:
    """Aware UTC datetime from epoch seconds, or None."""
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)


def ready_at(task: Task) -> float | None:
    """When a worker may claim the task (epoch seconds); None if it cannot be claimed.

    A running task becomes claimable again when its lease expires.
    """
    if task.status is TaskStatus.RUNNING:
        return epoch(task.lease_expires_at)
    if task.status in READY_STATUSES and not task.paused:
        return epoch(task.run_at)
    return None


def makes_ready(task: Task) -> bool:
    """True when a worker waiting for work could take the task now or at a known time."""
    return task.status is not TaskStatus.RUNNING and ready_at(task) is not None


def due_status(run_at: datetime, now: datetime) -> TaskStatus:
    """PENDING when due, SCHEDULED when due later."""
    return TaskStatus.SCHEDULED if run_at > now else TaskStatus.PENDING


def initial(task: Task, now: datetime, *, func: Callable[..., Any] | str) -> Task:
    """The stored form of a newly enqueued task (a copy: the caller's stays as it was), with
    ``func`` as it is to be stored."""
    run_at = task.schedule.first_run(now) if task.schedule else now
    status = TaskStatus.WAITING if task.depends_on else due_status(run_at, now)
    return replace(
        task,
        func=func,
        status=status,
        created_at=now,
        run_at=run_at,
        result=None,
        error=None,
        started_at=None,
        finished_at=None,
        attempts=0,
        worker_id=None,
        lease=None,
        lease_expires_at=None,
        revision=0,
    )


def _idle(task: Task, **changes: object) -> Task:
    # Every transition out of RUNNING drops the claim.
    return replace(task, worker_id=None, lease=None, lease_expires_at=None, **changes)


def _next_occurrence(task: Task, now: datetime, **changes: object) -> Task | None:
    assert task.schedule is not None and task.run_at is not None
    nxt = task.schedule.next_run(task.run_at, now)
    if nxt is None:
        return None
    return _idle(
        task, status=TaskStatus.SCHEDULED, run_at=nxt, retries=0, attempts=0, finished_at=now,
        **changes,
    )


def completed(task: Task, result: object, now: datetime) -> Task:
    """Success: COMPLETED, or back to SCHEDULED at the next occurrence for recurring tasks."""
    if task.recurring:
        nxt = _next_occurrence(task, now, result=result, error=None)
        if nxt is not None:
            return nxt
    return _idle(task, status=TaskStatus.COMPLETED, result=result, error=None, finished_at=now)


def failed(task: Task, error: str, now: datetime, *, retry: bool = True) -> Task:
    """A failed attempt: RETRYING after backoff while retries remain, else FAILED
    (recurring tasks return to SCHEDULED instead)."""
    if retry and task.retries < task.max_retries:
        n = task.retries + 1
        delay = backoff(task.retry_delay, n)
        return _idle(
            task, status=TaskStatus.RETRYING, retries=n, error=error,
            run_at=now + timedelta(seconds=delay),
        )
    if task.recurring:
        nxt = _next_occurrence(task, now, error=error)
        if nxt is not None:
            return nxt
    return _idle(task, status=TaskStatus.FAILED, error=error, finished_at=now)


def outcome(
    task: Task, now: datetime, result: object, error: str | None, retry: bool = True
) -> Task:
    """The state after a run of ``task``: ``completed`` without an error, else ``failed``."""
    if error is None:
        return completed(task, result, now)
    return failed(task, error, now, retry=retry)


def cancelled(task: Task, reason: str, now: datetime) -> Task:
    """CANCELLED with the reason in ``error``."""
    return _idle(task, status=TaskStatus.CANCELLED, error=reason, finished_at=now)


def expired(task: Task, now: datetime) -> Task:
    """EXPIRED: its ttl passed before it started."""
    return _idle(
        task, status=TaskStatus.EXPIRED, finished_at=now,
        error=f"TaskExpiredError: not started within its ttl of {task.ttl}s",
    )


def ttl_passed(task: Task, now: datetime) -> bool:
    """True if a just-claimed task waited longer than its ttl since it became due.

    Only a first start counts: a retry, or a task reclaimed after a lost lease, had started.
    """
    if task.ttl is None or task.run_at is None or task.retries or task.attempts > 1:
        return False
    return now > task.run_at + timedelta(seconds=task.ttl)


def released(task: Task, now: datetime) -> Task:
    """A lease handed back at shutdown: ready again, no retry consumed."""
    return _idle(task, status=TaskStatus.PENDING, run_at=min(task.run_at or now, now))


def requeued(task: Task, now: datetime, *, waiting: bool) -> Task:
    """A terminal task put back to run again from scratch."""
    return _idle(
        task,
        status=TaskStatus.WAITING if waiting else TaskStatus.PENDING,
        run_at=now, retries=0, attempts=0, result=None, error=None,
        started_at=None, finished_at=None,
    )


def dependencies_met(task: Task, now: datetime) -> Task:
    """A WAITING task whose dependencies all completed becomes due (from now at the earliest)."""
    run_at = max(task.run_at or now, now)
    return replace(task, status=due_status(run_at, now), run_at=run_at)


def settled(task: Task, deps: Mapping[str, Task], now: datetime) -> Task | None:
    """A WAITING task given its dependencies' states: CANCELLED if any failed, was cancelled,
    expired or is gone; due once all completed; None while some are still on their way."""
    if task.status is not TaskStatus.WAITING:
        return None
    for dep in task.depends_on:
        found = deps.get(dep)
        if found is None:
            return cancelled(task, f"dependency {dep} was deleted", now)
        if found.status in FAILED_DEPENDENCY:
            return cancelled(task, f"dependency {dep} ended {found.status.value}", now)
    if all(deps[d].status is TaskStatus.COMPLETED for d in task.depends_on):
        return dependencies_met(task, now)
    return None


def with_pause(task: Task, paused: bool) -> Task:
    """The task with its schedule held or released."""
    from omniq.models.schedule import Schedule

    schedule = replace(task.schedule, paused=paused) if task.schedule else Schedule(paused=paused)
    return replace(task, schedule=schedule)
