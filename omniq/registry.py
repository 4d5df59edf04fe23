"""``@omniq.task`` (typed task functions), function references and the worker's allowlist.

A worker runs ``"module:qualname"`` only if the function was registered with ``@omniq.task``,
was passed as a callable to ``Task(func=...)`` in this process, or lives in a module the worker
was told to import. Registration is additive and keyed by reference, so it needs no resetting.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import re
from collections.abc import Callable, Coroutine, Iterable, Mapping
from typing import (
    TYPE_CHECKING,
    Any,
    Generic,
    ParamSpec,
    Protocol,
    TypedDict,
    TypeVar,
    Unpack,
    cast,
    overload,
)

import msgspec

from omniq.exceptions import InvalidTaskError, SerializationError, TaskNotAllowedError

if TYPE_CHECKING:
    from omniq.models.schedule import Schedule
    from omniq.models.task import Task
    from omniq.queue.base import BaseTaskQueue

P = ParamSpec("P")
C = TypeVar("C")
R = TypeVar("R")
T_co = TypeVar("T_co", covariant=True)

_DOTTED = r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*"
_REF = re.compile(rf"^{_DOTTED}:{_DOTTED}$")
# Functions this process may run, by reference.
_allowed: dict[str, Callable[..., Any]] = {}
# The reference of each allowed function, so enqueueing one does not rebuild it every time.
_references: dict[Callable[..., Any], str] = {}
# Allowed functions that are not ``@omniq.task`` objects and carry no options: building a
# Task of one needs no more than this membership test.
plain_functions: set[Callable[..., Any]] = set()


class TaskOptions(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Defaults that ``@omniq.task`` gives to ``Task(func=f)``; unset fields keep Task's own."""

    queue_name: str | None = None
    priority: int | None = None
    max_retries: int | None = None
    retry_delay: float | None = None
    timeout: float | None = None
    ttl: float | None = None


def reference(func: Callable[..., Any]) -> str:
    """``"module:qualname"`` of an importable function; SerializationError for lambdas/locals."""
    known = _references.get(func)
    if known is not None:
        return known
    module = getattr(func, "__module__", None)
    qualname = getattr(func, "__qualname__", None)
    ref = f"{module}:{qualname}"
    if not module or not qualname or not _REF.fullmatch(ref):
        raise SerializationError(
            f"cannot reference function {qualname or func!r}: only module-level functions can be "
            "stored (lambdas and nested functions work with MemoryTaskQueue only)"
        )
    return ref


def check_reference(ref: str) -> str:
    """Validate the shape of a ``"module:qualname"`` string."""
    if not isinstance(ref, str) or not _REF.fullmatch(ref):
        raise InvalidTaskError(f"invalid function reference {ref!r} (expected 'module:qualname')")
    return ref


def allow(func: Callable[..., Any]) -> None:
    """Let workers in this process run ``func`` (no-op for functions without a reference)."""
    if func in _references:
        return  # every Task(func=f) lands here: once per function is enough
    try:
        ref = reference(func)
    except SerializationError:
        return
    _allowed.setdefault(ref, func)
    _references[func] = ref
    if options_of(func) is None:  # an @omniq.task object and its function both carry them
        plain_functions.add(func)


def options_of(func: object) -> TaskOptions | None:
    """The ``@omniq.task`` defaults attached to ``func``, if any."""
    opts = getattr(func, "__omniq_options__", None)
    return opts if isinstance(opts, TaskOptions) else None


class TaskFields(TypedDict, total=False):
    """``Task`` fields that ``TaskFunction.with_options`` sets on the tasks it builds."""

    queue_name: str
    priority: int
    max_retries: int
    retry_delay: float
    timeout: float | None
    ttl: float | None
    schedule: Schedule | None
    depends_on: list[str]
    id: str
    headers: dict[str, str]


class TaskHandle(Generic[T_co]):
    """A typed reference to an enqueued task: ``await handle.result()`` is the function's
    return value (awaited, for async functions)."""

    __slots__ = ("id", "queue")

    def __init__(self, queue: BaseTaskQueue, task_id: str) -> None:
        self.queue = queue
        self.id = task_id

    def __repr__(self) -> str:
        return f"TaskHandle({self.id!r})"

    async def result(self, timeout: float | None = None) -> T_co:
        """Wait for the task to end: its result, or the error its end state stands for
        (``queue.get_result``)."""
        return cast(T_co, await self.queue.get_result(self.id, timeout))

    async def get_task(self) -> Task | None:
        """A snapshot of the task (``queue.get_task``)."""
        return await self.queue.get_task(self.id)

    async def cancel(self) -> bool:
        """Cancel the task (``queue.cancel``)."""
        return await self.queue.cancel(self.id)


class TaskFunction(Generic[P, C, R]):
    """What ``@omniq.task`` returns: the function itself, still callable with its own
    signature, that also builds and enqueues tasks with type-checked arguments.

    ``C`` is what a call returns (a coroutine for async functions), ``R`` the task's result.
    ``Task(func=f)`` stores the wrapped function's ``"module:qualname"``.
    """

    def __init__(
        self, func: Callable[P, C], options: TaskOptions, fields: Mapping[str, Any] | None = None
    ) -> None:
        functools.update_wrapper(self, func)
        self.func = func
        self.__omniq_options__ = options
        self._fields: dict[str, Any] = dict(fields or {})
        mark = getattr(inspect, "markcoroutinefunction", None)  # Python 3.12+
        if mark is not None and inspect.iscoroutinefunction(func):
            mark(self)

    def __repr__(self) -> str:
        return f"<omniq task {reference_or_name(self.func)}>"

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> C:
        return self.func(*args, **kwargs)

    def task(self, *args: P.args, **kwargs: P.kwargs) -> Task:
        """A ``Task`` calling the function with these arguments (for ``enqueue_many``)."""
        from omniq.models.task import Task

        task = Task(func=self.func, args=args, kwargs=kwargs, **self._fields)
        # Explicit options win over the decorator's even when they equal Task's own defaults.
        for name in TaskOptions.__struct_fields__:
            if name in self._fields:
                setattr(task, name, self._fields[name])
        return task

    async def enqueue(
        self, queue: BaseTaskQueue, /, *args: P.args, **kwargs: P.kwargs
    ) -> TaskHandle[R]:
        """Enqueue a call of the function; a handle whose ``result()`` is typed."""
        return TaskHandle(queue, await queue.enqueue(self.task(*args, **kwargs)))

    def with_options(self, **fields: Unpack[TaskFields]) -> TaskFunction[P, C, R]:
        """The same task, building tasks with these ``Task`` fields (they win over the
        decorator's options)."""
        return TaskFunction(self.func, self.__omniq_options__, {**self._fields, **fields})


def unwrap(func: Callable[..., Any]) -> Callable[..., Any]:
    """The plain function behind an ``@omniq.task`` object (anything else unchanged)."""
    return func.func if isinstance(func, TaskFunction) else func


def reference_or_name(func: Callable[..., Any] | str) -> str:
    """The reference of ``func``, or its qualified name when it has none (lambdas)."""
    if isinstance(func, str):
        return func
    try:
        return reference(func)
    except SerializationError:
        return str(getattr(func, "__qualname__", None) or repr(func))


class _Decorator(Protocol):
    @overload
    def __call__(
        self, func: Callable[P, Coroutine[Any, Any, R]], /
    ) -> TaskFunction[P, Coroutine[Any, Any, R], R]: ...
    @overload
    def __call__(self, func: Callable[P, R], /) -> TaskFunction[P, R, R]: ...


@overload
def task(
    func: Callable[P, Coroutine[Any, Any, R]], /
) -> TaskFunction[P, Coroutine[Any, Any, R], R]: ...
@overload
def task(func: Callable[P, R], /) -> TaskFunction[P, R, R]: ...
@overload
def task(
    func: None = None,
    /,
    *,
    name: str | None = None,
    queue_name: str | None = None,
    priority: int | None = None,
    max_retries: int | None = None,
    retry_delay: float | None = None,
    timeout: float | None = None,
    ttl: float | None = None,
) -> _Decorator: ...
def task(
    func: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    queue_name: str | None = None,
    priority: int | None = None,
    max_retries: int | None = None,
    retry_delay: float | None = None,
    timeout: float | None = None,
    ttl: float | None = None,
) -> Any:
    """Register a function workers may run, with defaults for the tasks that call it.

    Returns a ``TaskFunction``: call it as the function, or ``await f.enqueue(queue, ...)``
    with the function's own (type-checked) arguments. ``name`` registers an extra reference
    (an alias) that resolves to the same function.
    """
    opts = TaskOptions(
        queue_name=queue_name,
        priority=priority,
        max_retries=max_retries,
        retry_delay=retry_delay,
        timeout=timeout,
        ttl=ttl,
    )

    def register(fn: Callable[..., Any]) -> TaskFunction[..., Any, Any]:
        fn = unwrap(fn)
        ref = reference(fn)
        _allowed[ref] = fn
        if name is not None:
            _allowed[check_reference(name if ":" in name else f"{fn.__module__}:{name}")] = fn
        fn.__omniq_options__ = opts  # type: ignore[attr-defined]  # Task(func=fn) reads it too
        plain_functions.discard(fn)  # it may have been used plain before: now it has options
        return TaskFunction(fn, opts)

    return register(func) if func is not None else register


class Allowlist:
    """What one worker may run: registered functions plus functions of ``imports`` modules."""

    def __init__(self, imports: Iterable[str] = ()) -> None:
        self._modules = {name: importlib.import_module(name) for name in imports}

    def resolve(self, func: Callable[..., Any] | str) -> Callable[..., Any]:
        """The callable for ``func``; TaskNotAllowedError unless allowed. Never imports."""
        if callable(func):
            return unwrap(func)
        fn = _allowed.get(func)
        if fn is not None:
            return fn
        module_name, _, qualname = func.partition(":")
        module = self._modules.get(module_name)
        if module is not None:
            target: Any = module
            for part in qualname.split("."):
                target = getattr(target, part, None)
            if callable(target) and getattr(target, "__module__", None) == module_name:
                return unwrap(target)
        raise TaskNotAllowedError(
            f"function {func!r} is not allowed: register it with @omniq.task or start the "
            "worker with --import for its module"
        )
