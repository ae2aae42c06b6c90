"""Servers a test module starts with settings of its own (conftest's `start_server`, stopped on the
way out): one, or two instances on one Postgres database of their own, linked by Redis."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from conftest import (
    TEST_DATABASE_URL,
    TEST_REDIS_URL,
    LiveServer,
    postgres_reachable,
    redis_reachable,
    require,
    reset_postgres,
    start_server,
)


@contextmanager
def serving(tmp: Path, database_url: str | None = None, **env: str) -> Iterator[LiveServer]:
    """A server for the duration of the block (a fresh SQLite file in `tmp` by default)."""
    server = start_server(tmp, database_url, **env)
    try:
        yield server
    finally:
        server.stop()


async def own_database(base_url: str, name: str) -> str:
    """A database of our own beside the HTTP tests' one, so neither resets the other's tables."""
    import asyncpg

    admin = await asyncpg.connect(base_url.replace("postgres://", "postgresql://", 1))
    try:
        if not await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = base_url.rsplit("/", 1)[0] + "/" + name
    await reset_postgres(url)
    return url


@contextmanager
def two_instances(tmp: Path, suffix: str, **env: str) -> Iterator[tuple[LiveServer, LiveServer]]:
    """Two servers sharing TEST_REDIS_URL and a fresh Postgres database named after the test
    database plus `suffix` (so runs against different test databases never share it)."""
    problem = asyncio.run(postgres_reachable(TEST_DATABASE_URL)) or redis_reachable(TEST_REDIS_URL)
    require(problem is None, problem or "")
    name = TEST_DATABASE_URL.rsplit("/", 1)[1] + suffix
    database_url = asyncio.run(own_database(TEST_DATABASE_URL, name))
    with (
        serving(tmp, database_url, REDIS_URL=TEST_REDIS_URL, **env) as first,
        serving(tmp, database_url, REDIS_URL=TEST_REDIS_URL, **env) as second,
    ):
        yield first, second
