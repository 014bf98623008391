"""Who, on this edge, wants which events (pure).

Connections subscribe to session topics and to their user's queues. The hub counts local
subscribers per routing key, so that the caller binds a key for the first one and unbinds it
after the last, and it turns one delivered event (its routing key, its ``CC`` keys and its
``x-event``) into the local subscriptions that get it:

- ``session.{id}``: every subscription of ``/topic/session.{id}``, whatever the event;
- ``user.{hash}``: the connections of that user, on the user queue of the event's kind
  (``message``, ``edit``, ``delete``, ``block``, ``unblock`` and ``closed`` ->
  ``/user/queue/messages``,
  ``ack`` -> ``/user/queue/ack``, ``error`` -> ``/user/queue/error``, ``presence`` ->
  ``/user/queue/presence``, ``keys`` -> ``/user/queue/keys``); other kinds are not for user
  queues.

A key listed twice (routing key and CC) is served once, as RabbitMQ delivers one copy.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from chat_common import routing

TOPIC_PREFIX = "/topic/session."
USER_QUEUES = {
    "/user/queue/messages": "message",
    "/user/queue/ack": "ack",
    "/user/queue/error": "error",
    "/user/queue/presence": "presence",
    "/user/queue/keys": "keys",
}

# Event kinds delivered on another kind's user queue: the changes of messages go with them,
# and so do a session's blocks and unblocks.
FILED_WITH = {
    "edit": "message",
    "delete": "message",
    "block": "message",
    "unblock": "message",
    "closed": "message",
}
QUEUE_KINDS = {
    destination: (kind, *(k for k, other in FILED_WITH.items() if other == kind))
    for destination, kind in USER_QUEUES.items()
}
"""Every event kind a user queue's subscriptions get."""

_QUEUE_OF = {kind: destination for destination, kind in USER_QUEUES.items()}
_SESSION = "session."
_USER = "user."


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
    text = destination[len(TOPIC_PREFIX) :]
    try:
        session = uuid.UUID(text)
    except ValueError:
        raise UnknownDestination(destination) from None
    if str(session) != text:  # one spelling per topic: lower-case, hyphenated
        raise UnknownDestination(destination)
    return session


class Hub:
    def __init__(self) -> None:
        # session key -> connection -> subscription ids
        self._topics: dict[str, dict[str, set[str]]] = {}
        # user key -> connections of that user
        self._users: dict[str, set[str]] = {}
        # connection -> event kind -> subscription ids of its user queues
        self._queues: dict[str, dict[str, set[str]]] = {}
        # connection -> the session keys it subscribes to (to forget it quickly)
        self._keys_of: dict[str, set[str]] = {}

    # -- session topics ------------------------------------------------------------------

    def add_topic(self, connection: str, subscription: str, session: uuid.UUID) -> bool:
        """True when this is the first local subscriber of the session: bind its key."""
        key = routing.session_key(session)
        subscribers = self._topics.setdefault(key, {})
        first = not subscribers
        subscribers.setdefault(connection, set()).add(subscription)
        self._keys_of.setdefault(connection, set()).add(key)
        return first

    def remove_topic(self, connection: str, subscription: str, session: uuid.UUID) -> bool:
        """True when the last local subscriber left: unbind the key."""
        key = routing.session_key(session)
        subscribers = self._topics.get(key)
        if not subscribers or subscription not in subscribers.get(connection, ()):
            return False
        subscribers[connection].discard(subscription)
        if not subscribers[connection]:
            del subscribers[connection]
            self._keys_of[connection].discard(key)
        if not subscribers:
            del self._topics[key]
            return True
        return False

    # -- users and their queues ----------------------------------------------------------

    def add_user(self, connection: str, email: str) -> bool:
        """True when this is the user's first connection here: bind the user's key."""
        connections = self._users.setdefault(routing.user_key(email), set())
        first = not connections
        connections.add(connection)
        return first

    def add_queue(self, connection: str, subscription: str, destination: str) -> None:
        kind = USER_QUEUES.get(destination)
        if kind is None:
            raise UnknownDestination(destination)
        self._queues.setdefault(connection, {}).setdefault(kind, set()).add(subscription)

    def remove_queue(self, connection: str, subscription: str) -> None:
        for subscriptions in self._queues.get(connection, {}).values():
            subscriptions.discard(subscription)

    def drop_connection(self, connection: str, email: str | None) -> list[str]:
        """Forget a connection; return the keys nobody here needs any more (to unbind)."""
        released = []
        for key in self._keys_of.pop(connection, ()):
            subscribers = self._topics[key]
            del subscribers[connection]
            if not subscribers:
                del self._topics[key]
                released.append(key)
        self._queues.pop(connection, None)
        if email is not None:
            key = routing.user_key(email)
            connections = self._users.get(key)
            if connections is not None and connection in connections:
                connections.discard(connection)
                if not connections:
                    del self._users[key]
                    released.append(key)
        return released

    # -- reading -------------------------------------------------------------------------

    def connections_of(self, key: str) -> list[str]:
        """The local connections of the user whose key is ``key``."""
        return sorted(self._users.get(key, ()))

    def needs(self, key: str) -> bool:
        """Whether some local connection still needs ``key``."""
        return key in self._topics or key in self._users

    def key_count(self) -> int:
        return len(self._topics) + len(self._users)

    def keys(self) -> set[str]:
        """Every routing key some local connection needs (what the queue must be bound to)."""
        return set(self._topics) | set(self._users)

    def targets(self, keys: Iterable[str], event: str) -> list[Target]:
        """Local subscriptions that get an event routed by ``keys`` (routing key and CC)."""
        found: list[Target] = []
        for key in dict.fromkeys(keys):
            if key.startswith(_SESSION):
                destination = TOPIC_PREFIX + key[len(_SESSION) :]
                for connection, subscriptions in self._topics.get(key, {}).items():
                    found += [Target(connection, s, destination) for s in subscriptions]
            elif key.startswith(_USER) and FILED_WITH.get(event, event) in _QUEUE_OF:
                filed = FILED_WITH.get(event, event)
                queue = _QUEUE_OF[filed]
                for connection in self._users.get(key, ()):
                    for subscription in self._queues.get(connection, {}).get(filed, ()):
                        found.append(Target(connection, subscription, queue))
        return found
