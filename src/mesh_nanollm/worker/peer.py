"""The worker as a peer of one room over Socket.IO: it signs in with an API token, joins the room,
keeps its `status` current and serves the server's API jobs (`job_run` / `job_cancel` →
`job_token` / `job_done` / `job_error`, docs/realtime.md "API jobs") as a browser tab does.

It reconnects with backoff when the connection drops and joins again under a new peer id. Room
events (`joined`, `left`, `peer_joined`, `peer_left`, `peer_updated`, `signal`) all go through
`room_event`, to every function in `listeners`: where the data-channel mesh plugs in.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import socketio
from socketio.exceptions import SocketIOError

from mesh_nanollm.worker.runner import Job, Refused, Runner

USER_AGENT = "mesh-nanollm-worker"
JOIN_TIMEOUT_S = 15
TEXT_MAX = 128 * 1024  # job_done.text, as the server caps it
MESSAGE_MAX = 2000
API_REASONS = {"stop": "stop", "length": "length", "cancelled": "cancelled"}
TOKEN_HELP = "make one on the Settings page, under API tokens"

RoomListener = Callable[[str, dict[str, Any]], Awaitable[None]]


class CannotJoin(Exception):
    """The first connection or join failed; the message says why in one line."""


def _job_run(payload: object) -> dict[str, Any] | None:
    """A `job_run` payload with the fields a peer needs, or None (the ack then says `invalid`)."""
    if not isinstance(payload, dict):
        return None
    ok = (
        isinstance(payload.get("job_id"), str)
        and isinstance(payload.get("model"), str)
        and isinstance(payload.get("params"), dict)
        and isinstance(payload.get("resume_text", ""), str)
        and (isinstance(payload.get("prompt"), str)) != (isinstance(payload.get("messages"), list))
    )
    return payload if ok else None


class WorkerPeer:
    def __init__(self, runner: Runner, *, server: str, token: str, room: str, say: Callable[[str], None]) -> None:
        self.runner = runner
        self.server = server
        self.token = token
        self.room = room
        self.say = say
        self.peer_id: str | None = None
        self.listeners: list[RoomListener] = []
        self.api_jobs: set[str] = set()
        self.refused: str | None = None  # why the server refused the connection
        self.first_join: asyncio.Future[None] | None = None
        # handle_sigint=False: python-socketio and engine.io would otherwise take SIGINT for
        # themselves (engine.io replaces the loop's handler at connect) and Ctrl-C would not drain.
        self.sio = socketio.AsyncClient(reconnection=True, reconnection_attempts=0, reconnection_delay=1,
                                        reconnection_delay_max=30, randomization_factor=0.5,
                                        handle_sigint=False)
        for name in ("connect", "connect_error", "disconnect", "job_run", "job_cancel", "error"):
            self.sio.on(name, getattr(self, f"_on_{name}"))
        for name in ("peer_joined", "peer_left", "peer_updated", "signal"):
            self.sio.on(name, self._relay(name))
        runner.changed = self.send_status

    async def start(self) -> None:
        """Connect and join; raises CannotJoin with one line when either fails."""
        self.first_join = asyncio.get_running_loop().create_future()
        try:
            await self.sio.connect(self.server, headers={"Authorization": f"Bearer {self.token}"},
                                   transports=["websocket"], wait_timeout=JOIN_TIMEOUT_S, retry=False)
        except SocketIOError as exc:
            if self.refused is not None:
                # The token is all the worker signs in with: a refusal is about it.
                raise CannotJoin(f"the server refused the API token (mistyped, or revoked): {TOKEN_HELP}") from None
            raise CannotJoin(f"cannot reach the server at {self.server} ({exc})") from None
        try:
            await asyncio.wait_for(self.first_join, JOIN_TIMEOUT_S)
        except TimeoutError:
            raise CannotJoin(f"the server did not answer join_room within {JOIN_TIMEOUT_S} s") from None

    async def stop(self, drain_s: float) -> None:
        """Take no new jobs, let the running ones finish (at most `drain_s`), leave and close."""
        self.runner.closed = True
        await self.send_status_now()  # busy from now on: the server stops offering it jobs
        await self.runner.drain(drain_s)
        if self.sio.connected:
            with contextlib.suppress(SocketIOError, TimeoutError):
                await self.sio.call("leave_room", {}, timeout=5)
            await self.room_event("left", {})
        await self.sio.shutdown()  # also ends a reconnection in progress

    # -- the connection and the room ---------------------------------------------------------

    async def _on_connect(self) -> None:
        # The join's ack comes through the reader this handler runs in: wait for it elsewhere.
        self.sio.start_background_task(self._join)

    async def _join(self) -> None:
        r = self.runner
        caps = {"backend": r.backend, "user_agent": USER_AGENT, "state": self._state(), "models_warm": list(r.engines)}
        try:
            ack = await self.sio.call("join_room", {"room": self.room, "capabilities": caps}, timeout=JOIN_TIMEOUT_S)
        except (SocketIOError, TimeoutError) as exc:
            ack = {"error": {"message": f"no answer to join_room ({exc.__class__.__name__})"}}
        error = ack.get("error") if isinstance(ack, dict) else {"message": "a malformed join_room ack"}
        if error:
            problem = f"cannot join room {self.room!r}: {error.get('message', error)}"
            if self.first_join is not None and not self.first_join.done():
                self.first_join.set_exception(CannotJoin(problem))
            else:
                self.say(problem)
            return
        self.peer_id = ack["peer_id"]
        self.say(f"joined room {self.room} as peer {self.peer_id} ({r.backend}; models: {', '.join(r.engines)})")
        await self.send_status_now()
        if self.first_join is not None and not self.first_join.done():
            self.first_join.set_result(None)
        await self.room_event("joined", ack)

    async def _on_connect_error(self, data: object = None) -> None:
        # Only an answer from the server itself (engine.io is up) is a refusal; the rest is the network.
        if self.sio.eio.state == "connected":
            self.refused = data.get("message") if isinstance(data, dict) else str(data)
            if self.peer_id is None and self.first_join is not None and self.first_join.done():
                self.say(f"the server refused the connection: {self.refused}; retrying")

    async def _on_disconnect(self, reason: object = None) -> None:
        # The server has already handed our API jobs to other peers: nobody is left to stream to.
        for job_id in list(self.api_jobs):
            self.runner.cancel(job_id)
        if self.peer_id is not None:
            self.say("lost the server; reconnecting")
        self.peer_id = None
        await self.room_event("left", {})

    async def _on_error(self, data: object = None) -> None:
        # Before the first join, a failed join's ack says the same and stops the worker.
        starting = self.first_join is not None and not self.first_join.done()
        if isinstance(data, dict) and not starting:
            self.say(f"server error {data.get('code')}: {data.get('message')}")

    def _relay(self, name: str) -> Callable[[object], Awaitable[None]]:
        async def relay(data: object = None) -> None:
            if isinstance(data, dict):
                await self.room_event(name, data)

        return relay

    async def room_event(self, name: str, data: dict[str, Any]) -> None:
        """One room event to every listener (the data-channel mesh, when it runs)."""
        for listener in self.listeners:
            await listener(name, data)

    def _state(self) -> str:
        return "busy" if self.runner.closed or len(self.runner.jobs) >= self.runner.slots else "idle"

    def send_status(self) -> None:
        if self.peer_id is not None:
            self.sio.start_background_task(self.send_status_now)

    async def send_status_now(self) -> None:
        r = self.runner
        status = {"state": self._state(), "backend": r.backend, "models_warm": list(r.engines),
                  "queue": len(r.jobs), "tok_s": round(r.tok_s, 2)}
        with contextlib.suppress(SocketIOError):
            await self.sio.emit("status", status)

    # -- API jobs ----------------------------------------------------------------------------

    async def _on_job_run(self, payload: object = None) -> dict[str, Any]:
        message = _job_run(payload)
        if message is None:
            return {"error": {"code": "invalid", "message": "job_run needs job_id, model, params and one of prompt, messages"}}
        try:
            job = self.runner.start(
                message["job_id"], message["model"], message["params"],
                prompt=message.get("prompt"), messages=message.get("messages"),
                resume_text=message.get("resume_text", ""), count_resumed=False,
            )
        except Refused as exc:
            self.say(f"job {message['job_id']} {message['model']}: refused ({exc.code}: {exc})")
            return {"error": {"code": exc.code, "message": str(exc)[:MESSAGE_MAX]}}
        self.api_jobs.add(job.id)
        self.sio.start_background_task(self._serve, job)
        return {"ok": True}

    async def _on_job_cancel(self, payload: object = None) -> None:
        job_id = payload.get("job_id") if isinstance(payload, dict) else None
        if job_id in self.api_jobs:
            self.runner.cancel(job_id)

    async def _emit(self, event: str, payload: dict[str, Any]) -> None:
        with contextlib.suppress(SocketIOError):
            await self.sio.emit(event, payload)

    async def _serve(self, job: Job) -> None:
        async def send(seq: int, text: str) -> None:
            await self._emit("job_token", {"job_id": job.id, "seq": seq, "text": text})

        try:
            outcome = await self.runner.run(job, send)
        except Exception as exc:  # noqa: BLE001 -- onnxruntime raises its own types (out of memory, ...): the job moves on
            self.api_jobs.discard(job.id)
            message = f"{exc.__class__.__name__}: {exc}"[:MESSAGE_MAX]
            self.say(f"job {job.id} {job.model}: failed ({message})")
            await self._emit("job_error", {"job_id": job.id, "code": "generate_failed", "message": message})
            return
        self.api_jobs.discard(job.id)
        m = outcome.metrics
        metrics = {"tokens": m["tokens"], "reason": API_REASONS.get(m["reason"], "stop"), "backend": m["backend"]}
        for key in ("prompt_tokens", "ttft_ms", "tok_s", "total_ms"):
            if isinstance(m[key], int | float):
                metrics[key] = m[key]
        await self._emit("job_done", {"job_id": job.id, "text": outcome.text[:TEXT_MAX], "metrics": metrics})
        speed = f", {m['tok_s']:.1f} tok/s" if m["tok_s"] else ""
        self.say(f"job {job.id} {job.model}: {m['reason']}, {m['tokens']} tokens{speed}")
