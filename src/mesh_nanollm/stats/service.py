"""A room's statistics over a period: jobs and tokens per peer and per model (SQL aggregates) and
TTFT / tok/s percentiles per model and backend (computed here, the same on SQLite and Postgres)."""

from __future__ import annotations

import math
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

from piccolo.query.functions.aggregate import Count, Sum

from mesh_nanollm.errors import ServiceError
from mesh_nanollm.jobs.service import to_view
from mesh_nanollm.peers.service import CHUNK
from mesh_nanollm.stats.schemas import ModelStats, PeerStats, RoomStats, SpeedStats, Spread
from mesh_nanollm.tables import Job, PeerSession, Room

PERIODS = {
    "1h": timedelta(hours=1),
    "24h": timedelta(hours=24),
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
}
DEFAULT_PERIOD = "24h"
# SQLite has no percentile function, so percentiles are computed here over the period's latest
# succeeded jobs: enough for stable p99s, bounded in memory and time.
SPEED_SAMPLE_CAP = 20_000
# The record columns the speed figures need (each job's own TTFT and tok/s come from the same code
# as its record, jobs.service.to_view); the large text ones are left out.
_SKIPPED = {"prompt": "", "output": "", "error": "", "params": {}}
_SPEED_COLUMNS = Job.all_columns(exclude=[Job.prompt, Job.output, Job.error, Job.params])


def check_period(period: str) -> timedelta:
    span = PERIODS.get(period)
    if span is None:
        choices = ", ".join(PERIODS)
        raise ServiceError(
            f"Unknown period “{period[:20]}”: choose one of {choices}.",
            {"period": f"One of {choices}."},
        )
    return span


def percentile(ordered: list[float], q: float) -> float:
    """The `q` quantile of sorted values, interpolating between ranks like `percentile_cont`."""
    rank = q * (len(ordered) - 1)
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def spread(values: list[float]) -> Spread:
    if not values:
        return Spread(0)
    ordered = sorted(values)
    p50, p90, p99 = (round(percentile(ordered, q), 2) for q in (0.5, 0.9, 0.99))
    return Spread(len(ordered), p50, p90, p99)


def _ran_on(row: dict[str, Any]) -> uuid.UUID | None:
    """The peer that ran a job's last attempt: its worker, or the requester's page if local."""
    return row["worker_peer"] or row["requester_peer"]


async def room_stats(room: Room, period: str, now: datetime | None = None) -> RoomStats:
    span = check_period(period)
    until = now or datetime.now(UTC)
    since = until - span
    in_period = (Job.room == room.id) & (Job.created_at >= since) & (Job.created_at <= until)

    by_peer: dict[uuid.UUID, list[int]] = defaultdict(lambda: [0, 0, 0])  # jobs, succeeded, tokens
    peer_rows = (
        await Job.select(
            Job.worker_peer,
            Job.requester_peer,
            Job.status,
            Count(alias="jobs"),
            Sum(Job.token_count, alias="tokens"),
        )
        .where(in_period, Job.started_at.is_not_null())
        .group_by(Job.worker_peer, Job.requester_peer, Job.status)
    )
    for row in peer_rows:
        peer = _ran_on(row)
        if peer is None:  # an API job's attempt that never reached a peer
            continue
        totals = by_peer[peer]
        totals[0] += row["jobs"]
        totals[1] += row["jobs"] if row["status"] == "succeeded" else 0
        totals[2] += row["tokens"] or 0

    by_model: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    model_rows = (
        await Job.select(
            Job.model_id, Job.status, Count(alias="jobs"), Sum(Job.token_count, alias="tokens")
        )
        .where(in_period)
        .group_by(Job.model_id, Job.status)
    )
    for row in model_rows:
        totals = by_model[row["model_id"]]
        totals[0] += row["jobs"]
        totals[1] += row["jobs"] if row["status"] == "succeeded" else 0
        totals[2] += row["tokens"] or 0

    speed_rows = (
        await Job.select(*_SPEED_COLUMNS)
        .where(in_period, Job.status == "succeeded")
        .order_by(Job.created_at, ascending=False)
        .limit(SPEED_SAMPLE_CAP + 1)
    )
    sampled = len(speed_rows) > SPEED_SAMPLE_CAP
    speed_rows = speed_rows[:SPEED_SAMPLE_CAP]

    peer_ids = set(by_peer) | {peer for row in speed_rows if (peer := _ran_on(row)) is not None}
    peers = await _describe_peers(peer_ids)

    samples: dict[tuple[str, str], tuple[list[float], list[float]]] = defaultdict(lambda: ([], []))
    for row in speed_rows:
        view = to_view(row | _SKIPPED | {"room_slug": room.slug, "room_name": room.name})
        peer = _ran_on(row)
        backend = peers[peer]["backend"] if peer in peers else ""
        ttfts, speeds = samples[(row["model_id"], backend or "unknown")]
        if view.ttft_ms is not None:
            ttfts.append(view.ttft_ms)
        if view.tokens_per_s is not None:
            speeds.append(view.tokens_per_s)

    return RoomStats(
        room=room.slug,
        period=period,
        since=since,
        until=until,
        jobs=sum(t[0] for t in by_model.values()),
        succeeded=sum(t[1] for t in by_model.values()),
        tokens=sum(t[2] for t in by_model.values()),
        peers=sorted(
            (
                PeerStats(
                    str(peer),
                    peers.get(peer, {}).get("username", "a peer"),
                    peers.get(peer, {}).get("backend", "") or "unknown",
                    *totals,
                )
                for peer, totals in by_peer.items()
            ),
            key=lambda p: (-p.tokens, -p.jobs, p.username, p.peer_id),
        ),
        models=sorted(
            (ModelStats(model, *totals) for model, totals in by_model.items()),
            key=lambda m: (-m.jobs, m.model),
        ),
        speed=[
            SpeedStats(model, backend, spread(ttfts), spread(speeds))
            for (model, backend), (ttfts, speeds) in sorted(samples.items())
        ],
        speed_sample_cap=SPEED_SAMPLE_CAP,
        sampled=sampled,
    )


async def _describe_peers(peer_ids: set[uuid.UUID]) -> dict[uuid.UUID, dict[str, str]]:
    """Each peer's username and the backend it reported, by peer id (for peers still on record)."""
    if not peer_ids:
        return {}
    ids = list(peer_ids)
    described: dict[uuid.UUID, dict[str, str]] = {}
    for n in range(0, len(ids), CHUNK):  # SQLite's cap on bound variables
        rows = await PeerSession.select(
            PeerSession.peer_id, PeerSession.backend, PeerSession.user.username.as_alias("username")
        ).where(PeerSession.peer_id.is_in(ids[n : n + CHUNK]))
        described.update(
            {
                row["peer_id"]: {"username": row["username"], "backend": row["backend"]}
                for row in rows
            }
        )
    return described
