"""The shape of a room's statistics: the stats page renders it, `GET /api/rooms/{slug}/stats` sends it."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

import msgspec


class Spread(msgspec.Struct):
    """Percentiles of one measure (linear interpolation between ranks, as Postgres'
    `percentile_cont`); None when no job in the group measured it."""

    n: int
    p50: float | None = None
    p90: float | None = None
    p99: float | None = None


class PeerStats(msgspec.Struct):
    """What one peer ran: jobs that started on it (the last attempt's worker, or the requester's
    own page for a local run) and the tokens they made."""

    peer_id: str
    username: str
    backend: str
    jobs: int
    succeeded: int
    tokens: int


class ModelStats(msgspec.Struct):
    model: str
    jobs: int
    succeeded: int
    tokens: int


class SpeedStats(msgspec.Struct):
    """How fast one model ran on one backend: time to first token and decoding speed of the
    period's succeeded jobs, as each job's record computes them."""

    model: str
    backend: str
    ttft_ms: Spread
    tok_s: Spread


class RoomStats(msgspec.Struct):
    room: str
    period: str  # 1h, 24h, 7d or 30d
    since: datetime
    until: datetime
    jobs: int
    succeeded: int
    tokens: int
    peers: list[PeerStats]
    models: list[ModelStats]
    speed: list[SpeedStats]
    # The percentiles read at most this many of the period's latest succeeded jobs; `sampled` says
    # whether the period had more.
    speed_sample_cap: int
    sampled: bool

    openapi_example: ClassVar[dict[str, Any]] = {
        "room": "global",
        "period": "24h",
        "since": "2026-12-04T10:00:00Z",
        "until": "2026-12-05T10:00:00Z",
        "jobs": 42,
        "succeeded": 40,
        "tokens": 2310,
        "peers": [
            {
                "peer_id": "0b7c6f2e-5d41-4c1b-9a57-3f0e2d9c8a11",
                "username": "ada",
                "backend": "webgpu",
                "jobs": 30,
                "succeeded": 29,
                "tokens": 1800,
            },
        ],
        "models": [{"model": "tiny-gpt2", "jobs": 42, "succeeded": 40, "tokens": 2310}],
        "speed": [
            {
                "model": "tiny-gpt2",
                "backend": "webgpu",
                "ttft_ms": {"n": 29, "p50": 41.0, "p90": 120.5, "p99": 310.2},
                "tok_s": {"n": 29, "p50": 180.0, "p90": 240.3, "p99": 262.9},
            },
        ],
        "speed_sample_cap": 20000,
        "sampled": False,
    }
