"""API jobs over Socket.IO: `job_run` and `job_cancel` to a peer on any instance, and the peer's
`job_token` / `job_done` / `job_error` brought back to the inbox of the instance that runs the job
(in process, or through Redis when the peer's socket is on another instance; docs/realtime.md)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
import socketio
from redis.asyncio import Redis
from redis.exceptions import RedisError

from mesh_nanollm.realtime.schemas import JobAck, JobRefusal

log = logging.getLogger("mesh_nanollm.realtime.jobs")

# Which instance's inbox a job's events go to (`owner_key`), and each instance's own channel.
OWNER_KEY_TTL_S = 24 * 3600
ROUTES_REMEMBERED = 4096  # job owners a peer's instance keeps, so a token costs no Redis read
# A job that just ended may still hear from its worker (the `job_done` that answers `job_cancel`):
# for this long such events are dropped quietly instead of answered with `unknown_job`.
ENDED_GRACE_S = 60
ENDED_REMEMBERED = 4096

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode


def owner_key(job_id: str) -> str:
    return f"mesh-nanollm:job:{job_id}"


def instance_channel(instance: str) -> str:
    return f"mesh-nanollm:jobs:{instance}"


@dataclass(slots=True)
class JobEvent:
    """What a peer said about a job (`token`, `done`, `error`) or what became of it (`gone`: the
    peer's socket closed); `peer_id` is stamped by the server that holds the peer's socket."""

    kind: str
    peer_id: str
    sid: str
    data: dict[str, Any] = field(default_factory=dict)


class Inbox:
    """One job's events in arrival order, at most `size` of them waiting: a reader that falls that
    far behind is cut off (`on_overflow`), so the peer is never slowed by the HTTP client."""

    def __init__(self, size: int, on_overflow: Callable[[], None]) -> None:
        self.queue: asyncio.Queue[JobEvent] = asyncio.Queue(size)
        self.on_overflow = on_overflow
        self.overflowed = False

    def put(self, event: JobEvent) -> None:
        if self.overflowed:
            return
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.overflowed = True
            self.on_overflow()

    async def get(self, timeout: float) -> JobEvent | None:
        """The next event, or None if none came within `timeout` seconds."""
        try:
            return await asyncio.wait_for(self.queue.get(), timeout)
        except TimeoutError:
            return None


class JobRelay:
    """This instance's side of API jobs: the inboxes of the jobs it runs, and the routes of the
    jobs its peers work on for other instances."""

    def __init__(self, sio: socketio.AsyncServer, redis: Redis | None) -> None:
        self.sio = sio
        self.redis = redis
        self.instance = uuid.uuid4().hex
        self.inboxes: dict[str, Inbox] = {}
        # job id -> (owner instance, worker peer id), for jobs this instance's peers work on.
        self.routes: OrderedDict[str, tuple[str, str]] = OrderedDict()
        self.ended: OrderedDict[str, None] = OrderedDict()  # jobs of this instance that just ended

    @contextlib.asynccontextmanager
    async def inbox(self, job_id: str, size: int, on_overflow: Callable[[], None]) -> AsyncIterator[Inbox]:
        """Open `job_id`'s inbox here (and claim the job in Redis for the other instances)."""
        box = Inbox(size, on_overflow)
        self.inboxes[job_id] = box
        try:
            if self.redis is not None:
                await self.redis.set(owner_key(job_id), self.instance, ex=OWNER_KEY_TTL_S)
            yield box
        finally:
            self.inboxes.pop(job_id, None)
            self.ended[job_id] = None
            while len(self.ended) > ENDED_REMEMBERED:
                self.ended.popitem(last=False)
            if self.redis is not None:
                with contextlib.suppress(RedisError, OSError):
                    await self.redis.expire(owner_key(job_id), ENDED_GRACE_S)

    async def run_on(self, sid: str, payload: dict[str, Any], timeout: float) -> JobAck | None:
        """`job_run` to the peer with socket `sid` (on any instance); its ack, or None if it gave
        none within `timeout` seconds. An ack that is not one counts as an `invalid` refusal."""
        # Not `sio.call`, which refuses to run with async_handlers=False (a handler awaiting an ack
        # would block the very reader that brings it); no handler awaits this one.
        answered: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        def on_ack(*args: Any) -> None:
            if not answered.done():
                answered.set_result(args[0] if args else None)

        await self.sio.emit("job_run", payload, to=sid, callback=on_ack)
        try:
            ack = await asyncio.wait_for(answered, timeout)
        except TimeoutError:
            return None
        try:
            return msgspec.convert(ack, JobAck)
        except msgspec.ValidationError as exc:
            return JobAck(error=JobRefusal("invalid", f"The ack is not valid: {exc}"))

    async def cancel_on(self, sid: str, job_id: str) -> None:
        """`job_cancel {job_id}` to the peer with socket `sid`, wherever it is connected."""
        await self.sio.emit("job_cancel", {"job_id": job_id}, to=sid)

    async def refuse(self, sid: str, code: str, message: str) -> None:
        """`error {code, message}` to a socket on any instance (an event about a job that peer
        does not hold)."""
        await self.sio.emit("error", {"code": code, "message": message}, to=sid)

    async def deliver(self, job_id: str, event: JobEvent) -> bool:
        """Bring a peer's event to the job's inbox, here or on its owner's instance; False when no
        instance runs that job or ended it lately (it was never dispatched, or ended long ago)."""
        box = self.inboxes.get(job_id)
        if box is not None:
            box.put(event)
            return True
        if job_id in self.ended:
            return True
        if self.redis is None:
            return False
        route = self.routes.get(job_id)
        if route is None:
            owner = await self.redis.get(owner_key(job_id))
            if owner is None:
                return False
            route = (owner.decode(), event.peer_id)
            self.routes[job_id] = route
            while len(self.routes) > ROUTES_REMEMBERED:
                self.routes.popitem(last=False)
        if event.kind == "done" or event.kind == "error":
            self.routes.pop(job_id, None)
        message = {"job_id": job_id, "kind": event.kind, "peer_id": event.peer_id, "sid": event.sid, "data": event.data}
        return await self.redis.publish(instance_channel(route[0]), _encode(message)) > 0

    async def peer_gone(self, peer_id: str, sid: str) -> None:
        """A peer's socket closed: each job it was working on hears `gone` at once (the others, on
        instances this one never heard from, notice the silence instead)."""
        gone = JobEvent("gone", peer_id, sid)
        for box in list(self.inboxes.values()):
            box.put(gone)
        for job_id, (_, worker) in list(self.routes.items()):
            if worker == peer_id:
                with contextlib.suppress(RedisError, OSError):
                    await self.deliver(job_id, gone)
                self.routes.pop(job_id, None)

    async def hear_other_instances(self) -> None:
        """Events for this instance's jobs from peers connected elsewhere (runs with Redis only)."""
        assert self.redis is not None
        while True:
            try:
                async with self.redis.pubsub() as pubsub:
                    await pubsub.subscribe(instance_channel(self.instance))
                    async for message in pubsub.listen():
                        if message["type"] != "message":
                            continue
                        item = _decode(message["data"])
                        box = self.inboxes.get(item["job_id"])
                        if box is not None:
                            box.put(JobEvent(item["kind"], item["peer_id"], item["sid"], item["data"]))
            except (RedisError, OSError) as exc:
                log.warning("API job events from other instances unheard, retrying in 1 s: %s", exc)
                await asyncio.sleep(1)
