"""What the lifespan opens and every request uses."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg
import httpx

from chat_common.erased import ErasedUsers
from chat_common.jwt_verify import TokenVerifier, UserTokenVerifier

from .blocks import BlockService
from .erasure import ErasureService
from .flairbit import ProfileDirectory
from .invalidation import Invalidations
from .keyring import KeyService
from .presence import PresenceService
from .service import SessionService


@dataclass(frozen=True, slots=True)
class AppState:
    pool: asyncpg.Pool
    http: httpx.AsyncClient
    users: UserTokenVerifier
    flairbit_tokens: TokenVerifier
    profiles: ProfileDirectory
    sessions: SessionService
    invalidations: Invalidations
    presence: PresenceService
    keys: KeyService
    blocks: BlockService
    erasure: ErasureService
    erased: ErasedUsers | None  # the denials of deleted users' tokens (with Redis)
