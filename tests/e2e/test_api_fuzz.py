"""Property-based requests from the OpenAPI document (schemathesis) through the gateway:
never a 5xx, every answer's status, content type and body as the document says."""

from __future__ import annotations

import collections
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Err
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from .conftest import Stack

pytestmark = pytest.mark.e2e


def test_api_never_fails_and_matches_its_document(stack: Stack) -> None:
    schema = schemathesis.openapi.from_url(f"{stack.gateway}/openapi.json")
    headers = {"Authorization": f"Bearer {stack.token('fuzz.user@example.com')}"}
    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
    ]
    tried = 0
    statuses: list[int] = []
    for result in schema.get_all_operations():
        if isinstance(result, Err):
            raise result.err()  # an operation of the document schemathesis cannot read
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(
            max_examples=25,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def run(case: Any) -> None:
            response = case.call_and_validate(
                base_url=stack.gateway, headers=headers, checks=checks
            )
            statuses.append(response.status_code)

        run()
        tried += 1
    assert tried == 21  # every operation of the document
    assert len(statuses) >= 100
    assert all(s < 500 for s in statuses), collections.Counter(statuses)
