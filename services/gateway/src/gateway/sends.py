"""``POST /api/chat/message`` stored together with other users' sends.

Each send would otherwise be one HTTP exchange with message-svc, the gateway's and
message-svc's largest cost per message. Here concurrent sends go in one grouped request
(message-svc's ``POST /internal/sends``, :mod:`chat_common.grouping`): each as a group of its
own with the caller's own token, request id and trace context, so message-svc authenticates,
limits, logs and traces it exactly as the single request. At light load a send goes at once,
alone; under load, at most ``in_flight`` grouped requests are out and the sends arriving
meanwhile go together in the next.

The answer to each caller is the one the single request would have had: the stored message
(``Idempotent-Replayed`` on a replay) or the problem with its status, ``Retry-After`` and
``WWW-Authenticate`` as message-svc sets them. A body that is not one JSON document is not
grouped (one caller's bytes must not spoil the others' request): it is forwarded as it is, and
message-svc answers it as before. A grouped request that fails as a whole fails every send in
it the way a forwarded one would (503 unreachable, 504 too slow, 502 anything else).
"""

from __future__ import annotations

import asyncio

import aiohttp
import msgspec
from opentelemetry import trace
from prometheus_client import Gauge
from starlette.responses import Response

from chat_common import tracing
from chat_common.dto import GroupedSendAnswer, GroupedSendRequest, SendGroup, SentGroup, SentItem
from chat_common.grouping import Group, GroupBatcher, Sender
from chat_common.problems import PROBLEM_CONTENT_TYPE, error_response

from .proxy import upstream_failed

UPSTREAM = "message"
TRACER = tracing.tracer(__name__)
SENDS_PENDING = Gauge(
    "chat_gateway_sends_pending",
    "REST sends this instance holds for message-svc: in a grouped request out, or waiting for one",
)


_encode = msgspec.json.Encoder().encode
_answer = msgspec.json.Decoder(GroupedSendAnswer)


def json_document(body: bytes) -> msgspec.Raw | None:
    """``body`` when it is exactly one JSON document, else None."""
    try:
        return msgspec.json.decode(body, type=msgspec.Raw)
    except (msgspec.DecodeError, RecursionError):
        return None


class GroupedSends:
    def __init__(
        self,
        client: aiohttp.ClientSession,
        message_svc: str,
        *,
        in_flight: int = 2,
        timeout_seconds: float = 10.0,
    ) -> None:
        self._client = client
        self._timeout = timeout_seconds
        self._url = message_svc.rstrip("/") + "/internal/sends"
        self._batcher: GroupBatcher[Sender, msgspec.Raw, Response] = GroupBatcher(
            self._store,
            lambda exc: error_response(upstream_failed(UPSTREAM, exc)),
            max_in_flight=in_flight,
        )

    async def send(self, token: str, body: msgspec.Raw, request_id: str | None) -> Response:
        """Store one send (``body``, a JSON document) as ``token``'s user; its answer."""
        with TRACER.start_as_current_span(f"POST {UPSTREAM}", kind=trace.SpanKind.CLIENT) as span:
            span.set_attribute("http.request.method", "POST")
            span.set_attribute("server.address", UPSTREAM)
            carrier: dict[str, str] = {}
            tracing.inject(carrier)
            sender = Sender(token, request_id=request_id, trace=carrier or None)
            SENDS_PENDING.inc()
            try:  # bounded as a forward is, the wait for a free request included
                async with asyncio.timeout(self._timeout):
                    (answer,) = await self._batcher.store(sender, [body])
            except TimeoutError as exc:
                answer = error_response(upstream_failed(UPSTREAM, exc))
            finally:
                SENDS_PENDING.dec()
            span.set_attribute("http.response.status_code", answer.status_code)
        return answer

    async def _store(self, groups: list[Group[Sender, msgspec.Raw]]) -> list[list[Response]]:
        payload = GroupedSendRequest(
            groups=[
                SendGroup(
                    token=sender.token,
                    messages=messages,
                    request_id=sender.request_id,
                    trace=sender.trace,
                )
                for sender, messages in groups
            ]
        )
        headers = {"Content-Type": "application/json"}
        async with self._client.post(self._url, data=_encode(payload), headers=headers) as answer:
            status, content = answer.status, await answer.read()
            content_type = answer.headers.get("content-type", "application/json")
        if status != 200:  # the request as a whole: every send gets what it would have had
            return [
                [Response(content, status_code=status, media_type=content_type) for _ in messages]
                for _, messages in groups
            ]
        answers = _answer.decode(content).groups
        if len(answers) != len(groups):
            raise ValueError("the grouped answer does not match the request")
        return [_responses(g, len(m)) for g, (_, m) in zip(answers, groups, strict=True)]


def _responses(group: SentGroup, size: int) -> list[Response]:
    if group.status != 200:  # a fresh response each: the middlewares add to its headers
        return [_problem(group.status, group.problem, group.retry_after) for _ in range(size)]
    if len(group.results) != size:
        raise ValueError("the grouped answer does not match the request")
    return [_response(item) for item in group.results]


def _response(item: SentItem) -> Response:
    if item.status != 200:
        return _problem(item.status, item.problem, item.retry_after)
    answer = Response(bytes(item.message), media_type="application/json")
    if item.replayed:
        answer.headers["Idempotent-Replayed"] = "true"
    return answer


def _problem(status: int, problem: msgspec.Raw, retry_after: int | None) -> Response:
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
    return Response(
        bytes(problem), status_code=status, media_type=PROBLEM_CONTENT_TYPE, headers=headers
    )
