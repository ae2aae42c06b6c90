"""Peers: the only reader and writer of `PeerSession` — joins, status writes, liveness, leaves,
credit for jobs run, and the lookups rooms and jobs need. No HTTP, no sockets."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from piccolo.query.functions.aggregate import Count

from mesh_nanollm.catalogue import WORKER_BACKENDS
from mesh_nanollm.db import raw
from mesh_nanollm.peers.schemas import PeerView
from mesh_nanollm.realtime.schemas import Capabilities, Status
from mesh_nanollm.tables import PeerSession, Room

# SQLite refuses more than 999 bound variables in old builds; chunk IN (...) lists below that.
CHUNK = 500
# An INSERT binds every column of every row (17 for PeerSession): 55 rows stay under 999 too.
INSERT_CHUNK = 55
_VIEW_COLUMNS = PeerSession.all_columns(exclude=[PeerSession.id, PeerSession.room, PeerSession.user, PeerSession.sid,
                                                 PeerSession.user_agent, PeerSession.disconnected_at, PeerSession.speeds])
_DECODED = ("models_warm", "links", "serving")  # JSON columns, text as the drivers return them
_PLAIN = tuple(name for column in _VIEW_COLUMNS if (name := column._meta.db_column_name) not in _DECODED) + ("username",)
# The peers panel's sparkline: each peer's latest measured jobs.
SPARK_JOBS = 20
# The room page's statement, in raw SQL: Piccolo takes longer to build it than Postgres to answer.
_LIVE_PEERS_SQL = (
    "SELECT "
    + ", ".join(f"peer_session.{column._meta.db_column_name}" for column in _VIEW_COLUMNS)
    + ", peer_session.speeds, app_user.username FROM peer_session JOIN app_user ON app_user.id = peer_session.\"user\""
    " WHERE peer_session.room = {} AND peer_session.disconnected_at IS NULL ORDER BY peer_session.connected_at"
)


def _now() -> datetime:
    return datetime.now(UTC)


def _chunks(ids: Iterable[str | uuid.UUID]) -> list[list[uuid.UUID]]:
    ids = [i if isinstance(i, uuid.UUID) else uuid.UUID(i) for i in ids]
    return [ids[n : n + CHUNK] for n in range(0, len(ids), CHUNK)]


def _view(row: dict[str, Any]) -> PeerView:
    return msgspec.convert(row | {"peer_id": str(row["peer_id"])}, PeerView, strict=False)


@dataclass(frozen=True, slots=True)
class PeerJoin:
    """A peer joining a room: what its `PeerSession` row starts with."""

    room_id: int
    user_id: int
    sid: str
    capabilities: Capabilities


async def open_peer_sessions(joins: Sequence[PeerJoin]) -> list[str]:
    """Insert one `PeerSession` per join, in one statement; returns their server-assigned peer
    ids, in the order of `joins`."""
    now = _now()
    rows = [
        PeerSession(
            peer_id=uuid.uuid4(),
            room=join.room_id,
            user=join.user_id,
            sid=join.sid,
            backend=join.capabilities.backend,
            user_agent=join.capabilities.user_agent,
            state=join.capabilities.state,
            pause_reason=join.capabilities.pause_reason or "",
            models_warm=join.capabilities.models_warm,
            connected_at=now,
            last_seen_at=now,
        )
        for join in joins
    ]
    async with PeerSession._meta.db.transaction():  # all of them or none
        for n in range(0, len(rows), INSERT_CHUNK):
            await PeerSession.insert(*rows[n : n + INSERT_CHUNK])
    return [str(row.peer_id) for row in rows]


async def list_live_peers(room: Room, exclude: str | None = None) -> list[PeerView]:
    """The room's live peers on every instance, oldest first."""
    return [peer for peer, _ in await live_peers_and_speeds(room) if peer.peer_id != exclude]


async def live_peers_and_speeds(room: Room) -> list[tuple[PeerView, list[float]]]:
    """The room's live peers on every instance, oldest first, each with the speeds of its latest
    measured jobs (tokens/s, oldest first): the peers panel, in one statement."""
    rows = await raw(PeerSession, _LIVE_PEERS_SQL, room.id)
    return [
        (_view({name: row[name] for name in _PLAIN} | {name: msgspec.json.decode(row[name]) for name in _DECODED}),
         msgspec.json.decode(row["speeds"]))
        for row in rows
    ]


async def count_live_peers() -> dict[int, int]:
    """How many live peers each room has, by room id (rooms without any are absent)."""
    rows = await PeerSession.select(PeerSession.room, Count(alias="n")).where(
        PeerSession.disconnected_at.is_null()
    ).group_by(PeerSession.room)
    return {row["room"]: row["n"] for row in rows}


async def close_peer_sessions(peer_ids: Iterable[str], at: datetime) -> None:
    for chunk in _chunks(peer_ids):
        await PeerSession.update({PeerSession.disconnected_at: at}).where(PeerSession.peer_id.is_in(chunk))


async def close_open_peer_sessions() -> int:
    """Close every open `PeerSession`: at the start of a lone instance, none of them can be live."""
    closed = await PeerSession.update({PeerSession.disconnected_at: _now()}).where(
        PeerSession.disconnected_at.is_null()
    ).returning(PeerSession.id)
    return len(closed)


async def save_statuses(statuses: dict[str, Status], at: datetime) -> None:
    """Write each peer's latest reported status, in one transaction."""
    async with PeerSession._meta.db.transaction():
        for peer_id, s in statuses.items():
            await PeerSession.update(
                {
                    PeerSession.state: s.state,
                    PeerSession.pause_reason: s.pause_reason or "",
                    PeerSession.backend: s.backend,
                    PeerSession.models_warm: s.models_warm,
                    PeerSession.queue: s.queue,
                    PeerSession.tok_s: s.tok_s,
                    PeerSession.links: msgspec.to_builtins(s.links),
                    PeerSession.serving: msgspec.to_builtins(s.serving),
                    PeerSession.last_seen_at: at,
                }
            ).where(PeerSession.peer_id == uuid.UUID(peer_id))


async def stamp_seen(peer_ids: Iterable[str], at: datetime) -> None:
    for chunk in _chunks(peer_ids):
        await PeerSession.update({PeerSession.last_seen_at: at}).where(PeerSession.peer_id.is_in(chunk))


async def close_stale_peer_sessions(at: datetime, stale_after_s: float) -> dict[str, set[str]]:
    """Close the open sessions nobody has stamped for `stale_after_s` (their instance died);
    returns their peer ids by room slug."""
    # The UPDATE … RETURNING is atomic, so when several instances sweep, each closed peer is
    # announced by exactly one of them.
    closed = await PeerSession.update({PeerSession.disconnected_at: at}).where(
        PeerSession.disconnected_at.is_null(),
        PeerSession.last_seen_at < at - timedelta(seconds=stale_after_s),
    ).returning(PeerSession.peer_id, PeerSession.room)
    if not closed:
        return {}
    slugs = {
        row["id"]: row["slug"]
        for row in await Room.select(Room.id, Room.slug).where(Room.id.is_in(list({r["room"] for r in closed})))
    }
    stale: dict[str, set[str]] = {}
    for row in closed:
        if slug := slugs.get(row["room"]):
            stale.setdefault(slug, set()).add(str(row["peer_id"]))
    return stale


async def is_peer_of(peer_id: uuid.UUID, room_id: int, user_id: int | None = None) -> bool:
    """Whether `peer_id` joined room `room_id` (as user `user_id`, when given), live or not."""
    query = PeerSession.exists().where(PeerSession.peer_id == peer_id, PeerSession.room == room_id)
    if user_id is not None:
        query = query.where(PeerSession.user == user_id)
    return await query


async def peer_names(peer_ids: Iterable[uuid.UUID]) -> dict[str, str]:
    """How pages name each peer still on record, by peer id: "<username>'s browser", or
    "<username>'s worker" for a headless one."""
    ids = list(peer_ids)
    if not ids:
        return {}
    rows = await PeerSession.select(
        PeerSession.peer_id, PeerSession.backend, PeerSession.user.username.as_alias("username")
    ).where(PeerSession.peer_id.is_in(ids))
    return {
        str(row["peer_id"]): f"{row['username']}'s {'worker' if row['backend'] in WORKER_BACKENDS else 'browser'}"
        for row in rows
    }


async def peers_still_around(peer_ids: list[uuid.UUID], since: datetime) -> set[uuid.UUID]:
    """The peers among `peer_ids` still connected, or gone only after `since`."""
    if not peer_ids:
        return set()
    rows = await PeerSession.select(PeerSession.peer_id).where(
        PeerSession.peer_id.is_in(peer_ids),
        PeerSession.disconnected_at.is_null() | (PeerSession.disconnected_at > since),
    )
    return {row["peer_id"] for row in rows}


async def credit_peer(peer_id: uuid.UUID, tokens: int, speed: float | None) -> None:
    """Count one finished job and its tokens for the peer that ran it, and its speed (tokens/s on
    the run's own clock, None when too short to measure) among the peer's latest SPARK_JOBS. Run
    in the transaction that finishes the job."""
    values: dict[Any, Any] = {
        PeerSession.jobs_run: PeerSession.jobs_run + 1,
        PeerSession.tokens_generated: PeerSession.tokens_generated + tokens,
    }
    if speed is not None:
        query = PeerSession.select(PeerSession.speeds).where(PeerSession.peer_id == peer_id).output(load_json=True)
        if PeerSession._meta.db.engine_type == "postgres":
            query = query.lock_rows()  # two of its jobs finishing at once: each adds its speed
        row = await query.first()
        if row is not None:
            values[PeerSession.speeds] = [*row["speeds"], round(speed, 2)][-SPARK_JOBS:]
    await PeerSession.update(values).where(PeerSession.peer_id == peer_id)


async def list_peer_sockets(room_id: int) -> list[dict[str, Any]]:
    """The room's live peers with the socket each is reachable on, its last written status and its
    user's download limit for others (`download_mb`), oldest first: whom the API's scheduler may
    send a job to."""
    return await PeerSession.select(
        PeerSession.peer_id, PeerSession.sid, PeerSession.backend, PeerSession.state, PeerSession.models_warm,
        PeerSession.queue, PeerSession.tok_s, PeerSession.user.share_download_mb.as_alias("download_mb"),
    ).where(PeerSession.room == room_id, PeerSession.disconnected_at.is_null()).order_by(
        PeerSession.connected_at
    ).output(load_json=True)
