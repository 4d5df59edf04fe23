"""The OmniQ exception tree.

Every error OmniQ raises on purpose derives from :class:`OmniQError`::

    OmniQError
    ├── InvalidTaskError (ValueError)      bad field value, queue name, id, payload size
    │   └── DependencyError                unknown dependency, or a cycle inside one batch
    ├── SerializationError (TypeError)     a value msgspec cannot encode (names the type)
    ├── TaskNotFoundError (KeyError)       no task with that id
    ├── TaskFailedError                    get_result on a FAILED task (.task_id, .error)
    ├── TaskCancelledError                 get_result on a CANCELLED task
    ├── TaskExpiredError                   get_result on an EXPIRED task
    ├── TaskNotAllowedError                a worker refused to run a function it was not allowed
    ├── LeaseLostError                     complete/fail/extend_lease with a superseded lease
    └── BackendError                       the backend is unreachable and did not recover
"""

from __future__ import annotations


class OmniQError(Exception):
    """Base class of every OmniQ error."""


class InvalidTaskError(OmniQError, ValueError):
    """A task, queue name, id or payload is not acceptable."""


class DependencyError(InvalidTaskError):
    """A dependency is unknown, or the dependencies of one batch form a cycle."""


class SerializationError(OmniQError, TypeError):
    """A value cannot be encoded by msgspec (the message names the offending type)."""


class TaskNotFoundError(OmniQError, KeyError):
    """No task has this id."""

    def __str__(self) -> str:
        # KeyError quotes its argument; a message reads better unquoted.
        return str(self.args[0]) if self.args else "task not found"


class _TaskOutcomeError(OmniQError):
    def __init__(self, task_id: str, error: str | None = None) -> None:
        self.task_id = task_id
        self.error = error
        super().__init__(f"task {task_id} {self._verb}" + (f": {error}" if error else ""))

    _verb = "ended"


class TaskFailedError(_TaskOutcomeError):
    """The task ended FAILED; ``.error`` holds the last attempt's error."""

    _verb = "failed"


class TaskCancelledError(_TaskOutcomeError):
    """The task ended CANCELLED."""

    _verb = "was cancelled"


class TaskExpiredError(_TaskOutcomeError):
    """The task ended EXPIRED: its ttl ran out before it started."""

    _verb = "expired"


class TaskNotAllowedError(OmniQError):
    """A worker refused to run a function that was not registered, passed or imported."""


class LeaseLostError(OmniQError):
    """The lease presented is no longer the task's current one (it was claimed again)."""


class BackendError(OmniQError):
    """The backend could not be reached or answered unexpectedly."""
