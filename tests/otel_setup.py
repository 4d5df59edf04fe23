"""Imported by a worker under test (``--import tests.otel_setup``): installs a global tracer
provider that appends every finished span to the JSON-lines file named by $OMNIQ_TEST_SPANS."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult


class _FileExporter(SpanExporter):
    def __init__(self, path: str) -> None:
        self.path = path

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with open(self.path, "a") as out:
            for span in spans:
                out.write(json.dumps({
                    "name": span.name,
                    "task_id": (span.attributes or {}).get("omniq.task.id"),
                    "trace_id": span.context.trace_id,
                    "parent_span_id": span.parent.span_id if span.parent else None,
                }) + "\n")
        return SpanExportResult.SUCCESS


_provider = TracerProvider()
_provider.add_span_processor(SimpleSpanProcessor(_FileExporter(os.environ["OMNIQ_TEST_SPANS"])))
trace.set_tracer_provider(_provider)
