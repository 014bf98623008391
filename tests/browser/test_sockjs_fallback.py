"""The web client where WebSockets do not work: it falls back to SockJS at /ws and chats live.

Chromium has no switch that turns WebSockets off, so the pages get a script that runs before
any of theirs (Playwright's init script: CDP ``Page.addScriptToEvaluateOnNewDocument``) and
removes ``window.WebSocket``, as in a browser without them; every test also checks that the
page opened no WebSocket at all. Another test lets WebSockets exist but has the network close
every one of them, as a proxy that refuses the upgrade does.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest

from chat_testing.stack import Stack

from .conftest import Watched
from .test_web_client import message_items, send_rest, sign_in, unique, wait_for_status

pytestmark = pytest.mark.browser

NO_WEBSOCKET = "delete window.WebSocket;"


def without_websockets(watched: Watched) -> list[str]:
    """Removes WebSocket from every document of the page; returns the WebSockets it opens
    (which must stay none)."""
    opened: list[str] = []
    watched.page.add_init_script(NO_WEBSOCKET)
    watched.page.on("websocket", lambda ws: opened.append(ws.url))
    return opened


def wait_live(page: Any, timeout: float = 20_000) -> dict[str, str]:
    """Waits for the live connection; answers what the page says carries it."""
    page.wait_for_selector('#conn-status[data-state="live"]', timeout=timeout)
    return dict(
        page.eval_on_selector(
            "#conn-status",
            """p => ({transport: p.dataset.transport, sockjs: p.dataset.sockjsTransport,
                      text: p.textContent, title: p.title})""",
        )
    )


def shows(page: Any, text: str, timeout: float = 15_000) -> None:
    page.wait_for_function(
        "text => [...document.querySelectorAll('#messages li.msg .content')]"
        ".some(c => c.textContent === text)",
        arg=text,
        timeout=timeout,
    )


def open_chat_with(page: Any, email: str, intent: str) -> str:
    page.fill("#start-email", email)
    page.fill("#start-intent", intent)
    page.click("#start-form button[type=submit]")
    page.wait_for_function(
        "() => document.querySelector('li.session[aria-current=true]') !== null"
        " && document.getElementById('chat-title').textContent !== ''"
    )
    return str(page.eval_on_selector("li.session[aria-current=true]", "li => li.dataset.sessionId"))


def test_without_websockets_two_people_chat_live_over_sockjs(
    live_stack: Stack, new_page: Any, artifacts: Path
) -> None:
    alice, bob = unique("alice"), unique("bob")
    a, b = new_page(), new_page()
    opened = [without_websockets(a), without_websockets(b)]
    sign_in(a, live_stack, alice)
    sign_in(b, live_stack, bob)
    for watched in (a, b):
        assert watched.page.evaluate("typeof window.WebSocket") == "undefined"
        carried = wait_live(watched.page)
        assert carried["transport"] == "sockjs"
        # No WebSocket in the browser: SockJS streams over XHR.
        assert carried["sockjs"] == "xhr-streaming"
        assert carried["text"] == "live (SockJS)"
        assert "SockJS (xhr-streaming)" in carried["title"]

    session_id = open_chat_with(a.page, bob, "dating")
    text = "Hi Bob, no WebSocket here"
    a.page.fill("#composer-input", text)
    a.page.press("#composer-input", "Enter")
    wait_for_status(a.page, text, "sent")

    # Bob's page hears of the new session and its message live, and says it was delivered.
    b.page.wait_for_selector(f'li.session[data-session-id="{session_id}"] .badge:not([hidden])')
    wait_for_status(a.page, text, "delivered")
    b.page.click(f'li.session[data-session-id="{session_id}"]')
    shows(b.page, text)
    wait_for_status(a.page, text, "seen")

    # Typing and the answer go the other way.
    b.page.type("#composer-input", "Hi Al", delay=30)
    a.page.wait_for_selector("#typing:not([hidden])")
    b.page.type("#composer-input", "ice, over SockJS too")
    b.page.press("#composer-input", "Enter")
    reply = "Hi Alice, over SockJS too"
    shows(a.page, reply)
    wait_for_status(b.page, reply, "seen")

    # A few more each way, quickly: all arrive live, in order, once.
    for i in range(1, 4):
        a.page.fill("#composer-input", f"a{i}")
        a.page.press("#composer-input", "Enter")
        b.page.fill("#composer-input", f"b{i}")
        b.page.press("#composer-input", "Enter")
    for page in (a.page, b.page):
        page.wait_for_selector('#messages li.msg[data-seq="8"]')
    peer_wrote = {
        "a": [reply, "b1", "b2", "b3"],  # what Alice's page got from Bob
        "b": [text, "a1", "a2", "a3"],
    }
    for who, page in (("a", a.page), ("b", b.page)):
        items = message_items(page)
        assert [m["seq"] for m in items] == list(range(1, 9))
        assert len({m["messageId"] for m in items}) == 8
        got = [m for m in items if not m["mine"]]
        assert [m["content"] for m in got] == peer_wrote[who]
        # What the peer wrote came over the live connection, not a poll (Bob's first one came
        # with the history when he opened the chat).
        assert {m["via"] for m in got if m["seq"] > 1} == {"live"}
    assert opened == [[], []]
    a.page.screenshot(path=str(artifacts / "web-client-sockjs-alice.png"))
    b.page.screenshot(path=str(artifacts / "web-client-sockjs-bob.png"))
    a.check_clean()
    b.check_clean()


def test_websockets_that_never_open_fall_back_to_sockjs(live_stack: Stack, new_page: Any) -> None:
    """WebSockets exist but the network closes each one before it carries anything (a proxy
    that refuses the upgrade): the page tries one, then chats over SockJS's XHR transports."""
    alice, bob = unique("alice"), unique("bob")
    with live_stack.api(alice) as alice_api:
        session_id = alice_api.post(
            "/api/chat/init", json={"toEmail": bob, "intent": "freelance"}
        ).json()["sessionId"]
        b = new_page()
        refused: list[str] = []

        def refuse(ws: Any) -> None:
            refused.append(ws.url)
            ws.close()

        b.page.route_web_socket(re.compile(r"/ws(/|$)"), refuse)
        sign_in(b, live_stack, bob)
        carried = wait_live(b.page)
        assert carried["transport"] == "sockjs"
        assert carried["sockjs"] == "xhr-streaming"
        # The page's own WebSocket to /ws, then SockJS's to /ws/<server>/<session>/websocket.
        assert refused[0].endswith("/ws")
        assert all(re.search(r"/ws/[^/]+/[^/]+/websocket$", url) for url in refused[1:])

        b.page.click(f'li.session[data-session-id="{session_id}"]')
        send_rest(alice_api, session_id, "through the proxy")
        shows(b.page, "through the proxy")
        got = next(m for m in message_items(b.page) if m["seq"] == 1)
        assert got["via"] == "live"
        b.page.fill("#composer-input", "and back")
        b.page.press("#composer-input", "Enter")
        wait_for_status(b.page, "and back", "sent")
        history = alice_api.get(f"/api/chat/{session_id}/history").json()["messages"]
        assert [m["content"] for m in history] == ["and back", "through the proxy"]
    b.check_clean()


def test_over_sockjs_the_page_reconnects_and_misses_or_repeats_nothing(
    live_stack: Stack, new_page: Any, artifacts: Path
) -> None:
    """The network goes away under a SockJS connection: messages sent meanwhile come from the
    topic's resume (x-resume-after-seq) once the page is back, over SockJS again."""
    alice, bob = unique("alice"), unique("bob")
    with live_stack.api(alice) as alice_api:
        session_id = alice_api.post(
            "/api/chat/init", json={"toEmail": bob, "intent": "rideshare"}
        ).json()["sessionId"]
        send_rest(alice_api, session_id, "before the drop")

        b = new_page()
        page = b.page
        opened = without_websockets(b)
        # Every request of the page goes through here, so the test can cut them all: while the
        # network is "down" the page can neither reconnect nor poll, and whatever it missed
        # must come from the topic's resume once it is back.
        down = {"api": False, "ws": False}
        sockjs_sessions: set[str] = set()

        def route_all(route: Any) -> None:
            url = route.request.url
            if down["api" if "/api/" in url else "ws"]:
                route.abort("internetdisconnected")
                return
            found = re.search(r"/ws/[^/]+/([^/]+)/xhr", url)
            if found:
                sockjs_sessions.add(found.group(1))
            route.continue_()

        page.route(re.compile(r"/(api|ws)/"), route_all)
        sign_in(b, live_stack, bob)
        assert wait_live(page)["transport"] == "sockjs"
        page.click(f'li.session[data-session-id="{session_id}"]')
        page.wait_for_selector('#messages li.msg[data-seq="1"]')
        assert len(sockjs_sessions) == 1

        # The network goes: the page's stream breaks and nothing new gets through.
        down.update(api=True, ws=True)
        page.context.set_offline(True)
        page.wait_for_selector('#conn-status:not([data-state="live"])', timeout=30_000)
        for i in range(1, 6):
            send_rest(alice_api, session_id, f"while away {i}")
        time.sleep(1.5)  # a reconnect attempt or two fail meanwhile
        # Back, but REST still cut until the page is live: what it missed can only come from
        # the topic's resume.
        down["ws"] = False
        page.context.set_offline(False)
        assert wait_live(page, timeout=40_000)["transport"] == "sockjs"
        page.wait_for_selector('#messages li.msg[data-seq="6"]')
        down["api"] = False
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
    assert len(sockjs_sessions) >= 2  # a new SockJS session: it did reconnect
    assert opened == []
    page.screenshot(path=str(artifacts / "web-client-sockjs-reconnected.png"))
    b.check_clean()


def test_where_streaming_is_refused_too_sockjs_long_polls(live_stack: Stack, new_page: Any) -> None:
    """Where streaming does not pass either (a proxy that refuses it), SockJS goes on to long
    polling, and the conversation stays live both ways."""
    alice, bob = unique("alice"), unique("bob")
    with live_stack.api(alice) as alice_api:
        session_id = alice_api.post(
            "/api/chat/init", json={"toEmail": bob, "intent": "dating"}
        ).json()["sessionId"]
    pages = {alice: new_page(), bob: new_page()}
    opened, refused = [], []
    for email, watched in pages.items():
        opened.append(without_websockets(watched))

        def refuse(route: Any) -> None:
            refused.append(route.request.url)
            route.abort()

        watched.page.route(re.compile(r"/ws/[^/]+/[^/]+/xhr_streaming(\?|$)"), refuse)
        sign_in(watched, live_stack, email)
        carried = wait_live(watched.page)
        assert (carried["transport"], carried["sockjs"]) == ("sockjs", "xhr-polling")
        watched.page.click(f'li.session[data-session-id="{session_id}"]')
    assert len(refused) >= 2  # each page tried streaming first
    a, b = pages[alice].page, pages[bob].page

    for sender, receiver, text in ((a, b, "hello over long polling"), (b, a, "and back")):
        sender.fill("#composer-input", text)
        sender.press("#composer-input", "Enter")
        wait_for_status(sender, text, "sent")
        shows(receiver, text)
        got = next(m for m in message_items(receiver) if m["content"] == text)
        assert got["via"] == "live"
    wait_for_status(a, "hello over long polling", "seen")
    assert opened == [[], []]
    for watched in pages.values():
        watched.check_clean()
