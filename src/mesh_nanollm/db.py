"""The database engine: built from DATABASE_URL, bound to every table, migrated, pooled."""

from __future__ import annotations

import os
from urllib.parse import urlsplit

from piccolo.engine.base import Engine
from piccolo.engine.postgres import PostgresEngine
from piccolo.engine.sqlite import SQLiteEngine

os.environ.setdefault("PICCOLO_CONF", "mesh_nanollm.piccolo_conf")


def engine_for(database_url: str) -> Engine:
    if database_url.startswith("sqlite:///"):
        path = database_url.removeprefix("sqlite:///") or "mesh-nanollm.sqlite"
        # A generous busy timeout: Piccolo opens a connection per query, and
        # concurrent writers would otherwise fail with "database is locked".
        return SQLiteEngine(path=path, timeout=30)
    parts = urlsplit(database_url)
    dsn = parts._replace(scheme="postgresql").geturl()
    return PostgresEngine(config={"dsn": dsn}, log_queries=False)


def bind(database_url: str) -> Engine:
    """Point Piccolo (tables and migrations alike) at `database_url` and return its engine."""
    from piccolo.apps.migrations.tables import Migration

    from mesh_nanollm import piccolo_conf, tables

    engine = engine_for(database_url)
    piccolo_conf.DB = engine
    for table in [*tables.ALL_TABLES, Migration]:
        table._meta.db = engine
    return engine


async def migrate() -> None:
    """Run every pending migration forwards; raise if one fails."""
    from piccolo.apps.migrations.commands.forwards import run_forwards

    result = await run_forwards(app_name="all")
    if not result.success:
        raise RuntimeError(f"migrations failed: {result.message}")


async def open_pool(engine: Engine, size: int) -> None:
    if isinstance(engine, PostgresEngine):
        await engine.start_connection_pool(min_size=1, max_size=size)
    elif isinstance(engine, SQLiteEngine):
        # WAL lets readers work while a writer commits; it persists in the file.
        await engine.run_ddl("PRAGMA journal_mode=WAL")


async def close_pool(engine: Engine) -> None:
    if isinstance(engine, PostgresEngine):
        await engine.close_connection_pool()


async def ping(engine: Engine) -> bool:
    try:
        await engine.run_ddl("SELECT 1")
    except Exception:  # any driver error means "down" to the health check
        return False
    return True
