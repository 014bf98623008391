"""Forwarding a request to an upstream with a pooled aiohttp client.

aiohttp rather than httpx on this path: the gateway forwards every API call, and aiohttp's
C-accelerated HTTP/1.1 client costs a fraction of httpx's CPU per request (measured in
``docs/benchmarks.md``). Answers of known, modest size are read whole and returned in one
piece; larger or unsized ones (long history pages) are streamed through as they come.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
from multidict import CIMultiDict
from opentelemetry import trace
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from yarl import URL

from chat_common import tracing
from chat_common.errors import DependencyError, DependencyTimeout, DependencyUnavailable
from chat_common.observability import request_id_var

TRACER = tracing.tracer(__name__)

# Answers up to this size (by their Content-Length) are buffered; anything else streams.
BUFFER_LIMIT = 256 * 1024
STREAM_CHUNK = 64 * 1024

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


def upstream_client(
    *, timeout_seconds: float, connect_timeout_seconds: float, max_connections: int = 512
) -> aiohttp.ClientSession:
    """The pooled client for forwarding: keep-alive connections, no cookies, no redirects
    followed, no decompression (bodies pass through as the upstream encoded them)."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=max_connections, limit_per_host=max_connections),
        timeout=aiohttp.ClientTimeout(total=timeout_seconds, sock_connect=connect_timeout_seconds),
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,
        skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
    )


def _request_headers(request: Request) -> CIMultiDict[str]:
    headers: CIMultiDict[str] = CIMultiDict(
        (k, v) for k, v in request.headers.items() if k not in _DROP_REQUEST
    )
    request_id = request_id_var.get()
    if request_id:
        headers["x-request-id"] = request_id
    if request.client is not None:
        headers["x-forwarded-for"] = request.client.host
    headers["x-forwarded-proto"] = request.url.scheme
    tracing.inject(headers)
    return headers


async def forward(
    client: aiohttp.ClientSession, base_url: str, name: str, request: Request, body: bytes
) -> Response:
    url = base_url.rstrip("/") + request.url.path
    if request.url.query:
        url += "?" + request.url.query
    with TRACER.start_as_current_span(
        f"{request.method} {name}", kind=trace.SpanKind.CLIENT
    ) as span:
        span.set_attribute("http.request.method", request.method)
        span.set_attribute("server.address", name)
        try:
            upstream = await client.request(
                request.method,
                URL(url, encoded=True),
                headers=_request_headers(request),
                data=body or None,
                allow_redirects=False,
            )
        except TimeoutError:
            raise DependencyTimeout(
                f"{name} did not answer in time", code="UPSTREAM_TIMEOUT"
            ) from None
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError):
            raise DependencyUnavailable(
                f"{name} is unavailable", code="UPSTREAM_UNAVAILABLE"
            ) from None
        except aiohttp.ClientError as exc:
            raise DependencyError(
                f"{name} failed: {type(exc).__name__}", code="UPSTREAM_FAILED"
            ) from None
        span.set_attribute("http.response.status_code", upstream.status)
    headers = [(k, v) for k, v in upstream.headers.items() if k.lower() not in _DROP_RESPONSE]
    size = upstream.content_length
    if size is not None and size <= BUFFER_LIMIT:
        try:
            content = await upstream.read()
        except TimeoutError:
            raise DependencyTimeout(
                f"{name} did not answer in time", code="UPSTREAM_TIMEOUT"
            ) from None
        except aiohttp.ClientError:
            raise DependencyUnavailable(
                f"{name} is unavailable", code="UPSTREAM_UNAVAILABLE"
            ) from None
        finally:
            upstream.release()
        answer = Response(content, status_code=upstream.status)
        answer.raw_headers = [
            *((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers),
            (b"content-length", str(len(content)).encode()),
        ]
        return answer
    streamed = StreamingResponse(
        _chunks(upstream), status_code=upstream.status, background=BackgroundTask(_close, upstream)
    )
    streamed.raw_headers = [
        *((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers),
    ]
    return streamed


async def _chunks(upstream: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    async for chunk in upstream.content.iter_chunked(STREAM_CHUNK):
        yield chunk


async def _close(upstream: aiohttp.ClientResponse) -> None:
    upstream.release()
