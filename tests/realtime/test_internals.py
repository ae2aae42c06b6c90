"""The third-party internals we override are still the code that runs (STYLE.md habit 11).

python-socketio and python-engineio are pinned to a minor version in pyproject.toml; these tests
are what fails first when a new version moves something we rely on, instead of the override
silently turning itself off."""

from __future__ import annotations

import asyncio
import inspect
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import engineio
import socketio
from conftest import make_settings
from engineio import packet as eio_packet
from engineio.async_drivers.asgi import WebSocket
from engineio.async_socket import AsyncSocket
from socketio import packet
from socketio.asgi import ASGIApp
from socketio.async_pubsub_manager import AsyncPubSubManager

from mesh_nanollm.app import create_app
from mesh_nanollm.realtime import server
from mesh_nanollm.realtime.engine import WRITES_IN_FLIGHT, LeanSocket
from mesh_nanollm.realtime.manager import LeanManager, LeanRedisManager
from mesh_nanollm.realtime.notify import relay_signal
from mesh_nanollm.realtime.server import SignalingServer, create_realtime
from mesh_nanollm.sessions import QuietSessionBackend


def parameters(function: Any) -> list[str]:
    return list(inspect.signature(function).parameters)


async def test_lean_socket_serves_a_real_connection(tmp_path: Path) -> None:
    """An engine.io websocket handshake through the whole ASGI stack is served by LeanSocket."""
    realtime = create_realtime(make_settings(f"sqlite:///{tmp_path / 'unused.sqlite'}"))
    sio = realtime.sio
    app = ASGIApp(sio, socketio_path="socket.io")
    scope = {
        "type": "websocket", "asgi": {"version": "3.0"}, "scheme": "ws", "http_version": "1.1",
        "path": "/socket.io/", "raw_path": b"/socket.io/", "root_path": "",
        "query_string": b"EIO=4&transport=websocket", "headers": [(b"host", b"testserver"), (b"connection", b"upgrade"), (b"upgrade", b"websocket")],
        "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 80), "subprotocols": [],
    }
    incoming: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    outgoing: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    await incoming.put({"type": "websocket.connect"})
    serving = asyncio.create_task(app(scope, incoming.get, outgoing.put))
    try:
        assert (await asyncio.wait_for(outgoing.get(), 10))["type"] == "websocket.accept"
        opened = await asyncio.wait_for(outgoing.get(), 10)
        assert opened["text"].startswith("0{")
        eio_sid = json.loads(opened["text"][1:])["sid"]
        assert type(sio.eio.sockets[eio_sid]) is LeanSocket
        await incoming.put({"type": "websocket.receive", "text": "1"})  # engine.io CLOSE
        while (await asyncio.wait_for(outgoing.get(), 10))["type"] != "websocket.close":
            pass
        await incoming.put({"type": "websocket.disconnect", "code": 1000})
        await asyncio.wait_for(serving, 10)
        assert eio_sid not in sio.eio.sockets
    finally:
        serving.cancel()
        await sio.shutdown()


def test_overridden_socketio_methods_keep_their_signatures() -> None:
    # SignalingServer calls each through super() with these arguments.
    assert parameters(socketio.AsyncServer._handle_eio_connect) == ["self", "eio_sid", "environ"]
    assert parameters(socketio.AsyncServer._handle_event) == ["self", "eio_sid", "namespace", "id", "data"]
    assert parameters(socketio.AsyncServer._handle_eio_message) == ["self", "eio_sid", "data"]
    # ... and engine.io still calls them as the handlers of its own events.
    sio = SignalingServer(auth_timeout_s=10, async_mode="asgi")
    for event, override in (("connect", "_handle_eio_connect"), ("message", "_handle_eio_message")):
        assert sio.eio.handlers[event].__func__ is getattr(SignalingServer, override)
    # The packet types server.py reads off a frame's first character.
    assert (packet.DISCONNECT, packet.EVENT, packet.BINARY_EVENT, packet.BINARY_ACK) == (1, 2, 5, 6)
    assert server.DISCONNECT_PACKET_TYPE == str(packet.DISCONNECT)
    assert server.BINARY_PACKET_TYPES == (str(packet.BINARY_EVENT), str(packet.BINARY_ACK))


def test_signal_fast_path_does_what_the_library_does_for_an_event() -> None:
    # server.py's _handle_event calls the `signal` handler itself for an event without an ack:
    # pinned to the library's own steps, so a release that changes them shows up here.
    handle = inspect.getsource(socketio.AsyncServer._handle_event)
    assert "sid = self.manager.sid_from_eio_sid(eio_sid, namespace)" in handle
    assert "if not self.manager.is_connected(sid, namespace):" in handle
    assert "r = await server._trigger_event(data[0], namespace, sid, *data[1:])" in inspect.getsource(
        socketio.AsyncServer._handle_event_internal
    )
    assert "handler = self.handlers[namespace][event]" in inspect.getsource(socketio.AsyncServer._get_event_handler)


def test_overridden_engineio_methods_keep_their_signatures() -> None:
    assert parameters(AsyncSocket._websocket_handler) == ["self", "ws"]
    # The lean loop hands a message to the handler `receive` would reach through `_trigger_event`.
    assert "await self.server._trigger_event(\n                'message', self.sid, pkt.data," in inspect.getsource(AsyncSocket.receive)
    assert parameters(AsyncSocket.close) == ["self", "wait", "abort", "reason"]
    assert parameters(engineio.AsyncServer.send) == ["self", "sid", "data"]
    # The lean loop reads these attributes of the stock socket and server.
    socket = AsyncSocket(SimpleNamespace(create_queue=asyncio.Queue), "sid")
    for attribute in ("connected", "upgraded", "closed", "closing", "queue", "server"):
        assert hasattr(socket, attribute), attribute


def test_lean_socket_writes_what_engineio_websocket_sends() -> None:
    # The writer calls the server's ASGI `send` itself, with the message engine.io's wrapper builds.
    assert "self.asgi_send = environ['asgi.send']" in inspect.getsource(WebSocket.__call__)
    assert "await self.asgi_send({'type': 'websocket.send',\n                              'bytes': msg_bytes,\n                              'text': msg_text})" in inspect.getsource(WebSocket.send)


async def test_lean_socket_bounds_unawaited_writes_and_keeps_their_order() -> None:
    written: list[tuple[str, asyncio.Future[None]]] = []
    closed = asyncio.Event()

    def send(message: dict[str, Any]) -> asyncio.Future[None]:  # a server whose writes start at once
        write = asyncio.get_running_loop().create_future()
        written.append((message["text"], write))
        return write

    async def close() -> None:
        closed.set()

    socket = LeanSocket(SimpleNamespace(create_queue=asyncio.Queue), "eio-sid")
    writer = asyncio.ensure_future(socket._write(SimpleNamespace(asgi_send=send, close=close)))
    socket.deliver("m0")  # the first goes through the writer
    await asyncio.sleep(0)
    for n in range(1, 40):
        socket.deliver(f"m{n}")
    await asyncio.sleep(0)
    # WRITES_IN_FLIGHT written at once, one more by the writer, which then waits for the oldest;
    # the rest wait in the queue.
    assert len(written) == WRITES_IN_FLIGHT + 1
    while len(written) < 40:
        for _, write in written:
            if not write.done():
                write.set_result(None)
        await asyncio.sleep(0)
    assert [text for text, _ in written] == [f"4m{n}" for n in range(40)]

    # A write that fails (the websocket closed under it) ends the writer, which closes the websocket;
    # whoever delivers after that is not troubled.
    for _, write in written:
        if not write.done():
            write.set_result(None)
    await asyncio.sleep(0)
    for n in range(WRITES_IN_FLIGHT + 1):
        socket.deliver(f"late{n}")
        if n == 0:
            written[-1][1].set_exception(RuntimeError("Transport closed"))
    await asyncio.wait_for(writer, 5)
    assert closed.is_set()
    socket.deliver("after")


async def test_hand_encoded_signal_frame_is_a_socketio_event() -> None:
    socket = LeanSocket(SimpleNamespace(create_queue=asyncio.Queue), "eio-sid")  # not writing yet: it queues
    payload = {"from": "peer", "kind": "offer", "data": {"type": "offer", "sdp": "v=0\r\n"}}
    relay_signal(SimpleNamespace(eio=SimpleNamespace(sockets={"eio-sid": socket})), "eio-sid", payload)  # type: ignore[arg-type]
    frame = socket.queue.get_nowait()
    assert frame.packet_type == eio_packet.MESSAGE  # what the socket's writer sends as it is
    decoded = packet.Packet(encoded_packet=frame.data)
    assert (decoded.packet_type, decoded.namespace, decoded.id) == (packet.EVENT, None, None)
    assert decoded.data == ["signal", payload]


def test_lean_manager_replaces_the_emit_the_redis_manager_delivers_through() -> None:
    # The Redis manager delivers locally through super().emit: that must reach LeanManager.emit.
    assert LeanRedisManager.__mro__.index(LeanManager) == LeanRedisManager.__mro__.index(AsyncPubSubManager) + 1
    assert "await super().emit(" in inspect.getsource(AsyncPubSubManager._handle_emit)
    assert parameters(socketio.AsyncManager.emit) == parameters(LeanManager.emit)
    assert parameters(socketio.AsyncServer._send_eio_packet) == ["self", "eio_sid", "eio_pkt"]
    realtime = create_realtime(make_settings("sqlite:///unused.sqlite"))
    assert type(realtime.sio.manager) is LeanManager


async def test_lean_manager_emit_reaches_each_member_of_a_room_once() -> None:
    sent: list[tuple[str, str]] = []
    manager = LeanManager()

    async def send_eio_packet(eio_sid: str, frame: Any) -> None:
        sent.append((eio_sid, frame.encode()))

    ids = iter(("s1", "s2", "s3"))
    eio = SimpleNamespace(generate_id=lambda: next(ids))
    manager.set_server(SimpleNamespace(eio=eio, packet_class=packet.Packet, _send_eio_packet=send_eio_packet))
    manager.initialize()
    for eio_sid in ("a", "b", "c"):
        sid = await manager.connect(eio_sid, "/")
        await manager.enter_room(sid, "/", "r:room")
    skipped = manager.sid_from_eio_sid("b", "/")
    await manager.emit("peer_left", {"peer_ids": ["x"]}, "/", to="r:room", skip_sid=skipped)
    assert sent == [("a", '42["peer_left",{"peer_ids":["x"]}]'), ("c", '42["peer_left",{"peer_ids":["x"]}]')]


def test_app_uses_the_quiet_session_backend(tmp_path: Path) -> None:
    app = create_app(make_settings(f"sqlite:///{tmp_path / 'unused.sqlite'}"))
    backends = [m.kwargs["backend"] for m in app.middleware if "backend" in getattr(m, "kwargs", {})]
    assert [type(backend) for backend in backends] == [QuietSessionBackend]
