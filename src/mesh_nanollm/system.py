"""The front door, the health check and the model manifest."""

from __future__ import annotations

from typing import Any, ClassVar

import msgspec
from litestar import Response, get
from litestar.di import NamedDependency, Provide
from litestar.openapi import ResponseSpec
from litestar.response import Redirect

from mesh_nanollm.catalogue import Catalogue, ModelEntry
from mesh_nanollm.db import DB_ERRORS, pending_migrations
from mesh_nanollm.security import provide_optional_user
from mesh_nanollm.tables import User


class Health(msgspec.Struct, omit_defaults=True):
    status: str
    database: str  # ok | unreachable | outdated
    detail: str | None = None  # what an operator should do, when not ok

    openapi_example: ClassVar[dict[str, Any]] = {"status": "ok", "database": "ok"}


@get("/", name="home", dependencies={"user": Provide(provide_optional_user)}, include_in_schema=False)
async def home(user: NamedDependency[User | None]) -> Redirect:
    return Redirect("/rooms" if user else "/login")


@get(
    "/api/health",
    summary="Check health",
    tags=["system"],
    responses={503: ResponseSpec(Health, generate_examples=False, description="The database is unreachable or has pending migrations.")},
)
async def health() -> Response[Health]:
    """Whether this instance can use its database: reachable and fully migrated (503 if not)."""
    try:
        pending = await pending_migrations()
    except DB_ERRORS:  # whatever the driver says, the health check says "down"
        detail = "The database does not answer; check DATABASE_URL and the database server."
        return Response(Health(status="degraded", database="unreachable", detail=detail), status_code=503)
    if pending:
        detail = f"The database has pending migrations ({len(pending)} not run); run `mesh-nanollm migrate`."
        return Response(Health(status="degraded", database="outdated", detail=detail), status_code=503)
    return Response(Health(status="ok", database="ok"))


@get("/api/models", summary="List models", tags=["models"])
async def models(catalogue: NamedDependency[Catalogue]) -> list[ModelEntry]:
    """The model manifest: the catalogue's models and those served from this server's models folder."""
    return catalogue.entries
