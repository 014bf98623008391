"""Editing and deleting messages in the web client, in headless Chromium, through a stack from
`make up`: the sender's actions, what the peer sees live and after a reload, refusals shown
inline, the changes' own seqs in the page's resume after a cut socket, and the REST path where
no live connection passes.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from chat_testing.stack import Stack

from .conftest import BROWSER_DATABASE_URL, Watched
from .network import Network
from .test_web_client import live_in_chat, message_items, open_session, send_rest, sign_in, unique

pytestmark = pytest.mark.browser


def item(page: Any, content: str) -> str:
    """The selector of the message bubble showing ``content``."""
    return f'#messages li.msg:has(> .content:text-is("{content}"))'


def edit_in_page(page: Any, old: str, new: str) -> None:
    page.click(f'{item(page, old)} button[data-action="edit"]')
    editor = page.locator("#messages form.editor textarea")
    assert editor.get_attribute("aria-label") is None  # labelled by its <label>
    assert page.locator("#messages form.editor label").inner_text() == "Edit message"
    # the keyboard is in the editor (waited for: a render the click raced may come between)
    page.wait_for_function(
        "() => document.activeElement?.matches('#messages form.editor textarea') ?? false",
        timeout=5_000,
    )
    editor.fill(new)
    editor.press("Enter")


def delete_in_page(page: Any, content: str, shot: Path | None = None) -> None:
    bubble = page.locator(item(page, content))
    bubble.locator('button[data-action="delete"]').click()
    confirm = bubble.locator(".confirm")
    assert confirm.inner_text().startswith("Delete this message for everyone?")
    if shot is not None:
        page.screenshot(path=str(shot))
    confirm.locator('button[data-action="confirm-delete"]').click()


def wait_edited(page: Any, content: str, timeout: float = 15_000) -> None:
    page.wait_for_selector(f"{item(page, content)} .meta .edited", timeout=timeout)


def wait_tombstone(page: Any, seq: int, timeout: float = 15_000) -> None:
    page.wait_for_selector(
        f'#messages li.msg.deleted[data-seq="{seq}"] .content.tombstone', timeout=timeout
    )


def bubbles(page: Any) -> list[dict[str, Any]]:
    """Each message bubble: seq, text, edited mark (its title), tombstone, actions offered."""
    return list(
        page.eval_on_selector_all(
            "#messages li.msg",
            """items => items.map(li => ({
                seq: Number(li.dataset.seq),
                content: li.querySelector('.content').textContent,
                edited: (li.querySelector('.meta .edited') || {}).title || null,
                deleted: li.classList.contains('deleted'),
                mine: li.classList.contains('mine'),
                actions: [...li.querySelectorAll('button[data-action]')].map(b =>
                    b.getAttribute('aria-label')),
            }))""",
        )
    )


def open_chat(watched: Watched, session_id: str) -> None:
    watched.page.click(f'li.session[data-session-id="{session_id}"]')
    watched.page.wait_for_selector('#messages li.msg[data-seq="1"]')


def stomp_frames(page: Any, sent: list[str]) -> None:
    """Keeps every STOMP frame the page sends on its WebSockets."""

    def on_socket(ws: Any) -> None:
        ws.on("framesent", lambda payload: sent.append(str(payload)))

    page.on("websocket", on_socket)


def api_calls(page: Any, calls: list[str]) -> None:
    page.on(
        "request",
        lambda request: (
            calls.append(f"{request.method} {request.url}") if "/api/chat/" in request.url else None
        ),
    )


def test_alice_edits_and_deletes_and_bob_sees_it_live_and_after_a_reload(
    live_stack: Stack, new_page: Any, artifacts: Path
) -> None:
    alice, bob = unique("alice"), unique("bob")
    with live_stack.api(alice) as alice_api:
        session_id = open_session(alice_api, bob, "dating")
    a, b = new_page(), new_page()
    frames: list[str] = []
    calls: list[str] = []
    stomp_frames(a.page, frames)
    api_calls(a.page, calls)
    live_in_chat(live_stack, session_id, (a, alice), (b, bob))
    for text in ("see you at 7", "a typo I regret", "third"):
        a.page.fill("#composer-input", text)
        a.page.press("#composer-input", "Enter")
        b.page.wait_for_selector(item(b.page, text))

    # Actions only on my own messages, with labels.
    mine = bubbles(a.page)
    assert [m["actions"] for m in mine] == [["Edit message", "Delete message for everyone"]] * 3
    assert all(m["actions"] == [] for m in bubbles(b.page))

    # Alice edits: over the live connection, and Bob's page changes in place.
    edit_in_page(a.page, "see you at 7", "see you at 8")
    wait_edited(a.page, "see you at 8")
    wait_edited(b.page, "see you at 8")
    assert any("destination:/app/chat.edit" in f and "receipt:" in f for f in frames)
    assert not any(c.startswith(("PATCH", "DELETE")) for c in calls)
    edited = next(m for m in bubbles(b.page) if m["seq"] == 1)
    assert edited["content"] == "see you at 8"
    assert edited["edited"] is not None
    assert edited["edited"].startswith("edited ")
    assert not a.page.locator("#messages form.editor").count()  # the editor closed
    focused = (
        "document.activeElement.closest('li.msg')?.dataset.seq + ' '"
        " + document.activeElement.getAttribute('aria-label')"
    )
    assert a.page.evaluate(focused) == "1 Edit message"  # the keyboard is back where it was

    # Alice deletes, after a confirm step: a tombstone on both pages, the text gone.
    delete_in_page(a.page, "a typo I regret", artifacts / "web-client-delete-confirm.png")
    for page in (a.page, b.page):
        wait_tombstone(page, 2)
        assert "a typo I regret" not in page.inner_text("#messages")
        tombstone = next(m for m in bubbles(page) if m["seq"] == 2)
        assert tombstone["content"] == "message deleted"
        assert tombstone["actions"] == []
    assert any("destination:/app/chat.delete" in f for f in frames)
    assert a.page.evaluate("document.activeElement.id") == "composer-input"

    # The changes took seqs 4 and 5; a new message after them still gets read ("seen"), so the
    # page's last contiguous seq went past the changes.
    a.page.fill("#composer-input", "after the changes")
    a.page.press("#composer-input", "Enter")
    b.page.wait_for_selector(item(b.page, "after the changes"))
    assert [m["seq"] for m in bubbles(b.page)] == [1, 2, 3, 6]
    a.page.wait_for_function(
        """() => [...document.querySelectorAll('#messages li.msg')].some(li =>
            li.dataset.seq === '6' && li.querySelector('.status').textContent === 'seen')"""
    )
    a.page.screenshot(path=str(artifacts / "web-client-edit-delete-alice.png"))
    b.page.screenshot(path=str(artifacts / "web-client-edit-delete-bob.png"))

    # After a reload, history says the same.
    for watched in (a, b):
        watched.page.reload()
        watched.page.wait_for_selector(f'li.session[data-session-id="{session_id}"]')
        open_chat(watched, session_id)
        watched.page.wait_for_selector('#messages li.msg[data-seq="6"]')
        shown = bubbles(watched.page)
        assert [m["seq"] for m in shown] == [1, 2, 3, 6]
        assert [m["content"] for m in shown] == [
            "see you at 8",
            "message deleted",
            "third",
            "after the changes",
        ]
        assert [m["edited"] is not None for m in shown] == [True, False, False, False]
        assert [m["deleted"] for m in shown] == [False, True, False, False]
    assert all(m["actions"] == [] for m in bubbles(b.page))
    preview = b.page.inner_text(f'li.session[data-session-id="{session_id}"] .preview')
    assert preview == "after the changes"

    # Bob's own message can be edited by him; Alice's cannot, not even forced over REST.
    b.page.fill("#composer-input", "from Bob")
    b.page.press("#composer-input", "Enter")
    b.page.wait_for_selector('#messages li.msg[data-seq="7"]')
    bob_item = next(m for m in bubbles(b.page) if m["seq"] == 7)
    assert bob_item["actions"] == ["Edit message", "Delete message for everyone"]
    history = alice_history(live_stack, alice, session_id)
    alices = next(m for m in history if m["seq"] == 3)
    with live_stack.api(bob) as bob_api:
        path = f"/api/chat/{session_id}/messages/{alices['messageId']}"
        patched = bob_api.patch(path, json={"content": "mine now", "clientMessageId": cid()})
        deleted = bob_api.request("DELETE", path, json={"clientMessageId": cid()})
    for answer in (patched, deleted):
        assert answer.status_code == 403, answer.text
        assert answer.json()["code"] == "NOT_MESSAGE_SENDER"
    # Unchanged (the pages encrypt by default: then its envelope is the same).
    assert next(m for m in alice_history(live_stack, alice, session_id) if m["seq"] == 3) == alices
    a.check_clean()
    b.check_clean()


def cid() -> str:
    return str(uuid.uuid4())


def alice_history(stack: Stack, email: str, session_id: str) -> list[dict[str, Any]]:
    with stack.api(email) as client:
        answer = client.get(f"/api/chat/{session_id}/history")
        assert answer.status_code == 200, answer.text
        return list(answer.json()["messages"])


async def _backdate(message_id: str, seconds: int) -> None:
    conn = await asyncpg.connect(BROWSER_DATABASE_URL)
    try:
        await conn.execute(
            "UPDATE chat_messages SET sent_at = sent_at - make_interval(secs => $2) WHERE id = $1",
            uuid.UUID(message_id),
            float(seconds),
        )
    finally:
        await conn.close()


def test_refusals_show_inline_and_a_message_deleted_elsewhere_closes_the_editor(
    live_stack: Stack, new_page: Any, artifacts: Path
) -> None:
    alice, bob = unique("alice"), unique("bob")
    with live_stack.api(alice) as alice_api:
        session_id = open_session(alice_api, bob, "freelance")
        old = send_rest(alice_api, session_id, "sent long ago")
        fresh = send_rest(alice_api, session_id, "sent just now")
    # An hour old: past the edit window (EDIT_WINDOW_SECONDS, 900 s).
    # (In a thread of its own: sync Playwright holds an event loop in this one.)
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, _backdate(old["messageId"], 3600)).result()

    a = new_page()
    sign_in(a, live_stack, alice)
    a.page.wait_for_selector('#conn-status[data-state="live"]')
    open_chat(a, session_id)
    a.page.wait_for_selector('#messages li.msg[data-seq="2"]')

    # The server refuses the edit (over STOMP: /user/queue/error): the reason shows under the
    # message, the text stays.
    edit_in_page(a.page, "sent long ago", "too late")
    error = a.page.locator('#messages li.msg[data-seq="1"] .change-error')
    error.wait_for()
    assert error.get_attribute("data-code") == "EDIT_WINDOW_CLOSED"
    assert error.get_attribute("role") == "alert"
    assert "time to edit this message has passed" in error.inner_text()
    assert a.page.locator(item(a.page, "sent long ago")).count() == 1
    assert not a.page.locator("#messages form.editor").count()
    a.page.screenshot(path=str(artifacts / "web-client-edit-refused.png"))
    a.page.click('#messages li.msg[data-seq="1"] button[data-action="dismiss"]')
    a.page.wait_for_selector('#messages li.msg[data-seq="1"] .change-error', state="detached")
    # A delete has no window.
    delete_in_page(a.page, "sent long ago")
    wait_tombstone(a.page, 1)

    # Escape leaves the editor unsaved, the focus back on the message's Edit button.
    a.page.click(f'{item(a.page, "sent just now")} button[data-action="edit"]')
    a.page.fill("#messages form.editor textarea", "never mind")
    a.page.screenshot(path=str(artifacts / "web-client-editing.png"))
    a.page.press("#messages form.editor textarea", "Escape")
    a.page.wait_for_selector("#messages form.editor", state="detached")
    assert a.page.locator(item(a.page, "sent just now")).count() == 1
    assert a.page.evaluate("document.activeElement.getAttribute('aria-label')") == "Edit message"

    # Alice's other device deletes the message she is editing here: the editor closes, and
    # the tombstone shows; her draft is not sent.
    a.page.click(f'{item(a.page, "sent just now")} button[data-action="edit"]')
    a.page.fill("#messages form.editor textarea", "a draft never saved")
    with live_stack.api(alice) as alice_api:
        path = f"/api/chat/{session_id}/messages/{fresh['messageId']}"
        gone = alice_api.request("DELETE", path, json={"clientMessageId": cid()})
        assert gone.status_code == 200, gone.text
    wait_tombstone(a.page, 2)
    assert not a.page.locator("#messages form.editor").count()
    # It was the chat's last message: the list's preview says so, without the text.
    preview = a.page.locator(f'li.session[data-session-id="{session_id}"] .preview')
    assert preview.inner_text() == "You: message deleted"
    with live_stack.api(alice) as alice_api:
        history = alice_api.get(f"/api/chat/{session_id}/history").json()["messages"]
        # A deleted message is refused: MESSAGE_DELETED.
        refused = alice_api.patch(path, json={"content": "again", "clientMessageId": cid()})
    assert [(m["seq"], m["deleted"], m["content"]) for m in history] == [
        (2, True, ""),
        (1, True, ""),
    ]
    assert refused.status_code == 409
    assert refused.json()["code"] == "MESSAGE_DELETED"
    a.check_clean()


def topic_events(frames: list[str], session_id: str) -> list[tuple[str, int]]:
    """(x-event, x-seq) of each event on the session's topic, in the order they came."""
    seen = []
    for frame in frames:
        head = frame.split("\n\n", 1)[0].split("\n")
        headers = dict(line.split(":", 1) for line in head[1:] if ":" in line)
        topic = headers.get("destination") == f"/topic/session.{session_id}"
        if head[0] == "MESSAGE" and topic and "x-seq" in headers:
            seen.append((headers["x-event"], int(headers["x-seq"])))
    return seen


def test_changes_missed_while_away_come_once_from_the_resume(
    live_stack: Stack, new_page: Any, artifacts: Path
) -> None:
    """The page counts the changes' seqs among the seqs it holds: it resumes after the last
    one, so a change it already has is not replayed and one it missed is not lost."""
    alice, bob = unique("alice"), unique("bob")
    with live_stack.api(alice) as alice_api:
        session_id = open_session(alice_api, bob, "rideshare")
        first = send_rest(alice_api, session_id, "first")  # seq 1

        b = new_page()
        page = b.page
        network = Network(page)
        sign_in(b, live_stack, bob)
        page.wait_for_selector('#conn-status[data-state="live"]')
        open_chat(b, session_id)

        path = f"/api/chat/{session_id}/messages/{first['messageId']}"
        edit = alice_api.patch(path, json={"content": "first, edited", "clientMessageId": cid()})
        assert edit.status_code == 200, edit.text
        assert edit.json()["seq"] == 2
        wait_edited(page, "first, edited")  # seq 2 came live

        network.cut()
        page.wait_for_selector('#conn-status:not([data-state="live"])')
        second = send_rest(alice_api, session_id, "second")  # seq 3
        path2 = f"/api/chat/{session_id}/messages/{second['messageId']}"
        body = {"content": "second, edited", "clientMessageId": cid()}
        edited = alice_api.patch(path2, json=body)
        assert edited.json()["seq"] == 4, edited.text
        deleted = alice_api.request("DELETE", path, json={"clientMessageId": cid()})
        assert deleted.json()["seq"] == 5, deleted.text
        time.sleep(1.5)  # a reconnect attempt or two fail meanwhile
        network.restore()
        page.wait_for_selector('#conn-status[data-state="live"]', timeout=30_000)
        send_rest(alice_api, session_id, "third")  # seq 6
        page.wait_for_selector('#messages li.msg[data-seq="6"]')
        wait_tombstone(page, 1)
        wait_edited(page, "second, edited")

    shown = bubbles(page)
    assert [(m["seq"], m["content"]) for m in shown] == [
        (1, "message deleted"),
        (3, "second, edited"),
        (6, "third"),
    ]
    assert len(network.sockets) >= 2
    subscribes = [f for f in network.sent if f.startswith("SUBSCRIBE") and "/topic/session." in f]
    # The new socket's SUBSCRIBE resumed after seq 2 (the edit held), not after 1 (the last
    # message): the edit was not replayed, and everything after it came once, in order.
    assert "x-resume-after-seq:2" in subscribes[-1].split("\n\n", 1)[0].split("\n")
    assert topic_events(network.received[-1], session_id) == [
        ("message", 3),
        ("edit", 4),
        ("delete", 5),
        ("message", 6),
    ]
    page.screenshot(path=str(artifacts / "web-client-changes-resumed.png"))
    b.check_clean()


def test_without_a_live_connection_edits_and_deletes_go_over_rest(
    stack: Stack, new_page: Any
) -> None:
    """Where no live connection passes, a change goes over REST (PATCH / DELETE) and the peer's
    page learns of it by polling the session's events."""
    alice, bob = unique("alice"), unique("bob")
    with httpx.Client(
        base_url=stack.gateway,
        headers={"Authorization": f"Bearer {stack.token(alice)}"},
        timeout=10,
    ) as client:
        session_id = open_session(client, bob, "dating")
        send_rest(client, session_id, "over REST")
        send_rest(client, session_id, "also over REST")
    a, b = new_page(), new_page()
    calls: list[str] = []
    api_calls(a.page, calls)
    for watched in (a, b):
        watched.page.route_web_socket(re.compile(r"/ws(/|$)"), lambda ws: ws.close())
        watched.page.route(re.compile(r"/ws/"), lambda route: route.abort())
    sign_in(a, stack, alice)
    sign_in(b, stack, bob)
    open_chat(a, session_id)
    open_chat(b, session_id)
    b.page.wait_for_selector('#messages li.msg[data-seq="2"]')

    edit_in_page(a.page, "over REST", "over REST, edited")
    wait_edited(a.page, "over REST, edited")
    delete_in_page(a.page, "also over REST")
    wait_tombstone(a.page, 2)
    assert any(c.startswith("PATCH ") and "/messages/" in c for c in calls)
    assert any(c.startswith("DELETE ") and "/messages/" in c for c in calls)
    # Bob's page polls /events: both changes arrive, no more bubbles than messages.
    wait_edited(b.page, "over REST, edited", timeout=20_000)
    wait_tombstone(b.page, 2, timeout=20_000)
    assert [m["seq"] for m in message_items(b.page)] == [1, 2]
    assert b.page.get_attribute("#conn-status", "data-state") != "live"
    a.check_clean()
    b.check_clean()


def test_over_sockjs_edits_and_deletes_go_live_the_same_way(
    live_stack: Stack, new_page: Any
) -> None:
    """Pages without WebSockets (SockJS): the changes go as STOMP SENDs over SockJS, not REST,
    and reach the peer live."""
    alice, bob = unique("alice"), unique("bob")
    with live_stack.api(alice) as alice_api:
        session_id = open_session(alice_api, bob, "dating")
        send_rest(alice_api, session_id, "over SockJS")
        send_rest(alice_api, session_id, "soon gone")
    a, b = new_page(), new_page()
    calls: list[str] = []
    api_calls(a.page, calls)
    opened: list[str] = []
    for watched in (a, b):
        watched.page.add_init_script("delete window.WebSocket;")
        watched.page.on("websocket", lambda ws: opened.append(ws.url))
    for watched, email in ((a, alice), (b, bob)):
        sign_in(watched, live_stack, email)
        watched.page.wait_for_selector('#conn-status[data-state="live"]', timeout=20_000)
        assert watched.page.get_attribute("#conn-status", "data-transport") == "sockjs"
        open_chat(watched, session_id)
        watched.page.wait_for_selector('#messages li.msg[data-seq="2"]')

    edit_in_page(a.page, "over SockJS", "over SockJS, edited")
    wait_edited(b.page, "over SockJS, edited")
    delete_in_page(a.page, "soon gone")
    wait_tombstone(b.page, 2)
    wait_tombstone(a.page, 2)
    assert not any(c.startswith(("PATCH", "DELETE")) for c in calls)
    assert opened == []
    assert [m["seq"] for m in bubbles(b.page)] == [1, 2]
    a.check_clean()
    b.check_clean()
