"""End-to-end encryption in the web client, in headless Chromium, through a stack from
`make up`: both pages publish a key at sign-in, show each other's fingerprints (the server's,
and each other's view), exchange encrypted messages live, edit and delete one; the tables
hold no plaintext; a peer's new key is a warning; a message not sealed for this device says
so; after a reload the history still decrypts with the key kept in IndexedDB.
"""

from __future__ import annotations

import asyncio
import base64
import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from chat_testing.stack import Stack

from .conftest import BROWSER_DATABASE_URL, Watched
from .test_edit_delete import delete_in_page, edit_in_page, item, wait_edited, wait_tombstone
from .test_web_client import open_session, sign_in, unique

pytestmark = pytest.mark.browser

ALG = "ECDH-P256-HKDF-SHA256+A256GCM"


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# The page's scheme (e2ee.js), written again with `cryptography`: what another client does.
def _kek(
    private: ec.EllipticCurvePrivateKey, peer: bytes, ephemeral: bytes, recipient: bytes
) -> bytes:
    point = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), peer)
    shared = private.exchange(ec.ECDH(), point)
    info = b"chat-e2ee/v1 content key"
    return HKDF(hashes.SHA256(), 32, salt=ephemeral + recipient, info=info).derive(shared)


def _raw(public: ec.EllipticCurvePublicKey) -> bytes:
    return public.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )


def seal(
    text: str, session_id: str, sender_key_id: str, devices: list[tuple[str, str, bytes]]
) -> dict[str, Any]:
    """An envelope for each (email, keyId, raw public key), as the page makes one."""
    content_key, nonce = AESGCM.generate_key(256), os.urandom(12)
    ephemeral = ec.generate_private_key(ec.SECP256R1())
    ephemeral_raw = _raw(ephemeral.public_key())
    recipients = []
    for email, key_id, public in devices:
        kek = _kek(ephemeral, public, ephemeral_raw, public)
        wrapped = AESGCM(kek).encrypt(b"\0" * 12, content_key, f"{email}\n{key_id}".encode())
        recipients.append(
            {"email": email, "keyId": key_id, "wrappedKey": b64(ephemeral_raw + wrapped)}
        )
    aad = f"chat-e2ee/v1 message\n{session_id}".encode()
    return {
        "alg": ALG,
        "senderKeyId": sender_key_id,
        "recipients": recipients,
        "nonce": b64(nonce),
        "ciphertext": b64(AESGCM(content_key).encrypt(nonce, text.encode(), aad)),
    }


def open_envelope(
    envelope: dict[str, Any],
    session_id: str,
    email: str,
    key_id: str,
    private: ec.EllipticCurvePrivateKey,
) -> str:
    [mine] = [r for r in envelope["recipients"] if (r["email"], r["keyId"]) == (email, key_id)]
    blob = unb64(mine["wrappedKey"])
    kek = _kek(private, blob[:65], blob[:65], _raw(private.public_key()))
    content_key = AESGCM(kek).decrypt(b"\0" * 12, blob[65:], f"{email}\n{key_id}".encode())
    aad = f"chat-e2ee/v1 message\n{session_id}".encode()
    plain = AESGCM(content_key).decrypt(
        unb64(envelope["nonce"]), unb64(envelope["ciphertext"]), aad
    )
    return plain.decode()


def server_keys(client: httpx.Client, session_id: str) -> dict[str, dict[str, str]]:
    """The session's keys as the server reports them: email -> {keyId: fingerprint}."""
    answer = client.get(f"/api/chat/{session_id}/keys")
    assert answer.status_code == 200, answer.text
    return {
        user["email"]: {key["keyId"]: key["fingerprint"] for key in user["keys"]}
        for user in answer.json()["participants"]
    }


def own_keys(client: httpx.Client, within: float = 15.0) -> dict[str, str]:
    """The caller's published keys, once there is one (the page publishes at sign-in)."""
    deadline = time.monotonic() + within
    while True:
        answer = client.get("/api/chat/keys")
        assert answer.status_code == 200, answer.text
        keys = {k["keyId"]: k["fingerprint"] for k in answer.json()["keys"]}
        if keys or time.monotonic() > deadline:
            return keys
        time.sleep(0.2)


def shown_keys(page: Any) -> list[dict[str, str]]:
    return list(
        page.eval_on_selector_all(
            "#e2ee-keys li.e2ee-key",
            """items => items.map(li => ({
                whose: li.dataset.whose, email: li.dataset.email, keyId: li.dataset.keyId,
                fingerprint: li.querySelector('.fingerprint').textContent,
            }))""",
        )
    )


def bubbles(page: Any) -> list[dict[str, Any]]:
    return list(
        page.eval_on_selector_all(
            "#messages li.msg",
            """items => items.map(li => ({
                seq: Number(li.dataset.seq),
                content: li.querySelector('.content').textContent,
                encrypted: li.dataset.encrypted === 'true',
                mark: (li.querySelector('.meta .e2ee-mark') || {}).textContent || null,
                deleted: li.classList.contains('deleted'),
                undecryptable: !!li.querySelector('.content.undecryptable'),
            }))""",
        )
    )


def say(page: Any, text: str) -> None:
    page.fill("#composer-input", text)
    page.press("#composer-input", "Enter")


def wait_shown(page: Any, text: str, timeout: float = 15_000) -> None:
    page.wait_for_selector(f'{item(page, text)}[data-encrypted="true"]', timeout=timeout)


async def _stored_rows(session_id: str) -> list[dict[str, Any]]:
    conn = await asyncpg.connect(BROWSER_DATABASE_URL)
    try:
        rows = []
        for table in ("chat_messages", "chat_message_changes"):
            for row in await conn.fetch(
                f"SELECT *, t::text AS whole FROM {table} t WHERE session_id = $1",
                uuid.UUID(session_id),
            ):
                rows.append({"table": table, **dict(row)})
        return rows
    finally:
        await conn.close()


def stored_rows(session_id: str) -> list[dict[str, Any]]:
    with ThreadPoolExecutor(1) as pool:  # the page's loop owns this thread
        return pool.submit(asyncio.run, _stored_rows(session_id)).result()


def test_two_people_chat_end_to_end_encrypted(
    live_stack: Stack, new_page: Any, artifacts: Path
) -> None:
    alice, bob = unique("alice"), unique("bob")
    a, b = new_page(), new_page()
    for watched, email in ((a, alice), (b, bob)):
        sign_in(watched, live_stack, email)
        watched.page.wait_for_selector('#conn-status[data-state="live"]')
    alice_api, bob_api = live_stack.api(alice), live_stack.api(bob)
    with alice_api, bob_api:
        # Each page published one key of its own at sign-in.
        alice_keys, bob_keys = own_keys(alice_api), own_keys(bob_api)
        assert len(alice_keys) == 1, alice_keys
        assert len(bob_keys) == 1, bob_keys
        [(alice_key, alice_fp)] = alice_keys.items()
        [(bob_key, bob_fp)] = bob_keys.items()
        assert alice_key.startswith("web-")

        # Alice opens a chat with Bob in her page; encryption is on: both have keys.
        a.page.fill("#start-email", bob)
        a.page.fill("#start-intent", "dating")
        a.page.click("#start-form button[type=submit]")
        a.page.wait_for_selector("#chat-body:not([hidden])")
        a.page.wait_for_selector('#e2ee-toggle[aria-pressed="true"]')
        session_id = a.page.get_attribute('li.session[aria-current="true"]', "data-session-id")
        assert session_id
        assert server_keys(alice_api, session_id) == {alice: alice_keys, bob: bob_keys}

        say(a.page, "the plan: meet at the old mill")
        wait_shown(a.page, "the plan: meet at the old mill")
        # Bob's list learns of the chat from the message; his preview cannot show the text.
        b.page.wait_for_selector(f'li.session[data-session-id="{session_id}"]')
        b.page.click(f'li.session[data-session-id="{session_id}"]')
        b.page.wait_for_selector('#e2ee-toggle[aria-pressed="true"]')
        wait_shown(b.page, "the plan: meet at the old mill")

        # Fingerprints: each page shows its own and the peer's, as the server reports them,
        # and Alice's view of Bob's key is Bob's own view of it.
        for page in (a.page, b.page):
            page.click("#e2ee-details summary")
            page.wait_for_selector("#e2ee-keys li.e2ee-key .fingerprint", state="visible")
        seen_by_alice = {k["whose"]: k for k in shown_keys(a.page)}
        seen_by_bob = {k["whose"]: k for k in shown_keys(b.page)}
        assert set(seen_by_alice) == set(seen_by_bob) == {"own", "peer"}
        assert (seen_by_alice["own"]["keyId"], seen_by_alice["own"]["fingerprint"]) == (
            alice_key,
            alice_fp,
        )
        assert (seen_by_alice["peer"]["email"], seen_by_alice["peer"]["fingerprint"]) == (
            bob,
            bob_fp,
        )
        assert seen_by_bob["own"]["fingerprint"] == seen_by_alice["peer"]["fingerprint"]
        assert seen_by_bob["peer"]["fingerprint"] == seen_by_alice["own"]["fingerprint"]
        assert len(alice_fp.split(" ")) == 16

        # Messages both ways, live, shown decrypted with the mark.
        say(b.page, "ok, bring the map")
        wait_shown(a.page, "ok, bring the map")
        say(a.page, "a secret I will take back")
        say(a.page, "and one more thing")
        for text in ("a secret I will take back", "and one more thing"):
            wait_shown(b.page, text)
        for page in (a.page, b.page):
            shown = bubbles(page)
            assert [m["seq"] for m in shown] == [1, 2, 3, 4]
            assert all(m["encrypted"] and m["mark"] == "encrypted" for m in shown)
        preview = f'li.session[data-session-id="{session_id}"] .preview'
        assert a.page.inner_text(preview) == "You: and one more thing"  # decrypted by the page
        assert a.page.get_attribute(preview, "class") == "preview encrypted"  # with a lock

        # Alice edits one (Bob sees the new text) and deletes another (a tombstone on both).
        edit_in_page(a.page, "the plan: meet at the old mill", "the plan: meet at the new bridge")
        wait_edited(b.page, "the plan: meet at the new bridge")
        wait_edited(a.page, "the plan: meet at the new bridge")
        delete_in_page(a.page, "a secret I will take back")
        for page in (a.page, b.page):
            wait_tombstone(page, 3)
            assert "a secret I will take back" not in page.inner_text("#messages")

        # The tables hold envelopes, never the texts (not as text, hex or base64).
        history = bob_api.get(f"/api/chat/{session_id}/history").json()["messages"]
        assert all(m["content"] == "" for m in history)
        envelopes = {m["seq"]: m["encrypted"] for m in history if not m.get("deleted")}
        assert set(envelopes) == {1, 2, 4}
        assert all(e["alg"] == ALG for e in envelopes.values())
        assert {(r["email"], r["keyId"]) for r in envelopes[2]["recipients"]} == {
            (alice, alice_key),
            (bob, bob_key),
        }
        assert envelopes[2]["senderKeyId"] == bob_key
        rows = stored_rows(session_id)
        assert {r["table"] for r in rows} == {"chat_messages", "chat_message_changes"}
        texts = [
            "the plan: meet at the old mill",
            "the plan: meet at the new bridge",
            "ok, bring the map",
            "a secret I will take back",
            "and one more thing",
            "old mill",
            "new bridge",
        ]
        for row in rows:
            assert row["content"] is None, row
            whole = row["whole"]
            envelope = bytes(row["encrypted"]).decode() if row["encrypted"] is not None else ""
            for text in texts:
                for form in (text, text.encode().hex(), b64(text.encode())):
                    assert form not in whole, (row["table"], text)
                    assert form not in envelope, (row["table"], text)
        edits = [r for r in rows if r["table"] == "chat_message_changes" and r["kind"] == "edit"]
        assert len(edits) == 1
        assert edits[0]["encrypted"] is not None

        # Bob has a new key (another device): Alice's page warns, with its fingerprint, and
        # encrypts to it from then on.
        tablet = ec.generate_private_key(ec.SECP256R1())
        new_public = _raw(tablet.public_key())
        put = bob_api.put(
            "/api/chat/keys/bob-tablet",
            json={"algorithm": "ECDH-P256", "publicKey": b64(new_public)},
        )
        assert put.status_code == 201, put.text
        tablet_fp = put.json()["fingerprint"]
        warning = a.page.wait_for_selector("#e2ee-warnings li.e2ee-warning", timeout=15_000)
        assert warning is not None
        assert bob in warning.inner_text()
        assert tablet_fp in warning.inner_text()
        a.page.wait_for_selector('#e2ee-keys li.e2ee-key[data-key-id="bob-tablet"]')
        a.page.screenshot(path=str(artifacts / "web-client-encryption-alice.png"))
        say(a.page, "did you get a new phone?")
        wait_shown(b.page, "did you get a new phone?")
        latest = bob_api.get(f"/api/chat/{session_id}/history?limit=1").json()["messages"][0]
        assert {r["keyId"] for r in latest["encrypted"]["recipients"]} == {
            alice_key,
            bob_key,
            "bob-tablet",
        }
        # The scheme is the documented one: another client (Bob's tablet, here in Python)
        # opens what the page sealed, and the pages open what it seals.
        text = open_envelope(latest["encrypted"], session_id, bob, "bob-tablet", tablet)
        assert text == "did you get a new phone?"
        published = {
            (user["email"], key["keyId"]): unb64(key["publicKey"])
            for user in bob_api.get(f"/api/chat/{session_id}/keys").json()["participants"]
            for key in user["keys"]
        }
        from_tablet = seal(
            "yes, writing from it",
            session_id,
            "bob-tablet",
            [(email, key_id, raw) for (email, key_id), raw in published.items()],
        )
        answer = bob_api.post(
            "/api/chat/message",
            json={
                "sessionId": session_id,
                "encrypted": from_tablet,
                "clientMessageId": str(uuid.uuid4()),
            },
        )
        assert answer.status_code == 200, answer.text
        for page in (a.page, b.page):
            wait_shown(page, "yes, writing from it")

        # A message sealed for Bob's tablet alone: Alice's page says it cannot open it.
        sealed_elsewhere = {
            "alg": ALG,
            "senderKeyId": "bob-tablet",
            "recipients": [
                {"email": bob, "keyId": "bob-tablet", "wrappedKey": b64(os.urandom(113))}
            ],
            "nonce": b64(os.urandom(12)),
            "ciphertext": b64(os.urandom(40)),
        }
        sent = bob_api.post(
            "/api/chat/message",
            json={
                "sessionId": session_id,
                "encrypted": sealed_elsewhere,
                "clientMessageId": str(uuid.uuid4()),
            },
        )
        assert sent.status_code == 200, sent.text
        unreadable = f'#messages li.msg[data-seq="{sent.json()["seq"]}"] .content.undecryptable'
        a.page.wait_for_selector(unreadable)
        assert a.page.inner_text(unreadable) == "cannot decrypt (no key for this device)"
        say(a.page, "see you there")
        wait_shown(b.page, "see you there")
        b.page.screenshot(path=str(artifacts / "web-client-encryption-bob.png"))

    # After a reload, the key comes from IndexedDB (not a new one) and history decrypts.
    expected = [
        "the plan: meet at the new bridge",
        "ok, bring the map",
        "message deleted",
        "and one more thing",
        "did you get a new phone?",
        "yes, writing from it",
        "cannot decrypt (no key for this device)",
        "see you there",
    ]
    for watched in (a, b):
        reopen(watched, session_id)
    shown = bubbles(a.page)
    assert [m["content"] for m in shown] == expected
    assert [m["undecryptable"] for m in shown] == [False] * 6 + [True, False]
    assert all(m["encrypted"] for m in shown if not m["deleted"])
    assert [m["content"] for m in bubbles(b.page)] == expected
    # The list carries no envelope (`encrypted: true`): the preview is decrypted from the
    # newest history entry.
    preview = f'li.session[data-session-id="{session_id}"] .preview'
    b.page.wait_for_function(
        "s => document.querySelector(s).textContent === 'see you there'", arg=preview
    )
    assert b.page.get_attribute(preview, "class") == "preview encrypted"
    with live_stack.api(alice) as again:
        assert own_keys(again) == {alice_key: alice_fp}
    # The private key in IndexedDB is a CryptoKey that cannot be exported.
    stored = a.page.evaluate(
        """email => new Promise((resolve, reject) => {
            const opening = indexedDB.open("chat-e2ee");
            opening.onerror = () => reject(opening.error);
            opening.onsuccess = () => {
                const get = opening.result.transaction("devices").objectStore("devices").get(email);
                get.onsuccess = async () => {
                    const key = get.result.privateKey;
                    let exported = null;
                    try { await crypto.subtle.exportKey("pkcs8", key); exported = "yes"; }
                    catch (err) { exported = err.name; }
                    resolve({keyId: get.result.keyId, type: key.type,
                             extractable: key.extractable, exported});
                };
            };
        })""",
        alice,
    )
    assert stored == {
        "keyId": alice_key,
        "type": "private",
        "extractable": False,
        "exported": "InvalidAccessError",
    }
    a.check_clean()
    b.check_clean()


def reopen(watched: Watched, session_id: str) -> None:
    page = watched.page
    page.reload()
    page.wait_for_selector(f'li.session[data-session-id="{session_id}"]')
    page.click(f'li.session[data-session-id="{session_id}"]')
    page.wait_for_selector('#messages li.msg[data-seq="1"]')
    page.wait_for_function(
        """() => document.querySelectorAll('#messages li.msg .content.decrypting').length === 0
            && document.querySelectorAll('#messages li.msg').length >= 8"""
    )


def test_encryption_can_be_turned_off_per_chat_and_plain_messages_say_so(
    live_stack: Stack, new_page: Any
) -> None:
    alice, bob = unique("alice"), unique("bob")
    a, b = new_page(), new_page()
    with live_stack.api(alice) as alice_api:
        session_id = open_session(alice_api, bob, "freelance")
    # Bob has no key yet: encryption is off, and cannot be turned on.
    sign_in(a, live_stack, alice)
    a.page.click(f'li.session[data-session-id="{session_id}"]')
    a.page.wait_for_selector("#e2ee:not([hidden])")
    a.page.wait_for_function(
        "() => document.getElementById('e2ee-state').textContent.includes('has no key yet')"
    )
    assert a.page.get_attribute("#e2ee-toggle", "aria-pressed") == "false"
    assert a.page.is_disabled("#e2ee-toggle")
    say(a.page, "plain for now")
    a.page.wait_for_selector(f'{item(a.page, "plain for now")}[data-encrypted="false"][data-seq]')

    # Bob signs in (his page publishes a key): Alice's page learns it live and turns it on.
    sign_in(b, live_stack, bob)
    a.page.wait_for_selector('#e2ee-toggle[aria-pressed="true"]:not([disabled])', timeout=15_000)
    say(a.page, "now sealed")
    a.page.wait_for_selector(f'{item(a.page, "now sealed")}[data-encrypted="true"][data-seq]')
    plain = a.page.locator(f"{item(a.page, 'plain for now')} .e2ee-mark.plain")
    assert plain.inner_text() == "not encrypted"

    # Alice turns it off for this chat: her next message goes plain, and stays so after a reload.
    a.page.click("#e2ee-toggle")
    assert a.page.get_attribute("#e2ee-toggle", "aria-pressed") == "false"
    say(a.page, "plain again")
    a.page.wait_for_selector(f'{item(a.page, "plain again")}[data-encrypted="false"][data-seq]')
    b.page.click(f'li.session[data-session-id="{session_id}"]')
    b.page.wait_for_selector(f'{item(b.page, "now sealed")}[data-encrypted="true"]')
    b.page.wait_for_selector(f'{item(b.page, "plain again")}[data-encrypted="false"]')
    a.page.reload()
    a.page.click(f'li.session[data-session-id="{session_id}"]')
    a.page.wait_for_selector('#e2ee-toggle[aria-pressed="false"]:not([disabled])')
    a.check_clean()
    b.check_clean()
