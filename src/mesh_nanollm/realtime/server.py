"""The process's Socket.IO server: how it is tuned, and the presence loop that runs beside it."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import msgspec
import socketio
from litestar import Litestar
from socketio.packet import Packet

from mesh_nanollm.peers.service import close_open_peer_sessions
from mesh_nanollm.realtime.engine import use_lean_socket
from mesh_nanollm.realtime.events import Connection, register_events
from mesh_nanollm.realtime.notify import notify_error, notify_room_changes
from mesh_nanollm.realtime.presence import Presence
from mesh_nanollm.settings import Settings

log = logging.getLogger("mesh_nanollm.realtime")
# A whole frame larger than this closes the connection (engine.io's own limit); anything smaller
# but over a field's cap (an SDP is capped at 16 KiB) gets an `error` and the connection stays.
MAX_FRAME_BYTES = 256 * 1024
REDIS_CHANNEL = "mesh-nanollm"

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder()


class MsgspecJson:
    """msgspec behind the two functions python-socketio's `json=` calls. It passes `separators=`
    and expects `str` back; msgspec's output is already compact."""

    @staticmethod
    def dumps(obj: Any, **_: Any) -> str:
        return _encoder.encode(obj).decode()

    @staticmethod
    def loads(data: str | bytes, **_: Any) -> Any:
        return _decoder.decode(data)


class TextPacket(Packet):
    """Socket.IO packets without binary attachments: our protocol is JSON only, and the stock class
    walks every payload looking for bytes before it sends it."""

    uses_binary_events = False


class SignalingServer(socketio.AsyncServer):
    """python-socketio's server, answering undecodable packets with an `error` instead of a log line
    with a traceback, and running joins beside the socket's reader."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._joins: set[asyncio.Task[None]] = set()  # keeps running joins referenced

    async def _handle_eio_connect(self, eio_sid: str, environ: dict[str, Any]) -> None:
        # Called by engine.io between creating the socket and starting its websocket loop.
        use_lean_socket(self.eio, eio_sid)
        await super()._handle_eio_connect(eio_sid, environ)

    async def _handle_event(self, eio_sid: str, namespace: str | None, id: int | None, data: list[Any]) -> None:
        # Handlers run inline in the socket's reader (async_handlers=False), so a slow one stops
        # the reader, pongs included, and a join waiting on a busy database could outlast the ping
        # timeout. The join alone gets a task of its own; clients wait for its ack anyway.
        if data and data[0] == "join_room":
            task = asyncio.create_task(super()._handle_event(eio_sid, namespace, id, data))
            self._joins.add(task)
            task.add_done_callback(self._joins.discard)
        else:
            await super()._handle_event(eio_sid, namespace, id, data)

    async def _handle_eio_message(self, eio_sid: str, data: Any) -> None:
        try:
            await super()._handle_eio_message(eio_sid, data)
        except Exception as exc:  # anything escaping here came from decoding the client's packet
            sid = self.manager.sid_from_eio_sid(eio_sid, "/")
            if sid is None:
                return
            log.info("malformed packet from %s: %s", sid, exc.__class__.__name__)
            conn: Connection | None = (await self.get_session(sid)).get("conn")
            if conn is not None and conn.bucket.take():
                await notify_error(self, sid, "malformed", "That packet could not be decoded as a Socket.IO event.")


@dataclass
class Realtime:
    sio: SignalingServer
    presence: Presence
    settings: Settings

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Litestar) -> AsyncIterator[None]:
        """Runs inside Litestar's lifespan, after the database pool opened and before it closes."""
        if not self.settings.redis_url:
            # A lone instance that just started holds no sockets: every open peer session is stale.
            await close_open_peer_sessions()
        # What exists now (modules, the app, its pools) lives as long as the process. Frozen, the
        # cyclic collector stops walking it on every full pass: with 500 sockets those passes
        # went from 125-225 ms to 25-30 ms, which is the relay's tail latency.
        gc.collect()
        gc.freeze()
        publisher = asyncio.create_task(self._publish_presence())
        try:
            yield
        finally:
            publisher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await publisher
            self.presence.remove_all()
            await self.flush()

    async def _publish_presence(self) -> None:
        interval = self.settings.presence_interval_ms / 1000
        while True:
            await asyncio.sleep(interval)
            await self.flush()

    async def flush(self) -> None:
        """Write pending presence, then tell each room what changed: one batch per room per tick."""
        for changes in await self.presence.flush():
            try:
                await notify_room_changes(self.sio, changes)
            except Exception:  # e.g. Redis away for a moment; the database already has the truth
                log.exception("announcing presence in %s failed", changes.room_slug)


def create_realtime(settings: Settings) -> Realtime:
    manager = socketio.AsyncRedisManager(settings.redis_url, channel=REDIS_CHANNEL) if settings.redis_url else None
    sio = SignalingServer(
        client_manager=manager,
        async_mode="asgi",
        json=MsgspecJson,
        serializer=TextPacket,
        # Handlers run in the connection's reader instead of a task per event: events of one peer
        # stay in order, and the relay skips a task creation per message.
        async_handlers=False,
        # Websocket only: no sticky sessions needed behind a proxy with several instances.
        transports=["websocket"],
        ping_interval=settings.ping_interval_s,
        ping_timeout=settings.ping_timeout_s,
        max_http_buffer_size=MAX_FRAME_BYTES,
        logger=False,
        engineio_logger=False,
    )
    presence = Presence(stale_after_s=settings.peer_stale_after_s)
    register_events(sio, presence, settings)
    return Realtime(sio, presence, settings)
