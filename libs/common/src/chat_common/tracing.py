"""OpenTelemetry tracing for every service: HTTP in (ASGI) and out (httpx), the database
(asyncpg), and W3C ``traceparent`` carried in AMQP headers and outbox rows.

Spans are exported by OTLP/HTTP when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set; tests pass their
own exporter. Without either, a no-op provider costs next to nothing.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping
from typing import Any

import httpx
from opentelemetry import context, propagate, trace
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
)
from starlette.middleware import Middleware

TRACEPARENT = "traceparent"
_configured = False


def setup_tracing(service: str, exporter: SpanExporter | None = None) -> None:
    """Install the process's tracer provider (once) and instrument asyncpg."""
    global _configured
    if _configured:
        return
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if exporter is None and not endpoint:
        return
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    if endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    AsyncPGInstrumentor().instrument()  # type: ignore[no-untyped-call]
    _configured = True


def middleware() -> Middleware:
    """Server spans for every HTTP request and WebSocket, continuing an incoming traceparent
    (probes excluded)."""
    return Middleware(
        OpenTelemetryMiddleware,
        excluded_urls="healthz,readyz,metrics",
        exclude_spans=["receive", "send"],
    )


def trace_client(client: httpx.AsyncClient) -> httpx.AsyncClient:
    """Client spans for outgoing calls, with traceparent injected into their headers."""
    HTTPXClientInstrumentor.instrument_client(client)
    return client


def inject(headers: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Write the current trace context (W3C traceparent) into message headers."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    headers.update(carrier)
    return headers


def extract(headers: Mapping[str, Any] | None) -> context.Context:
    """The trace context carried by message headers (empty when there is none)."""
    carrier = {
        k: v.decode("latin-1") if isinstance(v, bytes) else v
        for k, v in (headers or {}).items()
        if isinstance(v, str | bytes)
    }
    return propagate.extract(carrier)


def tracer(name: str) -> trace.Tracer:
    return trace.get_tracer(name)
