"""Merging the services' documents keeps only public paths and every schema; the page renders
the REST operations and the STOMP destinations and links both machine-readable documents."""

from __future__ import annotations

from gateway.apidoc import merge, render, stomp_document


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
    page = render(doc, stomp_document().document)
    assert "<code>GET /api/x</code>" in page
    assert "&lt;b&gt;bold&lt;/b&gt;" in page
    assert "Errors: 404" in page


def test_render_links_both_documents_and_lists_the_stomp_destinations() -> None:
    stomp = stomp_document().document
    page = render({"paths": {}, "components": {"schemas": {}}}, stomp)
    assert "<a href=/openapi.json>" in page
    assert "<a href=/asyncapi.json>" in page
    for channel in stomp["channels"].values():
        if channel["address"] is not None:
            assert channel["address"] in page
    assert "<code>SUBSCRIBE /topic/session.{sessionId}</code>" in page
    assert "<code>SEND /app/chat.send</code>" in page
    assert "<code>x-event: typing</code>" in page
    assert "SendMessageRequest" in page
