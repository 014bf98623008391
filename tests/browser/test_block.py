"""Blocking in the web client, in headless Chromium, through a stack from `make up`: Alice
blocks Bob in their chat (after a confirm), both pages show who blocks, Bob's composer shuts and
a send of his is refused, the state survives a reload, and Alice's unblock brings both pages
back to live without one.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from chat_testing.stack import Stack

from .conftest import Watched
from .network import Network
from .test_edit_delete import item, stomp_frames
from .test_web_client import live_in_chat, message_items, open_session, send_rest, unique

pytestmark = pytest.mark.browser

WAIT = 10_000  # ms: every live change here takes milliseconds


def say(watched: Watched, text: str) -> None:
    watched.page.fill("#composer-input", text)
    watched.page.press("#composer-input", "Enter")


def arrives_live(watched: Watched, text: str) -> None:
    """``text`` shows up in the page, and it came over the live connection."""
    watched.page.wait_for_selector(item(watched.page, text), timeout=WAIT)
    got = next(m for m in message_items(watched.page) if m["content"] == text)
    assert got["via"] == "live", got


def state_of(watched: Watched, session_id: str) -> dict[str, Any]:
    """What the page shows of the open chat's block state."""
    return dict(
        watched.page.evaluate(
            """sessionId => {
                const toggle = document.getElementById('block-toggle');
                const banner = document.getElementById('block-banner');
                const mark = document.querySelector(
                    `li.session[data-session-id="${sessionId}"] .blocked-mark`);
                return {
                    toggle: toggle.hidden ? null : toggle.textContent,
                    banner: banner.hidden ? null : banner.textContent,
                    by: banner.dataset.by,
                    composer: !document.getElementById('composer-input').disabled,
                    send: !document.querySelector('#composer button[type=submit]').disabled,
                    mark: mark ? mark.dataset.by : null,
                    presence: document.getElementById('chat-presence').textContent,
                };
            }""",
            session_id,
        )
    )


def topic_frames(frames: list[str], command: str, session_id: str) -> int:
    return sum(1 for f in frames if f.startswith(command + "\n") and f"session-{session_id}" in f)


def check_blocked(stack: Stack, a: Watched, b: Watched, bob: str, session_id: str) -> None:
    """Alice's page (a) shows that she blocks Bob, with Unblock; Bob's (b) that he is blocked,
    without; both composers are shut, no presence shows, and Bob's send through the API is
    refused (403 SESSION_BLOCKED) with nothing reaching Alice's page."""
    seen_a, seen_b = state_of(a, session_id), state_of(b, session_id)
    assert seen_a["toggle"] == "Unblock"
    assert seen_a["banner"].startswith("You blocked ")
    assert seen_a["mark"] == "me"
    assert seen_b["toggle"] == "Block"  # no Unblock for the one blocked
    assert seen_b["banner"].endswith(" blocked you. You can't send messages in this chat.")
    assert seen_b["mark"] == "peer"
    for seen in (seen_a, seen_b):
        assert seen["presence"] == ""  # no presence shown for the blocked peer
        assert not seen["composer"]
        assert not seen["send"]
    for watched in (a, b):  # nor edits or deletes of one's messages
        assert watched.page.locator("#messages button[data-action]:visible").count() == 0

    text = f"can you hear me {uuid.uuid4().hex[:6]}"
    body = {"sessionId": session_id, "content": text, "clientMessageId": str(uuid.uuid4())}
    with stack.api(bob) as bob_api:
        answer = bob_api.post("/api/chat/message", json=body)
    assert answer.status_code == 403, answer.text
    assert answer.json()["code"] == "SESSION_BLOCKED"
    time.sleep(0.5)  # (a message would reach the page in milliseconds)
    assert text not in a.page.inner_text("#messages")
    assert [m["content"] for m in message_items(a.page)] == ["hi Bob", "hi Alice"]


def test_alice_blocks_bob_then_unblocks_and_both_pages_follow_live(
    live_stack: Stack, new_page: Any, artifacts: Path
) -> None:
    alice, bob = unique("alice"), unique("bob")
    with live_stack.api(alice) as alice_api:
        session_id = open_session(alice_api, bob, "dating")
    a, b = new_page(), new_page()
    frames_a: list[str] = []
    frames_b: list[str] = []
    stomp_frames(a.page, frames_a)
    stomp_frames(b.page, frames_b)
    chat = f'li.session[data-session-id="{session_id}"]'
    live_in_chat(live_stack, session_id, (a, alice), (b, bob))

    # They chat live; Alice sees Bob online.
    say(a, "hi Bob")
    arrives_live(b, "hi Bob")
    say(b, "hi Alice")
    arrives_live(a, "hi Alice")
    a.page.wait_for_selector('#chat-presence[data-state="online"]', timeout=WAIT)
    assert state_of(a, session_id)["toggle"] == "Block"

    # Alice blocks Bob, after a confirm that starts on "Cancel".
    a.page.click("#block-toggle")
    confirm = a.page.locator("#block-confirm")
    confirm.wait_for(state="visible")
    assert confirm.inner_text().startswith("Block ")
    assert a.page.evaluate("document.activeElement.textContent") == "Cancel"
    a.page.screenshot(path=str(artifacts / "web-client-block-confirm.png"))
    confirm.locator('button[data-action="confirm-block"]').click()

    # Both pages: blocked, who blocks, the composer shut; Alice alone may unblock.
    a.page.wait_for_selector('#block-banner[data-by="me"]', timeout=WAIT)
    b.page.wait_for_selector('#block-banner[data-by="peer"]', timeout=WAIT)
    check_blocked(live_stack, a, b, bob, session_id)
    # Each page gave the topic's subscription back when its last frame (block) came.
    assert topic_frames(frames_a, "UNSUBSCRIBE", session_id) >= 1
    assert topic_frames(frames_b, "UNSUBSCRIBE", session_id) >= 1
    b.page.screenshot(path=str(artifacts / "web-client-blocked-bob.png"))

    # After a reload: the same, and neither page asks for the blocked topic.
    frames_a.clear()
    frames_b.clear()
    for watched in (a, b):
        watched.page.reload()
        watched.page.wait_for_selector('#conn-status[data-state="live"]')
        watched.page.click(chat)
        watched.page.wait_for_selector('#messages li.msg[data-seq="2"]')
    a.page.wait_for_selector('#block-banner[data-by="me"]', timeout=WAIT)
    b.page.wait_for_selector('#block-banner[data-by="peer"]', timeout=WAIT)
    check_blocked(live_stack, a, b, bob, session_id)
    assert topic_frames(frames_a, "SUBSCRIBE", session_id) == 0
    assert topic_frames(frames_b, "SUBSCRIBE", session_id) == 0

    # Alice unblocks: both pages are open and live again, no reload. Her DELETE's answer is
    # held until the live `unblock` event has drawn her page (an order a busy server can take):
    # the control names the request under way until the answer comes.
    held: list[tuple[Any, Any]] = []
    a.page.route("**/api/chat/*/block", lambda route: held.append((route, route.fetch())))
    a.page.click("#block-toggle")
    a.page.wait_for_selector("#block-banner", state="hidden", timeout=WAIT)
    assert state_of(a, session_id)["toggle"] == "Unblocking…"
    assert a.page.locator("#block-toggle").is_disabled()
    deadline = time.monotonic() + WAIT / 1000
    while not held and time.monotonic() < deadline:
        a.page.wait_for_timeout(50)  # lets playwright run the route's handler
    assert len(held) == 1
    route, answer = held[0]
    route.fulfill(response=answer)
    a.page.unroute("**/api/chat/*/block")
    for watched in (a, b):
        watched.page.wait_for_selector("#block-banner", state="hidden", timeout=WAIT)
        watched.page.wait_for_selector("#composer-input:not([disabled])", timeout=WAIT)
        watched.page.wait_for_selector(f"{chat} .blocked-mark", state="detached", timeout=WAIT)
        # The live `unblock` event may draw the page before the DELETE's answer comes: the
        # control says "Unblocking…" until then, and is back to "Block" after.
        watched.page.wait_for_selector("#block-toggle:not([disabled])", timeout=WAIT)
        assert state_of(watched, session_id)["toggle"] == "Block"
    say(b, "back again")
    arrives_live(a, "back again")
    say(a, "welcome back")
    arrives_live(b, "welcome back")
    a.page.wait_for_selector('#chat-presence[data-state="online"]', timeout=WAIT)
    # Both followed the topic again: the peer on the unblock event, Alice on hers.
    assert topic_frames(frames_a, "SUBSCRIBE", session_id) == 1
    assert topic_frames(frames_b, "SUBSCRIBE", session_id) == 1
    assert [m["seq"] for m in message_items(b.page)] == [1, 2, 3, 4]
    a.page.screenshot(path=str(artifacts / "web-client-unblocked-alice.png"))
    for watched in (a, b):
        watched.check_clean()
        assert not [c for c in watched.console if c.startswith("error:")], watched.console


def test_a_block_while_the_page_was_away_shows_once_it_is_back(
    live_stack: Stack, new_page: Any
) -> None:
    """Bob's page is cut off while Alice blocks him: back, its resume SUBSCRIBE to the topic is
    refused (or a stale one ended), and it shows the block from the session list, with no error
    left on the page; Alice's unblock then brings it back to live."""
    alice, bob = unique("alice"), unique("bob")
    with live_stack.api(alice) as alice_api:
        session_id = open_session(alice_api, bob, "freelance")
        send_rest(alice_api, session_id, "before the drop")
    a, b = new_page(), new_page()
    network = Network(b.page)
    live_in_chat(live_stack, session_id, (a, alice), (b, bob), history=True)

    network.cut()
    b.page.wait_for_selector('#conn-status:not([data-state="live"])')
    a.page.click("#block-toggle")
    a.page.click('#block-confirm button[data-action="confirm-block"]')
    a.page.wait_for_selector('#block-banner[data-by="me"]', timeout=WAIT)
    network.restore()

    b.page.wait_for_selector('#block-banner[data-by="peer"]', timeout=30_000)
    b.page.wait_for_selector('#conn-status[data-state="live"]', timeout=WAIT)
    assert b.page.locator("#composer-input").is_disabled()
    alert = b.page.locator("#alert")
    assert alert.is_hidden(), alert.inner_text()  # the refused SUBSCRIBE is no error to show

    a.page.click("#block-toggle")
    b.page.wait_for_selector("#block-banner", state="hidden", timeout=WAIT)
    say(a, "still there?")
    arrives_live(b, "still there?")
    b.page.wait_for_selector('#conn-status[data-state="live"]', timeout=WAIT)
    for watched in (a, b):
        watched.check_clean()
