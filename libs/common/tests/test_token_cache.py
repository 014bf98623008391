"""The cache of verified tokens: bounded, and never past a token's expiry or its ttl."""

from __future__ import annotations

import time
from typing import Any

import pytest

from chat_common.errors import AuthenticationFailed
from chat_common.jwt_verify import StaticKey, TokenPolicy, TokenVerifier
from chat_common.token_cache import VerifiedTokens


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def test_an_entry_lasts_until_the_token_expires() -> None:
    clock = Clock()
    cache: VerifiedTokens[str] = VerifiedTokens(ttl=600, clock=clock)
    cache.put("t", "claims", valid_until=1_010.0)
    clock.now = 1_009.9
    assert cache.get("t") == "claims"
    clock.now = 1_010.0
    assert cache.get("t") is None
    assert len(cache) == 0


def test_an_entry_lasts_no_longer_than_the_ttl() -> None:
    clock = Clock()
    cache: VerifiedTokens[str] = VerifiedTokens(ttl=5, clock=clock)
    cache.put("t", "claims", valid_until=5_000.0)
    clock.now = 1_004.0
    assert cache.get("t") == "claims"
    clock.now = 1_005.0
    assert cache.get("t") is None


def test_an_expired_token_is_not_stored() -> None:
    clock = Clock()
    cache: VerifiedTokens[str] = VerifiedTokens(clock=clock)
    cache.put("t", "claims", valid_until=999.0)
    assert len(cache) == 0
    assert cache.get("t") is None


def test_least_recently_used_entries_go_first() -> None:
    cache: VerifiedTokens[int] = VerifiedTokens(capacity=2, clock=Clock())
    cache.put("a", 1, 2_000.0)
    cache.put("b", 2, 2_000.0)
    assert cache.get("a") == 1  # "b" is now the oldest use
    cache.put("c", 3, 2_000.0)
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == (1, None, 3)
    assert len(cache) == 2


def test_capacity_zero_stores_nothing() -> None:
    cache: VerifiedTokens[int] = VerifiedTokens(capacity=0, clock=Clock())
    cache.put("a", 1, 2_000.0)
    assert cache.get("a") is None


def test_bad_limits_are_refused() -> None:
    with pytest.raises(ValueError, match="must be >= 0"):
        VerifiedTokens(capacity=-1)
    with pytest.raises(ValueError, match="must be >= 0"):
        VerifiedTokens(ttl=-1)


def test_the_verifier_answers_a_known_token_from_the_cache(
    issuer_keys: Any, make_token: Any
) -> None:
    cache: VerifiedTokens[Any] = VerifiedTokens()
    verifier = TokenVerifier(StaticKey.from_pem(issuer_keys.public_pem), TokenPolicy(), cache)
    token = make_token("alice@example.com")
    first = verifier.verify(token)
    assert len(cache) == 1
    assert verifier.verify(token) is first
    tampered = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    with pytest.raises(AuthenticationFailed):
        verifier.verify(tampered)  # another text is verified afresh, and fails
    assert len(cache) == 1


def test_the_verifier_caches_until_expiry_plus_leeway(issuer_keys: Any, make_token: Any) -> None:
    clock = Clock()
    clock.now = time.time()
    cache: VerifiedTokens[Any] = VerifiedTokens(ttl=3600, clock=clock)
    policy = TokenPolicy(leeway_seconds=10)
    verifier = TokenVerifier(StaticKey.from_pem(issuer_keys.public_pem), policy, cache)
    token = make_token("alice@example.com")
    claims = verifier.verify(token)
    clock.now = claims.expires_at + 9.9
    assert cache.get(token) is claims
    clock.now = claims.expires_at + 10
    assert cache.get(token) is None
