"""The Socket.IO handlers: connect, join_room, leave_room, signal, status, refresh_ice, the API-job
events (job_token, job_done, job_error), disconnect."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import msgspec
import socketio
from socketio.exceptions import ConnectionRefusedError as Refused

from mesh_nanollm.errors import ServiceError
from mesh_nanollm.peers.service import PeerJoin, list_live_peers
from mesh_nanollm.realtime.auth import authenticate_socket
from mesh_nanollm.realtime.ice import ice_servers_for, ice_ttl_for
from mesh_nanollm.realtime.jobs import JobEvent, JobRelay
from mesh_nanollm.realtime.limits import TokenBucket
from mesh_nanollm.realtime.notify import (
    credential_channel,
    member_credential,
    notify_error,
    peer_channel,
    relay_signal,
    room_channel,
)
from mesh_nanollm.realtime.presence import LocalPeer, Presence
from mesh_nanollm.realtime.schemas import (
    PRINTABLE,
    IceAck,
    IceCandidate,
    JobDone,
    JobError,
    JobToken,
    JoinAck,
    JoinRoom,
    RefreshIce,
    SessionDescription,
    Signal,
    Status,
)
from mesh_nanollm.rooms.service import get_room
from mesh_nanollm.settings import Settings
from mesh_nanollm.tables import User

log = logging.getLogger("mesh_nanollm.realtime")
REFUSED = "Sign in first: the connection needs a valid session cookie or Bearer token."
CODES = {403: "forbidden", 404: "not_found"}
# How long a status change that matters holds its socket's next events until the room heard it.
ANNOUNCE_WAIT_S = 2.0


@dataclass(slots=True)
class Connection:
    """What the server knows about one socket; kept in its Socket.IO session."""

    user: User
    bucket: TokenBucket
    peer: LocalPeer | None = None
    joining: bool = False


def _problem(exc: msgspec.ValidationError) -> str:
    problem = str(exc).replace(f"matching regex {PRINTABLE!r}", "without control characters")
    return f"The payload is not valid: {problem}"


async def admit(sio: socketio.AsyncServer, sid: str, conn: Connection) -> bool:
    """Whether `conn`'s token bucket lets one more packet through; if not, tell it why."""
    if conn.bucket.take():
        return True
    await throttled(sio, sid, conn)
    return False


async def throttled(sio: socketio.AsyncServer, sid: str, conn: Connection) -> None:
    """Tell `conn` that events over its rate limit were dropped: once a second at most, so a flood
    is not answered with a flood."""
    bucket = conn.bucket
    if bucket.should_warn():
        await notify_error(
            sio, sid, "rate_limited",
            f"Too many events: at most {bucket.rate:g}/s (bursts of {bucket.burst:g}). "
            "Events over the limit were dropped.",
        )


def register_events(sio: socketio.AsyncServer, presence: Presence, relay: JobRelay, settings: Settings) -> None:
    """Attach the handlers to `sio`; `presence` is this instance's peer registry, `relay` carries
    API jobs' events to the instance that runs each job."""
    # The same Connection objects as in each socket's Socket.IO session, indexed by sid: the relay
    # reads one per message, and a dict lookup costs far less than `await sio.get_session(sid)`.
    connections: dict[str, Connection] = {}

    async def admitted(sid: str) -> Connection | None:
        """The connection, if its token bucket lets this event through; otherwise tell it why."""
        conn = connections.get(sid)
        if conn is None or conn.bucket.take():  # admit's common case, without its coroutine
            return conn
        await throttled(sio, sid, conn)
        return None

    async def depart(conn: Connection, sid: str, *, closing: bool = False) -> None:
        peer = conn.peer
        if peer is None:
            return
        conn.peer = None
        presence.remove(peer.peer_id)
        await relay.peer_gone(peer.peer_id, sid)
        if not closing:  # a closing socket leaves all its rooms anyway
            await sio.leave_room(sid, room_channel(peer.room_slug))
            await sio.leave_room(sid, peer_channel(peer.room_slug, peer.peer_id))
            await sio.leave_room(sid, credential_channel(member_credential(peer.room_slug, conn.user.id)))

    def event(fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        """Register `fn` under its name; a bug in it is logged and reported, never fatal."""

        @functools.wraps(fn)
        async def guarded(sid: str, *args: Any) -> Any:
            try:
                return await fn(sid, *args)
            except Exception:
                log.exception("socket event %s failed", fn.__name__)
                return await refuse(sid, "internal", "Something went wrong on our side. Please try again.")

        sio.on(fn.__name__, guarded)
        return guarded

    @sio.event
    async def connect(sid: str, environ: dict[str, Any], auth: object = None) -> None:
        """A browser or script opens the socket; it must already be signed in."""
        signed_in = await authenticate_socket(environ, auth)
        if signed_in is None:
            raise Refused(REFUSED)
        user, credential = signed_in
        conn = Connection(user, TokenBucket(settings.socket_rate, settings.socket_burst))
        await sio.save_session(sid, {"conn": conn})
        # Filed under its credential, so revoking the token or ending the session closes it.
        await sio.enter_room(sid, credential_channel(credential))
        connections[sid] = conn

    @event
    async def join_room(sid: str, data: object = None, *extra: object) -> dict[str, Any]:
        """A peer enters a room: `{room, capabilities}`. Acks `{peer_id, peers, ice_servers}` (or
        `{error}`); the room hears `peer_joined` with the next presence batch."""
        conn = await admitted(sid)
        if conn is None:
            return {"error": {"code": "rate_limited", "message": "Too many events."}}
        try:
            join = msgspec.convert(data, JoinRoom)
        except msgspec.ValidationError as exc:
            return await refuse(sid, "invalid", _problem(exc))
        if conn.peer is not None or conn.joining:
            where = f"in room “{conn.peer.room_slug}”" if conn.peer else "joining a room"
            return await refuse(sid, "already_joined", f"This connection is already {where}; leave it first.")
        conn.joining = True
        try:
            room = await get_room(conn.user, join.room)
            caps = join.capabilities
            peer_id = await presence.open(PeerJoin(room.id, conn.user.id, sid, caps))
        except ServiceError as exc:
            return await refuse(sid, CODES.get(exc.status_code, "invalid"), exc.detail)
        finally:
            conn.joining = False
        status = Status(state=caps.state, backend=caps.backend, models_warm=caps.models_warm, pause_reason=caps.pause_reason)
        eio_sid = sio.manager.eio_sid_from_sid(sid, "/")
        peer = LocalPeer(peer_id, sid, eio_sid or "", room.id, room.slug, conn.user.username, status)
        presence.add(peer)
        if connections.get(sid) is not conn:
            # The socket closed while the database worked: close the session we just opened.
            presence.remove(peer_id)
            return {"error": {"code": "disconnected", "message": "The connection closed while joining."}}
        conn.peer = peer
        await sio.enter_room(sid, room_channel(room.slug))
        await sio.enter_room(sid, peer_channel(room.slug, peer_id))
        # Filed under the membership too: removing the member (or deleting the room) closes it.
        await sio.enter_room(sid, credential_channel(member_credential(room.slug, conn.user.id)))
        # A lone instance holds every live peer of the room; with several, the others are known
        # only from the database.
        if settings.redis_url:
            peers = await list_live_peers(room, exclude=peer_id)
        else:
            peers = presence.room_peers(room.slug, exclude=peer_id)
        ack = JoinAck(peer_id, peers, ice_servers_for(settings, conn.user.id), ice_ttl_for(settings))
        return msgspec.to_builtins(ack)

    @event
    async def refresh_ice(sid: str, data: object = None, *extra: object) -> dict[str, Any]:
        """`{}` from a peer in a room: acks `{ice_servers, ice_ttl_s}` with new TURN credentials,
        so a tab open longer than `TURN_TTL` can still make links (or `{error}`)."""
        conn = await admitted(sid)
        if conn is None:
            return {"error": {"code": "rate_limited", "message": "Too many events."}}
        if conn.peer is None:
            return await refuse(sid, "not_in_room", "Join a room before asking for ICE servers.")
        try:
            msgspec.convert(data, RefreshIce)
        except msgspec.ValidationError as exc:
            return await refuse(sid, "invalid", _problem(exc))
        return msgspec.to_builtins(IceAck(ice_servers_for(settings, conn.user.id), ice_ttl_for(settings)))

    @event
    async def leave_room(sid: str, *args: object) -> dict[str, Any]:
        """A peer leaves its room; the room hears `peer_left` with the next presence batch."""
        conn = await admitted(sid)
        if conn is not None:
            await depart(conn, sid)
        return {"ok": True}

    @event
    async def signal(sid: str, data: object = None, *extra: object) -> None:
        """WebRTC signaling `{to, kind, data}`, relayed as `signal {from, kind, data}` to peer `to`
        if it is in the sender's room. The hot path: no database, no extra emit."""
        conn = await admitted(sid)
        if conn is None:
            return
        peer = conn.peer
        if peer is None:
            await notify_error(sio, sid, "not_in_room", "Join a room before signaling.")
            return
        try:
            msg = msgspec.convert(data, Signal)
            if msg.kind == "candidate":
                if msg.data is not None:
                    msgspec.convert(msg.data, IceCandidate)
            elif msg.data is None:
                raise msgspec.ValidationError(f"a {msg.kind} needs `data` (a session description)")
            else:
                msgspec.convert(msg.data, SessionDescription)
        except msgspec.ValidationError as exc:
            await notify_error(sio, sid, "invalid", _problem(exc))
            return
        out = {"from": peer.peer_id, "kind": msg.kind, "data": msg.data}
        target = presence.peers.get(msg.to)
        if target is not None:
            if target.room_slug == peer.room_slug:
                relay_signal(sio, target.eio_sid, out)
                return
        elif settings.redis_url:
            # Not on this instance: the peer's own channel reaches it on another one, and only if
            # it is in the sender's room.
            await sio.emit("signal", out, to=peer_channel(peer.room_slug, msg.to))
            return
        await notify_error(sio, sid, "unknown_peer", f"No peer {msg.to} in room “{peer.room_slug}”.")

    @event
    async def status(sid: str, data: object = None, *extra: object) -> None:
        """A peer's state, backend, warm models, queue, speed, links and the jobs it serves;
        written and announced (`peer_updated`) in a presence batch: at once if state, pause reason,
        jobs served, backend or warm models changed, else at the next tick. For a change at once,
        the peer's next event is handled only after the room has heard it (handlers run in the
        socket's reader): a worker's `busy` reaches the room before its first `job_token`."""
        conn = await admitted(sid)
        if conn is None:
            return
        if conn.peer is None:
            await notify_error(sio, sid, "not_in_room", "Join a room before sending status.")
            return
        try:
            update = msgspec.convert(data, Status)
        except msgspec.ValidationError as exc:
            await notify_error(sio, sid, "invalid", _problem(exc))
            return
        announced = presence.update(conn.peer, update)
        if announced is not None:
            # Bounded: a stuck database must not stop this socket's reader (and its pongs).
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(announced), ANNOUNCE_WAIT_S)

    async def job_event(sid: str, kind: str, data: object, shape: type[JobToken | JobDone | JobError]) -> None:
        conn = await admitted(sid)
        if conn is None:
            return
        if conn.peer is None:
            await notify_error(sio, sid, "not_in_room", "Join a room before sending job events.")
            return
        try:
            msg = msgspec.convert(data, shape)
        except msgspec.ValidationError as exc:
            await notify_error(sio, sid, "invalid", _problem(exc))
            return
        event = JobEvent(kind, conn.peer.peer_id, sid, msgspec.to_builtins(msg))
        if not await relay.deliver(msg.job_id, event):
            await notify_error(sio, sid, "unknown_job", f"No job {msg.job_id} is running: it is over, or was never yours.")

    @event
    async def job_token(sid: str, data: object = None, *extra: object) -> None:
        """A worker's token batch `{job_id, seq, text}` for an API job it was sent (`job_run`);
        the server relays the text to the HTTP client."""
        await job_event(sid, "token", data, JobToken)

    @event
    async def job_done(sid: str, data: object = None, *extra: object) -> None:
        """A worker finished an API job: `{job_id, text, metrics}`; the server records it."""
        await job_event(sid, "done", data, JobDone)

    @event
    async def job_error(sid: str, data: object = None, *extra: object) -> None:
        """A worker could not finish an API job: `{job_id, code, message}`; the server tries
        another peer with the text so far."""
        await job_event(sid, "error", data, JobError)

    @sio.on("*")
    async def unknown(event: object, sid: str, *args: object) -> None:
        if await admitted(sid) is not None:
            await notify_error(sio, sid, "unknown_event", f"There is no event called {str(event)[:64]!r}.")

    @sio.event
    async def disconnect(sid: str, reason: object = None) -> None:
        """The socket closed (left, lost or timed out): its peer leaves its room."""
        conn = connections.pop(sid, None)
        if conn is not None:
            await depart(conn, sid, closing=True)

    async def refuse(sid: str, code: str, message: str) -> dict[str, Any]:
        await notify_error(sio, sid, code, message)
        return {"error": {"code": code, "message": message}}
