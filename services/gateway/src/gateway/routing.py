"""Which upstream serves a public path (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Upstream(Enum):
    SESSION = "session-svc"
    MESSAGE = "message-svc"


@dataclass(frozen=True, slots=True)
class Rule:
    prefix: str
    exact: bool
    upstream: Upstream


# First match wins. Everything else under /api/chat/ belongs to message-svc.
RULES: tuple[Rule, ...] = (
    Rule("/api/chat/init", True, Upstream.SESSION),
    Rule("/api/chat/", False, Upstream.MESSAGE),
)


def upstream_for(path: str) -> Upstream | None:
    for rule in RULES:
        if (rule.exact and path == rule.prefix) or (
            not rule.exact and path.startswith(rule.prefix)
        ):
            return rule.upstream
    return None
