"""db.raw: the few statements the pages people wait on run go straight to asyncpg on Postgres,
outside a transaction; they must answer as Piccolo's own raw queries do, inside a transaction see
what it wrote, and within one HTTP request share one pool connection (db.share_connection)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
import pytest_asyncio
from conftest import TEST_DATABASE_URL, postgres_reachable, require, unique_name
from litestar import Litestar
from litestar.types import ASGIApp, Message, Receive, Scope, Send

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


PID = "SELECT pg_backend_pid() AS pid"


@pytest_asyncio.fixture
async def postgres_pool(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Any]:
    """Room on a Postgres engine with a pool of three: Room only names the engine `raw` uses."""
    problem = await postgres_reachable(TEST_DATABASE_URL)
    require(problem is None, problem or "")
    engine = db.engine_for(TEST_DATABASE_URL)
    monkeypatch.setattr(Room._meta, "db", engine)
    await db.open_pool(engine, 3)
    yield engine.pool
    await db.close_pool(engine)


async def backend() -> int:
    """The Postgres backend (so the pool connection) a `raw` statement ran on."""
    return (await db.raw(Room, PID))[0]["pid"]


async def call(app: ASGIApp, method: str = "GET") -> list[Message]:
    """One HTTP request through `share_connection`; what it sent."""
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    await db.share_connection(app)({"type": "http", "method": method, "path": "/", "headers": []}, receive, send)
    return sent


async def test_a_requests_statements_share_one_connection_until_its_response_starts(postgres_pool: Any) -> None:
    seen: dict[str, Any] = {}

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen["one after another"] = [await backend(), await backend()]
        # Two at once: one of them takes another connection instead of waiting for the shared one.
        seen["at once"] = await asyncio.gather(backend(), backend())
        seen["held before the response"] = postgres_pool.get_size() - postgres_pool.get_idle_size()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        # A streamed answer runs on without it: handed back as the response started.
        seen["held while streaming"] = postgres_pool.get_size() - postgres_pool.get_idle_size()
        seen["while streaming"] = await backend()
        await send({"type": "http.response.body", "body": b"done"})

    sent = await call(app)

    first, second = seen["one after another"]
    assert first == second
    assert first in seen["at once"] and len(set(seen["at once"])) == 2
    assert (seen["held before the response"], seen["held while streaming"]) == (1, 0)
    assert isinstance(seen["while streaming"], int)
    assert [message["type"] for message in sent] == ["http.response.start", "http.response.body"]
    assert postgres_pool.get_idle_size() == postgres_pool.get_size()


async def test_a_failing_request_hands_its_connection_back(postgres_pool: Any) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await backend()
        raise RuntimeError("the handler failed")

    with pytest.raises(RuntimeError, match="the handler failed"):
        await call(app)

    assert postgres_pool.get_idle_size() == postgres_pool.get_size()
    assert isinstance(await backend(), int)  # outside a request: the pool, as before


async def test_a_post_takes_a_connection_per_statement(postgres_pool: Any) -> None:
    """A POST may wait long before it answers (an API completion waits for its tokens): it keeps no
    connection between its statements."""
    held: list[int] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await backend()
        held.append(postgres_pool.get_size() - postgres_pool.get_idle_size())
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    await call(app, "POST")

    assert held == [0]
