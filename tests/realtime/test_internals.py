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
from engineio.async_socket import AsyncSocket
from socketio import packet
from socketio.asgi import ASGIApp

from mesh_nanollm.app import create_app
from mesh_nanollm.realtime import server
from mesh_nanollm.realtime.engine import LeanSocket
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


def test_overridden_engineio_methods_keep_their_signatures() -> None:
    assert parameters(AsyncSocket._websocket_handler) == ["self", "ws"]
    assert parameters(AsyncSocket.close) == ["self", "wait", "abort", "reason"]
    assert parameters(engineio.AsyncServer.send) == ["self", "sid", "data"]
    # The lean loop reads these attributes of the stock socket and server.
    socket = AsyncSocket(SimpleNamespace(create_queue=asyncio.Queue), "sid")
    for attribute in ("connected", "upgraded", "closed", "closing", "queue", "server"):
        assert hasattr(socket, attribute), attribute


async def test_hand_encoded_signal_frame_is_a_socketio_event() -> None:
    frames: list[str] = []

    async def send(eio_sid: str, data: str) -> None:
        frames.append(data)

    payload = {"from": "peer", "kind": "offer", "data": {"type": "offer", "sdp": "v=0\r\n"}}
    await relay_signal(SimpleNamespace(eio=SimpleNamespace(send=send)), "eio-sid", payload)  # type: ignore[arg-type]
    decoded = packet.Packet(encoded_packet=frames[0])
    assert (decoded.packet_type, decoded.namespace, decoded.id) == (packet.EVENT, None, None)
    assert decoded.data == ["signal", payload]


def test_app_uses_the_quiet_session_backend(tmp_path: Path) -> None:
    app = create_app(make_settings(f"sqlite:///{tmp_path / 'unused.sqlite'}"))
    backends = [m.kwargs["backend"] for m in app.middleware if "backend" in getattr(m, "kwargs", {})]
    assert [type(backend) for backend in backends] == [QuietSessionBackend]
