from __future__ import annotations

import time
from typing import Any

import httpx
import jwt
import pytest


async def _verify_with_jwks(
    client: httpx.AsyncClient, token: str, *, audience: str
) -> dict[str, Any]:
    jwks = jwt.PyJWKSet.from_dict((await client.get("/.well-known/jwks.json")).json())
    kid = jwt.get_unverified_header(token)["kid"]
    claims: dict[str, Any] = jwt.decode(
        token,
        jwks[kid].key,
        algorithms=["RS256"],
        audience=audience,
        issuer="flairbit",
        options={"require": ["exp", "iat", "nbf", "sub"]},
    )
    return claims


def _assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["code"] == code
    assert body["title"]
    assert body["detail"]
    assert body["type"].endswith(code.lower().replace("_", "-"))
    return body


async def test_jwks_document(client: httpx.AsyncClient) -> None:
    response = await client.get("/.well-known/jwks.json")
    assert response.status_code == 200
    (key,) = response.json()["keys"]
    assert set(key) == {"kty", "kid", "use", "alg", "n", "e"}
    assert (key["kty"], key["use"], key["alg"], key["e"]) == ("RSA", "sig", "RS256", "AQAB")
    assert len(key["kid"]) == 16


async def test_user_token_claims_verify_with_jwks(client: httpx.AsyncClient) -> None:
    before = int(time.time())
    response = await client.post("/dev/token", json={"email": "  Alice.Smith@Example.com "})
    assert response.status_code == 200
    token = response.json()["token"]
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "RS256"
    claims = await _verify_with_jwks(client, token, audience="chat")
    assert claims["sub"] == "alice.smith@example.com"
    assert claims["iss"] == "flairbit"
    assert claims["aud"] == "chat"
    assert before <= claims["iat"] <= int(time.time())
    assert claims["nbf"] == claims["iat"]
    assert claims["exp"] == claims["iat"] + 3600


async def test_user_token_custom_ttl_and_not_before(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/dev/token", json={"email": "a@x.org", "ttlSeconds": 90, "notBeforeOffset": 30}
    )
    token = response.json()["token"]
    with pytest.raises(jwt.ImmatureSignatureError):
        await _verify_with_jwks(client, token, audience="chat")
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 90
    assert claims["nbf"] - claims["iat"] == 30


async def test_negative_ttl_mints_an_expired_token(client: httpx.AsyncClient) -> None:
    response = await client.post("/dev/token", json={"email": "a@x.org", "ttlSeconds": -60})
    assert response.status_code == 200
    with pytest.raises(jwt.ExpiredSignatureError):
        await _verify_with_jwks(client, response.json()["token"], audience="chat")


async def test_service_token(client: httpx.AsyncClient) -> None:
    response = await client.post("/dev/service-token")
    assert response.status_code == 200
    token = response.json()["token"]
    claims = await _verify_with_jwks(client, token, audience="chat-service")
    assert claims["sub"] == "flairbit"
    assert claims["iss"] == "flairbit"
    assert claims["exp"] - claims["iat"] == 120


@pytest.mark.parametrize(
    "email", ["no-at-sign", "a@" + "x" * 253, "@x.org", "two words@x.org", "   "]
)
async def test_invalid_email_is_422(client: httpx.AsyncClient, email: str) -> None:
    body = _assert_problem(
        await client.post("/dev/token", json={"email": email}), 422, "INVALID_INPUT"
    )
    assert body["field"] == "email"


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"email": 42}, "email"),
        ({}, "email"),
        ({"email": "a@x.org", "ttlSeconds": "60"}, "ttlSeconds"),
        ({"email": "a@x.org", "ttlSeconds": True}, "ttlSeconds"),
        ({"email": "a@x.org", "notBeforeOffset": 1.5}, "notBeforeOffset"),
        ({"email": "a@x.org", "ttlSeconds": 10**15}, "ttlSeconds"),
    ],
)
async def test_wrong_types_are_422_naming_the_field(
    client: httpx.AsyncClient, payload: dict[str, Any], field: str
) -> None:
    body = _assert_problem(await client.post("/dev/token", json=payload), 422, "INVALID_INPUT")
    assert body["field"] == field


async def test_json_that_is_not_an_object_is_422(client: httpx.AsyncClient) -> None:
    _assert_problem(await client.post("/dev/token", json=["a@x.org"]), 422, "INVALID_INPUT")


@pytest.mark.parametrize("raw", [b"{", b"", b"email=a@x.org", b"\xff\xfe"])
async def test_malformed_json_is_400(client: httpx.AsyncClient, raw: bytes) -> None:
    response = await client.post(
        "/dev/token", content=raw, headers={"content-type": "application/json"}
    )
    _assert_problem(response, 400, "MALFORMED_BODY")


async def test_oversized_body_is_413(client: httpx.AsyncClient) -> None:
    response = await client.post("/dev/token", content=b" " * (65 * 1024))
    _assert_problem(response, 413, "BODY_TOO_LARGE")


async def test_unknown_route_and_wrong_method_are_problems(client: httpx.AsyncClient) -> None:
    _assert_problem(await client.get("/nope"), 404, "NOT_FOUND")
    response = await client.get("/dev/token")
    _assert_problem(response, 405, "METHOD_NOT_ALLOWED")
    assert "POST" in response.headers["allow"]


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
async def test_health(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path)
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
