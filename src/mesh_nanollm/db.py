"""The database engine: built from DATABASE_URL, bound to every table, migrated, checked, pooled."""

from __future__ import annotations

import functools
import os
import sqlite3
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from typing import Any, TypeVar
from urllib.parse import urlsplit

import asyncpg
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from piccolo.apps.migrations.commands.base import BaseMigrationManager
from piccolo.apps.migrations.tables import Migration
from piccolo.engine.base import Engine
from piccolo.engine.postgres import PostgresEngine
from piccolo.engine.sqlite import SQLiteEngine
from piccolo.table import Table

from mesh_nanollm import tables
from mesh_nanollm.piccolo_app import APP_CONFIG
from mesh_nanollm.settings import load_database_url

T = TypeVar("T", bound=Table)

# What using the database can raise: no server or a refused connection (OSError, TimeoutError
# included), and each driver's own errors, asyncpg's pool and protocol ones among them.
DB_ERRORS = (OSError, sqlite3.Error, asyncpg.PostgresError, asyncpg.InterfaceError)

# Piccolo's tables keep their engine in class attributes, so the engine in use is process-wide;
# bind() is the one place that sets it, and piccolo_conf hands it to Piccolo's migrations.
_bound: Engine | None = None


def engine_for(database_url: str) -> Engine:
    if database_url.startswith("sqlite:///"):
        # A generous busy timeout: Piccolo opens a connection per query, and
        # concurrent writers would otherwise fail with "database is locked".
        return SQLiteEngine(path=database_url.removeprefix("sqlite:///"), timeout=30)
    parts = urlsplit(database_url)
    dsn = parts._replace(scheme="postgresql").geturl()
    return PostgresEngine(config={"dsn": dsn}, log_queries=False)


def bind(database_url: str) -> Engine:
    """Point every table, Piccolo's record of migrations included, at `database_url`."""
    global _bound
    _bound = engine_for(database_url)
    for table in [*tables.ALL_TABLES, Migration]:
        table._meta.db = _bound
    return _bound


@functools.lru_cache(maxsize=256)
def _numbered(sql: str) -> str:
    """Piccolo's `{}` placeholders as Postgres's `$1, $2, …`."""
    parts = sql.split("{}")
    return "".join(f"{part}${n}" for n, part in enumerate(parts[:-1], 1)) + parts[-1]


class _Shared:
    """The pool connection one request's `raw` statements share, taken at the first of them."""

    __slots__ = ("busy", "connection", "pool")

    def __init__(self) -> None:
        self.connection: Any = None
        self.pool: Any = None
        self.busy = False  # a statement is running on it, or the request no longer shares one

    async def fetch(self, pool: Any, sql: str, args: tuple[Any, ...]) -> Sequence[Mapping[str, Any]]:
        if self.busy:  # another task of the request is using it (or its response has started)
            return await pool.fetch(sql, *args)
        self.busy = True
        try:
            if self.connection is None:
                self.pool, self.connection = pool, await pool.acquire()
            return await self.connection.fetch(sql, *args)
        finally:
            self.busy = False

    async def end(self) -> None:
        self.busy = True
        connection, self.connection = self.connection, None
        if connection is not None:
            await self.pool.release(connection)


_shared: ContextVar[_Shared | None] = ContextVar("shared_connection", default=None)


def share_connection(app: ASGIApp) -> ASGIApp:
    """Middleware: a GET's `raw` statements run on one pool connection, handed back as its response
    starts. Taking and handing back a connection for each statement cost about as much CPU as the
    statement itself. Only reads: a POST may wait a long time before it answers (an API completion
    waits for its peers' tokens), and must not keep a connection from everyone else meanwhile."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("GET", "HEAD"):
            await app(scope, receive, send)
            return
        shared = _Shared()
        token = _shared.set(shared)

        async def send_started(message: Message) -> None:
            if message["type"] == "http.response.start":
                await shared.end()
            await send(message)

        try:
            await app(scope, receive, send_started)
        finally:
            await shared.end()
            _shared.reset(token)

    return middleware


async def raw(table: type[Table], sql: str, *args: Any) -> Sequence[Mapping[str, Any]]:
    """`table.raw(sql, *args)`'s rows, for the statements the pages people wait on run on every
    request. On Postgres, outside a transaction, the statement goes straight to asyncpg, on the
    request's shared connection (`share_connection`) or the pool: Piccolo's own path (its query
    string, its result handling) added some 40% to asyncpg's CPU per statement."""
    engine = table._meta.db
    if isinstance(engine, PostgresEngine) and engine.pool is not None and engine.current_transaction.get() is None:
        shared = _shared.get()
        if shared is not None:
            return await shared.fetch(engine.pool, _numbered(sql), args)
        return await engine.pool.fetch(_numbered(sql), *args)  # asyncpg's records: read by name, as dicts are
    return await table.raw(sql, *args)


def as_objects(table: type[T], rows: Sequence[Mapping[str, Any]]) -> list[T]:
    """Rows of `SELECT table.* ...` run through `raw`, as the objects Piccolo's own queries
    return. The pages people wait on use raw SQL for their few statements: building one from
    Piccolo's query objects costs more CPU than Postgres spends answering it."""
    names = [column._meta.name for column in table._meta.columns]
    return [table(_exists_in_db=True, **{name: row[name] for name in names}) for row in rows]


def bound_engine() -> Engine:
    """The engine bind() chose last; DATABASE_URL's for Piccolo's own CLI, which binds none."""
    return _bound or bind(load_database_url())


async def migrate() -> None:
    """Run every pending migration forwards on the bound engine; raise if one fails."""
    from piccolo.apps.migrations.commands.forwards import run_forwards

    # Piccolo's runner finds our app, and the engine its migrations run on, only through this.
    os.environ["PICCOLO_CONF"] = "mesh_nanollm.piccolo_conf"
    result = await run_forwards(app_name="all")
    if not result.success:
        raise RuntimeError(f"migrations failed: {result.message}")


@functools.cache
def _shipped_migrations() -> tuple[str, ...]:
    """The ids of our migrations, oldest first; the files do not change while we run."""
    manager = BaseMigrationManager()
    return tuple(manager.get_migration_ids(manager.get_migration_modules(APP_CONFIG.resolved_migrations_folder_path)))


async def pending_migrations() -> list[str]:
    """Our migrations the bound database has not run: all of them when it has no tables yet.
    Driver errors (no server, no such database) propagate."""
    if not await Migration.table_exists():
        return list(_shipped_migrations())
    ran = set(await Migration.get_migrations_which_ran(app_name=APP_CONFIG.app_name))
    return [migration for migration in _shipped_migrations() if migration not in ran]


async def _keep_session(connection: Any) -> None:
    """What the pool does to a connection handed back after each statement: nothing more than
    asyncpg's own rollback of a transaction left open (which runs before this). Its default also
    sends `pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL` — one more round trip per
    statement, which doubled a page's database traffic — to undo session state this app never
    sets (no advisory locks, cursors, LISTEN or SET)."""


async def open_pool(engine: Engine, size: int) -> None:
    if isinstance(engine, PostgresEngine):
        await engine.start_connection_pool(min_size=1, max_size=size, reset=_keep_session)
    elif isinstance(engine, SQLiteEngine):
        # WAL lets readers work while a writer commits; it persists in the file.
        await engine.run_ddl("PRAGMA journal_mode=WAL")


async def close_pool(engine: Engine) -> None:
    if isinstance(engine, PostgresEngine):
        await engine.close_connection_pool()
