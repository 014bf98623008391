"""Domain errors map to RFC 9457 problem responses with the right status."""

from __future__ import annotations

import json

import pytest

from chat_common import errors
from chat_common.dto import InitSessionRequest
from chat_common.problems import PROBLEM_CONTENT_TYPE, MalformedBody, error_response, status_for
from chat_common.web import decode_json


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (MalformedBody("x"), 400),
        (errors.InvalidInput("x"), 422),
        (errors.ContentTooLarge("x"), 413),
        (errors.AuthenticationFailed("x"), 401),
        (errors.Forbidden("x"), 403),
        (errors.NotFound("x"), 404),
        (errors.Conflict("x"), 409),
        (errors.RateLimited("x", retry_after=1.2), 429),
        (errors.DependencyUnavailable("x"), 503),
        (errors.DependencyTimeout("x"), 504),
        (errors.DependencyError("x"), 502),
    ],
)
def test_status_map(error: errors.ChatError, status: int) -> None:
    assert status_for(error) == status


def test_problem_body_and_headers() -> None:
    response = error_response(errors.RateLimited("slow down", retry_after=1.2, code="SEND_RATE"))
    assert response.status_code == 429
    assert response.headers["content-type"] == PROBLEM_CONTENT_TYPE
    assert response.headers["retry-after"] == "2"
    body = json.loads(bytes(response.body))
    assert body == {
        "type": "https://chat.example/problems/send-rate",
        "title": "Too many requests",
        "status": 429,
        "detail": "slow down",
        "code": "SEND_RATE",
    }


def test_validation_error_names_the_field() -> None:
    with pytest.raises(errors.InvalidInput) as caught:
        decode_json(b'{"toEmail": 5, "intent": "dating"}', InitSessionRequest)
    assert caught.value.field == "toEmail"
    assert status_for(caught.value) == 422


def test_unknown_field_is_refused() -> None:
    with pytest.raises(errors.InvalidInput, match="unknown"):
        decode_json(b'{"toEmail": "a@b.c", "intent": "dating", "x": 1}', InitSessionRequest)


def test_malformed_json_is_400() -> None:
    with pytest.raises(MalformedBody):
        decode_json(b'{"toEmail": ', InitSessionRequest)


def test_a_dependency_that_is_down_says_when_to_try_again() -> None:
    down = error_response(errors.DependencyUnavailable("FlairBit is unavailable"))
    assert down.status_code == 503
    assert down.headers["retry-after"] == "1"
    slow = error_response(errors.DependencyTimeout("FlairBit did not answer in time"))
    assert slow.status_code == 504
    assert "retry-after" not in slow.headers
