"""engine.io's websocket loop without a task and a timer per message (the relay's largest cost
after Granian itself; the profile is in docs/benchmarks.md, "Signaling")."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from engineio import exceptions, packet
from engineio.async_socket import AsyncSocket

# Granian's websocket `send` starts the write when it is called and returns a future of it, and
# one websocket's writes go out in the order of the calls (with one runtime thread, which cli.py
# sets; tests/realtime pin both). So a packet need not wait for the previous one's round trip
# through the event loop: up to this many writes per socket are left under way, unawaited; past
# that the socket's writer waits for the oldest. A peer that reads slowly thus holds up only its
# own engine.io queue, as with stock engine.io.
WRITES_IN_FLIGHT = 16


class LeanSocket(AsyncSocket):
    """python-engineio's socket, reading and writing a websocket with plain awaits.

    Stock engine.io wraps every websocket read in a new task plus `asyncio.wait_for`, and every
    write-queue read in another `wait_for`: two tasks' worth of scheduling and two timer handles per
    relayed message; each message then went through `receive` and `_trigger_event` to reach the
    one handler engine.io has for it (python-socketio's). The timeouts only guard against a silent client, which engine.io's service
    task already closes when it misses a ping; `close` here then wakes the writer, which closes the
    websocket, which ends the reader. A frame that is not an engine.io packet at all closes the
    connection without a log line, as the reference (JavaScript) engine.io server does; stock
    python-engineio logged a traceback for each one. Everything else (packets, pings,
    upgrade-less websocket handshake, close semantics) is engine.io's own code.
    """

    # Set by the writer once the server's `send` proved to start writes by itself (Granian's does):
    # from then on `deliver` can write without waking the writer. `_writes` are those under way.
    _send: Any = None
    _writes: deque[Any]

    def deliver(self, data: str) -> None:
        """Send `data` (an encoded Socket.IO packet) as an engine.io MESSAGE: at once if nothing is
        queued before it and fewer than WRITES_IN_FLIGHT writes are under way, else through the
        queue and the writer."""
        if self._send is not None and self.queue.empty() and len(self._writes) < WRITES_IN_FLIGHT:
            self._writes.append(self._send(_text_message("4" + data)))  # no engine.io packet object
        else:
            self.queue.put_nowait(packet.Packet(packet.MESSAGE, data))

    async def _websocket_handler(self, ws: Any) -> Any:
        if self.connected:  # an upgrade from long-polling: not offered (websocket only), keep stock
            return await super()._websocket_handler(ws)
        self.connected = True
        self.upgraded = True
        writer = asyncio.ensure_future(self._write(ws))
        limit = self.server.max_http_buffer_size
        while True:
            try:
                data = await ws.wait()
            except (OSError, RuntimeError):  # closed: engine.io's ASGI wrapper, or the server's flow error
                break
            if data is None or len(data) > limit:
                break
            try:
                pkt = packet.Packet(encoded_packet=data)
            except ValueError:  # empty, no packet type, bad base64: not an engine.io client
                break
            if not packet.OPEN <= pkt.packet_type <= packet.NOOP:
                break
            try:
                if pkt.packet_type == packet.MESSAGE:
                    # What `receive` + `_trigger_event` do for a message, minus a log call, an
                    # `inspect` check and a closure per message.
                    await self.server.handlers["message"](self.sid, pkt.data)
                else:
                    await self.receive(pkt)
            except exceptions.UnknownPacketError:
                pass
            except exceptions.SocketIsClosedError:
                break
            except Exception:
                self.server.logger.exception("Unknown receive error")
        await self.queue.put(None)
        await writer
        await self.close(wait=False, abort=True, reason=self.server.reason.TRANSPORT_CLOSE)

    async def _write(self, ws: Any) -> None:
        send = ws.asgi_send  # engine.io's ASGI websocket only wraps it in a coroutine
        writes: deque[Any] = deque()
        self._writes = writes
        queue = self.queue
        try:
            while True:
                pkt = await queue.get()
                queue.task_done()
                if pkt is None:
                    break
                write = send(_message(pkt))
                if hasattr(write, "done"):  # a future: the write is under way
                    writes.append(write)
                    self._send = send
                else:  # a coroutine starts only when awaited
                    await write
                # A failed write raises here: the websocket closed, and so does this socket.
                while writes and (writes[0].done() or len(writes) > WRITES_IN_FLIGHT):
                    await writes.popleft()
                if pkt.packet_type == packet.CLOSE:
                    break
        except (OSError, RuntimeError):  # the websocket closed under us (as in the reader)
            pass
        # Writes still under way when the socket closes are left to finish or fail on their own.
        self._send = None
        await ws.close()

    async def close(self, wait: bool = True, abort: bool = False, reason: Any = None) -> None:
        closing = not self.closed and not self.closing
        await super().close(wait=wait, abort=abort, reason=reason)
        if closing:
            self.queue.put_nowait(None)  # wake the writer: nothing else will


def _message(pkt: packet.Packet) -> dict[str, Any]:
    """The ASGI message engine.io's websocket `send` builds for an encoded packet."""
    data = pkt.encode()
    if isinstance(data, bytes):
        return {"type": "websocket.send", "bytes": data, "text": None}
    return _text_message(data)


def _text_message(text: str) -> dict[str, Any]:
    return {"type": "websocket.send", "bytes": None, "text": text}


def use_lean_socket(server: Any, eio_sid: str) -> None:
    """Give a just-opened engine.io socket the lean loop; it has not started reading yet."""
    socket = server.sockets.get(eio_sid)
    if type(socket) is AsyncSocket:
        socket.__class__ = LeanSocket
