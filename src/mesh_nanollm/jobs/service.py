"""Jobs: recording them, the status machine, history with keyset pagination. No HTTP."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import msgspec

from mesh_nanollm.db import DB_ERRORS, raw
from mesh_nanollm.errors import Conflict, InvalidInput, NotFound, ServiceError
from mesh_nanollm.jobs import trace
from mesh_nanollm.jobs.schemas import JobCreate, JobParams, JobPatch, JobView
from mesh_nanollm.peers import service as peers
from mesh_nanollm.rooms.service import get_room
from mesh_nanollm.tables import Job, JobTrace, User

UNFINISHED = ("queued", "running")
TERMINAL = ("succeeded", "failed", "cancelled", "abandoned")
TRANSITIONS: dict[str, set[str]] = {
    "queued": {"running", "cancelled", "abandoned"},
    "running": {"succeeded", "failed", "cancelled", "queued", "abandoned"},
}
PAGE_SIZE = 25
PAGE_MAX = 100


@dataclass(frozen=True)
class JobFilter:
    status: str | None = None
    room: str | None = None
    model: str | None = None


def _now() -> datetime:
    return datetime.now(UTC)


def encode_cursor(created_at: datetime, job_id: UUID) -> str:
    plain = f"{created_at.isoformat()}|{job_id}".encode()
    return base64.urlsafe_b64encode(plain).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, UUID]:
    try:
        plain = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        stamp, _, job_id = plain.partition("|")
        created_at = datetime.fromisoformat(stamp)
        if created_at.tzinfo is None:
            raise ValueError("naive timestamp")
        return created_at, UUID(job_id)
    except (ValueError, UnicodeDecodeError, binascii.Error) as exc:
        # Malformed like any other unparsable parameter: 400, not a broken rule (422).
        raise ServiceError("The page cursor is malformed; start again from the first page.") from exc


def to_view(row: dict[str, Any]) -> JobView:
    ttft_ms = None
    if row["started_at"] and row["first_token_at"]:
        ttft_ms = (row["first_token_at"] - row["started_at"]).total_seconds() * 1000
    return JobView(
        id=row["id"],
        room=row["room_slug"],
        room_name=row["room_name"],
        model=row["model_id"],
        task=row["task"],
        mode=row["mode"],
        prompt=row["prompt"],
        params=_json(row["params"]),
        status=row["status"],
        output=row["output"],
        error=row["error"],
        attempts=row["attempts"],
        workers=_json(row["workers"]),
        token_count=row["token_count"],
        requester_peer=row["requester_peer"],
        worker_peer=row["worker_peer"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        first_token_at=row["first_token_at"],
        finished_at=row["finished_at"],
        ttft_ms=ttft_ms,
        decode_ms=row["decode_ms"],
        decode_tokens=row["decode_tokens"],
        # Never from when requests reached the server: from the run's own clock, or nothing.
        tokens_per_s=trace.tokens_per_s(row["decode_ms"], row["decode_tokens"]),
    )


def _json(value: Any) -> Any:
    # Piccolo returns JSON columns as text on some backends.
    return msgspec.json.decode(value) if isinstance(value, (str, bytes)) else value


_COLUMNS = (Job.all_columns(), Job.room.slug.as_alias("room_slug"), Job.room.name.as_alias("room_name"))


async def create_job(user: User, data: JobCreate) -> JobView:
    """Record a new job; with a client-chosen `id` the job made by an earlier create of the same id,
    if there is one (a create sent again after its answer was lost records it once)."""
    if data.id is not None and (made := await _made_before(user, data.id)) is not None:
        return made
    room = await get_room(user, data.room)
    if data.requester_peer is not None and not await peers.is_peer_of(data.requester_peer, room.id, user.id):
        raise InvalidInput(
            f"requester_peer {data.requester_peer} is not one of your peers in room “{room.slug}”: "
            "use the peer id that join_room gave this page."
        )
    now = _now()
    job = Job(
        room=room.id,
        requester=user.id,
        requester_peer=data.requester_peer,
        model_id=data.model,
        task=data.task,
        mode=data.mode,
        prompt=data.prompt,
        # An unseeded run records no seed, rather than a null one.
        params={key: v for key, v in msgspec.to_builtins(data.params).items() if v is not None},
        created_at=now - timedelta(milliseconds=data.age_ms),
        updated_at=now,
        **({"id": data.id} if data.id is not None else {}),
    )
    try:
        await job.save()
    except DB_ERRORS:
        # The same create twice at once: the other one made it.
        if data.id is None or (made := await _made_before(user, data.id)) is None:
            raise
        return made
    return await get_job(user, job.id)


async def _made_before(user: User, job_id: UUID) -> JobView | None:
    row = await Job.select(*_COLUMNS).where(Job.id == job_id).first()
    if row is None:
        return None
    if row["requester"] != user.id:
        raise Conflict("Another job already has this id; leave `id` out, or choose a new random UUID.")
    return to_view(row)


async def get_job(user: User, job_id: UUID) -> JobView:
    row = await Job.select(*_COLUMNS).where(Job.id == job_id, Job.requester == user.id).first()
    if row is None:
        raise NotFound("No such job.")
    return to_view(row)


async def describe_workers(job: JobView) -> list[str]:
    """Who ran each attempt, as the history page says it: "your browser", "<username>'s browser" or
    "<username>'s worker"."""
    names = await peers.peer_names({UUID(worker) for worker in job.workers if worker != "local"})
    return [
        "your browser" if worker == "local" else names.get(worker, "a peer no longer on record")
        for worker in job.workers
    ]


async def list_jobs(
    user: User, filters: JobFilter, cursor: str | None = None, limit: int = PAGE_SIZE
) -> tuple[list[JobView], str | None]:
    """One page of `user`'s jobs, newest first, and the cursor of the next page (None at the end)."""
    limit = max(1, min(limit, PAGE_MAX))
    # Raw SQL with bound values, the filters appended as text: the history runs this on every
    # load, and Piccolo took longer to build it than Postgres to answer it.
    sql = (
        "SELECT job.*, room.slug AS room_slug, room.name AS room_name FROM job JOIN room ON room.id = job.room"
        " WHERE job.requester = {}"
    )
    args: list[Any] = [user.id]
    for condition, value in (
        ("job.status = {}", filters.status),
        ("job.model_id = {}", filters.model),
        ("room.slug = {}", filters.room),
    ):
        if value:
            sql += f" AND {condition}"
            args.append(value)
    if cursor:
        # A row-value comparison lets both databases walk the (requester, created_at, id) index.
        sql += " AND (job.created_at, job.id) < ({}, {})"
        args.extend(decode_cursor(cursor))
    rows = await raw(Job, f"{sql} ORDER BY job.created_at DESC, job.id DESC LIMIT {{}}", *args, limit + 1)
    views = [to_view(row) for row in rows[:limit]]
    next_cursor = encode_cursor(views[-1].created_at, views[-1].id) if len(rows) > limit else None
    return views, next_cursor


async def list_models_used(user: User) -> list[str]:
    # A loose index scan: one index probe per distinct model on (requester, model_id, ...).
    # A plain SELECT DISTINCT reads every one of the user's jobs (145 ms at a million jobs).
    rows = await raw(Job, 
        "WITH RECURSIVE used(model_id, n) AS ("
        " SELECT (SELECT model_id FROM job WHERE requester = {} ORDER BY model_id LIMIT 1), 1"
        " UNION ALL"
        " SELECT (SELECT model_id FROM job WHERE requester = {} AND model_id > used.model_id"
        " ORDER BY model_id LIMIT 1), used.n + 1"
        " FROM used WHERE used.model_id IS NOT NULL AND used.n < 50"
        ") SELECT model_id FROM used WHERE model_id IS NOT NULL ORDER BY model_id",
        user.id,
        user.id,
    )
    return [row["model_id"] for row in rows]


async def update_job(user: User, job_id: UUID, patch: JobPatch) -> JobView:
    """Apply `patch`, enforcing the status machine; Conflict (409) on an illegal transition."""
    current = await Job.select().where(Job.id == job_id, Job.requester == user.id).first()
    if current is None:
        raise NotFound("No such job.")
    if current["mode"] == "api":
        raise Conflict("API jobs are recorded by the server that runs them; they cannot be patched.")
    now = _now()
    # When the change happened: a record sent after the fact says how long ago (never before the job).
    at = max(now - timedelta(milliseconds=patch.age_ms), current["created_at"])
    values: dict[Any, Any] = {Job.updated_at: now}
    status = current["status"]
    await _check_claims(current, patch)
    if patch.status is not None and patch.status != status:
        if patch.status not in TRANSITIONS.get(status, set()):
            raise Conflict(f"A job cannot go from {status} to {patch.status}.")
        values[Job.status] = patch.status
        if patch.status == "running":
            values[Job.attempts] = current["attempts"] + 1
            values[Job.started_at] = current["started_at"] or at
            worker = str(patch.worker_peer) if patch.worker_peer else "local"
            values[Job.workers] = [*_json(current["workers"]), worker]
            # Each attempt names its own worker: one that fails over to the requester clears it.
            values[Job.worker_peer] = patch.worker_peer
        if patch.status in TERMINAL:
            values[Job.finished_at] = at
    elif status in TERMINAL:
        # A finished job is a record: nothing about it changes any more.
        raise Conflict(f"The job is already {status}.")
    if patch.output is not None:
        values[Job.output] = patch.output
    if patch.error is not None:
        values[Job.error] = patch.error
    if patch.token_count is not None:
        values[Job.token_count] = patch.token_count
    if patch.worker_peer is not None:
        values[Job.worker_peer] = patch.worker_peer
    if patch.ttft_ms is not None:
        started = values.get(Job.started_at, current["started_at"]) or at
        values[Job.first_token_at] = started + timedelta(milliseconds=patch.ttft_ms)
    if patch.decode_ms is not None:
        values[Job.decode_ms] = patch.decode_ms
    if patch.decode_tokens is not None:
        values[Job.decode_tokens] = patch.decode_tokens
    events = trace.encode(patch.trace) if patch.trace is not None else None
    # One transaction: a job never ends up succeeded without its peer credited, or the reverse.
    async with Job._meta.db.transaction():
        # Compare-and-set on the status, so two writers cannot both win a transition.
        updated = await Job.update(values).where(Job.id == job_id, Job.status == status).returning(Job.id)
        if not updated:
            raise Conflict("The job changed while you were updating it; reload and try again.")
        if events is not None:
            await save_trace(job_id, events)
        if values.get(Job.status) == "succeeded":
            # The peer that ran it, or the requester's own page when it ran locally.
            peer = values.get(Job.worker_peer, current["worker_peer"]) or current["requester_peer"]
            if peer is not None:
                speed = trace.tokens_per_s(
                    values.get(Job.decode_ms, current["decode_ms"]), values.get(Job.decode_tokens, current["decode_tokens"])
                )
                await peers.credit_peer(peer, values.get(Job.token_count, current["token_count"]), speed)
    return await get_job(user, job_id)


async def _check_claims(current: dict[str, Any], patch: JobPatch) -> None:
    """What a patch claims about who ran the job and how much it made must be possible: the worker
    is a peer of the job's room, and no more tokens than the job asked for (the peers API shows
    these totals as each peer's credit)."""
    if patch.worker_peer is not None and not await peers.is_peer_of(patch.worker_peer, current["room"]):
        raise InvalidInput(
            f"worker_peer {patch.worker_peer} is not a peer of this job's room: "
            "name the peer that ran it, as the room's presence lists it."
        )
    limit = _json(current["params"]).get("max_new_tokens", JobParams().max_new_tokens)
    for field in ("token_count", "decode_tokens"):
        value = getattr(patch, field)
        if value is not None and value > limit:
            raise InvalidInput(
                f"{field} {value} is more than this job can produce (its params.max_new_tokens is {limit})."
            )


async def save_trace(job_id: UUID, events: bytes) -> None:
    """Store (or replace) the job's trace, already encoded by trace.encode."""
    updated = await JobTrace.update({JobTrace.events: events}).where(JobTrace.job == job_id).returning(JobTrace.id)
    if not updated:
        await JobTrace.insert(JobTrace(job=job_id, events=events))


async def get_trace(job_id: UUID) -> trace.Trace | None:
    """The trace of a job the caller may already see (get_job checked), or None if none was sent."""
    row = await JobTrace.select(JobTrace.events).where(JobTrace.job == job_id).first()
    return trace.decode(row["events"]) if row else None


async def abandon_stale_jobs(after_s: int) -> int:
    """Mark `abandoned` the unfinished jobs whose requester has been gone longer than `after_s`
    (and that nobody updated for as long): only the requester's page finishes or fails a job over."""
    cutoff = _now() - timedelta(seconds=after_s)
    stale = await Job.select(Job.id, Job.requester_peer).where(
        Job.status.is_in(list(UNFINISHED)), Job.updated_at < cutoff
    )
    peer_ids = [row["requester_peer"] for row in stale if row["requester_peer"]]
    # Still connected, or gone for less than `after_s`: it may yet come back to its job.
    live_peers = await peers.peers_still_around(peer_ids, cutoff)
    gone = [row["id"] for row in stale if row["requester_peer"] not in live_peers]
    if gone:
        now = _now()
        await Job.update(
            {Job.status: "abandoned", Job.finished_at: now, Job.updated_at: now,
             Job.error: "The requester left before the job finished."}
        ).where(Job.id.is_in(gone), Job.status.is_in(list(UNFINISHED)))
    return len(gone)
