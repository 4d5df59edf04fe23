"""Every system the benchmark measures, by name. Naming a class here imports nothing: each
system is imported only inside its own environment (OmniQ in the project's .venv, the peers in
benchmarks/.venv-peers and benchmarks/.venv-taskiq)."""

from __future__ import annotations

import importlib
from typing import NamedTuple

from benchmarks.common import Context
from benchmarks.systems.base import System


class Entry(NamedTuple):
    """One system on one backend."""

    name: str
    label: str
    backend: str  # memory, sqlite, file, redis, postgres, nats
    venv: str  # "project" (.venv) or the peers environment: "peers", "taskiq"
    target: str  # module:Class

    @property
    def is_omniq(self) -> bool:
        return self.venv == "project"


_OMNIQ = "benchmarks.systems.omniq_sys"
# The order of measurement (and of the table): per backend OmniQ first, then the peers, the
# ones whose runs take a minute or more (arq, Procrastinate) last, so that OmniQ's run of a
# cell and the faster peers' runs of it are seconds apart (see run.benchmark).
SYSTEMS = [
    Entry("omniq-memory", "OmniQ", "memory", "project", f"{_OMNIQ}:Memory"),
    Entry("omniq-sqlite", "OmniQ", "sqlite", "project", f"{_OMNIQ}:SQLite"),
    Entry("omniq-file", "OmniQ", "file", "project", f"{_OMNIQ}:File"),
    Entry("omniq-redis", "OmniQ", "redis", "project", f"{_OMNIQ}:Redis"),
    Entry("saq-redis", "SAQ", "redis", "peers", "benchmarks.systems.saq_sys:SaqRedis"),
    Entry("taskiq-redis", "Taskiq", "redis", "taskiq", "benchmarks.systems.taskiq_sys:TaskiqRedis"),
    Entry("arq-redis", "arq", "redis", "peers", "benchmarks.systems.arq_sys:Arq"),
    Entry("omniq-postgres", "OmniQ", "postgres", "project", f"{_OMNIQ}:PostgreSQL"),
    Entry("pgqueuer-postgres", "PgQueuer", "postgres", "peers",
          "benchmarks.systems.pg_sys:PgQueuer"),
    Entry("saq-postgres", "SAQ", "postgres", "peers", "benchmarks.systems.saq_sys:SaqPostgres"),
    Entry("procrastinate-postgres", "Procrastinate", "postgres", "peers",
          "benchmarks.systems.pg_sys:Procrastinate"),
    Entry("omniq-nats", "OmniQ", "nats", "project", f"{_OMNIQ}:NATS"),
    Entry("taskiq-nats", "Taskiq", "nats", "taskiq", "benchmarks.systems.taskiq_sys:TaskiqNats"),
]
BY_NAME = {e.name: e for e in SYSTEMS}


def load(name: str, ctx: Context) -> System:
    """Instantiate system ``name`` (imports its library: call it in the right environment)."""
    module, cls = BY_NAME[name].target.split(":")
    system: System = getattr(importlib.import_module(module), cls)(ctx)
    return system
