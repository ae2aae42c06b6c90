"""Everything the server tells rooms and peers over Socket.IO: relayed signals, presence batches,
errors, and the end of a revoked credential's sockets. The socket handlers, the presence loop and
(for revocations) the HTTP routes call these; nothing else emits."""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec
import socketio

from mesh_nanollm.realtime.presence import RoomChanges
from mesh_nanollm.security import hash_token

if TYPE_CHECKING:
    from mesh_nanollm.realtime.server import Realtime

# The Redis channel that carries revoked credentials between instances.
REVOKED_CHANNEL = "mesh-nanollm:revoked"

_encode = msgspec.json.Encoder().encode


def room_channel(room_slug: str) -> str:
    """The Socket.IO room every peer of a mesh room is in."""
    return f"r:{room_slug}"


def peer_channel(room_slug: str, peer_id: str) -> str:
    """One peer's own Socket.IO room. It names the mesh room too, so a signal addressed through it
    can only reach a peer of the sender's room, on whichever instance that peer is connected."""
    return f"p:{room_slug}:{peer_id}"


def credential_channel(credential: str) -> str:
    """The Socket.IO room of the sockets opened with one credential (the SHA-256 of a token or of
    a session id)."""
    return f"c:{credential}"


def member_credential(room_slug: str, user_id: int) -> str:
    """What a socket in a room is filed under besides its token or session: one user's presence in
    one room, so that losing the room closes it like a revoked credential."""
    return f"member:{room_slug}:{user_id}"


async def notify_room_changes(sio: socketio.AsyncServer, changes: RoomChanges) -> None:
    """One batch per kind of change, to everyone in the room: `peer_left {peer_ids}`,
    `peer_joined {peers}`, `peer_updated {peers}`."""
    to = room_channel(changes.room_slug)
    room = changes.room_slug
    if changes.left:
        await sio.emit("peer_left", {"room": room, "peer_ids": changes.left}, to=to)
    if changes.joined:
        await sio.emit("peer_joined", {"room": room, "peers": msgspec.to_builtins(changes.joined)}, to=to)
    if changes.updated:
        await sio.emit("peer_updated", {"room": room, "peers": msgspec.to_builtins(changes.updated)}, to=to)


def relay_signal(sio: socketio.AsyncServer, eio_sid: str, payload: dict[str, object]) -> None:
    """`signal {from, kind, data}` to a peer on this instance: the relay's hot path.

    `sio.emit` would build a packet object, start a task per recipient and wait on them; for one
    recipient on this instance the Socket.IO EVENT frame (`2` + JSON `[event, data]`) can go
    straight to its engine.io socket, which writes it at once if it can (`LeanSocket.deliver`).
    (`eio.send` would get there through four awaits and a ping-timeout check that engine.io's
    service task makes anyway.)
    """
    socket = sio.eio.sockets.get(eio_sid)
    if socket is not None and not socket.closed:
        socket.deliver("2" + _encode(["signal", payload]).decode())


async def notify_error(sio: socketio.AsyncServer, sid: str, code: str, message: str) -> None:
    """`error {code, message}` to one connection on this instance; the connection stays up."""
    await sio.emit("error", {"code": code, "message": message}, to=sid, ignore_queue=True)


async def close_credential_sockets(sio: socketio.AsyncServer, credential: str) -> None:
    """Disconnect this instance's sockets opened with `credential`: each hears Socket.IO's
    DISCONNECT (after which clients do not reconnect by themselves), then its websocket closes."""
    for sid, eio_sid in list(sio.manager.get_participants("/", credential_channel(credential))):
        await sio.disconnect(sid, ignore_queue=True)
        await sio.eio.disconnect(eio_sid)


async def notify_token_revoked(realtime: Realtime, token_hash: str) -> None:
    """An API token was revoked: the sockets it opened close, on every instance."""
    await realtime.revoke(token_hash)


async def notify_signed_out(realtime: Realtime, session_id: str) -> None:
    """A browser session ended: the sockets it opened close, on every instance."""
    await realtime.revoke(hash_token(session_id))


async def notify_access_lost(realtime: Realtime, room_slug: str, user_ids: list[int]) -> None:
    """Users lost a room (removed from it, or it was deleted): their sockets in it close, on every
    instance, and the room hears `peer_left` as for any closed socket."""
    for user_id in user_ids:
        await realtime.revoke(member_credential(room_slug, user_id))
