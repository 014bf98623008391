"""JSON log lines: one object per line, with the request id and, inside a span, the trace and
span ids that join them to the trace."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from chat_common.observability import JsonFormatter, request_id_var


@pytest.fixture
def tracer() -> Iterator[trace.Tracer]:
    provider = TracerProvider()  # the test's own: the process's global one is left alone
    yield provider.get_tracer("test")
    provider.shutdown()


def line(message: str = "hello %s", *args: Any, **extra: Any) -> dict[str, Any]:
    record = logging.LogRecord("chat.test", logging.INFO, __file__, 1, message, args, None)
    record.__dict__.update(extra)
    parsed: dict[str, Any] = json.loads(JsonFormatter("svc").format(record))
    return parsed


def test_a_line_outside_a_span_has_no_trace_ids() -> None:
    entry = line("hello %s", "world", outbox_id=7)
    assert entry["msg"] == "hello world"
    assert entry["service"] == "svc"
    assert entry["level"] == "info"
    assert entry["outbox_id"] == 7
    assert "trace_id" not in entry
    assert "span_id" not in entry


def test_a_line_inside_a_span_carries_its_trace_and_span_ids(tracer: trace.Tracer) -> None:
    token = request_id_var.set("req-1")
    try:
        with tracer.start_as_current_span("outer") as outer:
            with tracer.start_as_current_span("inner") as inner:
                in_inner = line()
            in_outer = line()
    finally:
        request_id_var.reset(token)
    trace_id = f"{outer.get_span_context().trace_id:032x}"
    assert in_inner["trace_id"] == in_outer["trace_id"] == trace_id
    assert in_inner["span_id"] == f"{inner.get_span_context().span_id:016x}"
    assert in_outer["span_id"] == f"{outer.get_span_context().span_id:016x}"
    assert in_inner["request_id"] == "req-1"
    assert len(in_inner["trace_id"]) == 32
    assert len(in_inner["span_id"]) == 16


def test_exceptions_are_logged_with_their_span(tracer: trace.Tracer) -> None:
    with tracer.start_as_current_span("failing") as span:
        try:
            raise ValueError("boom")
        except ValueError:
            record = logging.LogRecord(
                "chat.test", logging.ERROR, __file__, 1, "failed", (), sys.exc_info()
            )
            entry = json.loads(JsonFormatter("svc").format(record))
    assert entry["span_id"] == f"{span.get_span_context().span_id:016x}"
    assert "ValueError: boom" in entry["exc"]
