"""Who may call what: every route of every service, for every kind of caller.

The routes are enumerated from the services' own apps, so a new route without a row in
MATRIX fails this suite."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import x25519
from starlette.routing import Route

from gateway.app import create_app as gateway_app
from gateway.settings import Settings as GatewaySettings
from message_svc.app import create_app as message_app
from message_svc.settings import Settings as MessageSettings
from session_svc.app import create_app as session_app
from session_svc.settings import Settings as SessionSettings

from .conftest import Stack

pytestmark = pytest.mark.e2e

# operational and public pages (the web client at / and its static files need no token;
# /dev/token exists only in development, when DEV_TOKEN_URL is set)
OPERATIONAL = {"/healthz", "/readyz", "/metrics", "/openapi.json", "/asyncapi.json", "/docs", "/"}
CALLERS = ("participant", "other_user", "other_intent_user", "no_token", "service_token")

# (method, path) -> (where it is called, body, answer per caller)
OK, UNAUTHENTICATED, FORBIDDEN = 200, 401, 403
USER_ROUTE = {
    "participant": OK,
    "other_user": FORBIDDEN,
    "other_intent_user": FORBIDDEN,
    "no_token": UNAUTHENTICATED,
    "service_token": UNAUTHENTICATED,
}
OWN_DATA_ROUTE = {**USER_ROUTE, "other_user": OK, "other_intent_user": OK}
FLAIRBIT_ROUTE = {
    "participant": UNAUTHENTICATED,
    "other_user": UNAUTHENTICATED,
    "other_intent_user": UNAUTHENTICATED,
    "no_token": UNAUTHENTICATED,
    "service_token": OK,
}
# Bodies are made from the session id and the test's own people (a fresh set per route, so that
# no per-user limit of one route's case carries over to the next).
People = dict[str, str]
MATRIX: dict[tuple[str, str], tuple[str, Callable[[str, People], Any], dict[str, int]]] = {
    ("POST", "/api/chat/init"): (
        "gateway",
        lambda sid, p: {"toEmail": p["bob"], "intent": "dating"},
        # anyone with a user token may open their own chat with bob
        {**OWN_DATA_ROUTE},
    ),
    ("POST", "/api/chat/message"): (
        "gateway",
        lambda sid, p: {"sessionId": sid, "content": "hi", "clientMessageId": str(uuid.uuid4())},
        USER_ROUTE,
    ),
    ("POST", "/api/chat/messages"): (
        "gateway",
        lambda sid, p: {
            "messages": [{"sessionId": sid, "content": "hi", "clientMessageId": str(uuid.uuid4())}]
        },
        # a bulk send answers 200 with a result per item; who may send is that item's status
        OWN_DATA_ROUTE,
    ),
    ("GET", "/api/chat/sessions"): ("gateway", lambda sid, p: None, OWN_DATA_ROUTE),
    ("GET", "/api/chat/{sessionId}/history"): ("gateway", lambda sid, p: None, USER_ROUTE),
    ("GET", "/api/chat/{sessionId}/unread"): ("gateway", lambda sid, p: None, USER_ROUTE),
    ("GET", "/api/chat/{sessionId}/events"): ("gateway", lambda sid, p: None, USER_ROUTE),
    # {messageId}: a message the participant (alice) sent in the session; the peer's refusal
    # (NOT_MESSAGE_SENDER) is in test_changes_e2e
    ("PATCH", "/api/chat/{sessionId}/messages/{messageId}"): (
        "gateway",
        lambda sid, p: {"content": "edited", "clientMessageId": str(uuid.uuid4())},
        USER_ROUTE,
    ),
    ("DELETE", "/api/chat/{sessionId}/messages/{messageId}"): (
        "gateway",
        lambda sid, p: {"clientMessageId": str(uuid.uuid4())},
        USER_ROUTE,
    ),
    ("POST", "/api/chat/{sessionId}/read"): ("gateway", lambda sid, p: {"upToSeq": 1}, USER_ROUTE),
    ("POST", "/api/chat/{sessionId}/delivered"): (
        "gateway",
        lambda sid, p: {"upToSeq": 1},
        USER_ROUTE,
    ),
    # presence of bob: alice and carol share a session with him (carol for another intent:
    # still his peer), eve does not
    ("GET", "/api/chat/presence"): (
        "gateway",
        lambda sid, p: None,
        {**USER_ROUTE, "other_intent_user": OK},
    ),
    # public keys: each user's own, and a session's for its participants
    ("PUT", "/api/chat/keys/{keyId}"): (
        "gateway",
        lambda sid, p: {"algorithm": "X25519", "publicKey": x25519_key()},
        {
            **OWN_DATA_ROUTE,
            **dict.fromkeys(("participant", "other_user", "other_intent_user"), 201),
        },
    ),
    ("DELETE", "/api/chat/keys/{keyId}"): (
        "gateway",
        lambda sid, p: None,
        {
            **OWN_DATA_ROUTE,
            **dict.fromkeys(("participant", "other_user", "other_intent_user"), 204),
        },
    ),
    ("GET", "/api/chat/keys"): ("gateway", lambda sid, p: None, OWN_DATA_ROUTE),
    ("GET", "/api/chat/{sessionId}/keys"): ("gateway", lambda sid, p: None, USER_ROUTE),
    # blocking: participants only (a DELETE with nothing to lift answers the state, 200); who
    # may lift whose block is in test_blocks_e2e
    ("POST", "/api/chat/{sessionId}/block"): ("gateway", lambda sid, p: None, USER_ROUTE),
    ("DELETE", "/api/chat/{sessionId}/block"): ("gateway", lambda sid, p: None, USER_ROUTE),
    # the caller's own peers, for the edges (not routed by the gateway)
    ("GET", "/internal/peers"): ("session-svc", lambda sid, p: None, OWN_DATA_ROUTE),
    ("GET", "/internal/sessions/{session_id}/membership"): (
        "session-svc",
        lambda sid, p: None,
        USER_ROUTE,
    ),
    ("POST", "/internal/flairbit/profile-changed"): (
        "gateway",
        lambda sid, p: {"email": p["bob"]},
        {**FLAIRBIT_ROUTE, "service_token": 204},
    ),
    # erasure: a user nobody knows (erasing one of the matrix's people would close its session)
    ("POST", "/internal/flairbit/user-deleted"): (
        "gateway",
        lambda sid, p: {"email": f"gone.{uuid.uuid4().hex}@example.com"},
        FLAIRBIT_ROUTE,
    ),
    ("POST", "/internal/flairbit/sessions"): (
        "gateway",
        lambda sid, p: {
            "firstEmail": p["alice"],
            "secondEmail": p["bob"],
            "intent": "dating",
        },
        FLAIRBIT_ROUTE,
    ),
}


# Query strings some routes need (from the test's people)
QUERIES: dict[tuple[str, str], Callable[[People], dict[str, str]]] = {
    ("GET", "/api/chat/presence"): lambda p: {"emails": p["bob"]},
}

KEY_ID = "matrix-device"


def x25519_key() -> str:
    raw = (
        x25519.X25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


# What a route needs in place before each caller calls it, done with that caller's token (a
# caller without a user token gets nothing in place, and is refused anyway)
PREPARE: dict[tuple[str, str], Callable[[httpx.Client, str, dict[str, str]], object]] = {
    ("DELETE", "/api/chat/keys/{keyId}"): lambda client, url, headers: client.put(
        url, json={"algorithm": "X25519", "publicKey": x25519_key()}, headers=headers
    ),
}

# What each user's bulk-send item gets (the request itself answers 200)
BULK_ITEM = {"participant": 200, "other_user": 403, "other_intent_user": 403}


def service_routes() -> set[tuple[str, str]]:
    common: dict[str, Any] = {"jwt_jwks_url": "http://127.0.0.1:1/jwks"}
    apps = [
        session_app(SessionSettings(**common)),
        message_app(MessageSettings(**common)),
        gateway_app(GatewaySettings(**common)),
    ]
    found = set()
    for app in apps:
        for route in app.routes:
            if not isinstance(route, Route) or route.path in OPERATIONAL:
                continue
            if "{path:path}" in route.path:  # the gateway's forwarding routes
                continue
            for method in route.methods or ():
                if method != "HEAD":
                    found.add((method, route.path))
    return found


# Routes whose callers are named inside the body, each with their own token: tested below.
PER_GROUP = {("POST", "/internal/sends")}


def test_every_route_has_a_row_in_the_matrix() -> None:
    missing = service_routes() - set(MATRIX) - PER_GROUP
    assert not missing, f"routes without an authorization row: {sorted(missing)}"


def test_grouped_sends_authenticate_and_authorise_each_group(stack: Stack) -> None:
    """message-svc's POST /internal/sends (ws-edge's and the gateway's): every group is its
    sender's, by that sender's own token, and is answered as that sender's bulk send; the
    route is not reachable through the gateway."""
    service = httpx.post(f"{stack.flairbit}/dev/service-token", timeout=5).json()["token"]
    tag = uuid.uuid4().hex[:6]
    people = {name: f"{name}.groups.{tag}@example.com" for name in ("alice", "bob", "eve")}
    with httpx.Client(timeout=10) as client:
        session_id = client.post(
            f"{stack.gateway}/api/chat/init",
            json={"toEmail": people["bob"], "intent": "dating"},
            headers={"Authorization": f"Bearer {stack.token(people['alice'])}"},
        ).json()["sessionId"]
        tokens = {
            "participant": stack.token(people["alice"]),
            "other_user": stack.token(people["eve"]),
            "not_a_token": "not-a-token",
            "service_token": service,
        }

        def group(token: str) -> dict[str, Any]:
            message = {
                "sessionId": session_id,
                "content": "hi",
                "clientMessageId": str(uuid.uuid4()),
            }
            return {"token": token, "messages": [message]}

        body = {"groups": [group(token) for token in tokens.values()]}
        answer = client.post(f"{stack.message_svc}/internal/sends", json=body)
        assert answer.status_code == 200, answer.text
        outcome = dict(zip(tokens, answer.json()["groups"], strict=True))
        assert outcome["participant"]["results"][0]["status"] == OK
        assert outcome["other_user"]["results"][0]["status"] == FORBIDDEN
        assert outcome["not_a_token"]["status"] == UNAUTHENTICATED
        assert outcome["service_token"]["status"] == UNAUTHENTICATED
        through_gateway = client.post(
            f"{stack.gateway}/internal/sends",
            json=body,
            headers={"Authorization": f"Bearer {tokens['participant']}"},
        )
        assert through_gateway.status_code == 404


@pytest.mark.parametrize("route", sorted(MATRIX), ids=lambda r: f"{r[0]} {r[1]}")
def test_matrix(stack: Stack, route: tuple[str, str]) -> None:
    method, path = route
    where, make_body, expected = MATRIX[route]
    service = httpx.post(f"{stack.flairbit}/dev/service-token", timeout=5).json()["token"]
    tag = uuid.uuid4().hex[:6]
    people = {name: f"{name}.authz.{tag}@example.com" for name in ("alice", "bob", "eve", "carol")}
    tokens = {
        "participant": stack.token(people["alice"]),
        "other_user": stack.token(people["eve"]),
        "other_intent_user": stack.token(people["carol"]),
        "no_token": None,
        "service_token": service,
    }
    base = stack.gateway if where == "gateway" else stack.session_svc
    with httpx.Client(timeout=10) as client:
        alice = {"Authorization": f"Bearer {tokens['participant']}"}
        session_id = client.post(
            f"{stack.gateway}/api/chat/init",
            json={"toEmail": people["bob"], "intent": "dating"},
            headers=alice,
        ).json()["sessionId"]
        # carol shares a session with bob, but for another intent
        carol = {"Authorization": f"Bearer {tokens['other_intent_user']}"}
        other = client.post(
            f"{stack.gateway}/api/chat/init",
            json={"toEmail": people["bob"], "intent": "freelance"},
            headers=carol,
        )
        assert other.status_code == 200
        url = base + path.replace("{sessionId}", session_id).replace("{session_id}", session_id)
        url = url.replace("{keyId}", KEY_ID)
        if "{messageId}" in url:
            sent = client.post(
                f"{stack.gateway}/api/chat/message",
                json={
                    "sessionId": session_id,
                    "content": "hi",
                    "clientMessageId": str(uuid.uuid4()),
                },
                headers=alice,
            )
            assert sent.status_code == 200, sent.text
            url = url.replace("{messageId}", sent.json()["messageId"])
        for caller in CALLERS:
            token = tokens[caller]
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            query = QUERIES.get(route)
            prepare = PREPARE.get(route)
            if prepare is not None:
                prepare(client, url, headers)
            answer = client.request(
                method,
                url,
                json=make_body(session_id, people),
                params=query(people) if query else None,
                headers=headers,
            )
            assert answer.status_code == expected[caller], (caller, answer.text)
            if path == "/api/chat/messages" and answer.status_code == 200:
                item = answer.json()["results"][0]
                assert item["status"] == BULK_ITEM[caller], (caller, item)
