"""Task and TaskStatus: the unit of work and its life cycle."""

from __future__ import annotations

import enum
import math
import os
import random
import re
import time
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeGuard

import msgspec

from omniq import registry
from omniq.exceptions import InvalidTaskError
from omniq.models.schedule import Schedule

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
_QUEUE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# Priorities must order the same on every backend (Redis scores are doubles, SQL is int64).
PRIORITY_MIN, PRIORITY_MAX = -(2**31), 2**31 - 1


class TaskStatus(enum.StrEnum):
    """Where a task is in its life cycle; the last four are terminal."""

    PENDING = "pending"
    SCHEDULED = "scheduled"
    WAITING = "waiting"
    RUNNING = "running"
    RETRYING = "retrying"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"

    @property
    def terminal(self) -> bool:
        """True for COMPLETED, FAILED, CANCELLED and EXPIRED."""
        return self in _TERMINAL



_TERMINAL = frozenset(
    {TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED, TaskStatus.EXPIRED}
)


# UUID version 7 (RFC 9562): 48 bits of Unix milliseconds, the version nibble 7, 74 random bits
# around the variant bits 10. Time-ordered ids land next to each other in a database index
# (random ones touch a different page per insert), which makes bulk inserts cheaper.
_UUID7_CLEAR = ~((0xF << 76) | (0x3 << 62))
_UUID7_SET = (0x7 << 76) | (0x2 << 62)
# The random bits come from a generator the OS seeds (again in a forked child, which would
# otherwise repeat its parent's ids): a system call per id was the largest cost of building a
# Task. It is private, so an application's random.seed() cannot make ids repeat; ids need to
# be unique, not unguessable.
_random = random.Random()
os.register_at_fork(after_in_child=_random.seed)
_random_bits = _random.getrandbits


def _new_id() -> str:
    n = (time.time_ns() // 1_000_000) << 80 | _random_bits(80)
    h = (n & _UUID7_CLEAR | _UUID7_SET).to_bytes(16).hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _is_id(value: object) -> TypeGuard[str]:
    return isinstance(value, str) and _ID.fullmatch(value) is not None and ".." not in value


def check_id(task_id: object) -> str:
    """Validate a task id: 1-128 of [A-Za-z0-9_.:-], starting alphanumeric, no '..'."""
    if not _is_id(task_id):
        raise InvalidTaskError(
            f"invalid task id {task_id!r}: 1-128 of [A-Za-z0-9_.:-], starting with a letter or "
            "digit, without '..'"
        )
    return task_id


_good_queue_names: set[str] = set()  # names that passed check_queue_name (a bounded few)


def check_queue_name(name: object) -> str:
    """Validate a queue name: 1-64 of [A-Za-z0-9_.-], starting alphanumeric, without '..' or a
    trailing '.'."""
    if type(name) is str and name in _good_queue_names:  # few names, checked at every enqueue
        return name
    if (
        not isinstance(name, str)
        or not _QUEUE.fullmatch(name)
        or ".." in name
        or name.endswith(".")
    ):
        raise InvalidTaskError(
            f"invalid queue name {name!r}: 1-64 of [A-Za-z0-9_.-], starting with a letter or "
            "digit, without '..' or a trailing '.'"
        )
    if len(_good_queue_names) < 1024:
        _good_queue_names.add(name)
    return name


def _check_seconds(field: str, value: object, *, allow_zero: bool) -> None:
    if type(value) is float and 0 < value < math.inf:
        return  # the common case, decided without the checks below
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):  # type: ignore[operator]
        bound = "non-negative" if allow_zero else "positive"
        raise InvalidTaskError(f"{field} must be a {bound} finite number of seconds, not {value!r}")


def _check_count(field: str, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidTaskError(f"{field} must be an integer in [{low}, {high}], not {value!r}")


class Task(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One unit of work: a function reference, its arguments and how to run it.

    ``headers`` carry metadata that travels with the task, such as the trace context of the
    code that enqueued it (``omniq.tracing``); they are omitted from stored records when empty.
    User-set fields are validated when the Task is built; the queue maintains ``status``,
    ``result``, ``error``, the timestamps, ``attempts``, ``worker_id`` and ``lease``.
    ``revision`` counts stored changes (the queue uses it for compare-and-set).
    """

    if TYPE_CHECKING:
        func: Callable[..., Any] | str
    else:
        func: Any
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = msgspec.field(default_factory=dict)
    queue_name: str = "default"
    priority: int = 0
    ttl: float | None = None
    retries: int = 0
    max_retries: int = 0
    retry_delay: float = 1.0
    timeout: float | None = None
    depends_on: list[str] = msgspec.field(default_factory=list)
    schedule: Schedule | None = None
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    id: str = msgspec.field(default_factory=_new_id)
    status: TaskStatus = TaskStatus.PENDING
    result: Any = None
    error: str | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    run_at: datetime | None = None
    attempts: int = 0
    worker_id: str | None = None
    lease: str | None = None
    lease_expires_at: datetime | None = None
    revision: int = 0

    def __post_init__(self) -> None:
        # msgspec runs this on every decode and structs.replace too. A stored record (it has
        # created_at) was validated when it was enqueued, and enqueue validates again whatever
        # the caller passed, so re-checking on each state change would only cost time.
        if self.created_at is not None:
            return
        if not callable(self.func):
            registry.check_reference(self.func)
        elif self.func not in registry.plain_functions:  # those need nothing more done
            self._apply_options(registry.options_of(self.func))
            self.func = registry.unwrap(self.func)  # an @omniq.task object stores its function
            registry.allow(self.func)
        self._validate()

    def _apply_options(self, opts: registry.TaskOptions | None) -> None:
        # Only fields still at Task's own default take the decorator's value.
        if opts is None or opts == _NO_OPTIONS:  # a plain @omniq.task sets none
            return
        for name in opts.__struct_fields__:
            value = getattr(opts, name)
            if value is not None and getattr(self, name) == _DEFAULTS[name]:
                setattr(self, name, value)

    def _validate(self) -> None:
        # Every enqueue validates twice, so the common shape is decided in one expression;
        # anything else goes through the checks that name the bad field.
        kwargs = self.kwargs
        p, r, m, a = self.priority, self.retries, self.max_retries, self.attempts
        if not (type(self.args) is tuple and type(kwargs) is dict
                and (not kwargs or all(type(k) is str for k in kwargs))
                and _is_id(self.id)
                and type(self.queue_name) is str and self.queue_name in _good_queue_names
                and type(p) is int and type(r) is int and type(m) is int and type(a) is int
                and PRIORITY_MIN <= p <= PRIORITY_MAX and 0 <= r <= 2**31
                and 0 <= m <= 1_000_000 and 0 <= a <= 2**62
                and type(self.retry_delay) is float and 0 <= self.retry_delay < math.inf
                and self.ttl is None and self.timeout is None
                and type(self.depends_on) is list and not self.depends_on
                and type(self.headers) is dict and not self.headers and self.schedule is None):
            self._validate_each()

    def _validate_each(self) -> None:
        if isinstance(self.args, list):
            self.args = tuple(self.args)
        if not isinstance(self.args, tuple):
            raise InvalidTaskError(f"args must be a tuple, not {type(self.args).__name__}")
        if not isinstance(self.kwargs, dict) or (
            self.kwargs and not all(isinstance(k, str) for k in self.kwargs)
        ):
            raise InvalidTaskError("kwargs must be a dict with string keys")
        check_id(self.id)
        check_queue_name(self.queue_name)
        _check_count("priority", self.priority, PRIORITY_MIN, PRIORITY_MAX)
        _check_count("retries", self.retries, 0, 2**31)
        _check_count("max_retries", self.max_retries, 0, 1_000_000)
        _check_count("attempts", self.attempts, 0, 2**62)
        _check_seconds("retry_delay", self.retry_delay, allow_zero=True)
        if self.ttl is not None:
            _check_seconds("ttl", self.ttl, allow_zero=False)
        if self.timeout is not None:
            _check_seconds("timeout", self.timeout, allow_zero=False)
        if not isinstance(self.depends_on, list):
            raise InvalidTaskError("depends_on must be a list of task ids")
        if self.depends_on:
            self.depends_on = list(dict.fromkeys(check_id(dep) for dep in self.depends_on))
        if self.id in self.depends_on:
            raise InvalidTaskError(f"task {self.id} cannot depend on itself")
        if not isinstance(self.headers, dict) or (self.headers and not all(
            isinstance(k, str) and isinstance(v, str) for k, v in self.headers.items()
        )):
            raise InvalidTaskError("headers must be a dict of strings to strings")
        if self.schedule is not None and not isinstance(self.schedule, Schedule):
            raise InvalidTaskError("schedule must be a Schedule")

    @property
    def func_ref(self) -> str:
        """The ``"module:qualname"`` reference of ``func``."""
        return self.func if isinstance(self.func, str) else registry.reference(self.func)

    @property
    def recurring(self) -> bool:
        """True when the task has a cron or interval schedule."""
        return self.schedule is not None and self.schedule.recurring

    @property
    def paused(self) -> bool:
        """True when the task's schedule is held by pause_task."""
        return self.schedule is not None and self.schedule.paused


_NO_OPTIONS = registry.TaskOptions()
_DEFAULTS: dict[str, Any] = {
    "queue_name": "default",
    "priority": 0,
    "max_retries": 0,
    "retry_delay": 1.0,
    "timeout": None,
    "ttl": None,
}
