"""The one interface the driver measures every queue system through.

An adapter wraps one system on one server: how to enqueue the no-op task (one at a time and in
batches), how to wait for one job's completion with the system's own API, how to count jobs
still outstanding and jobs completed straight from the backend, how to run one worker, and how
to remove everything it stored.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

from benchmarks.common import Context


class System(ABC):
    """A queue system on one backend server, as the benchmark drives it."""

    #: Runs in the driver's own process (the Memory backend has no server to share).
    in_process: ClassVar[bool] = False
    #: Redis key patterns (``{ns}`` filled in) that ``cleanup`` deletes.
    redis_patterns: ClassVar[tuple[str, ...]] = ()
    #: How the latency benchmark observes completion, for the docs.
    completion: ClassVar[str] = ""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    @property
    def has_batch(self) -> bool:
        """Whether the system has a batch enqueue API."""
        return type(self).enqueue_batch is not System.enqueue_batch

    @abstractmethod
    async def open(self) -> None:
        """Connect the producer side (and create the schema where the system needs one)."""

    @abstractmethod
    async def close(self) -> None:
        """Disconnect the producer side."""

    @abstractmethod
    async def enqueue(self) -> Any:
        """Enqueue one no-op job; a handle for ``wait``/``completed``."""

    async def enqueue_batch(self, n: int) -> list[Any]:
        """Enqueue ``n`` no-op jobs with the system's batch API (only where it has one)."""
        raise NotImplementedError

    @abstractmethod
    async def wait(self, handle: Any) -> None:
        """Return once the job is complete, observed the way the system's users observe it."""

    @abstractmethod
    async def outstanding(self, handles: list[Any]) -> int:
        """A cheap count of jobs not yet complete (0 means all may be done)."""

    @abstractmethod
    async def completed(self, handles: list[Any]) -> int:
        """How many of these jobs the backend records as completed successfully."""

    @abstractmethod
    async def run_worker(self, concurrency: int) -> None:
        """Run one worker at ``concurrency`` until cancelled (in the worker process)."""

    async def cleanup(self) -> None:  # noqa: B027 - most systems leave nothing beyond the run's namespace
        """Remove what the run stored beyond its database, directory, keys and streams."""
