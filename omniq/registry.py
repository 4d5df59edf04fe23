"""Function references and the worker's allowlist.

A worker runs ``"module:qualname"`` only if the function was registered with ``@omniq.task``,
was passed as a callable to ``Task(func=...)`` in this process, or lives in a module the worker
was told to import. Registration is additive and keyed by reference, so it needs no resetting.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Iterable
from typing import Any, TypeVar, overload

import msgspec

from omniq.exceptions import InvalidTaskError, SerializationError, TaskNotAllowedError

F = TypeVar("F", bound=Callable[..., Any])

_DOTTED = r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*"
_REF = re.compile(rf"^{_DOTTED}:{_DOTTED}$")
# Functions this process may run, by reference.
_allowed: dict[str, Callable[..., Any]] = {}


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
    try:
        _allowed.setdefault(reference(func), func)
    except SerializationError:
        pass


def options_of(func: object) -> TaskOptions | None:
    """The ``@omniq.task`` defaults attached to ``func``, if any."""
    opts = getattr(func, "__omniq_options__", None)
    return opts if isinstance(opts, TaskOptions) else None


@overload
def task(func: F, /) -> F: ...
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
) -> Callable[[F], F]: ...
def task(
    func: F | None = None,
    /,
    *,
    name: str | None = None,
    queue_name: str | None = None,
    priority: int | None = None,
    max_retries: int | None = None,
    retry_delay: float | None = None,
    timeout: float | None = None,
    ttl: float | None = None,
) -> F | Callable[[F], F]:
    """Register a function workers may run, with defaults for ``Task(func=f)``.

    ``name`` registers an extra reference (an alias) that resolves to the same function.
    """
    opts = TaskOptions(
        queue_name=queue_name,
        priority=priority,
        max_retries=max_retries,
        retry_delay=retry_delay,
        timeout=timeout,
        ttl=ttl,
    )

    def register(fn: F) -> F:
        ref = reference(fn)
        _allowed[ref] = fn
        if name is not None:
            _allowed[check_reference(name if ":" in name else f"{fn.__module__}:{name}")] = fn
        fn.__omniq_options__ = opts  # type: ignore[attr-defined]
        return fn

    return register(func) if func is not None else register


class Allowlist:
    """What one worker may run: registered functions plus functions of ``imports`` modules."""

    def __init__(self, imports: Iterable[str] = ()) -> None:
        self._modules = {name: importlib.import_module(name) for name in imports}

    def resolve(self, func: Callable[..., Any] | str) -> Callable[..., Any]:
        """The callable for ``func``; TaskNotAllowedError unless allowed. Never imports."""
        if callable(func):
            return func
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
                return target  # type: ignore[no-any-return]
        raise TaskNotAllowedError(
            f"function {func!r} is not allowed: register it with @omniq.task or start the "
            "worker with --import for its module"
        )
