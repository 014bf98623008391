"""Pure rules: content and marks."""

from __future__ import annotations

import pytest

from chat_common.errors import ContentTooLarge, InvalidInput
from message_svc.domain import check_content, next_mark


@pytest.mark.parametrize("content", ["", "   ", "\n\t "])
def test_blank_content_is_refused(content: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        check_content(content, 4096)
    assert caught.value.field == "content"


def test_size_is_counted_in_encoded_bytes() -> None:
    check_content("é" * 2048, 4096)  # 4096 bytes
    with pytest.raises(ContentTooLarge):
        check_content("é" * 2049, 4096)


def test_lone_surrogates_and_nul_are_refused() -> None:
    with pytest.raises(InvalidInput):
        check_content("a\ud800b", 4096)
    with pytest.raises(InvalidInput):
        check_content("a\x00b", 4096)


@pytest.mark.parametrize(
    ("current", "requested", "last", "expected"),
    [(0, 5, 10, 5), (5, 3, 10, 5), (5, 50, 10, 10), (0, 0, 0, 0), (7, 9, 7, 7)],
)
def test_marks_never_go_back_nor_past_the_last_seq(
    current: int, requested: int, last: int, expected: int
) -> None:
    assert next_mark(current, requested, last) == expected
