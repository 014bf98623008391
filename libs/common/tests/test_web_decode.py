"""Typed bodies: a body that breaks the contract is a 422 problem naming the field."""

from __future__ import annotations

import httpx
import msgspec
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from chat_common import errors
from chat_common.problems import PROBLEM_CONTENT_TYPE, MalformedBody
from chat_common.web import EXCEPTION_HANDLERS, ascii_int, decode_json, parse_body


class Mark(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    up_to_seq: int


class Body(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    content: str
    mark: Mark | None = None
    marks: list[Mark] = []


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b'{"content": "hi", "extra": 1}', "extra"),
        (b"{}", "content"),
        (b'{"content": 5}', "content"),
        (b'{"content": "hi", "mark": {}}', "mark.upToSeq"),
        (b'{"content": "hi", "mark": {"upToSeq": 1, "x": 2}}', "mark.x"),
        (b'{"content": "hi", "mark": {"upToSeq": "1"}}', "mark.upToSeq"),
        (b'{"content": "hi", "marks": [{"upToSeq": 1}, {}]}', "marks[1].upToSeq"),
        (b"[]", None),
    ],
)
def test_the_offending_field_is_named(raw: bytes, field: str | None) -> None:
    with pytest.raises(errors.InvalidInput) as caught:
        decode_json(raw, Body)
    assert not isinstance(caught.value, MalformedBody)
    assert caught.value.field == field
    assert caught.value.detail  # msgspec's own explanation


def test_unknown_and_missing_fields_say_which() -> None:
    with pytest.raises(errors.InvalidInput, match="unknown field `extra`"):
        decode_json(b'{"content": "hi", "extra": 1}', Body)
    with pytest.raises(errors.InvalidInput, match="missing required field `content`"):
        decode_json(b"{}", Body)


@pytest.mark.parametrize("raw", [b'{"content": ', b'{"content": "\xff"}', b""])
def test_a_body_that_is_not_json_is_malformed(raw: bytes) -> None:
    with pytest.raises(MalformedBody):
        decode_json(raw, Body)


async def test_the_problem_body_carries_the_field() -> None:
    async def endpoint(request: Request) -> Response:
        await parse_body(request, Body)
        return Response("ok")

    app = Starlette(
        routes=[Route("/", endpoint, methods=["POST"])], exception_handlers=EXCEPTION_HANDLERS
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        unknown = await client.post("/", json={"content": "hi", "extra": True})
        missing = await client.post("/", json={})
    for answer, field in ((unknown, "extra"), (missing, "content")):
        assert answer.status_code == 422
        assert answer.headers["content-type"] == PROBLEM_CONTENT_TYPE
        assert answer.json()["field"] == field
        assert answer.json()["code"] == "INVALID_INPUT"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("5", 5),
        ("0", None),
        ("200", 200),
        ("201", None),
        ("²", None),
        ("١٢", None),
        ("9" * 5000, None),
        ("", None),
        ("-1", None),
        (" 5", None),
        ("1e3", None),
    ],
)
def test_ascii_int_takes_ascii_digits_in_range_only(raw: str, expected: int | None) -> None:
    assert ascii_int(raw, 1, 200) == expected


def test_a_body_nested_past_the_parser_stack_is_malformed_not_a_crash() -> None:
    with pytest.raises(MalformedBody, match="nests too deeply"):
        decode_json(b"[" * 5000 + b"]" * 5000, object)
