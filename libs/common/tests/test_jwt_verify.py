"""User-token verification: what must pass and every way a token must fail."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from typing import Any

import httpx
import jwt as pyjwt
import pytest

from chat_common.errors import AuthenticationFailed, DependencyUnavailable
from chat_common.jwt_verify import (
    MAX_TOKEN_LENGTH,
    JwksKeys,
    StaticKey,
    TokenPolicy,
    TokenVerifier,
    UnknownKey,
    UserTokenVerifier,
)

POLICY = TokenPolicy(issuer="flairbit", audience="chat", leeway_seconds=5)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(header: dict[str, Any], claims: dict[str, Any]) -> str:
    return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"


def claims(**extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": "alice@example.com", "iss": "flairbit", "aud": "chat", "exp": now + 60, **extra}


@pytest.fixture
def verifier(issuer_keys: Any) -> TokenVerifier:
    return TokenVerifier(StaticKey.from_pem(issuer_keys.public_pem), POLICY)


def code_of(verifier: TokenVerifier, token: str) -> str:
    with pytest.raises(AuthenticationFailed) as caught:
        verifier.verify(token)
    return caught.value.code


def test_valid_token_gives_subject(verifier: TokenVerifier, make_token: Any) -> None:
    verified = verifier.verify(make_token("alice@example.com"))
    assert verified.subject == "alice@example.com"
    assert verified.issuer == "flairbit"
    assert verified.expires_at > time.time()


async def test_user_identity_is_normalised_email(verifier: TokenVerifier, make_token: Any) -> None:
    identity = await UserTokenVerifier(verifier).identify(make_token("  Alice@Example.COM "))
    assert identity.email == "alice@example.com"


async def test_user_identity_carries_the_tokens_issue_time(
    verifier: TokenVerifier, make_token: Any, issuer_keys: Any
) -> None:
    users = UserTokenVerifier(verifier)
    issued = int(time.time()) - 100
    identity = await users.identify(make_token(extra={"iat": issued}))
    assert identity.issued_at == issued
    no_iat = pyjwt.encode(
        claims(), issuer_keys.private, algorithm="RS256", headers={"kid": issuer_keys.kid}
    )
    assert (await users.identify(no_iat)).issued_at is None


async def test_subject_that_is_not_an_email_is_refused(
    verifier: TokenVerifier, make_token: Any
) -> None:
    with pytest.raises(AuthenticationFailed):
        await UserTokenVerifier(verifier).identify(make_token("not-an-email"))


def test_expired(verifier: TokenVerifier, make_token: Any) -> None:
    assert code_of(verifier, make_token(ttl=-60)) == "TOKEN_EXPIRED"


def test_expiry_within_leeway_is_accepted(verifier: TokenVerifier, make_token: Any) -> None:
    assert verifier.verify(make_token(ttl=-2)).subject == "alice@example.com"


def test_not_yet_valid(verifier: TokenVerifier, make_token: Any) -> None:
    token = make_token(extra={"nbf": int(time.time()) + 120})
    assert code_of(verifier, token) == "TOKEN_NOT_YET_VALID"


def test_missing_exp_is_refused(verifier: TokenVerifier, issuer_keys: Any) -> None:
    body = claims()
    del body["exp"]
    token = pyjwt.encode(body, issuer_keys.private, algorithm="RS256")
    assert code_of(verifier, token) == "TOKEN_INVALID"


def test_missing_sub_is_refused(verifier: TokenVerifier, issuer_keys: Any) -> None:
    body = claims()
    del body["sub"]
    token = pyjwt.encode(body, issuer_keys.private, algorithm="RS256")
    assert code_of(verifier, token) == "TOKEN_INVALID"


@pytest.mark.parametrize(("iss", "aud"), [("evil", "chat"), ("flairbit", "other"), (None, "chat")])
def test_wrong_issuer_or_audience(
    verifier: TokenVerifier, make_token: Any, iss: str | None, aud: str
) -> None:
    assert code_of(verifier, make_token(iss=iss, aud=aud)) == "TOKEN_INVALID"


def test_alg_none_is_refused(verifier: TokenVerifier) -> None:
    token = unsigned({"alg": "none", "typ": "JWT"}, claims()) + "."
    assert code_of(verifier, token) == "TOKEN_INVALID"


def test_hs256_signed_with_the_public_key_is_refused(
    verifier: TokenVerifier, issuer_keys: Any
) -> None:
    signing_input = unsigned({"alg": "HS256", "typ": "JWT"}, claims())
    mac = hmac.new(issuer_keys.public_pem, signing_input.encode(), hashlib.sha256).digest()
    assert code_of(verifier, f"{signing_input}.{b64(mac)}") == "TOKEN_INVALID"


def test_tampered_payload_is_refused(verifier: TokenVerifier, make_token: Any) -> None:
    header, _, signature = make_token("alice@example.com").split(".")
    forged = b64(json.dumps(claims(sub="mallory@example.com")).encode())
    assert code_of(verifier, f"{header}.{forged}.{signature}") == "TOKEN_INVALID"


def test_signed_by_another_key_is_refused(verifier: TokenVerifier, make_token: Any) -> None:
    from cryptography.hazmat.primitives.asymmetric import rsa

    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = pyjwt.encode(claims(), other, algorithm="RS256")
    assert code_of(verifier, token) == "TOKEN_INVALID"


@pytest.mark.parametrize("token", ["", "garbage", "a.b.c", "x" * (MAX_TOKEN_LENGTH + 1)])
def test_malformed_or_huge(verifier: TokenVerifier, token: str) -> None:
    assert code_of(verifier, token) == "TOKEN_INVALID"


def _jwks(keys: Any) -> dict[str, Any]:
    jwk = json.loads(pyjwt.algorithms.RSAAlgorithm.to_jwk(keys.private.public_key()))
    return {"keys": [{**jwk, "kid": keys.kid, "use": "sig", "alg": "RS256"}]}


async def test_jwks_selects_key_by_kid_and_refreshes_on_unknown_kid(
    issuer_keys: Any, make_token: Any, service_keys: Any
) -> None:
    doc = _jwks(issuer_keys)
    hits = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal hits
        hits += 1
        return httpx.Response(200, json=doc)

    now = [0.0]
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        keys = JwksKeys("http://keys/jwks.json", client, refresh_interval=30, clock=lambda: now[0])
        verifier = TokenVerifier(keys, POLICY)
        assert (await verifier.verify_async(make_token())).subject == "alice@example.com"
        assert hits == 1
        # a token from a rotated-in key: unknown kid triggers one refresh once allowed
        rotated = make_token(key=service_keys)
        with pytest.raises(UnknownKey):
            await verifier.verify_async(rotated)  # too soon to refresh again
        assert hits == 1
        doc = {"keys": _jwks(issuer_keys)["keys"] + _jwks(service_keys)["keys"]}
        now[0] = 31.0
        assert (await verifier.verify_async(rotated)).subject == "alice@example.com"
        assert hits == 2


async def test_wrong_kid_is_refused(issuer_keys: Any, make_token: Any) -> None:
    async with httpx.AsyncClient(
        transport=httpx.MockTransport(lambda r: httpx.Response(200, json=_jwks(issuer_keys)))
    ) as client:
        verifier = TokenVerifier(JwksKeys("http://keys/jwks.json", client), POLICY)
        with pytest.raises(UnknownKey):
            await verifier.verify_async(make_token(headers={"kid": "no-such-key"}))


async def test_unreachable_jwks_is_a_dependency_error(make_token: Any) -> None:
    async with httpx.AsyncClient(
        transport=httpx.MockTransport(lambda r: httpx.Response(500))
    ) as client:
        verifier = TokenVerifier(JwksKeys("http://keys/jwks.json", client), POLICY)
        with pytest.raises(DependencyUnavailable):
            await verifier.verify_async(make_token())


async def test_a_malformed_jwks_entry_is_skipped_not_fatal(
    issuer_keys: Any, make_token: Any
) -> None:
    good = _jwks(issuer_keys)["keys"]
    broken = [{"kty": "RSA", "kid": "broken", "n": "!!", "e": "AQAB"}, "not-a-key", {"kty": "RSA"}]

    async with httpx.AsyncClient(
        transport=httpx.MockTransport(lambda r: httpx.Response(200, json={"keys": broken + good}))
    ) as client:
        verifier = TokenVerifier(JwksKeys("http://keys/jwks.json", client), POLICY)
        assert (await verifier.verify_async(make_token())).subject == "alice@example.com"
        with pytest.raises(UnknownKey):
            await verifier.verify_async(make_token(headers={"kid": "broken"}))


async def test_a_jwks_document_without_a_key_list_is_a_dependency_error(
    make_token: Any,
) -> None:
    async with httpx.AsyncClient(
        transport=httpx.MockTransport(lambda r: httpx.Response(200, json=["no", "keys"]))
    ) as client:
        verifier = TokenVerifier(JwksKeys("http://keys/jwks.json", client), POLICY)
        with pytest.raises(DependencyUnavailable):
            await verifier.verify_async(make_token())


async def test_concurrent_first_verifications_load_the_jwks_once(
    issuer_keys: Any, make_token: Any
) -> None:
    hits = [0]

    async def handler(request: httpx.Request) -> httpx.Response:
        hits[0] += 1
        await asyncio.sleep(0.05)
        return httpx.Response(200, json=_jwks(issuer_keys))

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        verifier = TokenVerifier(JwksKeys("http://keys/jwks.json", client), POLICY)
        tokens = [make_token(f"user{i}@example.com") for i in range(20)]
        claims = await asyncio.gather(*(verifier.verify_async(t) for t in tokens))
    assert [c.subject for c in claims] == [f"user{i}@example.com" for i in range(20)]
    assert hits[0] == 1


class Jwks:
    """FlairBit's JWKS endpoint as a stand-in: the document served, failures, fetches."""

    def __init__(self, doc: dict[str, Any], cache_control: str | None = None) -> None:
        self.doc = doc
        self.cache_control = cache_control
        self.failing = False
        self.hits = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.hits += 1
        if self.failing:
            return httpx.Response(503)
        headers = {"Cache-Control": self.cache_control} if self.cache_control else None
        return httpx.Response(200, json=self.doc, headers=headers)


async def test_a_key_withdrawn_from_the_jwks_is_refused_once_the_key_set_is_due(
    issuer_keys: Any, service_keys: Any, make_token: Any
) -> None:
    both = {"keys": _jwks(issuer_keys)["keys"] + _jwks(service_keys)["keys"]}
    served = Jwks(both)
    now = [0.0]
    async with httpx.AsyncClient(transport=httpx.MockTransport(served)) as client:
        keys = JwksKeys("http://keys/jwks.json", client, max_age=300, clock=lambda: now[0])
        verifier = TokenVerifier(keys, POLICY)
        old = make_token(key=service_keys)
        assert (await verifier.verify_async(old)).subject == "alice@example.com"
        served.doc = _jwks(issuer_keys)  # FlairBit withdraws the key
        now[0] = 299.0
        assert (await verifier.verify_async(old)).subject == "alice@example.com"  # not due yet
        assert served.hits == 1
        now[0] = 301.0
        with pytest.raises(UnknownKey):  # due: the whole set reloaded, the token refused
            await verifier.verify_async(old)
        assert served.hits == 2
        assert (await verifier.verify_async(make_token())).subject == "alice@example.com"


async def test_the_documents_cache_control_sets_the_max_age_within_bounds(
    issuer_keys: Any, make_token: Any
) -> None:
    now = [0.0]
    for header, reload_after in [("public, max-age=60", 60.0), ("max-age=5", 30.0)]:
        served = Jwks(_jwks(issuer_keys), cache_control=header)
        async with httpx.AsyncClient(transport=httpx.MockTransport(served)) as client:
            now[0] = 0.0
            keys = JwksKeys(
                "http://keys/jwks.json", client, refresh_interval=30, clock=lambda: now[0]
            )
            verifier = TokenVerifier(keys, POLICY)
            token = make_token()
            await verifier.verify_async(token)
            now[0] = reload_after - 1
            await verifier.verify_async(token)
            assert served.hits == 1, header
            now[0] = reload_after
            await verifier.verify_async(token)
            assert served.hits == 2, header


async def test_a_failing_jwks_is_asked_once_then_backed_off_and_the_last_keys_serve(
    issuer_keys: Any, make_token: Any
) -> None:
    served = Jwks(_jwks(issuer_keys))
    now = [0.0]
    async with httpx.AsyncClient(transport=httpx.MockTransport(served)) as client:
        keys = JwksKeys(
            "http://keys/jwks.json", client, max_age=60, retry_base=1, clock=lambda: now[0]
        )
        verifier = TokenVerifier(keys, POLICY)
        await verifier.verify_async(make_token())
        served.failing = True
        now[0] = 61.0  # due, and the JWKS fails: the loaded keys still verify
        tokens = [make_token(sub=f"u{i}@example.com") for i in range(20)]
        answers = await asyncio.gather(*(verifier.verify_async(t) for t in tokens))
        assert {a.subject for a in answers} == {f"u{i}@example.com" for i in range(20)}
        assert served.hits == 2  # one attempt for the twenty
        now[0] = 61.5  # backing off: nobody asks
        await verifier.verify_async(make_token(sub="v@example.com"))
        assert served.hits == 2
        now[0] = 62.1  # the next attempt, which fails again: the delay doubles
        await verifier.verify_async(make_token(sub="w@example.com"))
        assert served.hits == 3
        now[0] = 63.5
        await verifier.verify_async(make_token(sub="x@example.com"))
        assert served.hits == 3
        served.failing = False
        now[0] = 64.2
        await verifier.verify_async(make_token(sub="y@example.com"))
        assert served.hits == 4


async def test_no_key_set_loaded_yet_and_the_jwks_failing_is_503_then_backed_off(
    issuer_keys: Any, make_token: Any
) -> None:
    served = Jwks(_jwks(issuer_keys))
    served.failing = True
    now = [0.0]
    async with httpx.AsyncClient(transport=httpx.MockTransport(served)) as client:
        keys = JwksKeys("http://keys/jwks.json", client, retry_base=1, clock=lambda: now[0])
        verifier = TokenVerifier(keys, POLICY)
        for _ in range(3):
            with pytest.raises(DependencyUnavailable):
                await verifier.verify_async(make_token())
        assert served.hits == 1
        served.failing = False
        now[0] = 1.0
        assert (await verifier.verify_async(make_token())).subject == "alice@example.com"
        assert served.hits == 2
