"""Hostile input through the gateway: forged tokens on REST and STOMP, malformed and oversize
STOMP frames, subscription and send floods. Each gets a clear 401 / ERROR / error event,
nothing is stored, and the stack keeps serving others."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
import uuid
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from chat_testing.stomp import StompClient

from .conftest import Stack, subscribed

pytestmark = pytest.mark.e2e


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forged_tokens(stack: Stack) -> dict[str, str]:
    keys = stack.run_dir / "keys"
    private = serialization.load_pem_private_key(
        (keys / "flairbit_dev_private.pem").read_bytes(), password=None
    )
    public_pem = (keys / "flairbit_dev_public.pem").read_bytes()
    good = stack.token("victim@example.com")
    kid = jwt.get_unverified_header(good)["kid"]
    now = int(time.time())
    claims = {"sub": "victim@example.com", "iss": "flairbit", "aud": "chat", "exp": now + 600}

    def signed(body: dict[str, Any], **headers: Any) -> str:
        return jwt.encode(body, private, algorithm="RS256", headers={"kid": kid, **headers})  # type: ignore[arg-type]

    unsigned = f"{b64(json.dumps({'alg': 'none'}).encode())}.{b64(json.dumps(claims).encode())}"
    hs_header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    hs_input = f"{hs_header}.{b64(json.dumps(claims).encode())}"
    header, _, signature = good.split(".")
    return {
        "alg none": unsigned + ".",
        "HS256 with the public key": hs_input
        + "."
        + b64(hmac.new(public_pem, hs_input.encode(), hashlib.sha256).digest()),
        "wrong kid": signed(claims, kid="not-a-key"),
        "expired": signed({**claims, "exp": now - 3600}),
        "not yet valid": signed({**claims, "nbf": now + 3600}),
        "wrong issuer": signed({**claims, "iss": "evil"}),
        "wrong audience": signed({**claims, "aud": "other"}),
        "tampered payload": ".".join(
            (header, b64(json.dumps({**claims, "sub": "boss@example.com"}).encode()), signature)
        ),
        "huge": "a" * 20_000,
    }


def test_forged_tokens_are_refused_on_rest_and_stomp(stack: Stack) -> None:
    for name, token in forged_tokens(stack).items():
        answer = httpx.get(
            f"{stack.gateway}/api/chat/sessions",
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
        assert answer.status_code in (401, 431), (name, answer.status_code)
        if answer.status_code == 401:
            assert answer.headers["content-type"] == "application/problem+json"

        async def stomp(token: str = token) -> None:
            with pytest.raises((ConnectionError, ConnectionClosed)):
                await StompClient.open(
                    stack.gateway.replace("http://", "ws://") + "/ws",
                    headers=(("passcode", token),),
                )

        asyncio.run(stomp())


async def raw(stack: Stack, token: str, *frames: bytes) -> list[str]:
    """Send raw frames after a good CONNECT; return what came back until the close."""
    url = stack.gateway.replace("http://", "ws://") + f"/ws?access_token={token}"
    got: list[str] = []
    async with connect(url, subprotocols=[Subprotocol("v12.stomp")], max_size=1 << 22) as socket:
        await socket.send(b"CONNECT\naccept-version:1.2\nhost:/\n\n\x00", text=True)
        got.append(str(await socket.recv()))
        for frame in frames:
            await socket.send(frame, text=False)
        try:
            async with asyncio.timeout(10):
                async for message in socket:
                    got.append(str(message))
        except ConnectionClosed:
            pass
    return got


@pytest.mark.parametrize(
    ("name", "frame"),
    [
        ("100 MB announced", b"SEND\ndestination:/app/chat.send\ncontent-length:104857600\n\n"),
        ("undefined escape", b"SEND\ndestination:/app/chat.send\nx:a\\tb\n\n{}\x00"),
        (
            "content-length lies short",
            b"SEND\ndestination:/app/chat.send\ncontent-length:1\n\n{}\x00",
        ),
        ("unknown command", b"HELLO\n\n\x00"),
        ("garbage", b"\xff\xfe garbage\n\n\x00"),
        ("endless command line", b"X" * 5_000),
        ("header without colon", b"SUBSCRIBE\nnocolon\n\n\x00"),
        ("transactions", b"BEGIN\ntransaction:t1\n\n\x00"),
    ],
)
async def test_malformed_frames_get_an_error_and_the_edge_goes_on(
    stack: Stack, name: str, frame: bytes
) -> None:
    token = stack.token("hostile@example.com")
    got = await raw(stack, token, frame)
    assert got[0].startswith("CONNECTED"), name
    assert any(m.startswith("ERROR") for m in got[1:]), (name, got)
    healthy = await StompClient.open(
        stack.gateway.replace("http://", "ws://") + "/ws", headers=(("passcode", token),)
    )
    await healthy.close()


async def test_a_subscription_flood_is_cut_at_the_limit(stack: Stack) -> None:
    token = stack.token("subflood@example.com")
    frames = [
        f"SUBSCRIBE\nid:{i}\ndestination:/user/queue/messages\n\n\x00".encode() for i in range(1000)
    ]
    got = await raw(stack, token, b"".join(frames))
    errors = [m for m in got if m.startswith("ERROR")]
    assert errors
    assert "subscriptions" in errors[0] or "limit" in errors[0].lower()


async def test_a_send_flood_is_rate_limited_and_stores_only_what_was_allowed(stack: Stack) -> None:
    tag = uuid.uuid4().hex[:6]
    alice, bob = f"flood.{tag}@example.com", f"peer.{tag}@example.com"
    token = stack.token(alice)
    async with httpx.AsyncClient(timeout=10) as http:
        session_id = (
            await http.post(
                f"{stack.gateway}/api/chat/init",
                json={"toEmail": bob, "intent": "dating"},
                headers={"Authorization": f"Bearer {token}"},
            )
        ).json()["sessionId"]
    client = await StompClient.open(
        stack.gateway.replace("http://", "ws://") + "/ws", headers=(("passcode", token),)
    )
    try:
        await subscribed(client, "/user/queue/error")
        await subscribed(client, "/user/queue/ack")
        for i in range(60):
            body = {
                "sessionId": session_id,
                "content": f"flood {i}",
                "clientMessageId": str(uuid.uuid4()),
            }
            await client.send("/app/chat.send", json.dumps(body).encode())
        codes: list[str] = []
        acks = 0
        async with asyncio.timeout(15):
            while acks + len(codes) < 60:
                frame = await client.next_frame()
                if frame.header("x-event") == "error":
                    codes.append(json.loads(frame.body)["code"])
                elif frame.header("x-event") == "ack":
                    acks += 1
    finally:
        await client.close()
    assert codes
    assert set(codes) <= {"RATE_LIMITED", "SEND_RATE_LIMITED"}
    assert acks < 60
    async with httpx.AsyncClient(timeout=10) as http:
        history = await http.get(
            f"{stack.gateway}/api/chat/{session_id}/history?limit=200",
            headers={"Authorization": f"Bearer {token}"},
        )
    assert len(history.json()["messages"]) == acks
