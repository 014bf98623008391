"""A deleted user's tokens through the gateway of the whole stack: after FlairBit deletes Alice
and chat erases her, her token (issued before, still unexpired) opens nothing: a STOMP CONNECT
gets ERROR USER_DELETED and the close, publishing a key, opening a session, presence and her
keys answer 401 USER_DELETED, her session list is empty and her old session's history refused;
Redis holds no email of hers (the denial is a hash; the gateway's buckets of the refused
requests are named by her user key and lapse). Registered again at FlairBit, a token
issued after the erasure works: it connects and opens a new session."""

from __future__ import annotations

import asyncio
import time
import uuid

import httpx
import pytest
import redis.asyncio as aioredis

from chat_common import routing
from chat_common.erased import DENIAL_PREFIX, denial_key
from chat_testing.stomp import StompClient

from .conftest import E2E_REDIS_DB, Stack, open_chat
from .test_erasure_e2e import auth, problem, service_token, user_deleted, ws

pytestmark = pytest.mark.e2e

KEY = {"algorithm": "X25519", "publicKey": "fZwkMWU5glwYluV_KBl3Rnk85gy-461H2p0HuF-lXio"}


async def refused_connect(stack: Stack, token: str) -> str:
    """The ERROR's ``message`` of a refused CONNECT (the close follows: 1008)."""
    with pytest.raises(ConnectionError) as caught:
        await StompClient.open(ws(stack, token))
    return str(caught.value)


async def test_a_deleted_users_older_token_opens_nothing_and_a_newer_one_works(
    stack: Stack,
) -> None:
    chat = open_chat(stack, "erased-token")
    old = chat.alice_token
    async with httpx.AsyncClient(base_url=stack.gateway, timeout=10) as client:
        put = await client.put("/api/chat/keys/phone", json=KEY, headers=auth(old))
        assert put.status_code == 201, put.text

        gone = await client.delete(f"{stack.flairbit}/dev/users/{chat.alice}")
        assert gone.status_code == 204
        erased = user_deleted(stack, chat.alice, auth(service_token(stack)))
        assert erased.status_code == 200, erased.text

        # STOMP: refused at CONNECT, whatever carries the token
        assert "USER_DELETED" in await refused_connect(stack, old)
        with pytest.raises(ConnectionError, match="USER_DELETED"):
            await StompClient.open(
                stack.gateway.replace("http://", "ws://") + "/ws",
                headers=(("passcode", old),),
            )

        # REST: session-svc's routes refuse the token with 401 USER_DELETED
        for method, path, body in (
            ("PUT", "/api/chat/keys/laptop", KEY),
            ("POST", "/api/chat/init", {"toEmail": chat.bob, "intent": "dating"}),
            ("GET", f"/api/chat/presence?emails={chat.bob}", None),
            ("GET", "/api/chat/keys", None),
            ("GET", f"/api/chat/{chat.id}/keys", None),
        ):
            answer = await client.request(method, path, json=body, headers=auth(old))
            problem(answer, 401, "USER_DELETED")
        # message-svc: nothing of hers is left to reach
        listed = await client.get("/api/chat/sessions", headers=auth(old))
        assert listed.status_code == 200, listed.text
        assert listed.json()["sessions"] == []
        history = await client.get(f"/api/chat/{chat.id}/history", headers=auth(old))
        assert history.status_code in (403, 404), history.text
        send = {"sessionId": chat.id, "content": "still here", "clientMessageId": str(uuid.uuid4())}
        sent = await client.post("/api/chat/message", json=send, headers=auth(old))
        assert sent.status_code in (403, 404), sent.text

        # Redis: the denial's hash and time, no email (nor the user key's digest) anywhere
        redis = aioredis.Redis(port=6379, db=E2E_REDIS_DB)
        try:
            assert await redis.exists(denial_key(chat.alice))
            assert [k async for k in redis.scan_iter(match=f"*{chat.alice}*")] == []
            # named by the user key: only the gateway's buckets of the refused requests, which
            # lapse with their refill time
            digest = routing.user_key(chat.alice).split(".")[1]
            async for key in redis.scan_iter(match=f"*{digest}*"):
                assert key.startswith(b"chat:gateway:"), key
                assert 0 < await redis.pttl(key) <= 60_000, key
            denials = [k async for k in redis.scan_iter(match=f"{DENIAL_PREFIX}*")]
            for key in denials:
                assert chat.alice.encode() not in key + (await redis.get(key) or b"")
        finally:
            await redis.aclose()

        # registered again at FlairBit: a token issued after the erasure works
        back = await client.put(
            f"{stack.flairbit}/dev/users/{chat.alice}/profile/dating", json={"displayName": "A"}
        )
        assert back.status_code == 200, back.text
        await asyncio.sleep(max(0.0, int(time.time()) + 1.05 - time.time()))  # a later iat
        fresh = stack.token(chat.alice)
        live = await StompClient.open(ws(stack, fresh))
        await live.close()
        put = await client.put("/api/chat/keys/laptop", json=KEY, headers=auth(fresh))
        assert put.status_code == 201, put.text
        opened = await client.post(
            "/api/chat/init", json={"toEmail": chat.bob, "intent": "dating"}, headers=auth(fresh)
        )
        assert opened.status_code == 200, opened.text
        assert opened.json()["sessionId"] != chat.id
        # and the old token stays refused
        assert "USER_DELETED" in await refused_connect(stack, old)
