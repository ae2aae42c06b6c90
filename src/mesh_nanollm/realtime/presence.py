"""Who is in which room: the peers on this instance and the presence changes waiting for the next
batched write (through the peers service) and announcement (the rule is in docs/realtime.md)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from mesh_nanollm.db import DB_ERRORS
from mesh_nanollm.peers import service as peers
from mesh_nanollm.peers.schemas import LinkRtt, PeerView, Served
from mesh_nanollm.peers.service import PeerJoin
from mesh_nanollm.realtime.schemas import Status

log = logging.getLogger("mesh_nanollm.presence")


def _now() -> datetime:
    return datetime.now(UTC)


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
    # The entry of `status` (statuses are replaced, never changed): a join's ack lists every peer
    # of the room, so a burst of joins asked for the same entries hundreds of times each.
    _entry: tuple[Status, PeerView] | None = field(default=None, repr=False)

    def entry(self) -> PeerView:
        s = self.status
        if self._entry is not None and self._entry[0] is s:
            return self._entry[1]
        view = PeerView(
            self.peer_id, self.username, s.backend, s.state, s.models_warm, s.queue, s.tok_s, s.pause_reason or "",
            [LinkRtt(link.peer_id, link.rtt_ms) for link in s.links],
            [Served(job.model, job.requester) for job in s.serving],
        )
        self._entry = (s, view)
        return view


@dataclass
class RoomChanges:
    """What one room hears from this instance after one flush."""

    room_slug: str
    joined: list[PeerView] = field(default_factory=list)
    updated: list[PeerView] = field(default_factory=list)
    left: list[str] = field(default_factory=list)


def matters(old: Status, new: Status) -> bool:
    """Whether a status change is one the room should hear at once: what the peer is doing (or why
    it paused), whom it serves, where it runs, which models it has warm. Queue length, speed and
    link round trips drift all the time; they wait."""
    return (
        old.state != new.state or old.pause_reason != new.pause_reason or old.serving != new.serving
        or old.backend != new.backend or old.models_warm != new.models_warm
    )


class Presence:
    """This instance's peers and its not-yet-flushed presence changes.

    Joins write their row before the ack (the joiner needs its peer id; a burst of joins shares
    INSERTs, see `open`); leaves, status changes and liveness stamps wait for `flush`, which writes
    each kind in as few statements as it can and returns one `RoomChanges` per room to announce.
    When a change that matters is pending, `wait` returns at once: the presence loop flushes then
    instead of at the next tick.
    """

    def __init__(self, stale_after_s: float) -> None:
        self.peers: dict[str, LocalPeer] = {}
        self.rooms: dict[str, dict[str, LocalPeer]] = {}  # the same peers by room slug, in join order
        self.stale_after_s = stale_after_s
        self._urgent = False
        self._wake: asyncio.Future[None] | None = None  # what `wait` sleeps on
        self._announced: asyncio.Future[None] | None = None  # done once the next flush is announced
        self._joined: dict[str, set[str]] = {}
        self._updated: dict[str, set[str]] = {}
        self._left: dict[str, set[str]] = {}
        self._heartbeat_at = 0.0
        self._opening: list[tuple[PeerJoin, asyncio.Future[str]]] = []
        self._opener: asyncio.Task[None] | None = None

    async def open(self, join: PeerJoin) -> str:
        """Write a joining peer's `PeerSession`; returns its peer id.

        Joins that arrive while an INSERT is under way go together in the next one: a room opened
        by hundreds of peers at once costs a few statements, not one each (and on SQLite, one
        writer instead of dozens of connections retrying its lock)."""
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._opening.append((join, future))
        if self._opener is None:
            self._opener = asyncio.create_task(self._open_pending())
        return await future

    async def _open_pending(self) -> None:
        try:
            while self._opening:
                batch, self._opening = self._opening, []
                try:
                    ids = await peers.open_peer_sessions([join for join, _ in batch])
                except DB_ERRORS:
                    # One bad row (its room deleted meanwhile) must not fail the other joins.
                    await self._open_each(batch)
                    continue
                for (_, future), peer_id in zip(batch, ids, strict=True):
                    if not future.done():
                        future.set_result(peer_id)
        finally:
            self._opener = None

    @staticmethod
    async def _open_each(batch: list[tuple[PeerJoin, asyncio.Future[str]]]) -> None:
        for join, future in batch:
            try:
                [peer_id] = await peers.open_peer_sessions([join])
            except Exception as exc:  # noqa: BLE001 — handed on: the join awaiting it raises it
                if not future.done():
                    future.set_exception(exc)
            else:
                if not future.done():
                    future.set_result(peer_id)

    def add(self, peer: LocalPeer) -> None:
        self.peers[peer.peer_id] = peer
        self.rooms.setdefault(peer.room_slug, {})[peer.peer_id] = peer
        self._joined.setdefault(peer.room_slug, set()).add(peer.peer_id)

    async def wait(self, timeout: float) -> None:
        """Until a change that matters is pending, `timeout` seconds at most."""
        if not self._urgent:
            self._wake = asyncio.get_running_loop().create_future()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake, timeout)
            self._wake = None
        self._urgent = False

    def room_peers(self, room_slug: str, exclude: str) -> list[PeerView]:
        """The room's peers on this instance, in join order: on a lone instance, everyone live
        there (fresher than the database, which hears of leaves at the next flush)."""
        return [peer.entry() for peer_id, peer in self.rooms.get(room_slug, {}).items() if peer_id != exclude]

    def update(self, peer: LocalPeer, status: Status) -> asyncio.Future[None] | None:
        """Keep `status` for the next flush. For a change that matters, wake the presence loop and
        return what is done once the room has heard it (`announce_next`)."""
        urgent = matters(peer.status, status)
        peer.status = status
        self._updated.setdefault(peer.room_slug, set()).add(peer.peer_id)
        if not urgent:
            return None
        self._urgent = True
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)
        if self._announced is None:
            self._announced = asyncio.get_running_loop().create_future()
        return self._announced

    def announce_next(self) -> asyncio.Future[None] | None:
        """Taken just before a flush: what to mark done once that flush's changes are announced.
        The flush takes its snapshot before its first await, so every update that returned this
        future is in it."""
        announced, self._announced = self._announced, None
        return announced

    def remove(self, peer_id: str) -> LocalPeer | None:
        peer = self.peers.pop(peer_id, None)
        if peer is not None:
            room = self.rooms[peer.room_slug]
            del room[peer_id]
            if not room:
                del self.rooms[peer.room_slug]
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
        # Taken before any await: statuses that arrive during the writes wait for the next flush,
        # so what the room hears is what the database holds.
        changed = {p: self.peers[p].status for ids in updated.values() for p in ids if p in self.peers}
        views = {p: self.peers[p].entry() for ids in (*joined.values(), *updated.values()) for p in ids if p in self.peers}
        try:
            left_ids = [peer_id for ids in left.values() for peer_id in ids]
            now = _now()
            await peers.close_peer_sessions(left_ids, now)
            if changed:
                await peers.save_statuses(changed, now)
            stale = await self._heartbeat(now)
        except Exception:  # a database hiccup must not lose presence: retry on the next flush
            log.exception("presence flush failed; retrying")
            self._merge(joined, updated, left)
            return []
        for room_slug, peer_ids in stale.items():
            left.setdefault(room_slug, set()).update(peer_ids)
        return self._changes(views, joined, updated, left)

    @staticmethod
    def _changes(
        views: dict[str, PeerView], joined: dict[str, set[str]], updated: dict[str, set[str]], left: dict[str, set[str]]
    ) -> list[RoomChanges]:
        rooms: dict[str, RoomChanges] = {}
        for room_slug, ids in joined.items():
            entries = [views[p] for p in ids if p in views]
            if entries:
                rooms.setdefault(room_slug, RoomChanges(room_slug)).joined = entries
        for room_slug, ids in updated.items():
            fresh = joined.get(room_slug, set())
            entries = [views[p] for p in ids if p in views and p not in fresh]
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
