"""Every STOMP destination a client may name on this edge, as patterns (``{sessionId}`` stands
for a session's lower-case, hyphenated UUID).

Derived from the tables the edge decides with, so it cannot drift from them: SUBSCRIBE is
``/topic/session.{sessionId}`` (``hub.session_of``, participants only) and the user queues of
``hub.USER_QUEUES`` (always the connected user); SEND is what ``commands`` has a handler for.
Any other destination is refused with an ERROR frame. The authorization tests enumerate these
tuples, so a destination added without an authorization case fails them.
"""

from __future__ import annotations

from typing import Final

from .commands import SEND_DESTINATIONS
from .hub import TOPIC_PREFIX, USER_QUEUES

SESSION_ID: Final = "{sessionId}"
SESSION_TOPIC: Final = TOPIC_PREFIX + SESSION_ID
SUBSCRIBE: Final[tuple[str, ...]] = (SESSION_TOPIC, *USER_QUEUES)
SEND: Final[tuple[str, ...]] = SEND_DESTINATIONS

__all__ = ["SEND", "SESSION_ID", "SESSION_TOPIC", "SUBSCRIBE"]
