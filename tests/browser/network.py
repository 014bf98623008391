"""A page's network as the test holds it: its WebSockets to /ws and its REST calls under /api/
pass through here, so the test sees every frame and can cut both (while "down" the page can
neither reconnect nor poll, and what it missed must come from the topic's resume)."""

from __future__ import annotations

import re
from typing import Any


def _text(message: str | bytes) -> str:
    return message if isinstance(message, str) else message.decode(errors="replace")


class Network:
    def __init__(self, page: Any) -> None:
        self.down = False
        self.sockets: list[tuple[Any, Any]] = []  # (the page's side, the server's side)
        self.received: list[list[str]] = []  # per socket, the frames the server sent
        self.sent: list[str] = []  # every frame the page sent
        page.route_web_socket(re.compile(r"/ws$"), self._socket)
        page.route(re.compile(r"/api/"), self._rest)

    def _socket(self, ws: Any) -> None:
        if self.down:
            ws.close()
            return
        server = ws.connect_to_server()
        frames: list[str] = []

        def from_server(message: str | bytes) -> None:
            frames.append(_text(message))
            ws.send(message)

        def from_page(message: str | bytes) -> None:
            self.sent.append(_text(message))
            server.send(message)

        server.on_message(from_server)
        ws.on_message(from_page)
        self.sockets.append((ws, server))
        self.received.append(frames)

    def _rest(self, route: Any) -> None:
        if self.down:
            route.abort("internetdisconnected")
        else:
            route.continue_()

    def cut(self) -> None:
        """Down: the open WebSocket closes on both sides; new ones and REST calls fail."""
        self.down = True
        for side in self.sockets[-1]:
            side.close()

    def restore(self) -> None:
        self.down = False
