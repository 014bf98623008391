"""The gateway's OpenAPI document: valid OpenAPI 3.1, and every operation in it answered."""

from __future__ import annotations

import uuid

import httpx
import pytest
from openapi_spec_validator import validate

from .conftest import Stack

pytestmark = pytest.mark.e2e

SAMPLE_BODIES = {
    "InitSessionRequest": {"toEmail": "doc.peer@example.com", "intent": "dating"},
    "SendMessageRequest": None,  # filled with the session below
    "BulkSendRequest": None,
    "MarkRequest": {"upToSeq": 1},
    "ProfileChanged": {"email": "doc.peer@example.com"},
    "UserDeleted": {"email": "doc.deleted@example.com"},
    # an X25519 public key (base64url of its 32 raw bytes)
    "PublishKeyRequest": {
        "algorithm": "X25519",
        "publicKey": "fZwkMWU5glwYluV_KBl3Rnk85gy-461H2p0HuF-lXio",
    },
    "MatchSession": {
        "firstEmail": "doc.user@example.com",
        "secondEmail": "doc.peer@example.com",
        "intent": "dating",
    },
}


# Query strings an operation needs: the peer of the test's user, whose presence it may read
QUERIES = {"/api/chat/presence": {"emails": "doc.peer@example.com"}}


def test_document_is_valid_and_every_operation_answers(stack: Stack) -> None:
    user = {"Authorization": f"Bearer {stack.token('doc.user@example.com')}"}
    service = httpx.post(f"{stack.flairbit}/dev/service-token", timeout=5).json()["token"]
    with httpx.Client(base_url=stack.gateway, timeout=10) as client:
        doc = client.get("/openapi.json").json()
        validate(doc)
        assert doc["openapi"] == "3.1.0"
        page = client.get("/docs")
        assert page.status_code == 200
        assert "/api/chat/message" in page.text
        session_id = client.post(
            "/api/chat/init", json=SAMPLE_BODIES["InitSessionRequest"], headers=user
        ).json()["sessionId"]
        # a message of the user's, for the routes of one message (edited, then deleted)
        sent = client.post(
            "/api/chat/message",
            json={
                "sessionId": session_id,
                "content": "to be edited by the docs test",
                "clientMessageId": str(uuid.uuid4()),
            },
            headers=user,
        )
        assert sent.status_code == 200, sent.text
        message_id = sent.json()["messageId"]
        bodies = {
            **SAMPLE_BODIES,
            "EditMessageRequest": {"content": "edited", "clientMessageId": str(uuid.uuid4())},
            "DeleteMessageRequest": {"clientMessageId": str(uuid.uuid4())},
            "SendMessageRequest": {
                "sessionId": session_id,
                "content": "from the docs test",
                "clientMessageId": str(uuid.uuid4()),
            },
            "BulkSendRequest": {
                "messages": [
                    {
                        "sessionId": session_id,
                        "content": "bulk from the docs test",
                        "clientMessageId": str(uuid.uuid4()),
                    }
                ]
            },
        }
        answered = []
        for path, item in doc["paths"].items():
            for method, op in item.items():
                headers = user
                if op.get("security") == [{"flairbitJwt": []}]:
                    headers = {"Authorization": f"Bearer {service}"}
                body = None
                if "requestBody" in op:
                    ref = op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
                    body = bodies[ref.rsplit("/", 1)[-1]]
                answer = client.request(
                    method,
                    path.replace("{sessionId}", session_id)
                    .replace("{messageId}", message_id)
                    .replace("{keyId}", "doc-device"),
                    json=body,
                    params=QUERIES.get(path),
                    headers=headers,
                )
                assert answer.status_code in {int(s) for s in op["responses"]}, (
                    method,
                    path,
                    answer.status_code,
                    answer.text,
                )
                assert answer.status_code < 300, (method, path, answer.text)
                answered.append((method, path))
    assert len(answered) == 21
