"""The AsyncAPI document of the STOMP API (``ws_edge.asyncapi``): every destination of the
edge's table is a channel with its operation, every event kind a message with its headers and
schema, every refusal code and close code is there, and the copy the gateway serves is a fresh
build (``make asyncapi`` writes it). The reference parser validates the served copy in the
gateway's tests."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from gateway.apidoc import ASYNCAPI_FILE
from ws_edge import asyncapi, destinations
from ws_edge.codes import EdgeCode
from ws_edge.commands import SEND_BODIES
from ws_edge.disconnect import Disconnect
from ws_edge.fanout import KINDS
from ws_edge.hub import USER_QUEUES
from ws_edge.resume import RESUME_HEADER

DOC = asyncapi.build()
COMPONENTS = DOC["components"]


def resolve(ref: dict[str, Any]) -> Any:
    """What a local ``$ref`` points at, following a reference to a reference."""
    node: Any = ref
    while "$ref" in node:
        target = node["$ref"]
        node = DOC
        for part in target.removeprefix("#/").split("/"):
            node = node[part]
    return node


def channel_of(destination: str) -> tuple[str, dict[str, Any]]:
    found = [(k, c) for k, c in DOC["channels"].items() if c["address"] == destination]
    assert len(found) == 1, f"{destination}: {len(found)} channels"
    return found[0]


def operations_on(channel_id: str) -> list[dict[str, Any]]:
    ref = f"#/channels/{channel_id}"
    return [op for op in DOC["operations"].values() if op["channel"]["$ref"] == ref]


def kinds_on(destination: str) -> set[str]:
    _, channel = channel_of(destination)
    messages = [resolve(m) for m in channel["messages"].values()]
    return {m["headers"]["properties"]["x-event"]["const"] for m in messages}


def test_the_document_is_asyncapi_3() -> None:
    assert DOC["asyncapi"] == "3.0.0"
    assert DOC["servers"]["gateway"]["pathname"] == "/ws"


@pytest.mark.parametrize("destination", destinations.SUBSCRIBE)
def test_every_subscribe_destination_is_a_channel_the_server_sends_to(destination: str) -> None:
    channel_id, channel = channel_of(destination)
    [operation] = operations_on(channel_id)
    assert operation["action"] == "send"
    assert len(operation["messages"]) == len(channel["messages"])
    for message in operation["messages"]:
        assert resolve(message) is not None
    headers = operation["x-subscribe-headers"]["properties"]
    assert destination in json.dumps(headers["destination"])
    assert (RESUME_HEADER in headers) == (destination == destinations.SESSION_TOPIC)


@pytest.mark.parametrize("destination", destinations.SEND)
def test_every_send_destination_is_a_channel_the_server_receives_with_its_body(
    destination: str,
) -> None:
    channel_id, _ = channel_of(destination)
    [operation] = operations_on(channel_id)
    assert operation["action"] == "receive"
    [message] = [resolve(m) for m in operation["messages"]]
    assert message["headers"]["properties"]["destination"] == {"const": destination}
    name = SEND_BODIES[destination].__name__
    assert message["payload"] == {"$ref": f"#/components/schemas/{name}"}
    body = SEND_BODIES[destination]
    _, alone = msgspec.json.schema_components([body], ref_template=asyncapi.SCHEMA_REF)
    assert COMPONENTS["schemas"][name] == alone[name]
    assert resolve(operation["reply"]["messages"][0])["name"] == "RECEIPT"


def test_the_session_topic_has_a_described_parameter() -> None:
    _, channel = channel_of(destinations.SESSION_TOPIC)
    assert set(channel["parameters"]) == {destinations.SESSION_ID.strip("{}")}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_event_kind_is_a_message_with_its_x_event(kind: str) -> None:
    carriers = [d for d in destinations.SUBSCRIBE if kind in kinds_on(d)]
    assert carriers, f"no destination carries {kind}"
    message = COMPONENTS["messages"][f"{kind}Event"]
    headers = message["headers"]
    assert headers["properties"]["x-event"]["const"] == kind
    assert headers["properties"]["content-type"] == {"const": "application/json"}
    assert {"destination", "subscription", "message-id", "x-event"} <= set(headers["required"])
    assert message["payload"]


def test_each_user_queue_carries_its_own_kind_and_the_topic_the_session_events() -> None:
    for queue, kind in USER_QUEUES.items():
        filed = {"edit", "delete", "block", "unblock", "closed"} if kind == "message" else set()
        assert kinds_on(queue) == {kind, *filed}
    assert kinds_on(destinations.SESSION_TOPIC) == {
        "message",
        "edit",
        "delete",
        "block",
        "unblock",
        "closed",
        "receipt",
        "typing",
    }


def test_messages_carry_their_seq_and_errors_their_receipt_id() -> None:
    messages = COMPONENTS["messages"]
    for kind in ("message", "edit", "delete", "ack"):
        assert "x-seq" in messages[f"{kind}Event"]["headers"]["required"]
    assert "receipt-id" in messages["errorEvent"]["headers"]["properties"]
    assert "x-seq" not in messages["typingEvent"]["headers"]["properties"]


def test_every_refusal_code_and_close_code_is_documented() -> None:
    errors = COMPONENTS["messages"]["errorEvent"]["description"]
    for code in EdgeCode:
        assert f"`{code.value}`" in errors
    frame = COMPONENTS["messages"]["errorFrame"]["description"]
    for reason in Disconnect:
        assert f"| `{reason.value}` | {reason.code} |" in frame


def test_undocumented_kinds_and_destinations_stop_the_build(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(asyncapi, "KINDS", KINDS | {"reaction"})
    with pytest.raises(asyncapi.Undocumented, match="reaction"):
        asyncapi.build()
    monkeypatch.undo()
    monkeypatch.setattr(destinations, "SEND", (*destinations.SEND, "/app/chat.react"))
    with pytest.raises(asyncapi.Undocumented, match=r"chat\.react"):
        asyncapi.build()


def test_the_gateway_serves_a_fresh_build() -> None:
    assert ASYNCAPI_FILE.read_bytes() == asyncapi.render(DOC), (
        "the gateway's copy of the AsyncAPI document is stale: run `make asyncapi`"
    )
