"""The edge's refusal codes and the JSON that carries them (``ws_edge.codes``)."""

from __future__ import annotations

import msgspec

from ws_edge.codes import MEANINGS, EdgeCode, EdgeError


def test_every_code_has_a_meaning() -> None:
    assert set(MEANINGS) == set(EdgeCode)
    assert all(MEANINGS[code].strip() for code in EdgeCode)


def test_an_error_leaves_out_what_is_not_known() -> None:
    bare = msgspec.json.encode(EdgeError(EdgeCode.UNAVAILABLE, "try again"))
    assert bare == b'{"code":"UNAVAILABLE","detail":"try again"}'
    labelled = EdgeError("NOT_PARTICIPANT", "no", client_message_id="c-1", session_id="s-1")
    assert msgspec.json.decode(msgspec.json.encode(labelled)) == {
        "code": "NOT_PARTICIPANT",
        "detail": "no",
        "clientMessageId": "c-1",
        "sessionId": "s-1",
    }
