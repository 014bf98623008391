"""The checker itself (chat_testing.load.check), on hand-made runs: it must see what it is
there to see, or a green chaos run would mean nothing. No stack needed."""

from __future__ import annotations

from typing import Any

from chat_testing.load import Chat, Delivery, Load, Send, Subscriber, User, check


def _run(sessions: int = 1) -> Load:
    load = Load("http://127.0.0.1:9", "http://127.0.0.1:9", sessions=sessions, name="unit")
    load.chats = [
        Chat(i, f"s{i}", (User(f"a{i}@x", "ta"), User(f"b{i}@x", "tb"))) for i in range(sessions)
    ]
    load.subscribers = [Subscriber("ws://x", chat, u) for chat in load.chats for u in (0, 1)]
    load.started_at, load.stopped_at = 0.0, 10.0
    return load


def _acked(load: Load, n: int, chat: int = 0) -> Send:
    send = Send(chat, n % 2, f"c{chat}-{n}", f"m{n}", created=float(n), attempts=1)
    send.status, send.answer, send.message_id, send.seq = "acked", 200, f"m{chat}-{n}", n
    send.acked_at = n + 0.01
    load.sends.append(send)
    return send


def _history(*sends: Send) -> list[dict[str, Any]]:
    return [
        {"messageId": s.message_id, "seq": s.seq, "clientMessageId": s.client_id}
        for s in sends
        if s.status == "acked"
    ]


def _deliver(subscriber: Subscriber, *sends: Send, at: float = 20.0) -> None:
    for send in sends:
        assert send.message_id is not None
        assert send.seq is not None
        subscriber.wire.append(Delivery(send.message_id, send.seq, send.client_id, at, 1))
        subscriber.first_seen.setdefault(send.message_id, at)


def test_a_clean_run_has_no_problems() -> None:
    load = _run()
    sends = [_acked(load, n) for n in (1, 2, 3)]
    for subscriber in load.subscribers:
        _deliver(subscriber, *sends)
    report = check(load, {0: _history(*sends)}, fault_at=1.5, healed_at=1.6)
    assert report.problems() == []
    assert (report.acknowledged, report.delivered, report.expected_deliveries) == (3, 6, 6)
    assert report.recovered_after_s == 18.5  # message 2, sent after the fault, seen at 20


def test_loss_duplicates_and_disorder_are_counted() -> None:
    load = _run()
    one, two, three = (_acked(load, n) for n in (1, 2, 3))
    alice, bob = load.subscribers
    _deliver(alice, one, three, two, two)  # out of order, then a duplicate
    _deliver(bob, one, two)  # never got 3
    report = check(load, {0: _history(one, two, three)})
    assert report.lost == 1
    assert report.duplicates == 1
    assert report.out_of_order == 1
    assert set(report.problems()) == {"lost = 1", "out_of_order = 1"}


def test_history_gaps_missing_and_refused_messages_are_counted() -> None:
    load = _run()
    one, two = _acked(load, 1), _acked(load, 2)
    refused = Send(0, 0, "c0-refused", "nope", created=3.0, attempts=1, status="refused")
    refused.answer = 403
    load.sends.append(refused)
    stored_refused = {"messageId": "m-r", "seq": 3, "clientMessageId": "c0-refused"}
    foreign = {"messageId": "m-f", "seq": 4, "clientMessageId": "never-sent"}
    for subscriber in load.subscribers:
        _deliver(subscriber, one, two)
    report = check(load, {0: [*_history(two), stored_refused, foreign]})
    assert report.missing_from_history == 1  # 1 acked, not in history
    assert report.history_gaps == 1  # seqs 2, 3, 4
    assert report.refused_but_present == 1
    assert report.unexpected == 1 + 2  # the foreign row; message 1 delivered, not in history
    assert report.stored_not_delivered == 4  # the refused and foreign rows, to both users


def test_indeterminate_sends_that_were_stored_count_as_recovered() -> None:
    load = _run()
    done = _acked(load, 1)
    unsure = Send(0, 1, "c0-2", "m2", created=2.0, attempts=3)  # never answered
    load.sends.append(unsure)
    stored = {"messageId": "m0-2", "seq": 2, "clientMessageId": "c0-2"}
    for subscriber in load.subscribers:
        _deliver(subscriber, done)
        subscriber.wire.append(Delivery("m0-2", 2, "c0-2", 21.0, 1))
        subscriber.first_seen["m0-2"] = 21.0
    report = check(load, {0: [*_history(done), stored]})
    assert (report.indeterminate, report.recovered, report.lost) == (1, 1, 0)
    assert report.problems() == []
