"""Messaging spans: a publish is a PRODUCER child of the context its headers carry and hands
its own on; processing is a CONSUMER child of what arrived; nothing happens without tracing.

The spans go to a provider of the test's own (passed as the tracer), never to the process's
global one, so that these tests neither need nor change the tracing of the other suites.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from chat_common import tracing


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def tracer(exporter: InMemorySpanExporter) -> Iterator[trace.Tracer]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider.get_tracer("test")
    provider.shutdown()


def traceparent(span: trace.Span | ReadableSpan) -> str:
    """The span's ``traceparent`` without its flags: version, trace id, parent id."""
    context = span.get_span_context()
    assert context is not None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}"


def ids(header: str) -> str:
    return header.rsplit("-", 1)[0]


def only(exporter: InMemorySpanExporter, name: str) -> ReadableSpan:
    (span,) = [s for s in exporter.get_finished_spans() if s.name == name]
    return span


def test_a_publish_is_a_child_of_the_row_and_carries_its_own_context(
    tracer: trace.Tracer, exporter: InMemorySpanExporter
) -> None:
    with tracer.start_as_current_span("send") as send:
        row_headers: dict[str, Any] = {"x-event": "message", "CC": ["user.a"]}
        tracing.inject(row_headers)
    assert ids(row_headers["traceparent"]) == traceparent(send)
    headers = {**row_headers, "tracestate": "vendor=stale"}

    span = tracing.start_publish(
        tracer,
        headers,
        exchange="chat.events",
        routing_key="session.1",
        message_id="outbox-7",
        attributes={"chat.outbox.id": 7},
    )
    assert not exporter.get_finished_spans()[1:]  # only "send": the caller ends the publish
    tracing.end(span)

    publish = only(exporter, "chat.events publish")
    assert publish.kind is SpanKind.PRODUCER
    assert publish.parent is not None
    assert publish.parent.span_id == send.get_span_context().span_id
    assert publish.context is not None
    assert publish.context.trace_id == send.get_span_context().trace_id
    # the consumers' parent is the publish; the vendors' tracestate goes on, as W3C asks
    assert ids(headers["traceparent"]) == traceparent(publish)
    assert headers["tracestate"] == "vendor=stale"
    assert headers["x-event"] == "message"
    assert headers["CC"] == ["user.a"]
    assert publish.attributes == {
        "messaging.system": "rabbitmq",
        "messaging.operation.type": "send",
        "messaging.operation.name": "publish",
        "messaging.destination.name": "chat.events",
        "messaging.rabbitmq.destination.routing_key": "session.1",
        "messaging.message.id": "outbox-7",
        "chat.outbox.id": 7,
    }
    assert publish.status.status_code is StatusCode.UNSET


def test_a_publish_without_a_carried_context_starts_a_trace_and_can_fail(
    tracer: trace.Tracer, exporter: InMemorySpanExporter
) -> None:
    headers: dict[str, Any] = {}
    span = tracing.start_publish(tracer, headers, exchange="", routing_key="chat.send")
    tracing.end(span, "nacked by the broker")
    publish = only(exporter, "amq.default publish")
    assert publish.parent is None
    assert publish.attributes is not None
    assert publish.attributes["messaging.destination.name"] == "amq.default"
    assert "messaging.message.id" not in publish.attributes
    assert publish.status.status_code is StatusCode.ERROR
    assert publish.status.description == "nacked by the broker"
    assert ids(headers["traceparent"]) == traceparent(publish)


def test_processing_is_a_current_consumer_child_of_the_delivered_context(
    tracer: trace.Tracer, exporter: InMemorySpanExporter
) -> None:
    headers: dict[str, Any] = {}
    publish = tracing.start_publish(tracer, headers, exchange="chat.events", routing_key="k")
    tracing.end(publish)
    # AMQP headers arrive as bytes or str, depending on the client
    delivered = {"traceparent": headers["traceparent"].encode("latin-1"), "x-seq": 3}
    with tracing.processing(
        tracer,
        delivered,
        exchange="chat.events",
        routing_key="k",
        message_id="outbox-1",
        attributes={"messaging.destination.subscription.name": "ws-edge.a"},
    ) as span:
        assert trace.get_current_span() is span
    consumer = only(exporter, "chat.events process")
    assert consumer.kind is SpanKind.CONSUMER
    assert consumer.parent is not None
    assert consumer.parent.span_id == publish.get_span_context().span_id
    assert consumer.context is not None
    assert consumer.context.trace_id == publish.get_span_context().trace_id
    assert consumer.attributes is not None
    assert consumer.attributes["messaging.operation.type"] == "process"
    assert consumer.attributes["messaging.destination.subscription.name"] == "ws-edge.a"


def test_child_span_only_under_a_recording_span(
    tracer: trace.Tracer, exporter: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tracing, "_configured", True)
    with tracing.child_span(tracer, "orphan") as none:
        assert none is None  # no current span: nothing to hang it under
    with tracer.start_as_current_span("parent") as parent, tracing.child_span(tracer, "child") as c:
        assert c is not None
        assert trace.get_current_span() is c
    child = only(exporter, "child")
    assert child.parent is not None
    assert child.parent.span_id == parent.get_span_context().span_id
    monkeypatch.setattr(tracing, "_configured", False)
    with tracer.start_as_current_span("parent"), tracing.child_span(tracer, "off") as off:
        assert off is None  # tracing not configured: skipped before looking at the context
    assert not [s for s in exporter.get_finished_spans() if s.name in ("orphan", "off")]


def test_fail_current_marks_the_current_span(
    tracer: trace.Tracer, exporter: InMemorySpanExporter
) -> None:
    tracing.fail_current(ValueError("no span: nothing happens"))
    with tracer.start_as_current_span("work"):
        tracing.fail_current(ValueError("bad event"))
    work = only(exporter, "work")
    assert work.status.status_code is StatusCode.ERROR
    assert work.status.description == "ValueError: bad event"
    assert [e.name for e in work.events] == ["exception"]


def test_enabled_follows_setup(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tracing, "_configured", False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    tracing.setup_tracing("nothing-to-export")  # no exporter, no endpoint: stays off
    assert not tracing.enabled()
