"""Which upstream serves a public path, and whose token it takes (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Upstream(Enum):
    SESSION = "session-svc"
    MESSAGE = "message-svc"


class Caller(Enum):
    """Whose token a route takes."""

    USER = "user"
    FLAIRBIT = "flairbit"


@dataclass(frozen=True, slots=True)
class Rule:
    prefix: str
    exact: bool
    upstream: Upstream
    caller: Caller = Caller.USER
    bulk: bool = False  # takes the larger body limit of bulk requests
    suffix: str | None = None  # and the path ends with it (a per-session route)


# First match wins. Everything else under /api/chat/ belongs to message-svc. Of /internal/,
# only FlairBit's endpoints are public, and only to FlairBit's service token.
RULES: tuple[Rule, ...] = (
    Rule("/api/chat/init", True, Upstream.SESSION),
    Rule("/api/chat/presence", True, Upstream.SESSION),
    Rule("/api/chat/keys", True, Upstream.SESSION),
    Rule("/api/chat/keys/", False, Upstream.SESSION),
    Rule("/api/chat/", False, Upstream.SESSION, suffix="/keys"),  # a session's keys
    Rule("/api/chat/", False, Upstream.SESSION, suffix="/block"),  # block, unblock
    Rule("/api/chat/messages", True, Upstream.MESSAGE, bulk=True),
    Rule("/api/chat/", False, Upstream.MESSAGE),
    Rule("/internal/flairbit/", False, Upstream.SESSION, Caller.FLAIRBIT),
)


def rule_for(path: str) -> Rule | None:
    for rule in RULES:
        matched = path == rule.prefix if rule.exact else path.startswith(rule.prefix)
        if matched and (rule.suffix is None or path.endswith(rule.suffix)):
            return rule
    return None


def upstream_for(path: str) -> Upstream | None:
    rule = rule_for(path)
    return rule.upstream if rule else None
