"""The library baseline: python-socketio on Granian with its defaults and the same relay events as
the Node reference (no auth, no validation, no database). Serve with
`granian --interface asgi bare_server:app` from this folder."""

from __future__ import annotations

import uuid
from typing import Any

import socketio

sio = socketio.AsyncServer(async_mode="asgi", transports=["websocket"], ping_interval=5, ping_timeout=5)
app = socketio.ASGIApp(sio)
rooms: dict[str, dict[str, dict[str, Any]]] = {}
where: dict[str, tuple[str, str]] = {}  # sid -> (room, peer_id)


@sio.event
async def join_room(sid: str, data: dict[str, Any]) -> dict[str, Any]:
    room, peer_id = str(data["room"]), str(uuid.uuid4())
    entry = {"peer_id": peer_id, "username": "bench", "backend": data.get("capabilities", {}).get("backend", ""),
             "state": "idle", "models_warm": [], "queue": 0, "tok_s": 0}
    members = rooms.setdefault(room, {})
    peers = list(members.values())
    members[peer_id] = entry
    where[sid] = (room, peer_id)
    await sio.enter_room(sid, f"r:{room}")
    await sio.enter_room(sid, f"p:{room}:{peer_id}")
    await sio.emit("peer_joined", {"room": room, "peers": [entry]}, to=f"r:{room}", skip_sid=sid)
    return {"peer_id": peer_id, "peers": peers, "ice_servers": []}


@sio.event
async def signal(sid: str, msg: dict[str, Any]) -> None:
    if sid in where:
        room, peer_id = where[sid]
        await sio.emit("signal", {"from": peer_id, "kind": msg["kind"], "data": msg["data"]}, to=f"p:{room}:{msg['to']}")


@sio.event
async def status(sid: str, update: dict[str, Any]) -> None:
    if sid in where:
        room, peer_id = where[sid]
        entry = rooms[room][peer_id]
        entry.update(update)
        await sio.emit("peer_updated", {"room": room, "peers": [entry]}, to=f"r:{room}", skip_sid=sid)


@sio.event
async def disconnect(sid: str, reason: str) -> None:
    if sid in where:
        room, peer_id = where.pop(sid)
        rooms[room].pop(peer_id, None)
        await sio.emit("peer_left", {"room": room, "peer_ids": [peer_id]}, to=f"r:{room}")
