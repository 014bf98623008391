"""The chat.send consumer against the real RabbitMQ and PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aio_pika
import asyncpg
import msgspec
import pytest
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue
from asgi_lifespan import LifespanManager
from prometheus_client import REGISTRY
from redis.asyncio import Redis

from chat_common import amqp, routing
from chat_common.dto import Envelope, EnvelopeRecipient, MessageView, SendCommand
from chat_testing.tcpproxy import TcpProxy
from chat_testing.waiting import eventually
from message_svc.app import create_app
from message_svc.settings import Settings

from .conftest import ChatSession, SessionFactory

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"


@pytest.fixture
async def channel() -> AsyncIterator[AbstractChannel]:
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        yield await connection.channel()


@pytest.fixture
def queue_name() -> str:
    return f"test.chat.send.{uuid.uuid4().hex[:8]}"


@contextlib.asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[None]:
    app = create_app(settings)
    async with LifespanManager(app):
        yield


@contextlib.asynccontextmanager
async def listener(channel: AbstractChannel, email: str) -> AsyncIterator[AbstractQueue]:
    exchange = await amqp.events_exchange(channel)
    queue = await channel.declare_queue(exclusive=True, auto_delete=True)
    await queue.bind(exchange, routing.user_key(email))
    try:
        yield queue
    finally:
        await queue.delete(if_unused=False, if_empty=False)


async def next_message(queue: AbstractQueue, within: float = 10.0) -> AbstractIncomingMessage:
    deadline = asyncio.get_running_loop().time() + within
    while asyncio.get_running_loop().time() < deadline:
        message = await queue.get(no_ack=True, fail=False)
        if message is not None:
            return message
        await asyncio.sleep(0.02)
    raise AssertionError("no event arrived")


async def publish(channel: AbstractChannel, queue_name: str, command: SendCommand) -> None:
    await channel.default_exchange.publish(
        aio_pika.Message(
            msgspec.json.encode(command),
            headers={"x-user": command.user},
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        ),
        routing_key=queue_name,
    )


Command = Callable[..., SendCommand]


@pytest.fixture
def command(make_token: Any) -> Command:
    """A command as the edge makes it: with the user's own token (``token=`` overrides)."""

    def make(session: ChatSession, user: str, **extra: Any) -> SendCommand:
        values: dict[str, Any] = {
            "user": user,
            "session_id": session.id,
            "content": "over the socket",
            "client_message_id": uuid.uuid4(),
            "receipt": "r-1",
            "connection": "edge-1-7",
            "token": make_token(user),
            **extra,
        }
        return SendCommand(**values)

    return make


async def dead_lettered(channel: AbstractChannel, body: bytes, within: float = 10.0) -> bool:
    """Whether a message with exactly ``body`` reaches the dead-letter queue (taken off it)."""
    dead = await channel.get_queue(routing.SEND_DEAD_LETTER_QUEUE)
    deadline = asyncio.get_running_loop().time() + within
    while asyncio.get_running_loop().time() < deadline:
        message = await dead.get(no_ack=False, fail=False)
        if message is None:
            await asyncio.sleep(0.05)
        elif message.body == body:
            await message.ack()
            return True
        else:
            await message.nack(requeue=True)
    return False


@pytest.fixture
async def send_queue(channel: AbstractChannel, queue_name: str) -> AsyncIterator[AbstractQueue]:
    queue = await amqp.send_queue(channel, 20, queue_name)
    yield queue
    await channel.queue_delete(queue_name)


async def test_stored_message_is_acked_to_the_sender(
    settings_factory: Callable[..., Settings],
    new_session: SessionFactory,
    channel: AbstractChannel,
    send_queue: AbstractQueue,
    queue_name: str,
    db_pool: asyncpg.Pool,
    command: Command,
) -> None:
    session = await new_session()
    settings = settings_factory(consume_ws_sends=True, send_queue=queue_name)
    async with running(settings), listener(channel, session.a) as events:
        sent = command(session, session.a)
        await publish(channel, queue_name, sent)
        ack = await next_message(events)
        assert ack.headers[routing.EVENT_HEADER] == "ack"
        assert ack.headers[routing.RECEIPT_HEADER] == "r-1"
        assert ack.headers[routing.CONNECTION_HEADER] == "edge-1-7"
        assert ack.headers[routing.SEQ_HEADER] == 1
        body = msgspec.json.decode(ack.body)
        assert body["clientMessageId"] == str(sent.client_message_id)
        # the same command again (a redelivery) is a replay: acked, nothing new stored
        await publish(channel, queue_name, sent)
        again = await next_message(events)
        assert msgspec.json.decode(again.body)["messageId"] == body["messageId"]
    assert await db_pool.fetchval("SELECT count(*) FROM chat_messages") == 1
    assert await db_pool.fetchval("SELECT count(*) FROM chat_message_outbox") == 1
    assert (await send_queue.declare()).message_count == 0


async def test_an_encrypted_command_is_stored_with_its_envelope(
    settings_factory: Callable[..., Settings],
    new_session: SessionFactory,
    channel: AbstractChannel,
    send_queue: AbstractQueue,
    queue_name: str,
    db_pool: asyncpg.Pool,
    command: Command,
) -> None:
    session = await new_session()
    envelope = Envelope(
        alg="X25519-HKDF-SHA256+A256GCM",
        sender_key_id="a-laptop",
        recipients=[EnvelopeRecipient(email=session.b, key_id="b-phone")],
        ciphertext="c2VjcmV0",
    )
    settings = settings_factory(consume_ws_sends=True, send_queue=queue_name)
    async with running(settings), listener(channel, session.a) as events:
        await publish(
            channel, queue_name, command(session, session.a, content=None, encrypted=envelope)
        )
        ack = await next_message(events)
        assert ack.headers[routing.EVENT_HEADER] == "ack"
        stored = msgspec.json.decode(ack.body, type=MessageView)
        assert stored.encrypted == envelope
        assert stored.content == ""
        # both, or neither: refused as over REST
        await publish(channel, queue_name, command(session, session.a, encrypted=envelope))
        error = await next_message(events)
        assert error.headers[routing.EVENT_HEADER] == "error"
        assert msgspec.json.decode(error.body)["code"] == "CONTENT_OR_ENCRYPTED"
    assert await db_pool.fetchval("SELECT count(*) FROM chat_messages WHERE content IS NULL") == 1


async def test_refused_message_becomes_an_error_event(
    settings_factory: Callable[..., Settings],
    new_session: SessionFactory,
    channel: AbstractChannel,
    send_queue: AbstractQueue,
    queue_name: str,
    db_pool: asyncpg.Pool,
    command: Command,
) -> None:
    session = await new_session()
    settings = settings_factory(consume_ws_sends=True, send_queue=queue_name)
    async with running(settings), listener(channel, "eve@example.com") as events:
        await publish(channel, queue_name, command(session, "eve@example.com"))
        error = await next_message(events)
        assert error.headers[routing.EVENT_HEADER] == "error"
        assert msgspec.json.decode(error.body)["code"] == "NOT_PARTICIPANT"
        await publish(channel, queue_name, command(session, "eve@example.com", content="  "))
        blank = msgspec.json.decode((await next_message(events)).body)
        assert blank["code"] == "CONTENT_BLANK"
    assert await db_pool.fetchval("SELECT count(*) FROM chat_messages") == 0


async def test_a_command_without_its_users_valid_token_is_refused(
    settings_factory: Callable[..., Settings],
    new_session: SessionFactory,
    channel: AbstractChannel,
    send_queue: AbstractQueue,
    queue_name: str,
    db_pool: asyncpg.Pool,
    command: Command,
    make_token: Any,
) -> None:
    session = await new_session()
    settings = settings_factory(consume_ws_sends=True, send_queue=queue_name)
    async with running(settings), listener(channel, session.a) as events:
        await publish(channel, queue_name, command(session, session.a, token=None))
        missing = msgspec.json.decode((await next_message(events)).body)
        expired_token = make_token(session.a, ttl=-120)
        await publish(channel, queue_name, command(session, session.a, token=expired_token))
        expired = msgspec.json.decode((await next_message(events)).body)
    assert missing["code"] == "TOKEN_MISSING"
    assert expired["code"] == "TOKEN_EXPIRED"
    assert await db_pool.fetchval("SELECT count(*) FROM chat_messages") == 0


async def test_a_command_with_another_users_token_is_forged_and_dead_lettered(
    settings_factory: Callable[..., Settings],
    new_session: SessionFactory,
    channel: AbstractChannel,
    send_queue: AbstractQueue,
    queue_name: str,
    db_pool: asyncpg.Pool,
    command: Command,
    make_token: Any,
) -> None:
    """Whoever may publish to chat.send (a compromised edge) cannot send as Alice with a
    token of its own: nothing is stored, Alice hears nothing, the command is dead-lettered."""
    session = await new_session()
    settings = settings_factory(consume_ws_sends=True, send_queue=queue_name)
    forged = command(session, session.a, token=make_token("mallory@example.com"))
    async with running(settings), listener(channel, session.a) as events:
        await publish(channel, queue_name, forged)
        assert await dead_lettered(channel, msgspec.json.encode(forged))
        assert await events.get(no_ack=True, fail=False) is None
    assert await db_pool.fetchval("SELECT count(*) FROM chat_messages") == 0


async def test_undecodable_message_is_dead_lettered(
    settings_factory: Callable[..., Settings],
    channel: AbstractChannel,
    send_queue: AbstractQueue,
    queue_name: str,
) -> None:
    marker = f"poison-{uuid.uuid4()}".encode()
    settings = settings_factory(consume_ws_sends=True, send_queue=queue_name)
    async with running(settings):
        await channel.default_exchange.publish(aio_pika.Message(marker), routing_key=queue_name)
        assert await dead_lettered(channel, marker)


async def test_database_down_mid_way_loses_nothing(
    settings_factory: Callable[..., Settings],
    new_session: SessionFactory,
    channel: AbstractChannel,
    send_queue: AbstractQueue,
    queue_name: str,
    database_url: str,
    db_pool: asyncpg.Pool,
    command: Command,
) -> None:
    session = await new_session()
    parts = urlsplit(database_url)
    async with TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432) as proxy:
        proxied = urlunsplit(parts._replace(netloc=f"postgres@127.0.0.1:{proxy.port}"))
        settings = settings_factory(
            consume_ws_sends=True, send_queue=queue_name, database_url=proxied
        )
        async with running(settings), listener(channel, session.a) as events:
            commands = [command(session, session.a, content=f"m{i}") for i in range(10)]
            for sent in commands[:3]:
                await publish(channel, queue_name, sent)
            acked = [await next_message(events) for _ in range(3)]
            proxy.cut()
            before = retried()
            for sent in commands[3:]:
                await publish(channel, queue_name, sent)
            await eventually(  # again, after a backoff: held in place, not given up
                lambda: retried() >= before + 2, what="the consumer retries the dead database"
            )
            proxy.restore()
            acked += [await next_message(events, within=20) for _ in range(7)]
    stored = await db_pool.fetch("SELECT content, seq FROM chat_messages ORDER BY seq")
    assert [r["content"] for r in stored] == [f"m{i}" for i in range(10)]
    assert [r["seq"] for r in stored] == list(range(1, 11))
    assert sorted(int(str(a.headers[routing.SEQ_HEADER])) for a in acked) == list(range(1, 11))


def retried() -> float:
    return REGISTRY.get_sample_value("chat_ws_sends_total", {"outcome": "retried"}) or 0.0


async def test_redis_down_is_retried_not_dead_lettered(
    settings_factory: Callable[..., Settings],
    new_session: SessionFactory,
    channel: AbstractChannel,
    send_queue: AbstractQueue,
    queue_name: str,
    db_pool: asyncpg.Pool,
    command: Command,
) -> None:
    tag = uuid.uuid4().hex[:10]
    session = await new_session(a=f"a-{tag}@example.com", b=f"b-{tag}@example.com")
    async with TcpProxy("127.0.0.1", 6379) as proxy:
        settings = settings_factory(
            consume_ws_sends=True,
            send_queue=queue_name,
            redis_url=f"redis://127.0.0.1:{proxy.port}/0",
        )
        async with running(settings), listener(channel, session.a) as events:
            first = command(session, session.a, content="before")
            await publish(channel, queue_name, first)
            acked = [await next_message(events)]
            proxy.cut()
            before = retried()
            commands = [command(session, session.a, content=f"m{i}") for i in range(3)]
            for sent in commands:
                await publish(channel, queue_name, sent)
            await eventually(  # again, after a backoff: held in place, not given up
                lambda: retried() >= before + 2, what="the consumer retries the dead Redis"
            )
            assert await db_pool.fetchval("SELECT count(*) FROM chat_messages") == 1
            proxy.restore()
            acked += [await next_message(events, within=20) for _ in range(3)]
    assert [a.headers[routing.EVENT_HEADER] for a in acked] == ["ack"] * 4
    stored = await db_pool.fetch("SELECT content, seq FROM chat_messages ORDER BY seq")
    assert [r["content"] for r in stored] == ["before", "m0", "m1", "m2"]
    assert (await send_queue.declare()).message_count == 0
    redis = Redis.from_url("redis://127.0.0.1:6379/0")
    try:
        keys = [k async for k in redis.scan_iter(f"chat:limits:*{tag}*")]
        if keys:
            await redis.delete(*keys)
    finally:
        await redis.aclose()
