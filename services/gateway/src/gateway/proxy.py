"""Forwarding a request to an upstream with a pooled httpx client, streaming the answer back."""

from __future__ import annotations

import httpx
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from chat_common.errors import DependencyError, DependencyTimeout, DependencyUnavailable
from chat_common.observability import request_id_var

# Hop-by-hop headers (RFC 9110 §7.6.1) and ones the client must not choose for the upstream.
_DROP_REQUEST = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
        "x-request-id",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
    }
)
_DROP_RESPONSE = frozenset(
    {
        "connection",
        "keep-alive",
        "transfer-encoding",
        "trailer",
        "upgrade",
        "content-length",
        "x-request-id",
        "server",
    }
)


async def forward(
    client: httpx.AsyncClient, base_url: str, name: str, request: Request, body: bytes
) -> Response:
    headers = [(k, v) for k, v in request.headers.items() if k.lower() not in _DROP_REQUEST]
    request_id = request_id_var.get()
    if request_id:
        headers.append(("x-request-id", request_id))
    if request.client is not None:
        headers.append(("x-forwarded-for", request.client.host))
    headers.append(("x-forwarded-proto", request.url.scheme))
    upstream_request = client.build_request(
        request.method,
        base_url.rstrip("/") + request.url.path,
        params=request.url.query.encode("latin-1") if request.url.query else None,
        headers=headers,
        content=body,
    )
    try:
        upstream = await client.send(upstream_request, stream=True)
    except httpx.TimeoutException:
        raise DependencyTimeout(f"{name} did not answer in time", code="UPSTREAM_TIMEOUT") from None
    except (httpx.ConnectError, httpx.RemoteProtocolError):
        raise DependencyUnavailable(f"{name} is unavailable", code="UPSTREAM_UNAVAILABLE") from None
    except httpx.HTTPError as exc:
        raise DependencyError(
            f"{name} failed: {type(exc).__name__}", code="UPSTREAM_FAILED"
        ) from None
    response_headers = {
        k: v for k, v in upstream.headers.items() if k.lower() not in _DROP_RESPONSE
    }
    return StreamingResponse(
        upstream.aiter_raw(),
        status_code=upstream.status_code,
        headers=response_headers,
        background=BackgroundTask(upstream.aclose),
    )
