"""The process's Socket.IO server: how it is tuned, and the presence loop that runs beside it."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass
from typing import Any

import msgspec
import socketio
from litestar import Litestar
from redis.asyncio import Redis
from redis.exceptions import RedisError
from socketio.packet import Packet

from mesh_nanollm.peers.service import close_open_peer_sessions
from mesh_nanollm.realtime.engine import use_lean_socket
from mesh_nanollm.realtime.events import Connection, admit, register_events
from mesh_nanollm.realtime.jobs import JobRelay
from mesh_nanollm.realtime.manager import LeanManager, LeanRedisManager
from mesh_nanollm.realtime.notify import (
    REVOKED_CHANNEL,
    close_credential_sockets,
    notify_error,
    notify_room_changes,
)
from mesh_nanollm.realtime.presence import Presence
from mesh_nanollm.settings import Settings

log = logging.getLogger("mesh_nanollm.realtime")
# A whole frame larger than this closes the connection (engine.io's own limit); anything smaller
# but over a field's cap (an SDP is capped at 16 KiB) gets an `error` and the connection stays.
MAX_FRAME_BYTES = 256 * 1024
REDIS_CHANNEL = "mesh-nanollm"
# Socket.IO packet types as the first character of a text frame (socketio.packet numbers them).
DISCONNECT_PACKET_TYPE = "1"
BINARY_PACKET_TYPES = ("5", "6")  # BINARY_EVENT, BINARY_ACK: JSON only here
BINARY_REFUSED = "This server speaks JSON only: binary events and attachments are refused."
# Both libraries, given `logger=False`, attach a handler of their own and also pass records on to
# the root logger, so each of their errors was printed twice. Given a logger, they use it as is:
# their errors go through the app's logging once, and their per-packet INFO lines stay off.
_library_log = logging.getLogger("mesh_nanollm.realtime.library")
_library_log.setLevel(logging.ERROR)

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
    """python-socketio's server, answering undecodable and binary packets with an `error` instead
    of a log line with a traceback (or a held attachment), running joins beside the socket's reader,
    and closing engine.io sockets that hold no signed-in Socket.IO connection for long."""

    def __init__(self, *, auth_timeout_s: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.auth_timeout_s = auth_timeout_s
        self._tasks: set[asyncio.Task[Any]] = set()  # keeps running joins and closes referenced

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _expect_connect(self, eio_sid: str) -> None:
        # A websocket costs the server ~150 KiB (Granian's buffers) for as long as it is open, and
        # answering pings is enough to keep one open: without a signed-in Socket.IO connection it
        # gets `auth_timeout_s` to make one.
        asyncio.get_running_loop().call_later(self.auth_timeout_s, self._close_if_anonymous, eio_sid)

    def _close_if_anonymous(self, eio_sid: str) -> None:
        socket = self.eio.sockets.get(eio_sid)
        if socket is None or socket.closing or socket.closed:
            return
        sid = self.manager.sid_from_eio_sid(eio_sid, "/")
        if sid is None or not self.manager.is_connected(sid, "/"):
            self._spawn(self.eio.disconnect(eio_sid))

    async def _handle_eio_connect(self, eio_sid: str, environ: dict[str, Any]) -> None:
        # Called by engine.io between creating the socket and starting its websocket loop.
        use_lean_socket(self.eio, eio_sid)
        self._expect_connect(eio_sid)
        await super()._handle_eio_connect(eio_sid, environ)

    async def _handle_event(self, eio_sid: str, namespace: str | None, id: int | None, data: list[Any]) -> None:
        # Handlers run inline in the socket's reader (async_handlers=False), so a slow one stops
        # the reader, pongs included, and a join waiting on a busy database could outlast the ping
        # timeout. The join alone gets a task of its own; clients wait for its ack anyway.
        if data and data[0] == "join_room":
            self._spawn(super()._handle_event(eio_sid, namespace, id, data))
        elif data and data[0] == "signal" and id is None and namespace in (None, "/"):
            # The relay's hot path: what the library's _handle_event, _handle_event_internal and
            # _trigger_event do for an event without an ack, in one step (no log call, no
            # handler lookup by name, no coroutine check, two coroutines fewer per message).
            sid = self.manager.sid_from_eio_sid(eio_sid, "/")
            if self.manager.is_connected(sid, "/"):
                await self.handlers["/"]["signal"](sid, *data[1:])
        else:
            await super()._handle_event(eio_sid, namespace, id, data)

    async def _handle_eio_message(self, eio_sid: str, data: Any) -> None:
        if isinstance(data, bytes) or data[:1] in BINARY_PACKET_TYPES:
            # The stock server would keep the packet and every attachment frame that follows until
            # the last one arrives (a count the client picks): refuse it here, hold nothing.
            await self._answer(eio_sid, "binary", BINARY_REFUSED)
            return
        # Deliberately broad: a hostile packet makes the library's decoding and dispatch raise
        # whatever it trips over (ValueError, KeyError, TypeError, RecursionError from deep nesting,
        # ...), and the contract is an `error` event on a connection that stays up, whatever it was.
        try:
            await super()._handle_eio_message(eio_sid, data)
        except Exception as exc:  # noqa: BLE001 — any of them is a malformed packet (see above)
            log.debug("malformed packet: %s", exc.__class__.__name__)
            await self._answer(eio_sid, "malformed", "That packet could not be decoded as a Socket.IO event.")
            return
        if data[:1] == DISCONNECT_PACKET_TYPE:  # the client left the namespace, the websocket stays
            self._expect_connect(eio_sid)

    async def _answer(self, eio_sid: str, code: str, message: str) -> None:
        """An `error` to a signed-in connection, if its rate limit allows; nothing to anyone else."""
        sid = self.manager.sid_from_eio_sid(eio_sid, "/")
        if sid is None or not self.manager.is_connected(sid, "/"):
            return
        conn: Connection | None = (await self.get_session(sid)).get("conn")
        if conn is not None and await admit(self, sid, conn):
            await notify_error(self, sid, code, message)


@dataclass
class Realtime:
    sio: SignalingServer
    presence: Presence
    jobs: JobRelay
    settings: Settings
    # With several instances, revocations reach the others through this Redis (see `revoke`).
    redis: Redis | None = None

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
        if not self.sio.manager_initialized:
            # python-socketio starts its Redis listener at the first socket's connect; an instance
            # that sends `job_run` to a peer elsewhere before any socket of its own connected would
            # never hear the peer's ack. Start it now.
            self.sio.manager_initialized = True
            self.sio.manager.initialize()
        loops = [asyncio.create_task(self._publish_presence())]
        if self.redis is not None:
            loops.append(asyncio.create_task(self._hear_revocations(self.redis)))
            loops.append(asyncio.create_task(self.jobs.hear_other_instances()))
        try:
            yield
        finally:
            for loop in loops:
                loop.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await loop
            self.presence.remove_all()
            await self.flush()
            if self.redis is not None:
                await self.redis.aclose()

    async def _publish_presence(self) -> None:
        # A flush at the latest one interval after the last, and at once when a change that
        # matters is pending; whatever arrives while one flush writes goes out with the next.
        interval = self.settings.presence_interval_ms / 1000
        while True:
            await self.presence.wait(interval)
            await self.flush()

    async def flush(self) -> None:
        """Write pending presence, then tell each room what changed: one batch per room per tick."""
        announced = self.presence.announce_next()
        try:
            for changes in await self.presence.flush():
                try:
                    await notify_room_changes(self.sio, changes)
                except Exception:  # e.g. Redis away for a moment; the database already has the truth
                    log.exception("announcing presence in %s failed", changes.room_slug)
        finally:
            if announced is not None and not announced.done():
                announced.set_result(None)

    async def revoke(self, credential: str) -> None:
        """Close the sockets opened with `credential` here, and have every other instance close
        theirs. The credential is already gone from the database, so none of them gets back in."""
        await close_credential_sockets(self.sio, credential)
        if self.redis is not None:
            try:
                await self.redis.publish(REVOKED_CHANNEL, credential)
            except RedisError as exc:
                log.warning("could not tell the other instances of a revoked credential: %s", exc)

    async def _hear_revocations(self, redis: Redis) -> None:
        # Our own publications come back too; closing the sockets again finds none.
        while True:
            try:
                async with redis.pubsub() as pubsub:
                    await pubsub.subscribe(REVOKED_CHANNEL)
                    async for message in pubsub.listen():
                        if message["type"] == "message":
                            await close_credential_sockets(self.sio, message["data"].decode())
            except (RedisError, OSError) as exc:
                log.warning("revocations from other instances unheard, retrying in 1 s: %s", exc)
                await asyncio.sleep(1)


def create_realtime(settings: Settings) -> Realtime:
    manager = LeanRedisManager(settings.redis_url, channel=REDIS_CHANNEL) if settings.redis_url else LeanManager()
    sio = SignalingServer(
        auth_timeout_s=settings.socket_auth_timeout_s,
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
        logger=_library_log,
        engineio_logger=_library_log,
    )
    presence = Presence(stale_after_s=settings.peer_stale_after_s)
    redis = Redis.from_url(settings.redis_url) if settings.redis_url else None
    jobs = JobRelay(sio, redis)
    register_events(sio, presence, jobs, settings)
    return Realtime(sio, presence, jobs, settings, redis)
