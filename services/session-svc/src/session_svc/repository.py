"""SQL of sessions and participants. The caller owns the connection and the transaction."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

import asyncpg

from chat_common.db import Conn

from .domain import Pair, Profile


@dataclass(frozen=True, slots=True)
class ParticipantRow:
    profile_id: uuid.UUID
    user_email: str
    display_name: str


@dataclass(frozen=True, slots=True)
class SessionRow:
    id: uuid.UUID
    intent: str
    created_at: dt.datetime
    participants: tuple[ParticipantRow, ParticipantRow]


async def insert_session_if_absent(
    conn: Conn, session_id: uuid.UUID, pair: Pair, intent: str
) -> bool:
    """Insert the session and its two participants unless the pair already has one.

    Concurrent callers for the same pair serialise on the unique constraint: the loser's
    ``ON CONFLICT DO NOTHING`` waits for the winner's commit and then inserts nothing.
    """
    inserted = await conn.fetchval(
        """
        INSERT INTO chat_sessions (id, intent, profile_lo, profile_hi)
        VALUES ($1, $2, $3, $4)
        ON CONFLICT (profile_lo, profile_hi, intent) DO NOTHING
        RETURNING true
        """,
        session_id,
        intent,
        pair.low.id,
        pair.high.id,
    )
    if not inserted:
        return False
    await conn.executemany(
        """
        INSERT INTO chat_participants (session_id, profile_id, user_email, display_name)
        VALUES ($1, $2, $3, $4)
        """,
        [(session_id, p.id, p.user_email, p.display_name) for p in (pair.low, pair.high)],
    )
    return True


async def refresh_participant(conn: Conn, session_id: uuid.UUID, p: Profile) -> bool:
    """Keep a participant's display name as FlairBit last described it; True if it changed."""
    status = await conn.execute(
        """
        UPDATE chat_participants SET display_name = $3
        WHERE session_id = $1 AND profile_id = $2 AND display_name <> $3
        """,
        session_id,
        p.id,
        p.display_name,
    )
    return bool(status.endswith(" 1"))


_SESSION_SQL = """
    SELECT s.id, s.intent, s.created_at,
           p.profile_id, p.user_email, p.display_name
    FROM chat_sessions s
    JOIN chat_participants p ON p.session_id = s.id
"""


def _session_from_rows(rows: list[asyncpg.Record]) -> SessionRow | None:
    if len(rows) != 2:
        return None
    first = rows[0]
    parts = tuple(ParticipantRow(r["profile_id"], r["user_email"], r["display_name"]) for r in rows)
    return SessionRow(first["id"], first["intent"], first["created_at"], (parts[0], parts[1]))


async def find_by_pair(conn: Conn, pair: Pair, intent: str) -> SessionRow | None:
    rows = await conn.fetch(
        _SESSION_SQL
        + " WHERE s.profile_lo = $1 AND s.profile_hi = $2 AND s.intent = $3"
        + " ORDER BY p.profile_id",
        pair.low.id,
        pair.high.id,
        intent,
    )
    return _session_from_rows(rows)


async def find_by_id(conn: Conn, session_id: uuid.UUID) -> SessionRow | None:
    rows = await conn.fetch(_SESSION_SQL + " WHERE s.id = $1 ORDER BY p.profile_id", session_id)
    return _session_from_rows(rows)


_PEERS = """
    SELECT DISTINCT other.user_email
    FROM chat_participants me
    JOIN chat_participants other
      ON other.session_id = me.session_id AND other.user_email <> me.user_email
    WHERE me.user_email = $1
"""


async def peers_of(conn: Conn, user_email: str, limit: int) -> list[str]:
    """The users who share a session with ``user_email`` (at most ``limit``)."""
    rows = await conn.fetch(_PEERS + " LIMIT $2", user_email, limit)
    return [row["user_email"] for row in rows]


async def peers_among(conn: Conn, user_email: str, candidates: list[str]) -> set[str]:
    """Those of ``candidates`` who share a session with ``user_email``."""
    rows = await conn.fetch(
        _PEERS + " AND other.user_email = ANY($2::text[])", user_email, candidates
    )
    return {row["user_email"] for row in rows}
