from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from flairbit_stub.app import create_app
from flairbit_stub.settings import CHAT_SERVICE_KEY_FILENAME, Settings

SignChatToken = Callable[..., str]


def profile_path(email: str, intent: str = "dating") -> str:
    return f"/internal/chat-service/users/{email}/profile/{intent}"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert (body["status"], body["code"]) == (status, code)
    assert {"type", "title", "detail"} <= set(body)
    return body


@pytest.fixture
def auth(sign_chat_token: SignChatToken) -> dict[str, str]:
    return bearer(sign_chat_token())


async def lookup(
    client: httpx.AsyncClient, auth: dict[str, str], email: str, intent: str = "dating"
) -> httpx.Response:
    return await client.get(profile_path(email, intent), headers=auth)


# --- authentication ------------------------------------------------------------------------


async def test_valid_chat_service_token_is_accepted(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    response = await lookup(client, auth, "alice.smith@example.com")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer"}, {"Authorization": "Basic YTpi"}, bearer("not.a.jwt")],
)
async def test_missing_or_malformed_token_is_401(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    response = await client.get(profile_path("a@x.org"), headers=headers)
    assert_problem(response, 401, "UNAUTHENTICATED")
    assert response.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    "claims",
    [
        {"iss": "someone-else"},
        {"aud": "chat"},
        {"exp": -300},  # seconds from now, taken when the test runs (not at collection)
        {"exp": None},
        {"iss": None},
        {"aud": None},
        {"nbf": 300},
    ],
    ids=["wrong-iss", "wrong-aud", "expired", "no-exp", "no-iss", "no-aud", "not-yet-valid"],
)
async def test_untrusted_claims_are_401(
    client: httpx.AsyncClient, sign_chat_token: SignChatToken, claims: dict[str, Any]
) -> None:
    now = int(time.time())
    claims = {k: now + v if k in ("exp", "nbf") and v is not None else v for k, v in claims.items()}
    response = await lookup(client, bearer(sign_chat_token(**claims)), "a@x.org")
    assert_problem(response, 401, "UNAUTHENTICATED")


async def test_hs256_token_is_401(
    client: httpx.AsyncClient, sign_chat_token: SignChatToken
) -> None:
    token = sign_chat_token(key="s" * 64, algorithm="HS256")
    assert_problem(await lookup(client, bearer(token), "a@x.org"), 401, "UNAUTHENTICATED")


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def _signing_input(alg: str) -> bytes:
    claims = {"iss": "chat-service", "aud": "flairbit", "exp": int(time.time()) + 60}
    header = {"alg": alg, "typ": "JWT"}
    return _b64(json.dumps(header).encode()) + b"." + _b64(json.dumps(claims).encode())


def _hs256_token_keyed_with(path: Path) -> str:
    """A hand-made HS256 token whose HMAC key is the bytes of the PEM file at ``path``."""
    signing_input = _signing_input("HS256")
    mac = hmac.new(path.read_bytes(), signing_input, hashlib.sha256).digest()
    return (signing_input + b"." + _b64(mac)).decode()


async def test_hs256_signed_with_the_public_pem_is_401(
    client: httpx.AsyncClient, chat_public_key_file: Path
) -> None:
    # Key confusion: an HMAC keyed with the public key must not pass as the RSA signature.
    token = _hs256_token_keyed_with(chat_public_key_file)
    assert_problem(await lookup(client, bearer(token), "a@x.org"), 401, "UNAUTHENTICATED")


async def test_unsigned_token_is_401(client: httpx.AsyncClient) -> None:
    token = (_signing_input("none") + b".").decode()
    assert_problem(await lookup(client, bearer(token), "a@x.org"), 401, "UNAUTHENTICATED")


async def test_token_signed_by_another_key_is_401(
    client: httpx.AsyncClient, sign_chat_token: SignChatToken, stub_private_key: rsa.RSAPrivateKey
) -> None:
    token = sign_chat_token(key=stub_private_key)
    assert_problem(await lookup(client, bearer(token), "a@x.org"), 401, "UNAUTHENTICATED")


async def test_chat_key_is_read_lazily(
    settings: Settings, chat_private_key: rsa.RSAPrivateKey, sign_chat_token: SignChatToken
) -> None:
    auth = bearer(sign_chat_token())
    async with (
        LifespanManager(create_app(settings)) as manager,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app), base_url="http://flairbit.test"
        ) as client,
    ):
        assert_problem(await lookup(client, auth, "a@x.org"), 401, "UNAUTHENTICATED")
        (settings.key_dir / CHAT_SERVICE_KEY_FILENAME).write_bytes(
            chat_private_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        assert (await lookup(client, auth, "a@x.org")).status_code == 200


# --- profiles ------------------------------------------------------------------------------


async def test_profile_body_and_stable_ids(client: httpx.AsyncClient, auth: dict[str, str]) -> None:
    first = (await lookup(client, auth, "Alice.Smith@Example.com")).json()
    assert set(first) == {"id", "displayName", "userEmail", "userId"}
    assert first["displayName"] == "Alice Smith"
    assert first["userEmail"] == "alice.smith@example.com"
    uuid.UUID(first["id"])
    uuid.UUID(first["userId"])
    again = (await lookup(client, auth, "alice.smith@example.com")).json()
    assert again == first
    other_intent = (await lookup(client, auth, "alice.smith@example.com", "freelance")).json()
    assert other_intent["id"] != first["id"]
    assert other_intent["userId"] == first["userId"]
    other_user = (await lookup(client, auth, "bob@example.com")).json()
    assert other_user["userId"] != first["userId"]
    assert other_user["id"] != first["id"]


async def test_ids_survive_a_restart(
    settings: Settings, chat_public_key_file: Path, auth: dict[str, str]
) -> None:
    bodies = []
    for _ in range(2):
        async with (
            LifespanManager(create_app(settings)) as manager,
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=manager.app), base_url="http://flairbit.test"
            ) as client,
        ):
            bodies.append((await lookup(client, auth, "carol@x.org")).json())
    assert bodies[0] == bodies[1]


async def test_unknown_intent_is_profile_not_found(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    assert_problem(await lookup(client, auth, "a@x.org", "chess"), 404, "PROFILE_NOT_FOUND")


@pytest.mark.parametrize("email", ["nouser@x.org", "NoUser.Bob@x.org", "nouser42@x.org"])
async def test_nouser_addresses_are_user_not_found(
    client: httpx.AsyncClient, auth: dict[str, str], email: str
) -> None:
    assert_problem(await lookup(client, auth, email), 404, "USER_NOT_FOUND")


async def test_invalid_email_in_lookup_is_user_not_found(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    assert_problem(await lookup(client, auth, "not-an-email"), 404, "USER_NOT_FOUND")


async def test_deleted_user_and_removed_profile(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    assert (await client.delete("/dev/users/dan@x.org/profile/dating")).status_code == 204
    assert_problem(await lookup(client, auth, "dan@x.org"), 404, "PROFILE_NOT_FOUND")
    assert (await lookup(client, auth, "dan@x.org", "rideshare")).status_code == 200
    assert (await client.delete("/dev/users/DAN@x.org")).status_code == 204
    assert_problem(await lookup(client, auth, "dan@x.org", "rideshare"), 404, "USER_NOT_FOUND")


async def test_put_overrides_name_and_restores(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    await client.delete("/dev/users/erin@x.org/profile/dating")
    await client.delete("/dev/users/erin@x.org")
    before = (await client.get("/dev/stats")).json()["profileLookups"]
    response = await client.put(
        "/dev/users/erin@x.org/profile/dating", json={"displayName": "Erin E."}
    )
    assert response.status_code == 200
    assert response.json()["displayName"] == "Erin E."
    found = (await lookup(client, auth, "erin@x.org")).json()
    assert found == response.json()
    assert (await client.get("/dev/stats")).json()["profileLookups"] == before + 1


@pytest.mark.parametrize(
    ("path", "payload", "status", "code"),
    [
        ("/dev/users/erin@x.org/profile/dating", {"displayName": ""}, 422, "INVALID_INPUT"),
        ("/dev/users/erin@x.org/profile/dating", {"displayName": "  "}, 422, "INVALID_INPUT"),
        ("/dev/users/erin@x.org/profile/dating", {"name": "E"}, 422, "INVALID_INPUT"),
        ("/dev/users/erin@x.org/profile/chess", {"displayName": "E"}, 404, "PROFILE_NOT_FOUND"),
        ("/dev/users/nouser@x.org/profile/dating", {"displayName": "E"}, 404, "USER_NOT_FOUND"),
        ("/dev/users/erin/profile/dating", {"displayName": "E"}, 422, "INVALID_INPUT"),
    ],
)
async def test_put_refusals(
    client: httpx.AsyncClient, path: str, payload: dict[str, Any], status: int, code: str
) -> None:
    assert_problem(await client.put(path, json=payload), status, code)


async def test_dev_controls_refuse_invalid_email(client: httpx.AsyncClient) -> None:
    body = assert_problem(await client.delete("/dev/users/erin"), 422, "INVALID_INPUT")
    assert body["field"] == "email"
    assert_problem(
        await client.delete("/dev/users/erin@x.org/profile/chess"), 404, "PROFILE_NOT_FOUND"
    )


# --- faults, stats, reset ------------------------------------------------------------------


async def test_faults_default_to_ok(client: httpx.AsyncClient) -> None:
    response = await client.get("/dev/faults")
    assert response.json() == {"mode": "ok", "delayMs": 2000, "status": 503}


async def test_fail_fault(client: httpx.AsyncClient, auth: dict[str, str]) -> None:
    response = await client.post("/dev/faults", json={"mode": "fail"})
    assert response.json() == {"mode": "fail", "delayMs": 2000, "status": 503}
    assert_problem(await lookup(client, auth, "a@x.org"), 503, "INJECTED_FAULT")
    # Only the profile look-up misbehaves.
    assert (await client.post("/dev/token", json={"email": "a@x.org"})).status_code == 200
    await client.post("/dev/faults", json={"mode": "fail", "status": 500})
    assert_problem(await lookup(client, auth, "a@x.org"), 500, "INJECTED_FAULT")
    await client.post("/dev/faults", json={"mode": "ok"})
    assert (await lookup(client, auth, "a@x.org")).status_code == 200


async def test_slow_fault(client: httpx.AsyncClient, auth: dict[str, str]) -> None:
    await client.post("/dev/faults", json={"mode": "slow", "delayMs": 800})
    assert (await client.get("/dev/faults")).json()["mode"] == "slow"
    started = time.monotonic()
    response = await lookup(client, auth, "a@x.org")
    elapsed = time.monotonic() - started
    assert response.status_code == 200
    assert elapsed >= 0.79  # the injected delay (a lower bound: robust)
    started = time.monotonic()
    assert (await client.get("/healthz")).status_code == 200
    # only the look-up gets the 0.8 s delay (the margin is for a busy machine)
    assert time.monotonic() - started < 0.5


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"mode": "broken"}, "mode"),
        ({}, "mode"),
        ({"mode": "slow", "delayMs": -1}, "delayMs"),
        ({"mode": "fail", "status": 200}, "status"),
        ({"mode": "fail", "status": "503"}, "status"),
    ],
)
async def test_bad_fault_requests_are_422(
    client: httpx.AsyncClient, payload: dict[str, Any], field: str
) -> None:
    body = assert_problem(await client.post("/dev/faults", json=payload), 422, "INVALID_INPUT")
    assert body["field"] == field


async def test_stats_count_every_profile_request(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    assert (await client.get("/dev/stats")).json() == {"profileLookups": 0}
    await lookup(client, auth, "a@x.org")
    await lookup(client, auth, "nouser@x.org")
    await client.get(profile_path("a@x.org"))  # unauthenticated, still received
    await client.post("/dev/token", json={"email": "a@x.org"})
    assert (await client.get("/dev/stats")).json() == {"profileLookups": 3}


async def test_reset(client: httpx.AsyncClient, auth: dict[str, str]) -> None:
    await client.delete("/dev/users/a@x.org")
    await client.delete("/dev/users/b@x.org/profile/dating")
    await client.put("/dev/users/c@x.org/profile/dating", json={"displayName": "Cee"})
    await client.post("/dev/faults", json={"mode": "fail"})
    await lookup(client, auth, "a@x.org")
    assert (await client.post("/dev/reset")).status_code == 204
    assert (await client.get("/dev/faults")).json()["mode"] == "ok"
    assert (await client.get("/dev/stats")).json() == {"profileLookups": 0}
    assert (await lookup(client, auth, "a@x.org")).status_code == 200
    assert (await lookup(client, auth, "b@x.org")).status_code == 200
    assert (await lookup(client, auth, "c@x.org")).json()["displayName"] == "C"
