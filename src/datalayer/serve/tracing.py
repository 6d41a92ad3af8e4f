"""OpenTelemetry traces of the feature server: a span per request, a child per store call.

On only when an OTLP endpoint is configured, through the SDK's own variables
(``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``; the service name
from ``OTEL_SERVICE_NAME``, default ``datalayer-serve``), so a server that does not trace
pays nothing.
"""

from __future__ import annotations

import os
from typing import Any


def provider_from_environment() -> Any | None:
    """A tracer provider exporting over OTLP/HTTP in batches, or None when no endpoint is set."""
    if not (
        os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    ):
        return None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    name = os.environ.get("OTEL_SERVICE_NAME", "datalayer-serve")
    provider = TracerProvider(resource=Resource.create({"service.name": name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider
