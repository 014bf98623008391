"""Opening a session through the gateway of a stack started with `make up`."""

from __future__ import annotations

import signal

import httpx
import pytest

from .conftest import Stack

pytestmark = pytest.mark.e2e


def test_make_up_is_idempotent(stack: Stack) -> None:
    before = sorted(stack.pids())
    again = stack.make("up")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "already running" in again.stdout
    assert sorted(stack.pids()) == before


def test_make_up_starts_only_the_parts_that_are_down(stack: Stack) -> None:
    others = {label: pid for label, pid in stack.pid_map().items() if label != "session-svc"}
    killed = stack.signal("session-svc", signal.SIGKILL)
    again = stack.make("up")
    assert again.returncode == 0, again.stdout + again.stderr
    restarted = stack.pid("session-svc")
    assert restarted is not None
    assert restarted != killed
    assert "session-svc: started" in again.stdout
    assert {label: pid for label, pid in stack.pid_map().items() if label != "session-svc"} == (
        others
    )
    token = stack.token("up.again@example.com")
    with httpx.Client(base_url=stack.gateway, timeout=10) as client:
        opened = client.post(
            "/api/chat/init",
            json={"toEmail": "peer.again@example.com", "intent": "dating"},
            headers={"Authorization": f"Bearer {token}"},
        )
    assert opened.status_code == 200, opened.text


def test_two_users_open_the_same_session_both_ways(stack: Stack) -> None:
    alice = {"Authorization": f"Bearer {stack.token('alice@example.com')}"}
    bob = {"Authorization": f"Bearer {stack.token('bob@example.com')}"}
    with httpx.Client(base_url=stack.gateway, timeout=10) as client:
        one = client.post(
            "/api/chat/init", json={"toEmail": "bob@example.com", "intent": "dating"}, headers=alice
        )
        two = client.post(
            "/api/chat/init", json={"toEmail": "alice@example.com", "intent": "dating"}, headers=bob
        )
    assert one.status_code == two.status_code == 200, (one.text, two.text)
    assert one.json()["sessionId"] == two.json()["sessionId"]
    assert one.headers["x-request-id"]


def test_the_gateway_refuses_what_has_no_valid_token(stack: Stack) -> None:
    with httpx.Client(base_url=stack.gateway, timeout=10) as client:
        missing = client.post("/api/chat/init", json={"toEmail": "b@x.io", "intent": "dating"})
        forged = client.post(
            "/api/chat/init",
            json={"toEmail": "b@x.io", "intent": "dating"},
            headers={"Authorization": "Bearer not.a.token"},
        )
        ready = client.get("/readyz")
    assert missing.status_code == forged.status_code == 401
    assert missing.headers["content-type"] == "application/problem+json"
    assert ready.status_code == 200


def test_flairbit_opens_a_match_through_the_gateway(stack: Stack) -> None:
    service = httpx.post(f"{stack.flairbit}/dev/service-token", timeout=5).json()["token"]
    body = {
        "firstEmail": "x.match@example.com",
        "secondEmail": "y.match@example.com",
        "intent": "rideshare",
    }
    with httpx.Client(base_url=stack.gateway, timeout=10) as client:
        as_user = client.post(
            "/internal/flairbit/sessions",
            json=body,
            headers={"Authorization": f"Bearer {stack.token('x.match@example.com')}"},
        )
        matched = client.post(
            "/internal/flairbit/sessions", json=body, headers={"Authorization": f"Bearer {service}"}
        )
        hidden = client.get("/internal/sessions/00000000-0000-0000-0000-000000000000/membership")
    assert as_user.status_code == 401
    assert matched.status_code == 200, matched.text
    assert hidden.status_code == 404
