"""OpenTelemetry tracing for every service: HTTP in (ASGI) and out (httpx), the database
(asyncpg), and W3C ``traceparent`` carried in AMQP headers and outbox rows.

Spans are exported by OTLP/HTTP when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set; tests pass their
own exporter. Without either, a no-op provider costs next to nothing, and the hot paths (the
relay's publishes, the edge's fan-out) ask :func:`enabled` first and skip span work entirely.

Messaging spans follow OpenTelemetry's messaging semantic conventions for RabbitMQ:

* :func:`start_publish`: a PRODUCER span ``{exchange} publish``, child of the context the
  message's headers carry (the outbox row's), whose own context replaces it in the headers, so
  that the consumer becomes a child of the publish;
* :func:`processing`: a CONSUMER span ``{exchange} process``, child of the headers' context;
* :func:`child_span`: an INTERNAL span under the current one, only when that one records.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from collections.abc import Mapping, MutableMapping
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from opentelemetry import context, propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue

if TYPE_CHECKING:
    import httpx
    from starlette.middleware import Middleware

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
_configured = False

# Messaging semantic-convention attributes (opentelemetry-semantic-conventions keeps them in an
# "incubating" private module, so they are spelled out here).
MESSAGING_SYSTEM = "messaging.system"
MESSAGING_OPERATION_TYPE = "messaging.operation.type"
MESSAGING_OPERATION_NAME = "messaging.operation.name"
MESSAGING_DESTINATION = "messaging.destination.name"
MESSAGING_SUBSCRIPTION = "messaging.destination.subscription.name"
MESSAGING_ROUTING_KEY = "messaging.rabbitmq.destination.routing_key"
MESSAGING_MESSAGE_ID = "messaging.message.id"
MESSAGING_BODY_SIZE = "messaging.message.body.size"
RABBITMQ = "rabbitmq"
DEFAULT_EXCHANGE = "amq.default"  # what the conventions call the nameless exchange

_NO_SPAN: AbstractContextManager[None] = contextlib.nullcontext()


def enabled() -> bool:
    """Whether :func:`setup_tracing` installed a provider. Hot paths check this (a global read)
    before doing any span work, so tracing that is not configured costs them nothing."""
    return _configured


def setup_tracing(service: str, exporter: SpanExporter | None = None) -> None:
    """Install the process's tracer provider (once) and instrument asyncpg where the process
    has it (``chat-common[db]``)."""
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
    if importlib.util.find_spec("asyncpg") is not None:
        from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor

        AsyncPGInstrumentor().instrument()  # type: ignore[no-untyped-call]
    _configured = True


def middleware() -> list[Middleware]:  # needs chat-common[web]
    """Server spans for every HTTP request and WebSocket, continuing an incoming traceparent
    (probes excluded); none when tracing is not configured (call after :func:`setup_tracing`),
    since even a no-op provider's middleware costs every request its attribute collection."""
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
    from starlette.middleware import Middleware

    if not _configured:
        return []
    return [
        Middleware(
            OpenTelemetryMiddleware,
            excluded_urls="healthz,readyz,metrics",
            exclude_spans=["receive", "send"],
        )
    ]


def trace_client(client: httpx.AsyncClient) -> httpx.AsyncClient:
    """Client spans for outgoing calls, with traceparent injected into their headers."""
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    HTTPXClientInstrumentor.instrument_client(client)
    return client


def inject(
    headers: MutableMapping[str, Any], within: context.Context | None = None
) -> MutableMapping[str, Any]:
    """Write the current trace context (or ``within``, one captured earlier with
    :func:`current`) into message headers (W3C traceparent)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=within)
    headers.update(carrier)
    return headers


TraceContext = context.Context


def current() -> context.Context:
    """The trace context of now, to :func:`inject` later (cheap: a reference)."""
    return context.get_current()


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


def _messaging(
    operation: str,
    operation_type: str,
    exchange: str,
    routing_key: str,
    message_id: str | None,
    extra: Mapping[str, AttributeValue],
) -> dict[str, AttributeValue]:
    attributes: dict[str, AttributeValue] = {
        MESSAGING_SYSTEM: RABBITMQ,
        MESSAGING_OPERATION_TYPE: operation_type,
        MESSAGING_OPERATION_NAME: operation,
        MESSAGING_DESTINATION: exchange or DEFAULT_EXCHANGE,
        MESSAGING_ROUTING_KEY: routing_key,
    }
    if message_id:
        attributes[MESSAGING_MESSAGE_ID] = message_id
    attributes.update(extra)
    return attributes


def start_publish(
    tracer: trace.Tracer,
    headers: MutableMapping[str, Any],
    *,
    exchange: str,
    routing_key: str,
    message_id: str | None = None,
    attributes: Mapping[str, AttributeValue] | None = None,
) -> Span:
    """Start (not activate) the PRODUCER span of one publish, child of the trace context that
    ``headers`` carry, and put the span's own context in ``headers`` in place of that one. The
    caller ends the span (:func:`end`) once the publish is confirmed."""
    parent = extract(headers)
    span = tracer.start_span(
        f"{exchange or DEFAULT_EXCHANGE} publish",
        context=parent,
        kind=SpanKind.PRODUCER,
        attributes=_messaging(
            "publish", "send", exchange, routing_key, message_id, attributes or {}
        ),
    )
    headers.pop(TRACEPARENT, None)
    headers.pop(TRACESTATE, None)
    propagate.inject(headers, context=trace.set_span_in_context(span, parent))
    return span


def end(span: Span, error: str | None = None) -> None:
    """End a span; with ``error``, mark it failed first."""
    if error:
        span.set_status(Status(StatusCode.ERROR, error))
    span.end()


def processing(
    tracer: trace.Tracer,
    headers: Mapping[str, Any] | None,
    *,
    exchange: str,
    routing_key: str,
    message_id: str | None = None,
    attributes: Mapping[str, AttributeValue] | None = None,
) -> AbstractContextManager[Span]:
    """The CONSUMER span of processing one delivered message, current within the ``with``
    block, child of the trace context that the message's ``headers`` carry."""
    return tracer.start_as_current_span(
        f"{exchange or DEFAULT_EXCHANGE} process",
        context=extract(headers),
        kind=SpanKind.CONSUMER,
        attributes=_messaging(
            "process", "process", exchange, routing_key, message_id, attributes or {}
        ),
    )


def child_span(tracer: trace.Tracer, name: str) -> AbstractContextManager[Span | None]:
    """An INTERNAL span under the current span, current within the ``with`` block; ``None``
    (a shared null context, nothing allocated) when tracing is off or the current span does not
    record (no trace, or not sampled): the caller sets attributes only on a span it got."""
    if not _configured or not trace.get_current_span().is_recording():
        return _NO_SPAN
    return tracer.start_as_current_span(name)


def continued(
    tracer: trace.Tracer, name: str, carrier: Mapping[str, str] | None
) -> AbstractContextManager[Span | None]:
    """A SERVER span for work a caller asked for inside a request that carries many callers'
    work (a grouped send), child of that caller's trace context (``carrier``: traceparent and
    tracestate); ``None`` when tracing is off or the caller sent no context."""
    if not _configured or not carrier:
        return _NO_SPAN
    return tracer.start_as_current_span(name, context=extract(carrier), kind=SpanKind.SERVER)


def fail_current(exc: BaseException) -> None:
    """Record ``exc`` on the current span and mark it failed (no-op without a span)."""
    span = trace.get_current_span()
    if span.is_recording():
        span.record_exception(exc)
        span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
