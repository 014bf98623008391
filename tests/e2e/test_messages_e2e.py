"""Messages over REST through the gateway of a stack started with `make up`."""

from __future__ import annotations

import uuid

import httpx
import pytest

from .conftest import Stack

pytestmark = pytest.mark.e2e


def test_send_history_unread_read_through_the_gateway(stack: Stack) -> None:
    alice = {"Authorization": f"Bearer {stack.token('alice.e2e@example.com')}"}
    bob = {"Authorization": f"Bearer {stack.token('bob.e2e@example.com')}"}
    with httpx.Client(base_url=stack.gateway, timeout=10) as client:
        opened = client.post(
            "/api/chat/init",
            json={"toEmail": "bob.e2e@example.com", "intent": "freelance"},
            headers=alice,
        )
        session_id = opened.json()["sessionId"]
        sent = [
            client.post(
                "/api/chat/message",
                json={
                    "sessionId": session_id,
                    "content": f"hello {i}",
                    "clientMessageId": str(uuid.uuid4()),
                },
                headers=alice,
            )
            for i in range(3)
        ]
        assert [s.status_code for s in sent] == [200, 200, 200]
        assert [s.json()["seq"] for s in sent] == [1, 2, 3]
        unread = client.get(f"/api/chat/{session_id}/unread", headers=bob).json()
        assert unread["count"] == 3
        read = client.post(f"/api/chat/{session_id}/read", json={"upToSeq": 3}, headers=bob)
        assert read.json()["readSeq"] == 3
        history = client.get(f"/api/chat/{session_id}/history?limit=2", headers=alice)
        assert [m["seq"] for m in history.json()["messages"]] == [3, 2]
        assert all(m["seen"] for m in history.json()["messages"])
        assert 'rel="next"' in history.headers["link"]
        listed = client.get("/api/chat/sessions", headers=bob).json()["sessions"]
        assert [s["sessionId"] for s in listed] == [session_id]
        assert listed[0]["unreadCount"] == 0
        outsider = client.get(
            f"/api/chat/{session_id}/history",
            headers={"Authorization": f"Bearer {stack.token('eve.e2e@example.com')}"},
        )
        assert outsider.status_code == 403
