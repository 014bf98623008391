"""One RabbitMQ user per service, each with only the permissions its job needs.

RabbitMQ grants a user, per virtual host, three regular expressions over resource names:
*configure* (declare, delete), *write* (publish to an exchange; be the destination of a
binding) and *read* (consume from a queue; be the source of a binding). A passive declare
needs none. What each service does, and so may do:

- ``outbox-relay`` declares the event exchanges (and binds ``chat.typing`` and
  ``chat.presence`` into ``chat.events``) and publishes events to ``chat.events``: the only
  service that may, with message-svc's replies to queued sends.
- ``message-svc`` declares the same exchanges, the commands exchange and the send queue with its
  dead-letter exchange and queue; consumes ``chat.send``; publishes replies to ``chat.events``.
- ``ws-edge`` declares and consumes its own exclusive queue (``ws-edge.{instance}``), binds it to
  ``chat.events``, and publishes only typing events (``chat.typing``), presence events
  (``chat.presence``) and queued sends
  (``chat.commands``, each carrying its user's own token). It may not publish to
  ``chat.events`` (a message or receipt there would be believed by every edge), publish through
  the default exchange (straight into any queue), consume ``chat.send`` or bind at
  ``chat.commands`` (read other users' sends), or declare or delete shared exchanges.

:func:`definitions` renders users and grants in RabbitMQ's definitions format (for
``rabbitmqctl import_definitions`` and a container's boot-time import); from a shell::

    python -m chat_common.broker_access --vhost chat \
        --password ws-edge=... --password message-svc=... --password outbox-relay=... \
        | rabbitmqctl import_definitions --format json
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import re
import sys
from dataclasses import dataclass
from typing import Any, Final

from . import routing


@dataclass(frozen=True)
class Grant:
    configure: str
    write: str
    read: str


def _only(*names: str) -> str:
    return "^(" + "|".join(re.escape(name) for name in names) + ")$"


_EDGE_QUEUES: Final = re.escape(routing.EDGE_QUEUE_PREFIX) + ".+"

GRANTS: Final[dict[str, Grant]] = {
    "outbox-relay": Grant(
        configure=_only(
            routing.EVENTS_EXCHANGE, routing.TYPING_EXCHANGE, routing.PRESENCE_EXCHANGE
        ),
        write=_only(routing.EVENTS_EXCHANGE),
        read=_only(routing.TYPING_EXCHANGE, routing.PRESENCE_EXCHANGE),
    ),
    "message-svc": Grant(
        configure=_only(
            routing.EVENTS_EXCHANGE,
            routing.TYPING_EXCHANGE,
            routing.PRESENCE_EXCHANGE,
            routing.COMMANDS_EXCHANGE,
            routing.SEND_QUEUE,
            routing.SEND_DEAD_LETTER_EXCHANGE,
            routing.SEND_DEAD_LETTER_QUEUE,
        ),
        write=_only(
            routing.EVENTS_EXCHANGE,
            routing.SEND_QUEUE,
            routing.SEND_DEAD_LETTER_EXCHANGE,
            routing.SEND_DEAD_LETTER_QUEUE,
        ),
        read=_only(
            routing.TYPING_EXCHANGE,
            routing.PRESENCE_EXCHANGE,
            routing.COMMANDS_EXCHANGE,
            routing.SEND_QUEUE,
            routing.SEND_DEAD_LETTER_EXCHANGE,
        ),
    ),
    "ws-edge": Grant(
        configure=f"^{_EDGE_QUEUES}$",
        write=f"^({_EDGE_QUEUES}|{re.escape(routing.COMMANDS_EXCHANGE)}"
        f"|{re.escape(routing.TYPING_EXCHANGE)}|{re.escape(routing.PRESENCE_EXCHANGE)})$",
        read=f"^({_EDGE_QUEUES}|{re.escape(routing.EVENTS_EXCHANGE)})$",
    ),
}


def user_name(service: str, vhost: str = "/") -> str:
    """``ws-edge`` on the default virtual host, ``ws-edge@{vhost}`` on another one (users are
    global in RabbitMQ: stacks on one broker keep theirs apart)."""
    return service if vhost == "/" else f"{service}@{vhost}"


def password_hash(password: str, salt: bytes | None = None) -> str:
    """RabbitMQ's ``rabbit_password_hashing_sha256``: base64(salt + SHA-256(salt + password))."""
    salt = os.urandom(4) if salt is None else salt
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


def password_matches(password: str, hashed: str) -> bool:
    """Whether ``hashed`` (:func:`password_hash`'s form) is the hash of ``password``."""
    raw = base64.b64decode(hashed)
    return hashed == password_hash(password, raw[:4])


def definitions(
    vhost: str, passwords: dict[str, str], admin: tuple[str, str] | None = None
) -> dict[str, Any]:
    """The virtual host, one user per service in ``passwords`` and its grant on the host, and
    optionally an administrator (name, password) with every permission on it."""
    users: list[dict[str, Any]] = []
    permissions: list[dict[str, str]] = []
    if admin is not None:
        name, password = admin
        users.append(_user(name, password, ["administrator"]))
        permissions.append(
            {"user": name, "vhost": vhost, "configure": ".*", "write": ".*", "read": ".*"}
        )
    for service, password in sorted(passwords.items()):
        grant = GRANTS[service]
        name = user_name(service, vhost)
        users.append(_user(name, password, []))
        permissions.append(
            {
                "user": name,
                "vhost": vhost,
                "configure": grant.configure,
                "write": grant.write,
                "read": grant.read,
            }
        )
    return {"vhosts": [{"name": vhost}], "users": users, "permissions": permissions}


def _user(name: str, password: str, tags: list[str]) -> dict[str, Any]:
    return {
        "name": name,
        "password_hash": password_hash(password),
        "hashing_algorithm": "rabbit_password_hashing_sha256",
        "tags": tags,
    }


def _pair(text: str) -> tuple[str, str]:
    name, sep, password = text.partition("=")
    if not sep or not name or not password:
        raise argparse.ArgumentTypeError(f"expected NAME=PASSWORD, got {text!r}")
    return name, password


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m chat_common.broker_access",
        description="Print RabbitMQ definitions: one user per service with its grant.",
    )
    parser.add_argument("--vhost", default="/")
    parser.add_argument(
        "--password",
        type=_pair,
        action="append",
        required=True,
        metavar="SERVICE=PASSWORD",
        help=f"one per service: {', '.join(GRANTS)}",
    )
    parser.add_argument("--admin", type=_pair, metavar="NAME=PASSWORD")
    args = parser.parse_args(argv)
    passwords = dict(args.password)
    unknown = set(passwords) - set(GRANTS)
    if unknown:
        parser.error(f"no such service: {', '.join(sorted(unknown))}")
    json.dump(definitions(args.vhost, passwords, args.admin), sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
