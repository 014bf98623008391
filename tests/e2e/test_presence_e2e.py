"""Presence through the whole stack with Redis and two edges: a peer on one edge sees a user
of the other go online, nothing for a reconnect within the grace, offline after the last
close; strangers are refused by GET /api/chat/presence; an edge killed with kill -9 has its
users offline within the lease (3 s here) plus a sweep."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from chat_testing.stack import Stack, running_stack
from chat_testing.stomp import StompClient

from .conftest import Chat, open_chat, second_edge

pytestmark = pytest.mark.e2e

LEASE, GRACE = 3.0, 1.0
QUEUE = "/user/queue/presence"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A stack of its own: Redis for the edges and session-svc, short leases."""
    tag = f"{os.getpid()}_presence"
    with running_stack(
        tmp_path_factory.mktemp("presence-stack"),
        database_url=f"postgresql://postgres@127.0.0.1:5432/chat_e2e_{tag}",
        vhost=f"chat_e2e_{tag}",
        first_port=18400,
        extra_env={
            "REDIS_URL": "redis://127.0.0.1:6379/0",
            "PRESENCE_KEY_PREFIX": f"e2e:presence:{uuid.uuid4().hex}:",
            "PRESENCE_LEASE_SECONDS": str(LEASE),
            "PRESENCE_GRACE_SECONDS": str(GRACE),
            "PRESENCE_SWEEP_SECONDS": "0.5",
        },
    ) as started:
        yield started


def gateway_ws(stack: Stack) -> str:
    return stack.gateway.replace("http://", "ws://") + "/ws"


async def watcher(stack: Stack, token: str) -> StompClient:
    client = await StompClient.open(gateway_ws(stack), headers=(("passcode", token),))
    await client.subscribe(QUEUE, ("receipt", "p"))
    assert (await client.next_frame()).command == "RECEIPT"
    return client


async def presence_event(client: StompClient, within: float) -> dict[str, Any]:
    frame = await client.next_frame(within)
    assert frame.command == "MESSAGE", (frame.command, frame.headers)
    assert frame.header("destination") == QUEUE
    assert frame.header("x-event") == "presence"
    body: dict[str, Any] = json.loads(frame.body)
    return body


async def nothing_within(client: StompClient, seconds: float) -> None:
    try:
        frame = await client.next_frame(seconds)
    except TimeoutError:
        return
    raise AssertionError(f"unexpected {frame.command} {frame.headers} {frame.body!r}")


def rest_presence(stack: Stack, token: str, *emails: str) -> httpx.Response:
    return httpx.get(
        f"{stack.gateway}/api/chat/presence",
        params={"emails": ",".join(emails)},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )


def online(stack: Stack, chat: Chat) -> bool:
    answer = rest_presence(stack, chat.bob_token, chat.alice)
    assert answer.status_code == 200, answer.text
    [item] = answer.json()["presence"]
    assert item["email"] == chat.alice
    return bool(item["online"])


async def test_two_edges_online_no_flap_offline_and_strangers_refused(stack: Stack) -> None:
    chat = open_chat(stack, "presence")
    eve = f"eve.{uuid.uuid4().hex[:6]}@example.com"
    refused = rest_presence(stack, stack.token(eve), chat.alice)
    assert refused.status_code == 403
    assert refused.json()["code"] == "NOT_A_PEER"
    assert not online(stack, chat)
    with second_edge(stack) as port:
        bob = await watcher(stack, chat.bob_token)
        eve_client = await watcher(stack, stack.token(eve))
        other_edge = f"ws://127.0.0.1:{port}/ws"
        alice = await StompClient.open(other_edge, headers=(("passcode", chat.alice_token),))
        event = await presence_event(bob, 10)
        assert (event["email"], event["online"]) == (chat.alice, True)
        assert online(stack, chat)
        # a flap: the phone drops and comes back through the other edge within the grace
        await alice.close()
        alice = await StompClient.open(gateway_ws(stack), headers=(("passcode", chat.alice_token),))
        await nothing_within(bob, GRACE + 2)
        assert online(stack, chat)
        await alice.close()
        started = time.monotonic()
        event = await presence_event(bob, GRACE + 5)
        assert (event["email"], event["online"]) == (chat.alice, False)
        assert event["lastSeen"] is not None
        assert time.monotonic() - started >= GRACE - 0.2
        assert not online(stack, chat)
        await nothing_within(eve_client, 0.5)  # a stranger was told nothing at all
        await bob.close()
        await eve_client.close()


async def test_an_edge_killed_with_kill_9_lets_its_users_go_offline(stack: Stack) -> None:
    chat = open_chat(stack, "presence-kill")
    with second_edge(stack) as port:
        bob = await watcher(stack, chat.bob_token)
        alice = await StompClient.open(
            f"ws://127.0.0.1:{port}/ws", headers=(("passcode", chat.alice_token),)
        )
        event = await presence_event(bob, 10)
        assert (event["email"], event["online"]) == (chat.alice, True)
        stack.signal("ws-edge", signal.SIGKILL, instance=2)
        killed = time.monotonic()
        event = await presence_event(bob, LEASE + 8)
        took = time.monotonic() - killed
        assert (event["email"], event["online"]) == (chat.alice, False)
        assert took <= LEASE + 3, took  # a lease, a sweep (1 s) and a margin
        assert not online(stack, chat)
        await bob.close()
        with contextlib.suppress(Exception):  # its edge is gone
            await alice.close()
