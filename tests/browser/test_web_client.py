"""Two people chatting in the web client, in headless Chromium, through a stack from `make up`.

The first test needs only the REST path (sign in, start a chat, session list and unread badge,
history with scroll-back, a send); the others need the live path (ws-edge and outbox-relay in
the stack) and fail, saying why, when the stack's /ws answers no STOMP CONNECT.
"""

from __future__ import annotations

import re
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from chat_testing.stack import Stack

from .conftest import Watched
from .network import Network

pytestmark = pytest.mark.browser


def unique(name: str) -> str:
    return f"{name}.{uuid.uuid4().hex[:8]}@example.com"


def send_rest(client: httpx.Client, session_id: str, content: str) -> dict[str, Any]:
    """A REST send that waits out the send rate limit (429 + Retry-After)."""
    body = {"sessionId": session_id, "content": content, "clientMessageId": str(uuid.uuid4())}
    for _ in range(50):
        answer = client.post("/api/chat/message", json=body)
        if answer.status_code == 429:
            time.sleep(float(answer.headers.get("retry-after", "1")))
            continue
        assert answer.status_code == 200, answer.text
        return dict(answer.json())
    raise AssertionError("rate limited for too long")


def open_session(client: httpx.Client, to: str, intent: str) -> str:
    """A chat of ``client``'s user with ``to`` (POST /api/chat/init): its session id."""
    opened = client.post("/api/chat/init", json={"toEmail": to, "intent": intent})
    assert opened.status_code == 200, opened.text
    return str(opened.json()["sessionId"])


def sign_in(watched: Watched, stack: Stack, email: str) -> None:
    page = watched.page
    page.goto(stack.gateway + "/")
    page.fill("#signin-email", email)
    page.click("#signin-form button[type=submit]")
    page.wait_for_function(
        "email => document.getElementById('whoami').textContent === email", arg=email
    )


def live_in_chat(
    stack: Stack, session_id: str, *pages: tuple[Watched, str], history: bool = False
) -> None:
    """Each page signed in as its email, live, with the chat ``session_id`` open (and, with
    ``history``, its first message shown)."""
    for watched, email in pages:
        sign_in(watched, stack, email)
        watched.page.wait_for_selector('#conn-status[data-state="live"]')
        watched.page.click(f'li.session[data-session-id="{session_id}"]')
        shown = '#messages li.msg[data-seq="1"]' if history else "#chat-body:not([hidden])"
        watched.page.wait_for_selector(shown)


def message_items(page: Any) -> list[dict[str, Any]]:
    return list(
        page.eval_on_selector_all(
            "#messages li.msg",
            """items => items.map(li => ({
                seq: li.dataset.seq ? Number(li.dataset.seq) : null,
                messageId: li.dataset.messageId || null,
                via: li.dataset.via || null,
                content: li.querySelector('.content').textContent,
                status: (li.querySelector('.status') || {}).textContent || null,
                mine: li.classList.contains('mine'),
            }))""",
        )
    )


def wait_for_status(page: Any, content: str, status: str, timeout: float = 15_000) -> None:
    page.wait_for_function(
        """([content, status]) => [...document.querySelectorAll('#messages li.msg')].some(li =>
            li.querySelector('.content').textContent === content &&
            li.querySelector('.status') && li.querySelector('.status').textContent === status)""",
        arg=[content, status],
        timeout=timeout,
    )


def badge(page: Any, session_id: str) -> str:
    return str(page.locator(f'li.session[data-session-id="{session_id}"] .badge').inner_text())


def test_sign_in_start_a_chat_and_scroll_back_through_history(
    stack: Stack, new_page: Any, artifacts: Path
) -> None:
    alice, bob, carol = unique("alice"), unique("bob"), unique("carol")
    with stack.api(alice) as alice_api, stack.api(bob) as bob_api:
        opened = alice_api.post("/api/chat/init", json={"toEmail": bob, "intent": "freelance"})
        assert opened.status_code == 200, opened.text
        session_id = opened.json()["sessionId"]
        for i in range(1, 56):  # more than one page (50) of history
            send_rest(bob_api, session_id, f"history message {i}")

        a = new_page()
        page = a.page
        sign_in(a, stack, alice)
        assert page.title() == "Chat"
        session = page.locator(f'li.session[data-session-id="{session_id}"]')
        session.wait_for()
        assert badge(page, session_id) == "55"

        session.click()
        page.wait_for_selector('#messages li.msg[data-seq="55"]')
        shown = [m["seq"] for m in message_items(page)]
        assert shown == list(range(6, 56))  # the newest page, oldest at the top
        # Scrolling to the top fetches the older page (the Link header's `before` cursor).
        page.eval_on_selector("#messages-scroll", "s => { s.scrollTop = 0; }")
        page.wait_for_selector('#messages li.msg[data-seq="1"]')
        items = message_items(page)
        assert [m["seq"] for m in items] == list(range(1, 56))
        assert [m["content"] for m in items] == [f"history message {i}" for i in range(1, 56)]
        assert not any(m["mine"] for m in items)

        # The open, visible conversation is marked read: the badge goes, Bob's messages show
        # as seen to Bob.
        page.wait_for_function(
            'id => document.querySelector(`li.session[data-session-id="${id}"] .badge`).hidden',
            arg=session_id,
        )
        deadline = time.monotonic() + 10
        while alice_api.get(f"/api/chat/{session_id}/unread").json()["count"] != 0:
            assert time.monotonic() < deadline, "the page did not mark the session read"
            time.sleep(0.2)
        newest = bob_api.get(f"/api/chat/{session_id}/history?limit=1").json()["messages"][0]
        assert newest["seq"] == 55
        assert newest["seen"] is True

        # A new chat from the page, and a message sent from the composer.
        page.fill("#start-email", carol)
        page.fill("#start-intent", "dating")
        page.click("#start-form button[type=submit]")
        page.wait_for_function(
            "() => document.getElementById('chat-title').textContent.startsWith('Carol')"
        )
        carol_sessions = alice_api.get("/api/chat/sessions").json()["sessions"]
        carol_session = next(s for s in carol_sessions if s["peer"]["email"] == carol)
        assert carol_session["intent"] == "dating"
        page.fill("#composer-input", "hello Carol, from the web client")
        page.press("#composer-input", "Enter")
        wait_for_status(page, "hello Carol, from the web client", "sent")
        assert page.input_value("#composer-input") == ""

    with stack.api(carol) as carol_api:
        history = carol_api.get(f"/api/chat/{carol_session['sessionId']}/history").json()
    assert [m["content"] for m in history["messages"]] == ["hello Carol, from the web client"]
    assert history["messages"][0]["senderEmail"] == alice
    page.screenshot(path=str(artifacts / "web-client-history.png"), full_page=True)
    a.check_clean()


def test_without_a_live_connection_the_page_still_chats_over_rest(
    stack: Stack, new_page: Any, artifacts: Path
) -> None:
    """Where neither WebSockets nor SockJS pass (a proxy that refuses the upgrade and /ws/),
    sends go over REST and the open conversation and its receipts are polled: slower, nothing
    missing."""
    alice, bob = unique("alice"), unique("bob")
    a, b = new_page(), new_page()
    for watched in (a, b):
        watched.page.route_web_socket(re.compile(r"/ws(/|$)"), lambda ws: ws.close())
        watched.page.route(re.compile(r"/ws/"), lambda route: route.abort())
    sign_in(a, stack, alice)
    sign_in(b, stack, bob)
    a.page.fill("#start-email", bob)
    a.page.fill("#start-intent", "freelance")
    a.page.click("#start-form button[type=submit]")
    a.page.wait_for_function(
        "() => document.getElementById('chat-title').textContent.startsWith('Bob')"
    )
    session_id = a.page.eval_on_selector(
        "li.session[aria-current=true]", "li => li.dataset.sessionId"
    )
    text = "no socket, still here"
    a.page.fill("#composer-input", text)
    a.page.press("#composer-input", "Enter")
    wait_for_status(a.page, text, "sent")
    assert a.page.get_attribute("#conn-status", "data-state") != "live"
    sent = next(m for m in message_items(a.page) if m["content"] == text)
    assert sent["via"] == "rest"

    b.page.wait_for_selector(f'li.session[data-session-id="{session_id}"] .badge:not([hidden])')
    b.page.click(f'li.session[data-session-id="{session_id}"]')
    b.page.wait_for_selector('#messages li.msg[data-seq="1"]')
    wait_for_status(a.page, text, "seen")
    b.page.fill("#composer-input", "answered over REST")
    b.page.press("#composer-input", "Enter")
    a.page.wait_for_selector('#messages li.msg[data-seq="2"]')
    got = next(m for m in message_items(a.page) if m["seq"] == 2)
    assert got["content"] == "answered over REST"
    assert got["via"] == "poll"
    a.page.screenshot(path=str(artifacts / "web-client-no-websocket.png"))
    a.check_clean()
    b.check_clean()


def test_a_message_typed_in_one_page_appears_in_the_other_and_is_seen(
    live_stack: Stack, new_page: Any, artifacts: Path
) -> None:
    alice, bob = unique("alice"), unique("bob")
    a, b = new_page(), new_page()
    sign_in(a, live_stack, alice)
    sign_in(b, live_stack, bob)
    for watched in (a, b):
        watched.page.wait_for_selector('#conn-status[data-state="live"]')

    # Alice starts the chat; Bob does not know the session yet.
    a.page.fill("#start-email", bob)
    a.page.fill("#start-intent", "dating")
    a.page.click("#start-form button[type=submit]")
    a.page.wait_for_function(
        "() => document.getElementById('chat-title').textContent.startsWith('Bob')"
    )
    session_id = a.page.eval_on_selector(
        "li.session[aria-current=true]", "li => li.dataset.sessionId"
    )

    text = "Hi Bob, this went over STOMP"
    a.page.fill("#composer-input", text)
    a.page.click("#composer button[type=submit]")
    wait_for_status(a.page, text, "sent")
    sent = next(m for m in message_items(a.page) if m["content"] == text)
    assert sent["mine"]

    # Bob: the new session shows up with one unread message, live.
    b.page.wait_for_selector(f'li.session[data-session-id="{session_id}"] .badge:not([hidden])')
    assert badge(b.page, session_id) == "1"
    # Before Bob opens it, the message reached his device: Alice sees "delivered".
    wait_for_status(a.page, text, "delivered")

    b.page.click(f'li.session[data-session-id="{session_id}"]')
    b.page.wait_for_function(
        "text => [...document.querySelectorAll('#messages li.msg .content')]"
        ".some(c => c.textContent === text)",
        arg=text,
    )
    # Bob's page shows it, so it is read: Alice sees "seen" (a receipt event, live).
    wait_for_status(a.page, text, "seen")

    # Typing reaches the peer, and so does the answer.
    b.page.type("#composer-input", "Hi Al", delay=30)
    a.page.wait_for_selector("#typing:not([hidden])")
    assert "typing" in a.page.inner_text("#typing")
    b.page.type("#composer-input", "ice, got it")
    b.page.press("#composer-input", "Enter")
    reply = "Hi Alice, got it"
    a.page.wait_for_function(
        "text => [...document.querySelectorAll('#messages li.msg .content')]"
        ".some(c => c.textContent === text)",
        arg=reply,
    )
    a.page.wait_for_selector("#typing", state="hidden")
    wait_for_status(b.page, reply, "seen")
    got = next(m for m in message_items(a.page) if m["content"] == reply)
    assert got["via"] == "live"
    assert [m["seq"] for m in message_items(a.page)] == [1, 2]
    assert [m["seq"] for m in message_items(b.page)] == [1, 2]

    a.page.screenshot(path=str(artifacts / "web-client-live-alice.png"))
    b.page.screenshot(path=str(artifacts / "web-client-live-bob.png"))
    a.check_clean()
    b.check_clean()


def topic_seqs(frames: list[str], session_id: str) -> list[int]:
    """The x-seq of each message frame on the session's topic, in the order they came."""
    seqs = []
    for frame in frames:
        head = frame.split("\n\n", 1)[0].split("\n")
        headers = dict(line.split(":", 1) for line in head[1:] if ":" in line)
        if (
            head[0] == "MESSAGE"
            and headers.get("destination") == f"/topic/session.{session_id}"
            and headers.get("x-event") == "message"
        ):
            seqs.append(int(headers["x-seq"]))
    return seqs


def test_the_page_reconnects_by_itself_and_misses_or_repeats_nothing(
    live_stack: Stack, new_page: Any, artifacts: Path
) -> None:
    alice, bob = unique("alice"), unique("bob")
    with live_stack.api(alice) as alice_api:
        opened = alice_api.post("/api/chat/init", json={"toEmail": bob, "intent": "rideshare"})
        session_id = opened.json()["sessionId"]
        send_rest(alice_api, session_id, "before the drop")

        b = new_page()
        page = b.page
        # cut below: whatever the page missed must come from the topic's resume
        network = Network(page)
        sign_in(b, live_stack, bob)
        page.wait_for_selector('#conn-status[data-state="live"]')
        page.click(f'li.session[data-session-id="{session_id}"]')
        page.wait_for_selector('#messages li.msg[data-seq="1"]')

        network.cut()
        page.wait_for_selector('#conn-status:not([data-state="live"])')
        for i in range(1, 6):
            send_rest(alice_api, session_id, f"while away {i}")
        time.sleep(1.5)  # a reconnect attempt or two fail meanwhile
        network.restore()
        page.wait_for_selector('#conn-status[data-state="live"]', timeout=30_000)
        send_rest(alice_api, session_id, "after the return")
        page.wait_for_selector('#messages li.msg[data-seq="7"]')

    items = message_items(page)
    assert [m["seq"] for m in items] == list(range(1, 8))
    assert [m["content"] for m in items] == [
        "before the drop",
        *(f"while away {i}" for i in range(1, 6)),
        "after the return",
    ]
    assert len({m["messageId"] for m in items}) == 7
    assert [m["via"] for m in items[1:]] == ["live"] * 6
    assert len(network.sockets) >= 2  # it did reconnect
    # On the wire: the new socket's topic replayed 2..6 once each, then 7 came live.
    assert topic_seqs(network.received[-1], session_id) == [2, 3, 4, 5, 6, 7]
    page.screenshot(path=str(artifacts / "web-client-reconnected.png"))
    b.check_clean()


def presence_text(page: Any, selector: str) -> str:
    return str(page.locator(selector).inner_text())


def test_the_peer_shows_online_then_last_seen(live_stack: Stack, new_page: Any) -> None:
    """Alice's page shows Bob online while his page is connected and "last seen" once he
    leaves, in the open chat's header and in her session list, pushed live."""
    alice, bob = unique("alice"), unique("bob")
    with httpx.Client(
        base_url=live_stack.gateway,
        headers={"Authorization": f"Bearer {live_stack.token(alice)}"},
        timeout=10,
    ) as client:
        session_id = client.post(
            "/api/chat/init", json={"toEmail": bob, "intent": "dating"}
        ).json()["sessionId"]
    a = new_page()
    sign_in(a, live_stack, alice)
    a.page.wait_for_selector('#conn-status[data-state="live"]')
    item = f'li.session[data-session-id="{session_id}"]'
    a.page.click(item)
    header, listed = "#chat-presence", f"{item} .presence"

    b = new_page()  # Bob comes: his edge tells his peers (Alice) he is online
    sign_in(b, live_stack, bob)
    a.page.wait_for_selector(f'{header}[data-state="online"]', timeout=15_000)
    a.page.wait_for_selector(f'{listed}[data-state="online"]')
    assert presence_text(a.page, header) == "online"

    b.page.close()  # Bob leaves: offline after the grace, with when he was last seen
    a.page.wait_for_selector(f'{header}[data-state="offline"]', timeout=20_000)
    a.page.wait_for_selector(f'{listed}[data-state="offline"]')
    assert presence_text(a.page, header).startswith("last seen ")
    a.check_clean()
