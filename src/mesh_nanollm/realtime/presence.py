"""Who is in which room: the peers on this instance and the presence changes waiting for the next
batched write (through the peers service) and announcement (the rule is in docs/realtime.md)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

from mesh_nanollm.peers import service as peers
from mesh_nanollm.peers.schemas import PeerView
from mesh_nanollm.realtime.schemas import Status

log = logging.getLogger("mesh_nanollm.presence")


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

    def entry(self) -> PeerView:
        s = self.status
        return PeerView(self.peer_id, self.username, s.backend, s.state, s.models_warm, s.queue, s.tok_s)


@dataclass
class RoomChanges:
    """What one room hears from this instance after one flush."""

    room_slug: str
    joined: list[PeerView] = field(default_factory=list)
    updated: list[PeerView] = field(default_factory=list)
    left: list[str] = field(default_factory=list)


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
            await peers.close_peer_sessions(left_ids, now)
            changed = {p: self.peers[p].status for ids in updated.values() for p in ids if p in self.peers}
            if changed:
                await peers.save_statuses(changed, now)
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

    async def _heartbeat(self, now: datetime) -> dict[str, set[str]]:
        """Every third of `stale_after_s`: stamp our peers as seen, and close peers nobody has
        stamped for `stale_after_s` (their instance died). Returns the closed ones by room."""
        if time.monotonic() - self._heartbeat_at < self.stale_after_s / 3:
            return {}
        self._heartbeat_at = time.monotonic()
        await peers.stamp_seen(self.peers, now)
        return await peers.close_stale_peer_sessions(now, self.stale_after_s)
