"""A room's statistics: the page (`/rooms/{slug}/stats`, a period selector and tables) and
`GET /api/rooms/{slug}/stats`, both from the same service call."""

from __future__ import annotations

from typing import Annotated, ClassVar

from litestar import Controller, get
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, QueryParameter
from litestar.response import Template

from mesh_nanollm.errors import ServiceError
from mesh_nanollm.openapi import BEARER, errors
from mesh_nanollm.rooms.service import get_room
from mesh_nanollm.security import provide_user
from mesh_nanollm.stats.schemas import RoomStats
from mesh_nanollm.stats.service import DEFAULT_PERIOD, PERIODS, room_stats
from mesh_nanollm.tables import User

# A plain string checked by the service, so that a bad one gets the same readable answer on the
# page (re-rendered with the selector) as in the API.
PeriodQuery = Annotated[
    str, QueryParameter(max_length=16, description="How far back: 1h, 24h, 7d or 30d.")
]


class StatsPages(Controller):
    path = "/rooms/{slug:str}/stats"
    include_in_schema = False
    dependencies: ClassVar = {"user": Provide(provide_user)}

    @get("/", name="room_stats")
    async def stats(
        self, user: NamedDependency[User], slug: FromPath[str], period: PeriodQuery = DEFAULT_PERIOD
    ) -> Template:
        room = await get_room(user, slug)
        context = {
            "user": user,
            "room": room,
            "periods": list(PERIODS),
            "period": period,
            "stats": None,
            "error": None,
        }
        try:
            context["stats"] = await room_stats(room, period)
        except ServiceError as exc:
            # The selector stays, with what went wrong; the numbers need a period that exists.
            return Template(
                "stats.html", context=context | {"error": exc.detail}, status_code=exc.status_code
            )
        return Template("stats.html", context=context)


class StatsApi(Controller):
    path = "/api/rooms/{slug:str}/stats"
    tags: ClassVar = ["rooms"]
    security = BEARER
    dependencies: ClassVar = {"user": Provide(provide_user)}

    @get("/", summary="A room's statistics", responses=errors(400, 401, 403, 404))
    async def room_stats(
        self, user: NamedDependency[User], slug: FromPath[str], period: PeriodQuery = DEFAULT_PERIOD
    ) -> RoomStats:
        """Jobs and tokens per peer and per model, and time-to-first-token and tokens/s percentiles
        per model and backend, over the last `period` (private rooms: members only)."""
        room = await get_room(user, slug)
        return await room_stats(room, period)
