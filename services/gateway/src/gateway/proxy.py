"""Forwarding a request to an upstream with a pooled aiohttp client, one pool per upstream.

aiohttp rather than httpx on this path: the gateway forwards every API call, and aiohttp's
C-accelerated HTTP/1.1 client costs a fraction of httpx's CPU per request (measured in
``docs/benchmarks.md``). Each upstream has its own pool with its own connection cap, so one
slow upstream holds at most its own connections and never starves the others. Answers of
known, modest size are read whole and returned in one piece; larger or unsized ones (long
history pages) are streamed through as they come, and their connection goes back to the pool
(or is closed, when the answer was cut short) however the stream ends.

Upstream failures, as the client sees them::

    the upstream is too slow (answer, body, or a free connection)   504 UPSTREAM_TIMEOUT
    it cannot be connected to (down, refusing)                      503 UPSTREAM_UNAVAILABLE
    it drops the connection or answers something that is not HTTP   502 UPSTREAM_FAILED
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator

import aiohttp
from multidict import CIMultiDict
from opentelemetry import trace
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send
from yarl import URL

from chat_common import tracing
from chat_common.errors import DependencyError, DependencyTimeout, DependencyUnavailable
from chat_common.observability import request_id_var

TRACER = tracing.tracer(__name__)
log = logging.getLogger(__name__)

# What an unreachable, resetting or too slow upstream looks like from aiohttp (its connection
# errors are ClientErrors; a timeout is asyncio's). Translated here into DependencyError.
FAULTS: tuple[type[BaseException], ...] = (TimeoutError, aiohttp.ClientError)

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
    *, timeout_seconds: float, connect_timeout_seconds: float, max_connections: int
) -> aiohttp.ClientSession:
    """The pool of one upstream: at most ``max_connections`` connections, keep-alive, no
    cookies, no redirects followed, no decompression (bodies pass through as the upstream
    encoded them). ``timeout_seconds`` bounds a whole exchange, the wait for a free
    connection included."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=max_connections, limit_per_host=max_connections),
        timeout=aiohttp.ClientTimeout(total=timeout_seconds, sock_connect=connect_timeout_seconds),
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,
        skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
    )


def _request_headers(request: Request, forwarded_for: str) -> CIMultiDict[str]:
    headers: CIMultiDict[str] = CIMultiDict(
        (k, v) for k, v in request.headers.items() if k not in _DROP_REQUEST
    )
    request_id = request_id_var.get()
    if request_id:
        headers["x-request-id"] = request_id
    headers["x-forwarded-for"] = forwarded_for
    headers["x-forwarded-proto"] = request.url.scheme
    tracing.inject(headers)
    return headers


def upstream_error(name: str, exc: BaseException) -> DependencyError:
    """The domain error for a failed exchange with upstream ``name`` (see the table above)."""
    if isinstance(exc, TimeoutError):
        return DependencyTimeout(f"{name} did not answer in time", code="UPSTREAM_TIMEOUT")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return DependencyUnavailable(f"{name} is unavailable", code="UPSTREAM_UNAVAILABLE")
    return DependencyError(f"{name} failed: {type(exc).__name__}", code="UPSTREAM_FAILED")


def upstream_failed(name: str, exc: BaseException) -> DependencyError:
    """:func:`upstream_error`, logged."""
    error = upstream_error(name, exc)
    log.warning(
        "upstream %s failed: %s (%s)",
        name,
        error.code,
        type(exc).__name__,
        extra={"upstream": name, "error": error.code},
    )
    return error


async def forward(
    client: aiohttp.ClientSession,
    base_url: str,
    name: str,
    request: Request,
    body: bytes,
    *,
    forwarded_for: str,
    exchange_timeout: aiohttp.ClientTimeout | None = None,
    drop_request: frozenset[str] = frozenset(),
    drop_response: frozenset[str] = frozenset(),
) -> Response:
    """``request`` (its ``body`` read) to the same path on ``base_url``. ``exchange_timeout``
    replaces the pool's for this exchange; ``drop_request``/``drop_response``: headers
    (lower-case) not passed on, besides the hop-by-hop ones."""
    url = base_url.rstrip("/") + request.url.path
    if request.url.query:
        url += "?" + request.url.query
    with TRACER.start_as_current_span(
        f"{request.method} {name}", kind=trace.SpanKind.CLIENT
    ) as span:
        span.set_attribute("http.request.method", request.method)
        span.set_attribute("server.address", name)
        try:
            sent = _request_headers(request, forwarded_for)
            for header in drop_request:
                sent.popall(header, None)
            upstream = await client.request(
                request.method,
                URL(url, encoded=True),
                headers=sent,
                data=body or None,
                allow_redirects=False,
                timeout=client.timeout if exchange_timeout is None else exchange_timeout,
            )
        except FAULTS as exc:
            raise upstream_failed(name, exc) from None
        span.set_attribute("http.response.status_code", upstream.status)
    headers = [
        (k.lower().encode("latin-1"), v.encode("latin-1"))
        for k, v in upstream.headers.items()
        if k.lower() not in _DROP_RESPONSE and k.lower() not in drop_response
    ]
    size = upstream.content_length
    if size is not None and size <= BUFFER_LIMIT:
        try:
            content = await upstream.read()
        except FAULTS as exc:
            upstream.close()
            raise upstream_failed(name, exc) from None
        upstream.release()
        answer = Response(content, status_code=upstream.status)
        answer.raw_headers = [*headers, (b"content-length", str(len(content)).encode())]
        return answer
    streamed = UpstreamStream(upstream, name)
    streamed.raw_headers = headers
    return streamed


class UpstreamStream(StreamingResponse):
    """An upstream's answer passed through chunk by chunk. Whatever ends it (the last chunk,
    the client going away, the upstream failing mid-way), the upstream response is released:
    its connection returns to the pool when the answer was read to the end and is closed
    otherwise."""

    def __init__(self, upstream: aiohttp.ClientResponse, name: str) -> None:
        self._chunks = chunks(upstream, name)
        super().__init__(self._chunks, status_code=upstream.status)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            # A client that left while a chunk was being sent leaves the iterator suspended;
            # closing it runs its cleanup now rather than whenever it is collected.
            await self._chunks.aclose()


async def chunks(upstream: aiohttp.ClientResponse, name: str) -> AsyncGenerator[bytes, None]:
    complete = False
    try:
        async for chunk in upstream.content.iter_chunked(STREAM_CHUNK):
            yield chunk
        complete = True
    except FAULTS as exc:
        # The status line is gone already: the client sees the answer cut short.
        raise upstream_failed(name, exc) from None
    finally:
        if complete:
            upstream.release()
        else:
            upstream.close()
