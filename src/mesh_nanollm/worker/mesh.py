"""The worker in the room's data-channel mesh (aiortc): one RTCPeerConnection and negotiated channel
per browser peer, signalled through the server's `signal` relay, speaking the v1 protocol of
static/js/mesh.js and docs/mesh.md as a serving peer (hello, offer → accept/decline, run → tokens
→ done, cancel, ping/pong). Jobs go through the shared Runner, in the same slots as API jobs."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import socketio
from aiortc import (
    RTCConfiguration,
    RTCDataChannel,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.rtcicetransport import parse_stun_turn_uri
from aiortc.sdp import candidate_from_sdp

from mesh_nanollm.worker.runner import Refused, Runner, tokens

VERSION = 1
HEARTBEAT_S = 1.0
SILENCE_S = 3.5  # as link.js: three missed heartbeats and the link is lost
RESERVATION_S = 5.0  # an accepted offer holds a place this long for its job_run
MAX_MESSAGE_CHARS = 128 * 1024
MAX_TEXT_CHARS = 60_000
MAX_LINKS = 16
MAX_TOKEN_CHARS = 4000  # a token message's text, as protocol.js caps it
# New TURN credentials at 80 % of their lifetime, or again after 5 % of it (as ice-refresh.js).
ICE_REFRESH_AT = 0.8
ICE_RETRY_AT = 0.05
# A newcomer offers at once; if its offer got lost anyway, the older peer offers after this long.
ADOPT_AFTER_S = 3.0
TASK = "text-generation"
PREFILL_SPEEDUP = 8  # as mesh.js: a prompt token costs about an eighth of a generated one
DEFAULT_TOK_S = 20
# The fields each message type a serving peer reads must carry (protocol.js checks more; a
# message missing one is dropped).
NEEDS = {"job_offer": ("job_id", "model", "task"), "job_run": ("job_id", "model", "params"),
         "job_cancel": ("job_id",)}


def _chat(messages: object) -> bool:
    """Whether `messages` is a conversation a job_run may carry: [{role, content}] (docs/mesh.md)."""
    return isinstance(messages, list) and 0 < len(messages) <= 64 and all(
        isinstance(m, dict) and m.get("role") in ("system", "user", "assistant") and isinstance(m.get("content"), str)
        for m in messages
    )


def _usable(url: object) -> bool:
    try:
        return isinstance(url, str) and bool(parse_stun_turn_uri(url))
    except ValueError:
        return False


def ice_servers(raw: object) -> list[RTCIceServer]:
    """The join ack's `ice_servers` (the browser's RTCIceServer dicts, the same STUN/TURN a page
    gets) for aiortc, without the URLs aiortc cannot parse: one would fail every connection."""
    servers = []
    for entry in raw if isinstance(raw, list) else []:
        if not isinstance(entry, dict):
            continue
        urls = [u for u in (entry.get("urls") if isinstance(entry.get("urls"), list) else [entry.get("urls")]) if _usable(u)]
        if urls:
            servers.append(RTCIceServer(urls=urls, username=entry.get("username"), credential=entry.get("credential")))
    return servers


def _is_id(value: object) -> bool:
    try:
        return isinstance(value, str) and str(uuid.UUID(value)) == value
    except ValueError:
        return False


@dataclass(eq=False)
class Link:
    """One other peer: its connection, channel, heartbeat and the jobs it gave us."""

    peer_id: str
    pc: RTCPeerConnection
    channel: RTCDataChannel
    initiator: bool
    heard_at: float = field(default_factory=time.monotonic)
    described: asyncio.Event = field(default_factory=asyncio.Event)
    reserved: dict[str, asyncio.TimerHandle] = field(default_factory=dict)  # job id → expiry
    running: set[str] = field(default_factory=set)
    ping_n: int = 0
    hello: dict[str, Any] | None = None  # the last hello sent

    def send_hello(self, hello: dict[str, Any]) -> None:
        if hello != self.hello and self.send(hello):
            self.hello = hello

    def send(self, message: dict[str, Any]) -> bool:
        if self.channel.readyState != "open":
            return False
        self.channel.send(json.dumps({"v": VERSION, **message}))
        return True


class Mesh:
    def __init__(self, runner: Runner, sio: socketio.AsyncClient, say: Callable[[str], None]) -> None:
        self.runner = runner
        self.sio = sio
        self.say = say
        self.peer_id: str | None = None
        self.ice: list[RTCIceServer] = []
        self.links: dict[str, Link] = {}
        self.present: set[str] = set()  # the room's other peers, from the server's presence events
        self.heartbeat: asyncio.Task[None] | None = None
        self.ice_refresh: asyncio.Task[None] | None = None

    async def room_event(self, name: str, data: dict[str, Any]) -> None:
        """WorkerPeer's listener: the room's joined / left / peer_left / signal events."""
        if name == "joined":
            self.peer_id = data["peer_id"]
            self.ice = ice_servers(data.get("ice_servers"))
            self._keep_ice(data.get("ice_ttl_s"))
            if self.heartbeat is None:
                self.heartbeat = asyncio.create_task(self._beat())
            self.present = {peer["peer_id"] for peer in data.get("peers", [])}
            for peer_id in self.present:  # the newcomer offers to those already there
                await self._offer(peer_id)
        elif name == "peer_joined":
            for peer in data.get("peers", []):
                self.present.add(peer["peer_id"])
                asyncio.get_running_loop().call_later(ADOPT_AFTER_S, self._adopt, peer["peer_id"])
        elif name == "left":
            self.peer_id = None
            self.present.clear()
            self._keep_ice(None)
            for link in list(self.links.values()):
                await self._lose(link)
            if self.heartbeat is not None:
                self.heartbeat.cancel()
                self.heartbeat = None
        elif name == "peer_left":
            for peer_id in data.get("peer_ids", []):
                self.present.discard(peer_id)
                if link := self.links.get(peer_id):
                    await self._lose(link)
        elif name == "signal":
            await self._on_signal(data)

    # -- links -------------------------------------------------------------------------------

    def _open(self, peer_id: str, initiator: bool) -> Link:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=self.ice))
        # Negotiated, as mesh.js: both ends create channel 0 at once, no announcement.
        channel = pc.createDataChannel("mesh", negotiated=True, id=0, ordered=True)
        link = Link(peer_id, pc, channel, initiator)
        self.links[peer_id] = link

        @channel.on("open")
        def _opened() -> None:
            link.heard_at = time.monotonic()
            link.send_hello(self._hello())

        channel.on("message", lambda data: self._receive(link, data))
        channel.on("close", lambda: asyncio.ensure_future(self._lose(link)))

        @pc.on("connectionstatechange")
        async def _state() -> None:
            if pc.connectionState in ("failed", "closed"):
                await self._lose(link)

        return link

    def _adopt(self, peer_id: str) -> None:
        if peer_id in self.present and peer_id not in self.links and self.peer_id is not None:
            asyncio.ensure_future(self._offer(peer_id))

    async def _offer(self, peer_id: str) -> None:
        if peer_id in self.links or peer_id == self.peer_id or len(self.links) >= MAX_LINKS:
            return
        link = self._open(peer_id, initiator=True)
        await link.pc.setLocalDescription(await link.pc.createOffer())  # candidates inside the SDP
        await self._signal(peer_id, "offer", link.pc.localDescription)

    async def _signal(self, to: str, kind: str, description: RTCSessionDescription) -> None:
        with contextlib.suppress(socketio.exceptions.SocketIOError):
            await self.sio.emit("signal", {"to": to, "kind": kind,
                                           "data": {"type": description.type, "sdp": description.sdp}})

    async def _on_signal(self, payload: dict[str, Any]) -> None:
        sender, kind, data = payload.get("from"), payload.get("kind"), payload.get("data")
        if not isinstance(sender, str) or not isinstance(data, dict) or self.peer_id is None:
            return
        link = self.links.get(sender)
        if kind == "offer" and isinstance(data.get("sdp"), str):
            if link is not None:
                # Crossed offers: the lower peer id keeps its own offer, as mesh.js decides.
                if link.initiator and link.pc.signalingState == "have-local-offer" and self.peer_id < sender:
                    return
                await self._lose(link)
            if len(self.links) >= MAX_LINKS:
                return
            link = self._open(sender, initiator=False)
            await link.pc.setRemoteDescription(RTCSessionDescription(sdp=data["sdp"], type="offer"))
            link.described.set()
            await link.pc.setLocalDescription(await link.pc.createAnswer())
            if self.links.get(sender) is link:
                await self._signal(sender, "answer", link.pc.localDescription)
        elif kind == "answer" and link is not None and link.pc.signalingState == "have-local-offer":
            await link.pc.setRemoteDescription(RTCSessionDescription(sdp=data["sdp"], type="answer"))
            link.described.set()
        elif kind == "candidate" and link is not None and isinstance(data.get("candidate"), str) and data["candidate"]:
            # Socket.IO handlers run concurrently: a candidate can overtake its offer's handling.
            try:
                await asyncio.wait_for(link.described.wait(), SILENCE_S)
            except TimeoutError:
                return  # its offer or answer never came: the link is being dropped anyway
            candidate = candidate_from_sdp(data["candidate"].split(":", 1)[1])
            candidate.sdpMid = data.get("sdpMid")
            candidate.sdpMLineIndex = data.get("sdpMLineIndex")
            with contextlib.suppress(ValueError):
                await link.pc.addIceCandidate(candidate)

    async def _lose(self, link: Link) -> None:
        if self.links.get(link.peer_id) is not link:
            return
        del self.links[link.peer_id]
        for timer in link.reserved.values():
            timer.cancel()
        for job_id in link.running:  # nobody is left to stream to: the requester fails over
            self.runner.cancel(job_id)
        await link.pc.close()

    def _keep_ice(self, ttl_s: object) -> None:
        """Credentials good for `ttl_s` seconds just came (none: nothing expires, or we left): ask
        for new ones in time, since a worker outlives them and the links it makes later need valid
        ones. Links already made keep theirs (aiortc has no setConfiguration)."""
        if self.ice_refresh is not None:
            self.ice_refresh.cancel()
            self.ice_refresh = None
        if isinstance(ttl_s, int | float) and ttl_s > 0:
            self.ice_refresh = asyncio.create_task(self._refresh_ice(float(ttl_s)))

    async def _refresh_ice(self, ttl_s: float) -> None:
        wait = ttl_s * ICE_REFRESH_AT
        while True:
            await asyncio.sleep(max(1.0, wait))
            try:
                ack = await self.sio.call("refresh_ice", {}, timeout=10)
            except (socketio.exceptions.SocketIOError, OSError) as exc:
                ack = {"error": {"message": exc.__class__.__name__}}
            if isinstance(ack, dict) and "error" not in ack and isinstance(ack.get("ice_ttl_s"), int | float):
                self.ice = ice_servers(ack.get("ice_servers"))
                ttl_s = float(ack["ice_ttl_s"])
                wait = ttl_s * ICE_REFRESH_AT
            else:
                error = ack.get("error", {}) if isinstance(ack, dict) else {}
                self.say(f"no new ICE credentials yet ({error.get('message', 'a malformed answer')}); asking again soon")
                wait = ttl_s * ICE_RETRY_AT

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            now = time.monotonic()
            hello = self._hello()
            for link in list(self.links.values()):
                if link.channel.readyState != "open":
                    continue
                if now - link.heard_at > SILENCE_S:
                    await self._lose(link)
                    continue
                # A fresh hello when the state or measured speed changed: requesters cost us by it.
                link.send_hello(hello)
                link.ping_n += 1
                link.send({"type": "ping", "n": link.ping_n})

    def _hello(self) -> dict[str, Any]:
        r = self.runner
        state = "busy" if r.closed or len(r.jobs) >= r.slots else "idle"
        return {"type": "hello", "peer_id": self.peer_id, "capabilities": {
            "backend": r.backend, "models": list(r.engines), "models_warm": list(r.engines),
            "state": state, "queue": len(r.jobs), "tok_s": round(r.tok_s, 2)}}

    # -- messages ------------------------------------------------------------------------------

    def _receive(self, link: Link, data: str | bytes) -> None:
        if self.links.get(link.peer_id) is not link:
            return
        link.heard_at = time.monotonic()
        try:
            message = json.loads(data) if isinstance(data, str) and len(data) <= MAX_MESSAGE_CHARS else None
        except ValueError:
            message = None
        if not isinstance(message, dict) or message.get("v") != VERSION:
            return
        kind = message.get("type")
        if kind in NEEDS and not (_is_id(message.get("job_id")) and all(k in message for k in NEEDS[kind])):
            return
        if kind == "ping":
            link.send({"type": "pong", "n": message.get("n")})
        elif kind == "job_offer":
            self._on_offer(link, message)
        elif kind == "job_run":
            self._on_run(link, message)
        elif kind == "job_cancel":
            self._on_cancel(link, message["job_id"])

    def _decline_reason(self, message: dict[str, Any]) -> str | None:
        r = self.runner
        if message["task"] != TASK:
            return "unsupported_task"
        if r.closed:
            return "not_ready"
        if message["model"] not in r.engines:
            return "unknown_model"
        if message["job_id"] in r.jobs or any(message["job_id"] in k.reserved for k in self.links.values()):
            return "duplicate"
        if len(r.jobs) + sum(len(k.reserved) for k in self.links.values()) >= r.slots:
            return "busy"
        return None

    def _on_offer(self, link: Link, message: dict[str, Any]) -> None:
        job_id = message["job_id"]
        if reason := self._decline_reason(message):
            link.send({"type": "job_decline", "job_id": job_id, "reason": reason})
            return
        link.reserved[job_id] = asyncio.get_running_loop().call_later(RESERVATION_S, link.reserved.pop, job_id, None)
        # Time to the first token: the prompt's prefill (no queue: a place was free, the model is warm).
        prompt_tokens = message.get("prompt_tokens") if isinstance(message.get("prompt_tokens"), int) else 0
        eta_ms = prompt_tokens * 1000 / ((self.runner.tok_s or DEFAULT_TOK_S) * PREFILL_SPEEDUP)
        link.send({"type": "job_accept", "job_id": job_id, "eta_ms": round(eta_ms)})

    def _on_run(self, link: Link, message: dict[str, Any]) -> None:
        job_id = message["job_id"]
        timer = link.reserved.pop(job_id, None)
        if timer is None:
            link.send({"type": "job_error", "job_id": job_id, "code": "not_offered",
                       "message": "Offer the job first; this peer holds no place for it."})
            return
        timer.cancel()
        resume = message.get("resume_text", "")
        try:
            prompt, messages = message.get("prompt"), message.get("messages")
            if (not isinstance(prompt, str)) == (not _chat(messages)) or not isinstance(message["params"], dict) \
                    or not isinstance(resume, str):
                raise Refused("invalid", "job_run needs a text prompt or chat messages, params as an object and a text resume_text")
            job = self.runner.start(job_id, message["model"], message["params"], prompt=prompt, messages=messages,
                                    resume_text=resume)
        except Refused as exc:
            self.say(f"job {job_id} {message['model']} (mesh): refused ({exc.code}: {exc})")
            link.send({"type": "job_error", "job_id": job_id, "code": exc.code, "message": str(exc)[:2000]})
            return
        link.running.add(job_id)
        asyncio.ensure_future(self._serve(link, job))

    async def _serve(self, link: Link, job: Any) -> None:
        async def send(seq: int, text: str) -> None:
            # The same seq again carries more text of those tokens (mesh.js accepts it).
            for start in range(0, len(text), MAX_TOKEN_CHARS):
                link.send({"type": "token", "job_id": job.id, "seq": seq, "text": text[start:start + MAX_TOKEN_CHARS]})

        try:
            outcome = await self.runner.run(job, send)
        except Exception as exc:  # noqa: BLE001 -- onnxruntime raises its own types: the job fails, the worker stays
            message = f"{exc.__class__.__name__}: {exc}"[:2000]
            self.say(f"job {job.id} {job.model} (mesh, for peer {link.peer_id}): failed ({message})")
            link.send({"type": "job_error", "job_id": job.id, "code": "generate_failed", "message": message})
            return
        finally:
            link.running.discard(job.id)
        link.send({"type": "job_done", "job_id": job.id, "text": outcome.text[:MAX_TEXT_CHARS],
                   "metrics": outcome.metrics})
        m = outcome.metrics
        self.say(f"job {job.id} {job.model} (mesh, for peer {link.peer_id}): {m['reason']}, {tokens(m['tokens'])}")

    def _on_cancel(self, link: Link, job_id: str) -> None:
        if (timer := link.reserved.pop(job_id, None)) is not None:
            timer.cancel()  # an accepted offer that was not chosen: its place is free again
        elif job_id in link.running:
            self.runner.cancel(job_id)  # decoding stops within a step; job_done says cancelled
