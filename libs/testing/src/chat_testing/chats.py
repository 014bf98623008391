"""A chat session made for one test, through a running stack's gateway (processes or
containers alike)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Protocol

import httpx


class Gateway(Protocol):
    """A stack as the tests reach it: the gateway's URL and a user token for an email."""

    @property
    def gateway(self) -> str: ...

    def token(self, email: str) -> str: ...


@dataclass(frozen=True)
class Chat:
    """A session between two users made for one test, with their tokens."""

    id: str
    alice: str
    bob: str
    alice_token: str
    bob_token: str


def open_chat(stack: Gateway, label: str) -> Chat:
    """Two new users (``alice.{label}.{tag}@example.com`` and Bob alike) and their session,
    opened by Alice through the gateway."""
    tag = uuid.uuid4().hex[:6]
    alice, bob = f"alice.{label}.{tag}@example.com", f"bob.{label}.{tag}@example.com"
    alice_token, bob_token = stack.token(alice), stack.token(bob)
    opened = httpx.post(
        f"{stack.gateway}/api/chat/init",
        json={"toEmail": bob, "intent": "dating"},
        headers={"Authorization": f"Bearer {alice_token}"},
        timeout=10,
    )
    assert opened.status_code == 200, opened.text
    return Chat(opened.json()["sessionId"], alice, bob, alice_token, bob_token)
