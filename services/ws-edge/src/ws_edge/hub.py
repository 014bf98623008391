"""Who, on this edge, wants which events (pure).

Connections subscribe to session topics and to their user's queues; the hub counts local
subscribers per routing key, so the caller binds a key for the first one and unbinds it after
the last, and it turns one delivered event (routing key + ``CC`` keys + ``x-event``) into the
local subscriptions that get it.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass

from chat_common import routing

TOPIC_PREFIX = "/topic/session."
USER_QUEUES = {
    "/user/queue/messages": "message",
    "/user/queue/ack": "ack",
    "/user/queue/error": "error",
}

_QUEUE_OF = {kind: destination for destination, kind in USER_QUEUES.items()}


class UnknownDestination(ValueError):
    """Not a destination a client may subscribe to."""


@dataclass(frozen=True, slots=True)
class Target:
    connection: str
    subscription: str
    destination: str


def session_of(destination: str) -> uuid.UUID:
    """The session of ``/topic/session.{id}``; raise :class:`UnknownDestination` otherwise."""
    if not destination.startswith(TOPIC_PREFIX):
        raise UnknownDestination(destination)
    try:
        return uuid.UUID(destination[len(TOPIC_PREFIX) :])
    except ValueError:
        raise UnknownDestination(destination) from None


class Hub:
    def __init__(self) -> None:
        # routing key -> connection -> subscription ids
        self._topics: dict[str, dict[str, set[str]]] = defaultdict(dict)
        # user routing key -> connections of that user
        self._users: dict[str, set[str]] = defaultdict(set)
        # connection -> (event kind -> subscription ids of its user queues)
        self._queues: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))

    def add_topic(self, connection: str, subscription: str, session: uuid.UUID) -> bool:
        """True when this is the first local subscriber of the session: bind its key."""
        subscribers = self._topics[routing.session_key(session)]
        first = not subscribers
        subscribers.setdefault(connection, set()).add(subscription)
        return first

    def remove_topic(self, connection: str, subscription: str, session: uuid.UUID) -> bool:
        """True when the last local subscriber left: unbind the key."""
        key = routing.session_key(session)
        subscribers = self._topics.get(key)
        if not subscribers or connection not in subscribers:
            return False
        subscribers[connection].discard(subscription)
        if not subscribers[connection]:
            del subscribers[connection]
        if not subscribers:
            del self._topics[key]
            return True
        return False

    def add_user(self, connection: str, email: str) -> bool:
        """True when this is the user's first connection here: bind the user's key."""
        connections = self._users[routing.user_key(email)]
        first = not connections
        connections.add(connection)
        return first

    def add_queue(self, connection: str, subscription: str, destination: str) -> None:
        kind = USER_QUEUES.get(destination)
        if kind is None:
            raise UnknownDestination(destination)
        self._queues[connection][kind].add(subscription)

    def remove_queue(self, connection: str, subscription: str) -> None:
        for subscriptions in self._queues.get(connection, {}).values():
            subscriptions.discard(subscription)

    def drop_connection(self, connection: str, email: str | None) -> list[str]:
        """Forget a connection; return the keys nobody here needs any more (to unbind)."""
        released = []
        for key in [k for k, subs in self._topics.items() if connection in subs]:
            del self._topics[key][connection]
            if not self._topics[key]:
                del self._topics[key]
                released.append(key)
        self._queues.pop(connection, None)
        if email is not None:
            key = routing.user_key(email)
            self._users[key].discard(connection)
            if not self._users[key]:
                del self._users[key]
                released.append(key)
        return released

    def keys(self) -> set[str]:
        return set(self._topics) | set(self._users)

    def targets(self, keys: list[str], event: str) -> list[Target]:
        """Local subscriptions that get an event routed by ``keys`` (routing key and CC)."""
        found: list[Target] = []
        for key in dict.fromkeys(keys):
            if key.startswith("session."):
                destination = TOPIC_PREFIX + key[len("session.") :]
                for connection, subscriptions in self._topics.get(key, {}).items():
                    found += [Target(connection, s, destination) for s in subscriptions]
            elif key.startswith("user.") and event in _QUEUE_OF:
                queue = _QUEUE_OF[event]
                for connection in self._users.get(key, ()):
                    for subscription in self._queues.get(connection, {}).get(event, ()):
                        found.append(Target(connection, subscription, queue))
        return found

    def user_connections(self, key: str) -> set[str]:
        return set(self._users.get(key, ()))
