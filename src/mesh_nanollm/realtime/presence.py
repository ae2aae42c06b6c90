"""Who is in which room: the peers on this instance, their `PeerSession` rows, and the presence
changes waiting for the next batched write and announcement (the rule is in docs/realtime.md)."""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from mesh_nanollm.realtime.schemas import Capabilities, PeerEntry, Status
from mesh_nanollm.tables import PeerSession, Room

log = logging.getLogger("mesh_nanollm.presence")
# SQLite refuses more than 999 bound variables in old builds; chunk IN (...) lists below that.
CHUNK = 500


def _now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(slots=True)
class LocalPeer:
    """A peer connected to this instance, with the status it last reported."""

    peer_id: str
    sid: str
    eio_sid: str  # the engine.io socket the relay writes to directly
    room_id: int
    room_slug: str
    username: str
    status: Status

    def entry(self) -> PeerEntry:
        s = self.status
        return PeerEntry(self.peer_id, self.username, s.backend, s.state, s.models_warm, s.queue, s.tok_s)


@dataclass
class RoomChanges:
    """What one room hears from this instance after one flush."""

    room_slug: str
    joined: list[PeerEntry] = field(default_factory=list)
    updated: list[PeerEntry] = field(default_factory=list)
    left: list[str] = field(default_factory=list)


async def open_peer_session(room: Room, user_id: int, sid: str, capabilities: Capabilities) -> str:
    """Insert the `PeerSession` for a peer joining `room`; returns its server-assigned peer id."""
    now = _now()
    peer_id = uuid.uuid4()
    await PeerSession.insert(
        PeerSession(
            peer_id=peer_id,
            room=room.id,
            user=user_id,
            sid=sid,
            backend=capabilities.backend,
            user_agent=capabilities.user_agent,
            state=capabilities.state,
            models_warm=capabilities.models_warm,
            connected_at=now,
            last_seen_at=now,
        )
    )
    return str(peer_id)


async def live_peer_entries(room: Room, exclude: str | None = None) -> list[PeerEntry]:
    """The room's live peers on every instance, from the database, oldest first."""
    rows = await PeerSession.select(
        PeerSession.peer_id,
        PeerSession.user.username.as_alias("username"),
        PeerSession.backend,
        PeerSession.state,
        PeerSession.models_warm,
        PeerSession.queue,
        PeerSession.tok_s,
    ).where(PeerSession.room == room.id, PeerSession.disconnected_at.is_null()).order_by(
        PeerSession.connected_at
    )
    entries = []
    for row in rows:
        peer_id = str(row["peer_id"])
        if peer_id == exclude:
            continue
        warm = row["models_warm"]
        entries.append(
            PeerEntry(
                peer_id, row["username"], row["backend"], row["state"],
                warm if isinstance(warm, list) else [], row["queue"], row["tok_s"],
            )
        )
    return entries


async def close_open_peer_sessions() -> int:
    """Close every open `PeerSession`: at the start of a lone instance, none of them can be live."""
    closed = await PeerSession.update({PeerSession.disconnected_at: _now()}).where(
        PeerSession.disconnected_at.is_null()
    ).returning(PeerSession.id)
    return len(closed)


def _chunks(ids: list[str]) -> list[list[uuid.UUID]]:
    return [[uuid.UUID(i) for i in ids[n : n + CHUNK]] for n in range(0, len(ids), CHUNK)]


class Presence:
    """This instance's peers and its not-yet-flushed presence changes.

    Joins write their row at once (the joiner needs its peer id); leaves, status changes and
    liveness stamps wait for `flush`, which writes each kind in as few statements as it can and
    returns one `RoomChanges` per room to announce.
    """

    def __init__(self, stale_after_s: float) -> None:
        self.peers: dict[str, LocalPeer] = {}
        self.stale_after_s = stale_after_s
        self._joined: dict[str, set[str]] = {}
        self._updated: dict[str, set[str]] = {}
        self._left: dict[str, set[str]] = {}
        self._heartbeat_at = 0.0

    def add(self, peer: LocalPeer) -> None:
        self.peers[peer.peer_id] = peer
        self._joined.setdefault(peer.room_slug, set()).add(peer.peer_id)

    def update(self, peer: LocalPeer, status: Status) -> None:
        peer.status = status
        self._updated.setdefault(peer.room_slug, set()).add(peer.peer_id)

    def remove(self, peer_id: str) -> LocalPeer | None:
        peer = self.peers.pop(peer_id, None)
        if peer is not None:
            self._joined.get(peer.room_slug, set()).discard(peer_id)
            self._updated.get(peer.room_slug, set()).discard(peer_id)
            self._left.setdefault(peer.room_slug, set()).add(peer_id)
        return peer

    def remove_all(self) -> None:
        for peer_id in list(self.peers):
            self.remove(peer_id)

    async def flush(self) -> list[RoomChanges]:
        """Write pending leaves and statuses, stamp liveness when due; say what each room must hear.

        If the database fails, the changes stay pending for the next flush and nothing is announced.
        """
        joined, updated, left = self._joined, self._updated, self._left
        self._joined, self._updated, self._left = {}, {}, {}
        try:
            left_ids = [peer_id for ids in left.values() for peer_id in ids]
            now = _now()
            for chunk in _chunks(left_ids):
                await PeerSession.update({PeerSession.disconnected_at: now}).where(
                    PeerSession.peer_id.is_in(chunk)
                )
            changed = [self.peers[p] for ids in updated.values() for p in ids if p in self.peers]
            if changed:
                await self._save_statuses(changed, now)
            stale = await self._heartbeat(now)
        except Exception:  # a database hiccup must not lose presence: retry on the next flush
            log.exception("presence flush failed; retrying")
            self._merge(joined, updated, left)
            return []
        for room_slug, peer_ids in stale.items():
            left.setdefault(room_slug, set()).update(peer_ids)
        return self._changes(joined, updated, left)

    def _changes(
        self, joined: dict[str, set[str]], updated: dict[str, set[str]], left: dict[str, set[str]]
    ) -> list[RoomChanges]:
        rooms: dict[str, RoomChanges] = {}
        for room_slug, ids in joined.items():
            entries = [self.peers[p].entry() for p in ids if p in self.peers]
            if entries:
                rooms.setdefault(room_slug, RoomChanges(room_slug)).joined = entries
        for room_slug, ids in updated.items():
            fresh = joined.get(room_slug, set())
            entries = [self.peers[p].entry() for p in ids if p in self.peers and p not in fresh]
            if entries:
                rooms.setdefault(room_slug, RoomChanges(room_slug)).updated = entries
        for room_slug, ids in left.items():
            if ids:
                rooms.setdefault(room_slug, RoomChanges(room_slug)).left = sorted(ids)
        return list(rooms.values())

    def _merge(self, joined: dict[str, set[str]], updated: dict[str, set[str]], left: dict[str, set[str]]) -> None:
        for mine, theirs in ((self._joined, joined), (self._updated, updated), (self._left, left)):
            for room_slug, ids in theirs.items():
                mine.setdefault(room_slug, set()).update(ids)

    async def _save_statuses(self, peers: list[LocalPeer], now: datetime) -> None:
        engine = PeerSession._meta.db
        async with engine.transaction():
            for peer in peers:
                s = peer.status
                await PeerSession.update(
                    {
                        PeerSession.state: s.state,
                        PeerSession.backend: s.backend,
                        PeerSession.models_warm: s.models_warm,
                        PeerSession.queue: s.queue,
                        PeerSession.tok_s: s.tok_s,
                        PeerSession.last_seen_at: now,
                    }
                ).where(PeerSession.peer_id == uuid.UUID(peer.peer_id))

    async def _heartbeat(self, now: datetime) -> dict[str, set[str]]:
        """Every third of `stale_after_s`: stamp our peers as seen, and close peers nobody has
        stamped for `stale_after_s` (their instance died). Returns the closed ones by room."""
        if time.monotonic() - self._heartbeat_at < self.stale_after_s / 3:
            return {}
        self._heartbeat_at = time.monotonic()
        for chunk in _chunks(list(self.peers)):
            await PeerSession.update({PeerSession.last_seen_at: now}).where(PeerSession.peer_id.is_in(chunk))
        # The UPDATE … RETURNING is atomic, so when several instances sweep, each closed peer is
        # announced by exactly one of them.
        closed = await PeerSession.update({PeerSession.disconnected_at: now}).where(
            PeerSession.disconnected_at.is_null(),
            PeerSession.last_seen_at < now - timedelta(seconds=self.stale_after_s),
        ).returning(PeerSession.peer_id, PeerSession.room)
        if not closed:
            return {}
        slugs = {
            row["id"]: row["slug"]
            for row in await Room.select(Room.id, Room.slug).where(Room.id.is_in(list({r["room"] for r in closed})))
        }
        stale: dict[str, set[str]] = {}
        for row in closed:
            stale.setdefault(slugs.get(row["room"], ""), set()).add(str(row["peer_id"]))
        stale.pop("", None)
        return stale
