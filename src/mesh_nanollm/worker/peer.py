"""The worker as a peer of one room over Socket.IO: it signs in with an API token, joins the room,
keeps its `status` current and serves the server's API jobs (`job_run` / `job_cancel` →
`job_token` / `job_done` / `job_error`, docs/realtime.md "API jobs") as a browser tab does.

It reconnects with backoff when the connection drops and joins again under a new peer id, and
ends (`ended`) when the server will not have it back: the token revoked, the room lost. Room
events (`joined`, `left`, `peer_joined`, `peer_left`, `peer_updated`, `signal`) all go through
`room_event`, to every function in `listeners`: where the data-channel mesh plugs in.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import socketio
from socketio.exceptions import SocketIOError

from mesh_nanollm.worker.runner import Job, Refused, Runner, tokens

USER_AGENT = "mesh-nanollm-worker"
JOIN_TIMEOUT_S = 15
TEXT_MAX = 128 * 1024  # job_done.text, as the server caps it
MESSAGE_MAX = 2000
API_REASONS = {"stop": "stop", "length": "length", "cancelled": "cancelled"}
# Join refusals that no retry changes: the room is gone or closed to this account.
FINAL_JOIN_ERRORS = ("forbidden", "not_found")
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
        # Why the server will not have the worker back (one line); the command then exits 1.
        self.ended: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.closing = False  # stop() or close() runs: the disconnect that follows is ours
        self.server_closed = False  # the last disconnect was the server's own
        self.coming_back: asyncio.Task[None] | None = None
        self.joining = False  # a join_room waits for its ack
        # A rejoin the server could not take (busy, restarting): asked again, later each time.
        self.join_again: asyncio.Task[None] | None = None
        self.join_delay = 0.0
        # handle_sigint=False: python-socketio and engine.io would otherwise take SIGINT for
        # themselves (engine.io replaces the loop's handler at connect) and Ctrl-C would not drain.
        # Their errors go through our logging once instead of also through a handler of their own;
        # their INFO and WARNING lines narrate what the worker's own lines already say.
        library_log = logging.getLogger("mesh_nanollm.worker.socketio")
        library_log.setLevel(logging.ERROR)
        self.sio = socketio.AsyncClient(reconnection=True, reconnection_attempts=0, reconnection_delay=1,
                                        reconnection_delay_max=30, randomization_factor=0.5,
                                        handle_sigint=False, logger=library_log, engineio_logger=library_log)
        for name in ("connect", "connect_error", "disconnect", "job_run", "job_cancel", "error"):
            self.sio.on(name, getattr(self, f"_on_{name}"))
        for name in ("peer_joined", "peer_left", "peer_updated", "signal"):
            self.sio.on(name, self._relay(name))
        runner.changed = self.send_status

    async def _connect(self, *, retry: bool) -> None:
        await self.sio.connect(self.server, headers={"Authorization": f"Bearer {self.token}"},
                               transports=["websocket"], wait_timeout=JOIN_TIMEOUT_S, retry=retry)

    async def start(self) -> None:
        """Connect and join; raises CannotJoin with one line when either fails."""
        self.first_join = asyncio.get_running_loop().create_future()
        try:
            await self._connect(retry=False)
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
        self.closing = True
        if self.sio.connected:
            with contextlib.suppress(SocketIOError, TimeoutError):
                await self.sio.call("leave_room", {}, timeout=5)
            await self.room_event("left", {})
        await self.close()

    async def close(self) -> None:
        """Cancel what still runs and close the connection, ending any reconnection in progress."""
        self.closing = True
        await self.runner.drain(0)
        for task in (self.coming_back, self.join_again):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.sio.shutdown()

    def _end(self, why: str) -> None:
        if not self.ended.done():
            self.ended.set_result(why)

    def _lost_how(self) -> str:
        return "the server closed the connection" if self.server_closed else "the server refused to take the worker back"

    # -- the connection and the room ---------------------------------------------------------

    async def _on_connect(self) -> None:
        # The join's ack comes through the reader this handler runs in: wait for it elsewhere.
        self.sio.start_background_task(self._join)

    async def _join(self) -> None:
        r = self.runner
        caps = {"backend": r.backend, "user_agent": USER_AGENT, "state": self._state(), "models_warm": list(r.engines)}
        self.joining = True
        try:
            ack = await self.sio.call("join_room", {"room": self.room, "capabilities": caps}, timeout=JOIN_TIMEOUT_S)
        except (SocketIOError, TimeoutError) as exc:
            ack = {"error": {"message": f"no answer to join_room ({exc.__class__.__name__})"}}
        finally:
            self.joining = False
        error = ack.get("error") if isinstance(ack, dict) else {"message": "a malformed join_room ack"}
        if error:
            problem = f"cannot join room {self.room!r}: {error.get('message', error)}"
            if self.first_join is not None and not self.first_join.done():
                self.first_join.set_exception(CannotJoin(problem))
            elif error.get("code") in FINAL_JOIN_ERRORS:
                self._end(f"{self._lost_how()}: {problem}")
            else:
                # Connected but in no room, so serving nobody: ask again rather than wait forever.
                self.join_delay = min(self.join_delay * 2 or self.sio.reconnection_delay, self.sio.reconnection_delay_max)
                self.say(f"{problem}; asking again in {self.join_delay:g} s")
                if self.join_again is not None and self.join_again is not asyncio.current_task():
                    self.join_again.cancel()
                self.join_again = self.sio.start_background_task(self._join_later, self.join_delay)
            return
        self.join_delay = 0.0
        self.server_closed = False
        self.peer_id = ack["peer_id"]
        self.say(f"joined room {self.room} as peer {self.peer_id} ({r.backend}; models: {', '.join(r.engines)})")
        await self.send_status_now()
        if self.first_join is not None and not self.first_join.done():
            self.first_join.set_result(None)
        await self.room_event("joined", ack)

    async def _join_later(self, delay: float) -> None:
        await asyncio.sleep(delay)
        # Not if the connection went meanwhile (its reconnect joins) or a join got in.
        if self.sio.connected and self.peer_id is None and not (self.joining or self.closing or self.ended.done()):
            await self._join()

    async def _on_connect_error(self, data: object = None) -> None:
        # Only an answer from the server itself (engine.io is up) is a refusal; the rest is the network.
        if self.sio.eio.state == "connected":
            self.refused = data.get("message") if isinstance(data, dict) else str(data)
            if self.first_join is not None and self.first_join.done():
                # It signed in with this token before: the token was revoked since, or its account
                # deleted. Retrying would not change the answer.
                self._end(f"{self._lost_how()}: the API token was revoked (or its account deleted); {TOKEN_HELP}")

    async def _on_disconnect(self, reason: object = None) -> None:
        # The server has already handed our API jobs to other peers: nobody is left to stream to.
        for job_id in list(self.api_jobs):
            self.runner.cancel(job_id)
        joined = self.peer_id is not None
        self.peer_id = None
        await self.room_event("left", {})
        if self.closing or self.ended.done():
            return
        if reason == self.sio.reason.SERVER_DISCONNECT:
            # How the server ends a revoked token's sockets, or a lost room's; python-socketio does
            # not reconnect after it. Connecting again gets the server's refusal (which ends the
            # worker), or gets the worker back in when the refusal was not meant for it.
            self.server_closed = True
            self.say("the server closed the connection; connecting again")
            self.coming_back = self.sio.start_background_task(self._come_back)
        elif joined:
            self.say("lost the server; reconnecting")

    async def _come_back(self) -> None:
        # The library closes the engine.io connection after this disconnect's handlers ran.
        while self.sio.eio.state != "disconnected":
            await asyncio.sleep(0.05)
        delay = self.sio.reconnection_delay
        # Not only cancel() ends this: python-socketio's retry swallows a cancellation.
        while not (self.closing or self.ended.done()):
            await asyncio.sleep(delay)
            try:
                # retry=True: a network that is gone gets the usual backoff until it is back.
                await self._connect(retry=True)
            except (SocketIOError, ValueError):
                delay = min(delay * 2, self.sio.reconnection_delay_max)
            else:
                return

    async def _on_error(self, data: object = None) -> None:
        # A failed join's ack says the same, and _join says it (or stops the worker with it).
        if isinstance(data, dict) and not self.joining:
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
        self.say(f"job {job.id} {job.model}: {m['reason']}, {tokens(m['tokens'])}{speed}")
