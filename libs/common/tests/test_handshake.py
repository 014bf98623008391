"""The handshake rules the gateway and ws-edge share: Origin, the token's place, the client's
address."""

from __future__ import annotations

import pytest
from starlette.requests import Request

from chat_common import errors
from chat_common.handshake import bearer, client_address, handshake_token, origin_allowed
from chat_common.web import bearer_token

ALLOWED = ("http://app.example",)


@pytest.mark.parametrize(
    ("origin", "host", "allowed"),
    [
        ("http://app.example", "edge:8083", True),  # on the list
        ("http://app.example", None, True),
        ("http://edge:8083", "edge:8083", True),  # same origin
        ("https://edge:8083", "edge:8083", True),
        (None, "edge:8083", True),  # not a browser
        ("http://evil.example", "edge:8083", False),
        ("http://evil.example", None, False),
        ("http://edge:8083", None, False),  # no Host to be the same as
        ("http://edge:8083", "edge:9999", False),  # another port is another origin
        ("http://edge", "edge:8083", False),
        ("ftp://edge:8083", "edge:8083", False),
        ("null", "edge:8083", False),
        ("http://app.example.evil", "edge:8083", False),
    ],
)
def test_origin_allowed(origin: str | None, host: str | None, allowed: bool) -> None:
    assert origin_allowed(origin, ALLOWED, host) is allowed


def test_a_wildcard_admits_any_origin() -> None:
    assert origin_allowed("http://evil.example", ("*",), "edge:8083")


@pytest.mark.parametrize(
    ("authorization", "query", "token"),
    [
        ("Bearer abc", "", "abc"),
        ("bearer  abc ", "access_token=zzz", "abc"),  # the header wins
        (None, "access_token=zzz", "zzz"),
        (None, "access_token=", None),  # empty is no token, on either route
        ("Bearer ", "", None),
        ("Basic abc", "", None),
        (None, "other=1", None),
        (None, "", None),
    ],
)
def test_the_handshake_token(authorization: str | None, query: str, token: str | None) -> None:
    assert handshake_token(authorization, query) == token


def test_bearer_refuses_other_schemes_and_empty_tokens() -> None:
    assert bearer("Bearer t") == "t"
    assert bearer("Token t") is None
    assert bearer("") is None
    assert bearer(None) is None


@pytest.mark.parametrize(
    ("peer", "forwarded", "trust", "address"),
    [
        ("10.0.0.1", "203.0.113.9, 10.0.0.2", True, "203.0.113.9"),
        ("10.0.0.1", "203.0.113.9", False, "10.0.0.1"),  # an untrusted header is ignored
        ("10.0.0.1", " , ", True, "10.0.0.1"),
        (None, None, True, "unknown"),
    ],
)
def test_the_client_address(
    peer: str | None, forwarded: str | None, trust: bool, address: str
) -> None:
    assert client_address(peer, forwarded, trust) == address


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer abc", "abc"),
        ("bearer  abc ", "abc"),
        ("Basic abc", None),
        ("Bearer", None),
        ("Bearer   ", None),
        ("abc", None),
    ],
)
def test_rest_and_websocket_read_a_bearer_header_alike(header: str, token: str | None) -> None:
    """One parser: the REST services' ``bearer_token`` answers what the handshakes' ``bearer``
    answers, as a token or as a 401 problem."""
    request = Request({"type": "http", "headers": [(b"authorization", header.encode())]})
    assert bearer(header) == token
    if token is None:
        with pytest.raises(errors.AuthenticationFailed) as refused:
            bearer_token(request)
        assert refused.value.code == "TOKEN_INVALID"
    else:
        assert bearer_token(request) == token
