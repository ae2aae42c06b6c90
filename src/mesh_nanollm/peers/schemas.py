"""The one shape of a peer on the wire: the peers API, the peers fragment and Socket.IO presence."""

from __future__ import annotations

from datetime import datetime

import msgspec


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
    connected_at: datetime | None = None
    last_seen_at: datetime | None = None
    jobs_run: int | None = None
    tokens_generated: int | None = None
