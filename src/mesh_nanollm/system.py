"""The front door, the health check and the model manifest."""

from __future__ import annotations

import msgspec
from litestar import Response, get
from litestar.di import NamedDependency, Provide
from litestar.openapi import ResponseSpec
from litestar.response import Redirect
from piccolo.engine.base import Engine

from mesh_nanollm.catalogue import Catalogue, ModelEntry
from mesh_nanollm.db import ping
from mesh_nanollm.security import provide_optional_user
from mesh_nanollm.tables import User


class Health(msgspec.Struct):
    status: str
    database: str


@get("/", name="home", dependencies={"user": Provide(provide_optional_user)}, include_in_schema=False)
async def home(user: NamedDependency[User | None]) -> Redirect:
    return Redirect("/rooms" if user else "/login")


@get("/api/health", tags=["system"], responses={503: ResponseSpec(Health, generate_examples=False, description="The database is unreachable.")})
async def health(engine: NamedDependency[Engine]) -> Response[Health]:
    """Whether this instance can reach its database (503 when it cannot)."""
    if await ping(engine):
        return Response(Health(status="ok", database="ok"))
    return Response(Health(status="degraded", database="unreachable"), status_code=503)


@get("/api/models", tags=["models"])
async def models(catalogue: NamedDependency[Catalogue]) -> list[ModelEntry]:
    """The model manifest: the catalogue's models and those served from this server's models folder."""
    return catalogue.entries
