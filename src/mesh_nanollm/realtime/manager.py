"""python-socketio's client managers, emitting to a room without a task per recipient (a presence
batch to a 500-peer room started 500 tasks; the figures are in docs/benchmarks.md, "Signaling")."""

from __future__ import annotations

from typing import Any

import socketio
from engineio import packet as eio_packet
from socketio import packet


class LeanManager(socketio.AsyncManager):
    """The stock manager, but an emit without an ack callback queues its one encoded frame on each
    recipient's engine.io socket in turn, instead of starting a task per recipient and waiting for
    them all: queueing on an engine.io socket never waits (its queue is unbounded), so the tasks
    only added their scheduling. Emits with a callback (a per-recipient ack id) stay stock."""

    async def emit(
        self, event: str, data: Any, namespace: str, room: Any = None, skip_sid: Any = None,
        callback: Any = None, to: Any = None, **kwargs: Any,
    ) -> None:
        if callback is not None or namespace not in self.rooms:
            return await super().emit(event, data, namespace, room=room, skip_sid=skip_sid,
                                      callback=callback, to=to, **kwargs)
        args = list(data) if isinstance(data, tuple) else [] if data is None else [data]
        skip = skip_sid if isinstance(skip_sid, list) else [skip_sid]
        encoded = self.server.packet_class(packet.EVENT, namespace=namespace, data=[event, *args]).encode()
        frames = [eio_packet.Packet(eio_packet.MESSAGE, p) for p in (encoded if isinstance(encoded, list) else [encoded])]
        for sid, eio_sid in list(self.get_participants(namespace, to or room)):
            if sid not in skip:
                for frame in frames:
                    await self.server._send_eio_packet(eio_sid, frame)
        return None


class LeanRedisManager(socketio.AsyncRedisManager, LeanManager):
    """The Redis manager over LeanManager: what it delivers on this instance (an emit heard from
    Redis, or one with `ignore_queue`) goes out the lean way."""
