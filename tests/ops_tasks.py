"""Task functions for the tracing tests: each records the span context it ran in."""

from __future__ import annotations

import threading

from opentelemetry import trace

import omniq

#: (label, trace id, span id, thread name) per run, in this process.
seen: list[tuple[str, int, int, str]] = []


def _record(label: str) -> str:
    context = trace.get_current_span().get_span_context()
    seen.append((label, context.trace_id, context.span_id, threading.current_thread().name))
    return label


@omniq.task
async def traced(label: str) -> str:
    return _record(label)


@omniq.task
def traced_in_thread(label: str) -> str:
    return _record(label)


@omniq.task
async def traced_failure(label: str) -> None:
    _record(label)
    raise ValueError(f"{label} failed")
