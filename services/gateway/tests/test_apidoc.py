"""Merging the services' documents keeps only public paths and every schema."""

from __future__ import annotations

from gateway.apidoc import merge, render


def test_merge_keeps_public_paths_and_components() -> None:
    one = {
        "paths": {
            "/api/chat/init": {"post": {}},
            "/internal/sessions/{id}/membership": {"get": {}},
        },
        "components": {"schemas": {"A": {"type": "object"}}, "securitySchemes": {"userJwt": {}}},
    }
    two = {
        "paths": {"/api/chat/message": {"post": {}}, "/internal/flairbit/sessions": {"post": {}}},
        "components": {"schemas": {"B": {"type": "string"}}},
    }
    doc = merge([one, two], title="t", version="1")
    assert list(doc["paths"]) == [
        "/api/chat/init",
        "/api/chat/message",
        "/internal/flairbit/sessions",
    ]
    assert set(doc["components"]["schemas"]) == {"A", "B"}
    assert doc["components"]["securitySchemes"] == {"userJwt": {}}


def test_render_escapes_and_lists_operations() -> None:
    doc = {
        "paths": {
            "/api/x": {
                "get": {
                    "summary": "<b>bold</b>",
                    "responses": {"200": {"description": "OK"}, "404": {}},
                }
            }
        },
        "components": {"schemas": {}},
    }
    page = render(doc)
    assert "<code>GET /api/x</code>" in page
    assert "&lt;b&gt;bold&lt;/b&gt;" in page
    assert "Errors: 404" in page
