"""The `mesh-nanollm` command: serve the app (the default) or run migrations."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sqlite3
import sys

import asyncpg

from mesh_nanollm import db
from mesh_nanollm.settings import SettingsError, load_settings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mesh-nanollm",
        description="Mesh NanoLLM: run small language models in browsers and share the work. "
        "Configuration comes from the environment (DATABASE_URL, REDIS_URL, SECRET_KEY, "
        "MODELS_DIR, ...; see the README); the options below override HOST and PORT.",
    )
    sub = parser.add_subparsers(dest="command", metavar="{serve,migrate}")
    serve = sub.add_parser("serve", help="run pending migrations, then serve the app (the default)")
    sub.add_parser("migrate", help="run pending database migrations forwards, then exit")
    for p in (parser, serve):
        p.add_argument("--host", help="address to listen on (env HOST; default 127.0.0.1, 0.0.0.0 in production)")
        p.add_argument("--port", type=int, help="port to listen on (env PORT; default 8000)")
        p.add_argument("--workers", type=int, default=1, help="Granian worker processes (default 1)")
        p.add_argument("--no-migrate", action="store_true", help="serve without running migrations first")
        p.add_argument("--access-log", action="store_true", help="log every request")
    return parser


def migrate() -> None:
    settings = load_settings()
    db.bind(settings.database_url)
    try:
        asyncio.run(db.migrate())
    except (OSError, sqlite3.Error, asyncpg.PostgresError) as exc:
        # Unreachable server, missing folder, wrong password: the usual DATABASE_URL mistakes.
        raise SettingsError(f"cannot use the database in DATABASE_URL ({exc.__class__.__name__}: {exc})") from exc


def serve(args: argparse.Namespace) -> None:
    from granian import Granian
    from granian.constants import Interfaces, Loops

    # Granian's workers build the app themselves from the environment.
    if args.host:
        os.environ["HOST"] = args.host
    if args.port:
        os.environ["PORT"] = str(args.port)
    settings = load_settings()
    if not args.no_migrate:
        migrate()
    shown = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
    database = "SQLite" if settings.is_sqlite else "Postgres"
    print(f"Mesh NanoLLM on http://{shown}:{settings.port}/  ({database}, {args.workers} worker(s))", flush=True)
    Granian(
        "mesh_nanollm.app:create_asgi",
        factory=True,
        address=settings.host,
        port=settings.port,
        interface=Interfaces.ASGI,
        workers=args.workers,
        loop=Loops.auto,
        websockets=True,
        log_access=args.access_log,
    ).serve()


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = _parser().parse_args(argv)
    try:
        if args.command == "migrate":
            migrate()
            print("Database is up to date.")
        else:
            serve(args)
    except SettingsError as exc:
        sys.exit(f"mesh-nanollm: {exc}")
