"""Service tokens: claims, reuse until near expiry, renewal."""

from __future__ import annotations

from typing import Any

import jwt
import pytest

from chat_common.jwt_sign import ServiceTokenSigner, key_id


def test_claims_and_kid(service_keys: Any) -> None:
    signer = ServiceTokenSigner(
        service_keys.private, issuer="chat-service", audience="flairbit", clock=lambda: 1_000_000
    )
    token = signer.token()
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "RS256"
    assert header["kid"] == key_id(service_keys.private.public_key()) == signer.kid
    body = jwt.decode(
        token,
        service_keys.private.public_key(),
        algorithms=["RS256"],
        audience="flairbit",
        options={"verify_exp": False, "verify_nbf": False, "verify_iat": False},
    )
    assert body["iss"] == "chat-service"
    assert body["exp"] - body["iat"] == 120


def test_reused_until_near_expiry_then_renewed(service_keys: Any) -> None:
    now = [1_000_000.0]
    signer = ServiceTokenSigner(
        service_keys.private,
        issuer="chat-service",
        audience="flairbit",
        ttl_seconds=120,
        renew_before=30,
        clock=lambda: now[0],
    )
    first = signer.token()
    now[0] += 89
    assert signer.token() == first
    now[0] += 1
    renewed = signer.token()
    assert renewed != first


def test_renewal_window_must_be_shorter_than_lifetime(service_keys: Any) -> None:
    with pytest.raises(ValueError, match="renew_before"):
        ServiceTokenSigner(
            service_keys.private, issuer="a", audience="b", ttl_seconds=30, renew_before=30
        )
