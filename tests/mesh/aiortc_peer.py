"""A mesh peer that is not a browser: aiortc for WebRTC, python-socketio for our signaling.

It joins a room with a Bearer token, answers (or makes) the WebRTC offer of a browser peer, and
speaks the data-channel protocol by hand, so tests can drive the browser through every message.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import aioice.ice
import socketio
from aiortc import RTCDataChannel, RTCPeerConnection, RTCSessionDescription
from aiortc.sdp import candidate_from_sdp


def allow_loopback_candidates() -> None:
    """aioice leaves out 127.0.0.1, the only address a loopback-only test host has; without it the
    answer carries no candidate and the connection hangs silently."""
    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]


class PythonPeer:
    def __init__(self, base_url: str, token: str) -> None:
        self.base_url = base_url
        self.token = token
        self.sio = socketio.AsyncClient(reconnection=False)
        self.peer_id = ""
        self.username_of: dict[str, str] = {}
        self.pc: RTCPeerConnection | None = None
        self.channel: RTCDataChannel | None = None
        self.remote: str = ""
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.opened = asyncio.Event()
        self.described = asyncio.Event()  # the remote description is set: candidates may be added
        self.silent = False  # a hung peer: reads nothing, answers nothing, keeps its connection
        self.sio.on("signal", self._on_signal)

    async def join(self, room: str) -> list[dict[str, Any]]:
        await self.sio.connect(
            self.base_url,
            headers={"Authorization": f"Bearer {self.token}"},
            transports=["websocket"],
            wait_timeout=10,
        )
        ack = await self.sio.call(
            "join_room",
            {"room": room, "capabilities": {"backend": "wasm", "user_agent": "aiortc"}},
            timeout=10,
        )
        assert "peer_id" in ack, ack
        self.peer_id = ack["peer_id"]
        return ack["peers"]

    def _new_connection(self, remote: str) -> None:
        self.remote = remote
        self.described.clear()
        self.pc = RTCPeerConnection()
        # The same negotiated channel the browser opens: id 0, no in-band announcement.
        self.channel = self.pc.createDataChannel("mesh", negotiated=True, id=0, ordered=True)
        self.channel.on("open", self.opened.set)
        self.channel.on("message", self._on_message)
        if self.channel.readyState == "open":
            self.opened.set()

    async def offer_to(self, remote: str) -> None:
        """Link to `remote` as the newcomer does: make the offer (candidates inside the SDP)."""
        self._new_connection(remote)
        assert self.pc is not None
        await self.pc.setLocalDescription(await self.pc.createOffer())
        description = self.pc.localDescription
        await self.sio.emit(
            "signal",
            {
                "to": remote,
                "kind": "offer",
                "data": {"type": description.type, "sdp": description.sdp},
            },
        )

    async def _on_signal(self, payload: dict[str, Any]) -> None:
        kind, data = payload["kind"], payload["data"]
        if kind == "offer":
            self._new_connection(payload["from"])
            assert self.pc is not None
            await self.pc.setRemoteDescription(
                RTCSessionDescription(sdp=data["sdp"], type=data["type"])
            )
            self.described.set()
            await self.pc.setLocalDescription(await self.pc.createAnswer())
            answer = self.pc.localDescription
            await self.sio.emit(
                "signal",
                {
                    "to": payload["from"],
                    "kind": "answer",
                    "data": {"type": answer.type, "sdp": answer.sdp},
                },
            )
        elif kind == "answer" and self.pc is not None:
            await self.pc.setRemoteDescription(
                RTCSessionDescription(sdp=data["sdp"], type=data["type"])
            )
            self.described.set()
        elif kind == "candidate" and self.pc is not None and data and data.get("candidate"):
            # Socket.IO events run concurrently here: a candidate can overtake its offer's handling.
            await self.described.wait()
            candidate = candidate_from_sdp(data["candidate"].split(":", 1)[1])
            candidate.sdpMid = data.get("sdpMid")
            candidate.sdpMLineIndex = data.get("sdpMLineIndex")
            await self.pc.addIceCandidate(candidate)

    def _on_message(self, data: str | bytes) -> None:
        if self.silent:
            return
        message = json.loads(data)
        if message.get("type") == "ping":  # a peer answers heartbeats, or the browser drops it
            self.send({"type": "pong", "n": message.get("n")})
        self.inbox.put_nowait(message)

    def send(self, message: dict[str, Any]) -> None:
        self.send_raw(json.dumps({"v": 1, **message}))

    def send_raw(self, data: str) -> None:
        assert self.channel is not None
        self.channel.send(data)

    async def expect(
        self,
        type_: str,
        timeout: float = 15,
        where: Callable[[dict[str, Any]], bool] = lambda _: True,
        **fields: Any,
    ) -> dict[str, Any]:
        """The next message of `type_` (with `fields`, and for which `where` holds), skipping others."""
        async with asyncio.timeout(timeout):
            while True:
                message = await self.inbox.get()
                if (
                    message.get("type") == type_
                    and all(message.get(k) == v for k, v in fields.items())
                    and where(message)
                ):
                    return message

    async def close(self) -> None:
        if self.pc is not None:
            await self.pc.close()
        if self.sio.connected:
            await self.sio.disconnect()
