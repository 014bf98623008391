"""Each service's RabbitMQ user can do its job and nothing the edge must not: the grants of
``chat_common.broker_access`` imported into a virtual host of their own, on the real broker."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel, AbstractConnection
from aiormq.exceptions import ChannelAccessRefused

from chat_common import amqp, broker_access, routing

pytestmark = pytest.mark.integration  # the machine's RabbitMQ and rabbitmqctl

PASSWORDS = {service: f"pw-{uuid.uuid4().hex}" for service in broker_access.GRANTS}


def _ctl(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    ctl = shutil.which("rabbitmqctl")
    assert ctl is not None, "these tests need rabbitmqctl (package rabbitmq-server)"
    return subprocess.run(
        [ctl, "-q", *args], input=stdin, capture_output=True, text=True, timeout=60
    )


@pytest.fixture(scope="module")
def vhost() -> Iterator[str]:
    name = f"grants-{uuid.uuid4().hex[:8]}"
    imported = _ctl(
        "import_definitions",
        "--format",
        "json",
        stdin=json.dumps(broker_access.definitions(name, PASSWORDS)),
    )
    assert imported.returncode == 0, imported.stderr
    yield name
    _ctl("delete_vhost", name)
    for service in PASSWORDS:
        _ctl("delete_user", broker_access.user_name(service, name))


async def _connect(service: str, vhost: str) -> AbstractConnection:
    user = urllib.parse.quote(broker_access.user_name(service, vhost), safe="")
    password = PASSWORDS[service]
    path = urllib.parse.quote(vhost, safe="")
    return await aio_pika.connect(f"amqp://{user}:{password}@127.0.0.1:5672/{path}")


@pytest.fixture
async def as_service(vhost: str) -> AsyncIterator[Callable[[str], Awaitable[AbstractChannel]]]:
    connections: list[AbstractConnection] = []

    async def channel(service: str) -> AbstractChannel:
        connection = await _connect(service, vhost)
        connections.append(connection)
        return await connection.channel(publisher_confirms=True)

    yield channel
    for connection in connections:
        await connection.close()


async def test_each_service_can_do_its_job_with_its_own_user(
    as_service: Callable[[str], Awaitable[AbstractChannel]],
) -> None:
    message_svc = await as_service("message-svc")
    replies = await amqp.events_exchange(message_svc)
    await amqp.commands_exchange(message_svc)
    sends = await amqp.send_queue(message_svc)

    relay = await as_service("outbox-relay")
    events = await amqp.events_exchange(relay)

    edge = await as_service("ws-edge")
    exchanges = await amqp.edge_exchanges(edge)
    queue = await edge.declare_queue(
        f"{routing.EDGE_QUEUE_PREFIX}{uuid.uuid4().hex[:8]}", exclusive=True, auto_delete=True
    )
    key = routing.session_key(uuid.uuid4())
    await queue.bind(exchanges.events, key)

    await events.publish(aio_pika.Message(b"relayed", headers={"x-event": "message"}), key)
    await replies.publish(aio_pika.Message(b"reply", headers={"x-event": "ack"}), key)
    await exchanges.typing.publish(aio_pika.Message(b"typing", headers={"x-event": "typing"}), key)
    presence = aio_pika.Message(b"presence", headers={"x-event": "presence"})
    await exchanges.presence.publish(presence, key)
    await exchanges.commands.publish(aio_pika.Message(b"command"), routing.SEND_QUEUE)

    got = await _take(queue, 4)
    assert [(m.exchange, m.body) for m in got] == [
        (routing.EVENTS_EXCHANGE, b"relayed"),
        (routing.EVENTS_EXCHANGE, b"reply"),
        (routing.TYPING_EXCHANGE, b"typing"),
        (routing.PRESENCE_EXCHANGE, b"presence"),
    ]
    [command] = await _take(sends, 1)
    assert command.body == b"command"


async def _take(
    queue: aio_pika.abc.AbstractQueue, count: int
) -> list[aio_pika.abc.AbstractIncomingMessage]:
    taken: list[aio_pika.abc.AbstractIncomingMessage] = []
    async with asyncio.timeout(5), queue.iterator(no_ack=True) as messages:
        async for message in messages:
            taken.append(message)
            if len(taken) == count:
                break
    return taken


async def _publish_event(channel: AbstractChannel) -> None:
    events = await channel.get_exchange(routing.EVENTS_EXCHANGE, ensure=False)
    await events.publish(aio_pika.Message(b"{}", headers={"x-event": "message"}), "session.x")


async def _publish_into_send_queue(channel: AbstractChannel) -> None:
    await channel.default_exchange.publish(aio_pika.Message(b"{}"), routing.SEND_QUEUE)


async def _consume_sends(channel: AbstractChannel) -> None:
    queue = await channel.get_queue(routing.SEND_QUEUE, ensure=False)
    await queue.get(fail=False)


async def _bind_at_commands(channel: AbstractChannel) -> None:
    queue = await channel.declare_queue(
        f"{routing.EDGE_QUEUE_PREFIX}{uuid.uuid4().hex[:8]}", exclusive=True, auto_delete=True
    )
    await queue.bind(routing.COMMANDS_EXCHANGE, routing.SEND_QUEUE)


async def _declare_events(channel: AbstractChannel) -> None:
    await amqp.events_exchange(channel)


async def _delete_typing(channel: AbstractChannel) -> None:
    await channel.exchange_delete(routing.TYPING_EXCHANGE)


async def _delete_presence(channel: AbstractChannel) -> None:
    await channel.exchange_delete(routing.PRESENCE_EXCHANGE)


async def _declare_another_queue(channel: AbstractChannel) -> None:
    await channel.declare_queue("chat.send.copy", durable=True)


@pytest.mark.parametrize(
    "act",
    [
        _publish_event,
        _publish_into_send_queue,
        _consume_sends,
        _bind_at_commands,
        _declare_events,
        _delete_typing,
        _delete_presence,
        _declare_another_queue,
    ],
)
async def test_the_edge_may_not(
    act: Callable[[AbstractChannel], Awaitable[None]],
    as_service: Callable[[str], Awaitable[AbstractChannel]],
) -> None:
    """What only the relay and message-svc may do (the shared exchanges exist: message-svc
    declares them first, as in a deployment)."""
    setup = await as_service("message-svc")
    await amqp.events_exchange(setup)
    await amqp.send_queue(setup)
    edge = await as_service("ws-edge")
    with pytest.raises(ChannelAccessRefused):
        await act(edge)
