"""A deleted account in the web client, in headless Chromium, through a stack from `make up`:
Alice and Bob chat live, then FlairBit deletes Bob and tells chat. Alice's page shows the chat
closed at once (banner, "Deleted user", the composer shut, no block, edit, presence or
encryption controls, Bob's messages as tombstones of the placeholder, the list's marker), stays
live for her other chats (the refused topic is never asked for), and keeps all that after a
reload; Bob's page says his account was deleted, signed out, and does not reconnect.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from chat_testing.stack import Stack

from .conftest import Watched
from .network import Network
from .test_block import arrives_live, say, topic_frames
from .test_edit_delete import stomp_frames
from .test_web_client import live_in_chat, message_items, open_session, send_rest, unique

pytestmark = pytest.mark.browser

WAIT = 10_000  # ms: every live change here takes milliseconds
QUIET_SECONDS = 4.0  # longer than stompjs's first reconnect delays (1 s, 2 s)
CLOSED_TEXT = " deleted their account. This chat is closed."


def delete_account(stack: Stack, email: str) -> dict[str, Any]:
    """FlairBit deletes the user, then tells chat (with its service JWT)."""
    gone = httpx.delete(f"{stack.flairbit}/dev/users/{email}", timeout=5)
    assert gone.status_code == 204, gone.text
    token = httpx.post(f"{stack.flairbit}/dev/service-token", timeout=5).json()["token"]
    answer = httpx.post(
        f"{stack.gateway}/internal/flairbit/user-deleted",
        json={"email": email},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def sockets_opened(watched: Watched) -> list[str]:
    """The URL of every WebSocket the page opens, from now on."""
    opened: list[str] = []
    watched.page.on("websocket", lambda ws: opened.append(ws.url))
    return opened


def refusals(watched: Watched) -> list[str]:
    """Every request of the page answered 4xx or 5xx, from now on (the console names none)."""
    refused: list[str] = []
    watched.page.on(
        "response",
        lambda r: (
            refused.append(f"{r.status} {r.request.method} {r.url}") if r.status >= 400 else None
        ),
    )
    return refused


def keys_kept(watched: Watched, email: str) -> int:
    """How many things the page's IndexedDB keeps for ``email``: its key pair and its pins."""
    return int(
        watched.page.evaluate(
            """email => new Promise((resolve, reject) => {
                const open = indexedDB.open('chat-e2ee');
                open.onerror = () => reject(open.error);
                open.onsuccess = () => {
                    const tx = open.result.transaction(['devices', 'pins']);
                    const device = tx.objectStore('devices').count(email);
                    const pins = tx.objectStore('pins').count(
                        IDBKeyRange.bound(email + '\\n', email + '\\n\\uffff'));
                    tx.oncomplete = () => {
                        open.result.close();
                        resolve(device.result + pins.result);
                    };
                };
            })""",
            email,
        )
    )


def closed_state(watched: Watched, session_id: str) -> dict[str, Any]:
    """What the page shows of the open chat and its entry in the session list."""
    return dict(
        watched.page.evaluate(
            """sessionId => {
                const banner = document.getElementById('closed-banner');
                const item = document.querySelector(`li.session[data-session-id="${sessionId}"]`);
                const mark = item && item.querySelector('.closed-mark');
                const input = document.getElementById('composer-input');
                return {
                    banner: banner.hidden ? null : banner.textContent,
                    title: document.getElementById('chat-title').textContent,
                    listed: item ? item.querySelector('.peer').textContent : null,
                    mark: mark ? mark.textContent : null,
                    markTitle: mark ? mark.title : null,
                    composer: !input.disabled,
                    placeholder: input.placeholder,
                    send: !document.querySelector('#composer button[type=submit]').disabled,
                    blockToggle: !document.getElementById('block-toggle').hidden,
                    blockBanner: !document.getElementById('block-banner').hidden,
                    encryptionBar: !document.getElementById('e2ee').hidden,
                    presence: document.getElementById('chat-presence').textContent,
                    typing: !document.getElementById('typing').hidden,
                    actions: [...document.querySelectorAll('#messages button[data-action]')]
                        .filter(b => b.offsetParent !== null).length,
                    alert: document.getElementById('alert').hidden
                        ? null : document.getElementById('alert').textContent,
                };
            }""",
            session_id,
        )
    )


def tombstones(watched: Watched) -> list[dict[str, Any]]:
    return list(
        watched.page.eval_on_selector_all(
            "#messages li.msg",
            """items => items.map(li => ({
                seq: Number(li.dataset.seq),
                mine: li.classList.contains('mine'),
                deleted: li.dataset.deleted === 'true',
                sender: li.dataset.sender,
                content: li.querySelector('.content').textContent,
            }))""",
        )
    )


def check_closed(watched: Watched, session_id: str, banner: str) -> None:
    seen = closed_state(watched, session_id)
    assert seen["banner"] == banner, seen
    assert seen["title"] == "Deleted user"
    assert seen["listed"] == "Deleted user"
    assert seen["mark"] == "closed"
    assert seen["markTitle"] == banner
    assert not seen["composer"]
    assert not seen["send"]
    assert seen["placeholder"] == "This chat is closed"
    assert not seen["blockToggle"]
    assert not seen["blockBanner"]
    assert not seen["encryptionBar"]
    assert seen["presence"] == ""
    assert not seen["typing"]
    assert seen["actions"] == 0  # no Edit / Delete on her messages either
    assert seen["alert"] is None
    # Bob's messages: tombstones of the placeholder; Alice's as they were.
    shown = tombstones(watched)
    assert [m["seq"] for m in shown] == [1, 2, 3]
    theirs = [m for m in shown if not m["mine"]]
    assert len(theirs) == 2
    for m in theirs:
        assert m["deleted"]
        assert m["sender"] == "Deleted user"
        assert m["content"] == "message deleted"
    [mine] = [m for m in shown if m["mine"]]
    assert (mine["deleted"], mine["content"]) == (False, "hi Bob")


def test_bob_deletes_his_account_and_both_pages_follow(
    live_stack: Stack, new_page: Any, artifacts: Path
) -> None:
    alice, bob, carol = unique("alice"), unique("bob"), unique("carol")
    with live_stack.api(alice) as alice_api:
        session_id = open_session(alice_api, bob, "dating")
    with live_stack.api(carol) as carol_api:
        other_id = carol_api.post(
            "/api/chat/init", json={"toEmail": alice, "intent": "freelance"}
        ).json()["sessionId"]
    chat = f'li.session[data-session-id="{session_id}"]'
    other = f'li.session[data-session-id="{other_id}"]'
    a, b = new_page(), new_page()
    frames_a: list[str] = []
    stomp_frames(a.page, frames_a)
    sockets_a, sockets_b = sockets_opened(a), sockets_opened(b)
    refused = {"alice": refusals(a), "bob": refusals(b)}
    live_in_chat(live_stack, session_id, (a, alice), (b, bob))

    # They chat live (encrypted: both pages published a key).
    say(a, "hi Bob")
    arrives_live(b, "hi Bob")
    say(b, "hi Alice")
    arrives_live(a, "hi Alice")
    say(b, "I am leaving")
    arrives_live(a, "I am leaving")
    a.page.wait_for_selector('#chat-presence[data-state="online"]', timeout=WAIT)
    name = a.page.inner_text("#chat-title")
    assert name != "Deleted user"
    assert closed_state(a, session_id)["banner"] is None
    assert len(sockets_a) == len(sockets_b) == 1
    assert keys_kept(b, bob) >= 2  # his key pair, and Alice's keys pinned

    report = delete_account(live_stack, bob)
    assert report["sessionsClosed"] == 1
    assert report["messagesErased"] == 2

    # Bob's page: signed out, saying why, and no reconnect.
    notice = b.page.locator("#signin-notice")
    notice.wait_for(state="visible", timeout=WAIT)
    assert notice.locator("h2").inner_text() == "This account was deleted."
    assert bob in notice.inner_text()
    assert b.page.locator("#signin-view").is_visible()
    assert b.page.locator("#chat-view").is_hidden()
    assert b.page.locator("#alert").is_hidden()
    assert b.page.input_value("#signin-email") == ""
    deadline = time.monotonic() + 5
    while keys_kept(b, bob) and time.monotonic() < deadline:  # forgotten by the browser too
        time.sleep(0.1)
    assert keys_kept(b, bob) == 0
    b.page.screenshot(path=str(artifacts / "web-client-account-deleted.png"))

    # Alice's page: the chat is closed, live.
    a.page.wait_for_selector("#closed-banner:not([hidden])", timeout=WAIT)
    a.page.wait_for_selector('#messages li.msg[data-sender="Deleted user"][data-deleted="true"]')
    a.page.wait_for_function(
        "() => document.querySelectorAll('#messages li.msg[data-deleted=\"true\"]').length === 2",
        timeout=WAIT,
    )
    a.page.wait_for_function(
        "sel => document.querySelector(sel + ' .peer').textContent === 'Deleted user'",
        arg=chat,
        timeout=WAIT,
    )
    check_closed(a, session_id, name + CLOSED_TEXT)
    # The topic's subscription ended with the `closed` frame and was given back.
    assert topic_frames(frames_a, "UNSUBSCRIBE", session_id) >= 1
    a.page.screenshot(path=str(artifacts / "web-client-closed-alice.png"))

    # Alice's connection lives on: Carol's message in their chat arrives live, without a new
    # socket, then in that chat, opened, a second one on its topic.
    with live_stack.api(carol) as carol_api:
        send_rest(carol_api, other_id, "hello from Carol")
        a.page.wait_for_function(
            "sel => document.querySelector(sel + ' .badge').textContent === '1'",
            arg=other,
            timeout=WAIT,
        )
        assert "hello from Carol" in a.page.inner_text(other)
        a.page.click(other)
        a.page.wait_for_selector('#messages li.msg[data-seq="1"]')
        assert closed_state(a, other_id)["banner"] is None
        assert a.page.locator("#composer-input").is_enabled()
        send_rest(carol_api, other_id, "still there?")
        arrives_live(a, "still there?")
    assert a.page.locator("#conn-status").get_attribute("data-state") == "live"
    assert len(sockets_a) == 1  # never reconnected

    # Bob's page stayed signed out: no socket opened since the deletion, nor after a reload.
    time.sleep(QUIET_SECONDS)
    assert len(sockets_b) == 1, sockets_b
    b.page.reload()
    b.page.locator("#signin-notice").wait_for(state="visible")
    assert b.page.locator("#chat-view").is_hidden()
    time.sleep(1.5)
    assert len(sockets_b) == 1, sockets_b

    # Alice reloads: the same closed state, its topic never asked for, no error.
    frames_a.clear()
    a.page.reload()
    a.page.wait_for_selector('#conn-status[data-state="live"]')
    a.page.click(chat)
    a.page.wait_for_selector('#messages li.msg[data-seq="3"]')
    a.page.wait_for_selector("#closed-banner:not([hidden])")
    # The name was this page's memory: after a reload the server's placeholder is all there is.
    check_closed(a, session_id, "The other person" + CLOSED_TEXT)
    a.page.click(other)
    a.page.wait_for_selector('#messages li.msg[data-seq="2"]')
    with live_stack.api(carol) as carol_api:
        send_rest(carol_api, other_id, "after your reload")
    arrives_live(a, "after your reload")
    a.page.click(chat)
    a.page.wait_for_selector('#messages li.msg[data-seq="3"]')
    a.page.wait_for_selector("#closed-banner:not([hidden])")
    assert topic_frames(frames_a, "SUBSCRIBE", session_id) == 0
    assert topic_frames(frames_a, "SUBSCRIBE", other_id) == 1
    assert len(sockets_a) == 2  # the reload's, and no other
    assert a.page.locator("#conn-status").get_attribute("data-state") == "live"
    assert [m["content"] for m in message_items(a.page) if m["mine"]] == ["hi Bob"]

    assert refused == {"alice": [], "bob": []}
    for watched in (a, b):
        watched.check_clean()
        assert not [c for c in watched.console if c.startswith("error:")], watched.console


def test_a_chat_closed_while_the_page_was_away_shows_once_it_is_back(
    live_stack: Stack, new_page: Any
) -> None:
    """Alice's page is cut off while Bob's account is deleted: back, its resume SUBSCRIBE to the
    topic is refused (SESSION_CLOSED, which closes that connection) or the session list says
    CLOSED first; either way the page shows the chat closed, with no error, and is live again
    without asking for the topic again."""
    alice, bob = unique("alice"), unique("bob")
    with live_stack.api(alice) as alice_api:
        session_id = open_session(alice_api, bob, "rideshare")
    with live_stack.api(bob) as bob_api:
        send_rest(bob_api, session_id, "see you at the station")
    a, b = new_page(), new_page()
    frames_a: list[str] = []
    stomp_frames(a.page, frames_a)
    network = Network(a.page)
    live_in_chat(live_stack, session_id, (a, alice), (b, bob), history=True)

    network.cut()
    a.page.wait_for_selector('#conn-status:not([data-state="live"])')
    delete_account(live_stack, bob)
    b.page.locator("#signin-notice").wait_for(state="visible", timeout=WAIT)
    frames_a.clear()
    network.restore()

    a.page.wait_for_selector("#closed-banner:not([hidden])", timeout=30_000)
    a.page.wait_for_selector('#conn-status[data-state="live"]', timeout=WAIT)
    a.page.wait_for_selector(
        '#messages li.msg[data-seq="1"][data-deleted="true"][data-sender="Deleted user"]',
        timeout=WAIT,
    )
    seen = closed_state(a, session_id)
    assert seen["banner"] is not None
    assert seen["banner"].endswith(CLOSED_TEXT)
    assert seen["mark"] == "closed"
    assert not seen["composer"]
    assert seen["alert"] is None  # the refused SUBSCRIBE is no error to show
    # Live again, and it stays so: at most the one refused resume, no SUBSCRIBE after it.
    time.sleep(QUIET_SECONDS)
    assert a.page.locator("#conn-status").get_attribute("data-state") == "live"
    assert topic_frames(frames_a, "SUBSCRIBE", session_id) <= 1
    reconnects = len(network.sockets)
    time.sleep(2)
    assert len(network.sockets) == reconnects
    assert closed_state(a, session_id)["alert"] is None
    for watched in (a, b):
        watched.check_clean()
