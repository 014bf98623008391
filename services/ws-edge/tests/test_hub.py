"""Local subscriber counting and event targets (pure)."""

from __future__ import annotations

import uuid

import pytest

from chat_common import routing
from ws_edge.hub import Hub, Target, UnknownDestination, session_of

# fixed, not random: they appear in test ids, which every xdist worker must collect alike
S1 = uuid.UUID("7b2e6f40-5c9d-4e3f-a0b1-2c3d4e5f6071")
S2 = uuid.UUID("8c3f7051-6dae-4f40-b1c2-3d4e5f607182")


def test_first_subscriber_binds_last_unbinds() -> None:
    hub = Hub()
    assert hub.add_topic("c1", "a", S1) is True
    assert hub.add_topic("c1", "b", S1) is False
    assert hub.add_topic("c2", "a", S1) is False
    assert hub.remove_topic("c1", "a", S1) is False
    assert hub.remove_topic("c1", "b", S1) is False
    assert hub.remove_topic("c2", "a", S1) is True
    assert hub.remove_topic("c2", "a", S1) is False  # already gone
    assert hub.keys() == set()


def test_user_keys_count_connections() -> None:
    hub = Hub()
    assert hub.add_user("c1", "alice@example.com") is True
    assert hub.add_user("c2", "alice@example.com") is False
    assert hub.drop_connection("c1", "alice@example.com") == []
    assert hub.drop_connection("c2", "alice@example.com") == [routing.user_key("alice@example.com")]


def test_dropping_a_connection_releases_its_last_keys() -> None:
    hub = Hub()
    hub.add_user("c1", "a@x.io")
    hub.add_topic("c1", "s", S1)
    hub.add_topic("c1", "t", S2)
    hub.add_topic("c2", "s", S2)
    released = hub.drop_connection("c1", "a@x.io")
    assert set(released) == {routing.session_key(S1), routing.user_key("a@x.io")}


def test_targets_from_routing_key_and_cc() -> None:
    hub = Hub()
    hub.add_user("alice-phone", "alice@example.com")
    hub.add_user("alice-laptop", "alice@example.com")
    hub.add_user("bob", "bob@example.com")
    hub.add_topic("bob", "topic", S1)
    hub.add_queue("alice-phone", "m", "/user/queue/messages")
    hub.add_queue("alice-laptop", "m2", "/user/queue/messages")
    hub.add_queue("alice-laptop", "ack", "/user/queue/ack")
    hub.add_queue("bob", "err", "/user/queue/error")
    keys = [
        routing.session_key(S1),
        routing.user_key("alice@example.com"),
        routing.user_key("bob@example.com"),
    ]
    assert sorted(hub.targets(keys, "message"), key=lambda t: t.connection) == [
        Target("alice-laptop", "m2", "/user/queue/messages"),
        Target("alice-phone", "m", "/user/queue/messages"),
        Target("bob", "topic", f"/topic/session.{S1}"),
    ]
    # a receipt goes to the topic only; an ack only to ack queues; an error only to error queues
    assert hub.targets(keys, "receipt") == [Target("bob", "topic", f"/topic/session.{S1}")]
    assert hub.targets([routing.user_key("alice@example.com")], "ack") == [
        Target("alice-laptop", "ack", "/user/queue/ack")
    ]
    assert hub.targets([routing.user_key("bob@example.com")], "error") == [
        Target("bob", "err", "/user/queue/error")
    ]
    # a key listed twice is served once
    assert len(hub.targets([keys[0], keys[0]], "message")) == 1
    # an edit or a delete of a message goes where the message went
    for change in ("edit", "delete"):
        assert hub.targets(keys, change) == hub.targets(keys, "message")


def test_key_changes_go_to_the_keys_queue_of_each_user_named() -> None:
    hub = Hub()
    for connection, email in (("a", "alice@example.com"), ("b", "bob@example.com")):
        hub.add_user(connection, email)
        hub.add_queue(connection, "keys", "/user/queue/keys")
        hub.add_queue(connection, "messages", "/user/queue/messages")
    hub.add_user("e", "eve@example.com")
    hub.add_queue("e", "keys", "/user/queue/keys")
    told = [routing.user_key("alice@example.com"), routing.user_key("bob@example.com")]
    assert sorted(hub.targets(told, "keys"), key=lambda t: t.connection) == [
        Target("a", "keys", "/user/queue/keys"),
        Target("b", "keys", "/user/queue/keys"),
    ]


@pytest.mark.parametrize(
    "destination",
    [
        "/topic/other",
        "/topic/session.not-a-uuid",
        "/queue/x",
        "/topic/session.",
        f"/topic/session.{str(S1).upper()}",  # one spelling per topic
        f"/topic/session.{{{S1}}}",
    ],
)
def test_unknown_destinations(destination: str) -> None:
    with pytest.raises(UnknownDestination):
        session_of(destination)
    with pytest.raises(UnknownDestination):
        Hub().add_queue("c", "s", destination)


def test_session_of() -> None:
    assert session_of(f"/topic/session.{S1}") == S1


def test_needs_and_counts_follow_the_subscribers() -> None:
    hub = Hub()
    key = routing.session_key(S1)
    hub.add_topic("c1", "a", S1)
    hub.add_user("c1", "a@x.io")
    assert hub.needs(key)
    assert hub.key_count() == 2
    assert hub.remove_topic("c1", "other", S1) is False  # not its subscription
    assert hub.remove_topic("c1", "a", S1) is True
    assert not hub.needs(key)
    assert hub.drop_connection("c1", "a@x.io") == [routing.user_key("a@x.io")]
    assert hub.drop_connection("c1", "a@x.io") == []  # forgotten already
    assert hub.key_count() == 0


def test_a_close_goes_to_the_messages_queue_and_a_user_s_connections_are_listed() -> None:
    hub = Hub()
    hub.add_user("c1", "bob@example.com")
    hub.add_user("c2", "bob@example.com")
    hub.add_queue("c1", "m", "/user/queue/messages")
    key = routing.user_key("bob@example.com")
    assert [t.destination for t in hub.targets([key], "closed")] == ["/user/queue/messages"]
    assert hub.targets([key], "user-deleted") == []
    assert hub.connections_of(key) == ["c1", "c2"]
    assert hub.connections_of(routing.user_key("eve@example.com")) == []
