"""The presence rules (pure, no event loop): online with the first live lease, offline after the
last one closed (past the grace) or lapsed, announced once each, flaps suppressed."""

from __future__ import annotations

import datetime as dt

from chat_common import routing
from chat_common.presence import Book, PresenceView, instant, visible

ALICE = "alice@example.com"
PEERS = (routing.user_key("bob@example.com"),)


def book() -> Book:
    return Book(lease=30.0, grace=3.0)


def test_the_first_connection_announces_online_and_others_do_not() -> None:
    b = book()
    change = b.connect(ALICE, "e1-1", 100.0, PEERS)
    assert change is not None
    assert change.online
    assert change.peers == PEERS
    assert change.user == routing.user_key(ALICE)
    assert b.connect(ALICE, "e2-1", 101.0, None) is None  # a second device, another edge
    assert b.read(ALICE, 102.0).online


def test_the_last_close_goes_offline_after_the_grace_once() -> None:
    b = book()
    b.connect(ALICE, "e1-1", 100.0, PEERS)
    b.connect(ALICE, "e1-2", 100.0)
    b.disconnect(ALICE, "e1-1", 110.0)
    assert b.sweep(115.0) == []  # one still open
    b.renew({ALICE: ["e1-2"]}, 120.0)
    b.disconnect(ALICE, "e1-2", 125.0)
    assert b.sweep(127.9) == []  # within the grace: still online
    assert b.read(ALICE, 127.9).online
    [change] = b.sweep(128.0)
    assert (change.online, change.seen, change.peers) == (False, 125.0, PEERS)
    assert b.sweep(129.0) == []  # claimed once
    assert b.read(ALICE, 129.0) == PresenceView(ALICE, False, instant(125.0))


def test_a_reconnect_within_the_grace_is_no_change_at_all() -> None:
    b = book()
    b.connect(ALICE, "e1-1", 100.0, PEERS)
    b.disconnect(ALICE, "e1-1", 101.0)
    assert b.connect(ALICE, "e2-7", 102.5, PEERS) is None
    assert b.sweep(104.5) == []  # the old grace has passed, the new lease holds
    assert b.read(ALICE, 104.5).online


def test_a_dead_edges_connections_lapse_with_their_lease() -> None:
    b = book()
    b.connect(ALICE, "dead-1", 100.0, PEERS)
    assert b.sweep(129.9) == []
    assert b.read(ALICE, 129.9).online
    assert not b.read(ALICE, 130.0).online  # readers see it offline before any sweep
    [change] = b.sweep(131.0)
    assert not change.online
    assert change.seen == 100.0


def test_renewal_keeps_a_user_online_and_a_lapsed_connection_is_reported_lost() -> None:
    b = book()
    b.connect(ALICE, "e1-1", 100.0, PEERS)
    for now in (110.0, 120.0, 130.0, 140.0):
        assert b.renew({ALICE: ["e1-1"]}, now) == []
    assert b.sweep(165.0) == []
    # Redis out of reach for longer than a lease: another edge swept Alice offline
    [change] = b.sweep(171.0)
    assert not change.online
    assert b.renew({ALICE: ["e1-1"]}, 172.0) == [ALICE]
    assert b.renew({"nobody@example.com": ["x"]}, 172.0) == ["nobody@example.com"]
    again = b.connect(ALICE, "e1-1", 172.0)
    assert again is not None
    assert again.online
    assert again.peers == PEERS


def test_a_user_never_seen_is_offline_without_a_last_seen() -> None:
    assert book().read("carol@example.com", 1.0) == PresenceView("carol@example.com", False)
    book().disconnect("carol@example.com", "x", 1.0)  # nothing recorded, nothing raised


def test_visible_needs_an_announced_online_and_a_deadline_ahead() -> None:
    assert visible(True, 10.0, 9.0)
    assert not visible(True, 10.0, 10.0)
    assert not visible(True, None, 1.0)
    assert not visible(False, 10.0, 1.0)


def test_the_view_is_camel_case_json_with_an_iso_utc_last_seen() -> None:
    import msgspec

    view = PresenceView(ALICE, False, instant(1_700_000_000.25))
    assert msgspec.json.decode(msgspec.json.encode(view)) == {
        "email": ALICE,
        "online": False,
        "lastSeen": "2023-11-14T22:13:20.250000Z",
    }
    assert instant(None) is None
    assert instant(0.0) == dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
