"""The JSON shapes of rooms on the wire (peers: peers/schemas.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, ClassVar

import msgspec


class RoomCreate(msgspec.Struct, forbid_unknown_fields=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=80)]
    private: bool = False

    openapi_example: ClassVar[dict[str, Any]] = {"name": "Reading group", "private": True}


class RoomView(msgspec.Struct):
    slug: str
    name: str
    private: bool
    owner: str | None
    peers: int
    created_at: datetime
    invite_code: str | None = None  # its owner only, grouped for reading: "K7QM-4XPZ-9D"

    openapi_example: ClassVar[dict[str, Any]] = {
        "slug": "reading-group",
        "name": "Reading group",
        "private": True,
        "owner": "ada",
        "peers": 2,
        "created_at": "2026-12-01T09:30:00Z",
        "invite_code": "K7QM-4XPZ-9D",
    }
