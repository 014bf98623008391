"""How the gateway answers a domain error: an RFC 9457 problem, and ``Retry-After`` on a 503
(a dependency down: an upstream, the edge, or the rate-limit store) so clients back off."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from chat_common.errors import ChatError, DependencyUnavailable
from chat_common.problems import error_response

RETRY_UNAVAILABLE_SECONDS = 1


def problem_for(exc: ChatError) -> Response:
    response = error_response(exc)
    if isinstance(exc, DependencyUnavailable) and "retry-after" not in response.headers:
        response.headers["Retry-After"] = str(RETRY_UNAVAILABLE_SECONDS)
    return response


async def unavailable_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, DependencyUnavailable)
    return problem_for(exc)
