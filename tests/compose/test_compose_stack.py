"""The images, run by docker-compose.yml as a deployment runs them, carry a real conversation.

Everything goes through the gateway's published port, as a client's traffic would: tokens
from the FlairBit stand-in (/dev/token), a session, REST and STOMP sends, delivery to a live
subscriber. Then the failures a deployment lives through: message-svc crashes (its process
SIGKILLed; the engine restarts it by compose's restart policy) and the relay is killed (compose
starts it again), and no acknowledged message is lost. Last, a broken relay image (its entry
point missing) is caught: it never turns healthy, and nothing is delivered while it runs.

The tests run in this order on one stack (see conftest.py).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from chat_testing import compose_stack, containers, docker_engine
from chat_testing.chats import Chat, open_chat

from .conftest import OURS, ComposeStack, Listen

pytestmark = pytest.mark.timeout(1200)  # the first test's setup builds the images

# Runs inside each of our containers as its own user: who am I, can I write to the root
# filesystem (no: read-only), to /tmp (yes: a tmpfs).
PROBE = """
import errno, os
print(os.getuid(), os.getgid())
try:
    open("/app/probe", "w")
except OSError as error:
    print("root-fs", errno.errorcode[error.errno])
with open("/tmp/probe", "w") as f:
    f.write("ok")
print("tmp ok")
"""


def rest_send(stack: ComposeStack, chat: Chat, content: str, cid: str | None = None) -> Any:
    answer = httpx.post(
        f"{stack.gateway}/api/chat/message",
        json={
            "sessionId": chat.id,
            "content": content,
            "clientMessageId": cid or str(uuid.uuid4()),
        },
        headers={"Authorization": f"Bearer {chat.alice_token}"},
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    return answer.json()


async def rest_send_until_stored(
    stack: ComposeStack, chat: Chat, content: str, within: float = 90
) -> Any:
    """Send, and send again with the same clientMessageId while the answer is not 200 (a 503
    while message-svc is down), as a client that wants its message stored does."""
    cid = str(uuid.uuid4())
    deadline = time.monotonic() + within
    async with httpx.AsyncClient(base_url=stack.gateway, timeout=10) as client:
        while True:
            try:
                answer = await client.post(
                    "/api/chat/message",
                    json={"sessionId": chat.id, "content": content, "clientMessageId": cid},
                    headers={"Authorization": f"Bearer {chat.alice_token}"},
                )
                if answer.status_code == 200:
                    return answer.json()
                assert answer.status_code >= 500, answer.text  # never a 4xx for a good send
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"{content!r} was not stored within {within} s"
            await asyncio.sleep(0.5)


def history(stack: ComposeStack, chat: Chat) -> list[Any]:
    answer = httpx.get(
        f"{stack.gateway}/api/chat/{chat.id}/history",
        params={"limit": 200},
        headers={"Authorization": f"Bearer {chat.bob_token}"},
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    return list(reversed(answer.json()["messages"]))  # oldest first


def assert_gapless(messages: list[Any], contents: list[str]) -> None:
    assert [m["seq"] for m in messages] == list(range(1, len(messages) + 1))
    assert sorted(m["content"] for m in messages) == sorted(contents)


async def delivered(listener: Any, count: int, within: float) -> list[Any]:
    """The next ``count`` messages the listener gets (JSON bodies), in arrival order."""
    bodies = []
    for _ in range(count):
        frame = await listener.next(within)
        assert frame.header("x-event") == "message"
        bodies.append(json.loads(frame.body))
    return bodies


def test_images_run_as_non_root_on_a_read_only_root(
    stack: ComposeStack, images: dict[str, str]
) -> None:
    client = stack.engine.client
    for reference in images:
        config = client.images.get(reference).attrs["Config"]
        assert config["User"] == "10001:10001", reference
        target = reference.split("/", 1)[1].split(":")[0]
        module = OURS.get(target, {"flairbit-stub": "flairbit_stub"}.get(target))
        if module is not None:
            assert config["Cmd"] == ["python", "-m", module], reference
    for service in OURS:
        container = stack.compose.container(service)
        host = container.attrs["HostConfig"]
        assert host["ReadonlyRootfs"] is True, service
        assert host["CapDrop"] == ["ALL"], service
        assert "no-new-privileges:true" in host["SecurityOpt"], service
        code, output = container.exec_run(["python", "-c", PROBE])
        assert isinstance(output, bytes)  # not streamed
        lines = output.decode().split("\n")
        assert code == 0, (service, output)
        assert lines[0] == "10001 10001", (service, lines)
        assert lines[1] == "root-fs EROFS", (service, lines)
        assert lines[2] == "tmp ok", (service, lines)
    for one_shot in ("keys", "migrations"):  # they did their work read-only, as uid 10001
        container = stack.compose.container(one_shot)
        assert container.attrs["HostConfig"]["ReadonlyRootfs"] is True
        assert container.attrs["State"]["ExitCode"] == 0


async def test_rest_and_stomp_sends_reach_a_live_subscriber(
    stack: ComposeStack, listen: Listen
) -> None:
    chat = open_chat(stack, "conversation")
    bob = await listen(chat.bob_token, f"/topic/session.{chat.id}")
    alice = await listen(chat.alice_token, "/user/queue/ack")

    sent = rest_send(stack, chat, "hello over REST")
    (got,) = await delivered(bob, 1, within=15)
    assert (got["messageId"], got["seq"], got["content"]) == (sent["messageId"], 1, sent["content"])

    cid = str(uuid.uuid4())
    body = json.dumps({"sessionId": chat.id, "content": "hello over STOMP", "clientMessageId": cid})
    await alice.client.send("/app/chat.send", body.encode(), ("receipt", "r-1"))
    receipt = await alice.next(15, command="RECEIPT")
    assert receipt.header("receipt-id") == "r-1"
    ack = json.loads((await alice.next(15)).body)
    assert ack["clientMessageId"] == cid
    (got,) = await delivered(bob, 1, within=15)
    assert (got["messageId"], got["seq"]) == (ack["messageId"], 2)

    stored = history(stack, chat)
    assert [(m["seq"], m["content"]) for m in stored] == [
        (1, "hello over REST"),
        (2, "hello over STOMP"),
    ]


async def test_message_svc_crash_loses_nothing(stack: ComposeStack, listen: Listen) -> None:
    chat = open_chat(stack, "crash")
    bob = await listen(chat.bob_token, f"/topic/session.{chat.id}")
    alice = await listen(chat.alice_token, "/user/queue/ack")
    rest_send(stack, chat, "before the crash")
    await delivered(bob, 1, within=15)

    restarts = stack.restarts("message-svc")
    how = compose_stack.crash(stack.compose.container("message-svc"), stack.compose)
    # While it is down: a STOMP send waits in chat.send and is receipted once stored; a REST
    # send is refused (503) and sent again until stored.
    cid = str(uuid.uuid4())
    body = json.dumps({"sessionId": chat.id, "content": "during (STOMP)", "clientMessageId": cid})
    await alice.client.send("/app/chat.send", body.encode(), ("receipt", "r-crash"))
    stored_rest = await rest_send_until_stored(stack, chat, "during (REST)")
    receipt = await alice.next(90, command="RECEIPT")
    assert receipt.header("receipt-id") == "r-crash"
    compose_stack.wait_healthy(stack.compose, ["message-svc"], timeout=90)
    if "restarted by the engine" in how:
        assert stack.restarts("message-svc") > restarts, "the restart policy did not act"

    got = await delivered(bob, 2, within=60)
    assert {m["content"] for m in got} == {"during (STOMP)", "during (REST)"}
    assert stored_rest["messageId"] in {m["messageId"] for m in got}
    assert_gapless(history(stack, chat), ["before the crash", "during (STOMP)", "during (REST)"])


async def test_relay_killed_and_restarted_loses_nothing(
    stack: ComposeStack, listen: Listen
) -> None:
    chat = open_chat(stack, "relay")
    bob = await listen(chat.bob_token, f"/topic/session.{chat.id}")
    relay = stack.compose.container("outbox-relay")
    relay.kill(signal="SIGKILL")  # the engine's kill: no restart policy applies, compose starts it
    relay.wait(timeout=30)

    contents = [f"while the relay is down {i}" for i in range(3)]
    sent = [rest_send(stack, chat, content) for content in contents]  # stored: 200
    # Delivery goes through the relay and nothing else: nothing arrives while it is down.
    assert await bob.nothing_for(3) == []

    stack.compose.run("start", "outbox-relay")
    compose_stack.wait_healthy(stack.compose, ["outbox-relay"], timeout=90)
    got = await delivered(bob, 3, within=30)
    assert [m["messageId"] for m in got] == [m["messageId"] for m in sent]  # in seq order
    assert_gapless(history(stack, chat), contents)


async def test_a_broken_relay_image_is_caught(
    stack: ComposeStack, listen: Listen, tmp_path: Path
) -> None:
    """What the checks above would meet with a broken image: a relay image whose entry point
    is missing never turns healthy (the wait names the cause), and nothing is delivered while
    it is in place; with the real image back, the stored message arrives."""
    client = stack.engine.client
    broken = "chat/outbox-relay:broken-entry-point"
    (tmp_path / "Dockerfile").write_text(
        "FROM chat/outbox-relay:dev\n"
        "USER 0:0\n"
        "RUN rm \"$(python -c 'import outbox_relay, os; print(os.path.dirname("
        "outbox_relay.__file__))')/__main__.py\"\n"
        "USER 10001:10001\n"
    )
    containers.build(client, tag=broken, context=tmp_path)
    swap = tmp_path / "broken-relay.yml"
    swap.write_text(f"services:\n  outbox-relay:\n    image: {broken}\n")
    with_broken = compose_stack.Compose(stack.engine, stack.compose.project, [*stack.files, swap])
    chat = open_chat(stack, "broken")
    bob = await listen(chat.bob_token, f"/topic/session.{chat.id}")
    try:
        with_broken.run("up", "--detach", "--no-deps", "--pull", "never", "outbox-relay")
        with pytest.raises(docker_engine.StackUnhealthy) as caught:
            compose_stack.wait_healthy(stack.compose, ["outbox-relay"], timeout=60)
        assert "No module named outbox_relay.__main__" in str(caught.value)
        sent = rest_send(stack, chat, "sent while the relay is broken")
        assert await bob.nothing_for(3) == []
    finally:
        stack.compose.run("up", "--detach", "--no-deps", "--pull", "never", "outbox-relay")
        client.images.remove(broken, force=True)
    compose_stack.wait_healthy(stack.compose, ["outbox-relay"], timeout=90)
    (got,) = await delivered(bob, 1, within=30)
    assert got["messageId"] == sent["messageId"]
