"""The JSON shapes of rooms on the wire (peers: peers/schemas.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

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
