"""Which upstream serves a public path."""

from __future__ import annotations

import pytest

from gateway.routing import Upstream, upstream_for


@pytest.mark.parametrize(
    ("path", "upstream"),
    [
        ("/api/chat/init", Upstream.SESSION),
        ("/api/chat/presence", Upstream.SESSION),
        ("/api/chat/init/", Upstream.MESSAGE),
        ("/api/chat/message", Upstream.MESSAGE),
        ("/api/chat/sessions", Upstream.MESSAGE),
        ("/api/chat/3f1c/history", Upstream.MESSAGE),
        ("/api/chat/keys", Upstream.SESSION),
        ("/api/chat/keys/phone-1", Upstream.SESSION),
        ("/api/chat/3f1c/keys", Upstream.SESSION),
        ("/api/chat/3f1c/keys/", Upstream.MESSAGE),
        ("/api/chat/keysx", Upstream.MESSAGE),
        ("/api/chat/3f1c/block", Upstream.SESSION),
        ("/api/chat/3f1c/block/", Upstream.MESSAGE),
        ("/api/other", None),
        ("/internal/sessions/x/membership", None),
        ("/internal/peers", None),
        ("/internal/flairbit/sessions", Upstream.SESSION),
    ],
)
def test_upstream_for(path: str, upstream: Upstream | None) -> None:
    assert upstream_for(path) is upstream
