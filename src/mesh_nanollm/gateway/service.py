"""The records of API jobs, written by the server as it sees them happen: queued, each attempt and
its worker, first token, the end. No HTTP, no sockets."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import msgspec

from mesh_nanollm.jobs.service import save_trace
from mesh_nanollm.jobs.trace import Recorder, tokens_per_s
from mesh_nanollm.peers import service as peers
from mesh_nanollm.tables import Job

UNFINISHED = ["queued", "running"]


def _now() -> datetime:
    return datetime.now(UTC)


def _json(value: Any) -> Any:
    # Piccolo returns JSON columns as text on some backends.
    return msgspec.json.decode(value) if isinstance(value, (str, bytes)) else value


async def record_queued(room_id: int, user_id: int, model: str, prompt: str, params: dict[str, Any]) -> UUID:
    now = _now()
    job = Job(
        room=room_id, requester=user_id, model_id=model, mode="api", prompt=prompt, params=params,
        created_at=now, updated_at=now,
    )
    await job.save()
    return job.id


async def record_attempt(job_id: UUID, worker_peer: str) -> None:
    """A peer took the job: `running`, one more attempt, its worker listed."""
    row = await Job.select(Job.attempts, Job.workers, Job.started_at).where(Job.id == job_id).first()
    if row is None:
        return
    workers = _json(row["workers"])
    now = _now()
    await Job.update(
        {
            Job.status: "running",
            Job.attempts: row["attempts"] + 1,
            Job.workers: [*workers, worker_peer],
            Job.worker_peer: UUID(worker_peer),
            Job.started_at: row["started_at"] or now,
            Job.updated_at: now,
        }
    ).where(Job.id == job_id, Job.status.is_in(UNFINISHED))


async def record_first_token(job_id: UUID) -> None:
    now = _now()
    await Job.update({Job.first_token_at: now, Job.updated_at: now}).where(
        Job.id == job_id, Job.first_token_at.is_null()
    )


async def record_progress(job_id: UUID, output: str, tokens: int) -> None:
    """The text and token count so far of a running job."""
    await Job.update({Job.output: output, Job.token_count: tokens, Job.updated_at: _now()}).where(
        Job.id == job_id, Job.status == "running"
    )


async def record_requeued(job_id: UUID, output: str, tokens: int, reason: str) -> None:
    """The worker went away mid-job: back to `queued` with the text so far, for the next peer."""
    await Job.update(
        {Job.status: "queued", Job.output: output, Job.token_count: tokens, Job.error: reason, Job.updated_at: _now()}
    ).where(Job.id == job_id, Job.status == "running")


async def record_finished(
    job_id: UUID,
    status: str,
    output: str,
    tokens: int,
    finish_reason: str | None,
    error: str = "",
    trace: Recorder | None = None,
) -> None:
    """The end of the job: `succeeded` (with its finish reason), `failed` or `cancelled`, with
    the trace and decode clock the server witnessed; the worker of a succeeded job is credited,
    in the same transaction."""
    decode_ms, decode_tokens = trace.decode() if trace else (None, 0)
    events = trace.encoded() if trace else None
    row = await Job.select(Job.params, Job.worker_peer).where(Job.id == job_id).first()
    if row is None:
        return
    params = _json(row["params"])
    now = _now()
    async with Job._meta.db.transaction():
        updated = await Job.update(
            {
                Job.status: status,
                Job.output: output,
                Job.token_count: tokens,
                Job.error: error,
                Job.params: params | {"finish_reason": finish_reason} if finish_reason else params,
                Job.finished_at: now,
                Job.updated_at: now,
                Job.decode_ms: decode_ms,
                Job.decode_tokens: decode_tokens,
            }
        ).where(Job.id == job_id, Job.status.is_in(UNFINISHED)).returning(Job.id)
        if updated and events is not None:
            await save_trace(job_id, events)
        if updated and status == "succeeded" and row["worker_peer"] is not None:
            await peers.credit_peer(row["worker_peer"], tokens, tokens_per_s(decode_ms, decode_tokens))
