"""db.raw: the few statements the pages people wait on run go straight to asyncpg's pool on
Postgres, outside a transaction; they must answer as Piccolo's own raw queries do, and inside a
transaction see what it wrote."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
import pytest_asyncio
from conftest import unique_name
from litestar import Litestar

from mesh_nanollm import db
from mesh_nanollm.tables import Room

SQL = "SELECT slug, name, is_private FROM room WHERE slug = {} OR name = {} ORDER BY slug"


@pytest_asyncio.fixture
async def pooled(app: Litestar, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[None]:
    """Room on an engine of its own with the pool the app's lifespan opens, on this test's loop."""
    engine = db.engine_for(app.state.settings.database_url)
    monkeypatch.setattr(Room._meta, "db", engine)
    await db.open_pool(engine, 2)
    yield
    await db.close_pool(engine)


def test_placeholders_are_numbered_in_order() -> None:
    assert db._numbered("SELECT 1") == "SELECT 1"
    assert db._numbered("a = {} AND b IN ({}, {}) LIMIT {}") == "a = $1 AND b IN ($2, $3) LIMIT $4"


async def test_raw_answers_as_piccolos_raw_does(pooled: None) -> None:
    name = unique_name("raw")
    now = datetime.now(UTC)
    await Room.insert(
        Room(slug=f"{name}-a", name=name, created_at=now),
        Room(slug=f"{name}-b", name=name, is_private=True, created_at=now),
        Room(slug=f"{name}-c", name="other", created_at=now),
    )

    rows = [dict(row) for row in await db.raw(Room, SQL, f"{name}-c", name)]

    assert rows == await Room.raw(SQL, f"{name}-c", name)
    assert rows == [
        {"slug": f"{name}-a", "name": name, "is_private": False},
        {"slug": f"{name}-b", "name": name, "is_private": True},
        {"slug": f"{name}-c", "name": "other", "is_private": False},
    ]


async def test_raw_inside_a_transaction_sees_its_writes(pooled: None) -> None:
    name = unique_name("raw")
    async with Room._meta.db.transaction():
        await Room(slug=name, name=name, created_at=datetime.now(UTC)).save()
        inside = [dict(row) for row in await db.raw(Room, SQL, name, name)]
    assert inside == [{"slug": name, "name": name, "is_private": False}]
