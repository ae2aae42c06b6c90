"""The JSON shapes of rooms and peers on the wire."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from uuid import UUID

import msgspec


class RoomCreate(msgspec.Struct, forbid_unknown_fields=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=80)]
    private: bool = False


class RoomView(msgspec.Struct):
    slug: str
    name: str
    private: bool
    owner: str | None
    peers: int
    created_at: datetime
    invite_code: str | None = None


class PeerView(msgspec.Struct):
    peer_id: UUID
    username: str
    backend: str
    state: str
    models_warm: list[str]
    queue: int
    tok_s: float
    connected_at: datetime
    last_seen_at: datetime
    jobs_run: int
    tokens_generated: int
