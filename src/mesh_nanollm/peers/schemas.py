"""The one shape of a peer on the wire: the peers API, the peers fragment and Socket.IO presence."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

import msgspec


class LinkRtt(msgspec.Struct):
    """One of a peer's open data channels, to `peer_id`, and its smoothed round trip."""

    peer_id: str
    rtt_ms: float


class Served(msgspec.Struct):
    """A job a peer runs now, for `requester` (a peer of the room) or an API client (null)."""

    model: str
    requester: str | None = None


class PeerView(msgspec.Struct, omit_defaults=True):
    """A peer in a room. What the peer reports (backend, state, warm models, queue, tok/s) is always
    there; the record fields (times and counters) come only from the database — the peers API and
    `join_room`'s ack — and presence events built from an instance's memory leave them out, since
    the counters change through the jobs API, possibly on another instance."""

    peer_id: str
    username: str
    backend: str
    state: str
    models_warm: list[str]
    queue: int
    tok_s: float
    pause_reason: str = ""  # with state `paused`: hidden, battery, device_lost or sharing_off
    # Its open links and their round trips, and the jobs it runs now (docs/realtime.md, "The mesh
    # seen from the room"); as the peer reported them last.
    links: list[LinkRtt] = []
    serving: list[Served] = []
    connected_at: datetime | None = None
    last_seen_at: datetime | None = None
    jobs_run: int | None = None
    tokens_generated: int | None = None

    openapi_example: ClassVar[dict[str, Any]] = {
        "peer_id": "0b7c6f2e-5d41-4c1b-9a57-3f0e2d9c8a11",
        "username": "ada",
        "backend": "webgpu",
        "state": "idle",
        "models_warm": ["tiny-gpt2"],
        "queue": 0,
        "tok_s": 38.5,
        "links": [{"peer_id": "7d2e9a41-3c5b-4f60-8e1d-2a9b4c6f0e35", "rtt_ms": 1.8}],
        "serving": [{"model": "tiny-gpt2", "requester": "7d2e9a41-3c5b-4f60-8e1d-2a9b4c6f0e35"}],
        "connected_at": "2026-12-01T09:31:02Z",
        "last_seen_at": "2026-12-01T09:45:40Z",
        "jobs_run": 12,
        "tokens_generated": 1536,
    }
