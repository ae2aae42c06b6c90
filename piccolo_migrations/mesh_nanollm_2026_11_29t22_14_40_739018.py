"""Composite indexes the history page and peer lists need, and the `global` room.

Piccolo's auto migrations only create single-column indexes, so these are raw SQL that both
SQLite and Postgres accept.
"""

from datetime import datetime, timezone

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.columns.column_types import Boolean, Timestamptz, Varchar
from piccolo.engine import engine_finder
from piccolo.table import Table

ID = "2026-11-29T22:14:40:739018"
VERSION = "1.38.0"
DESCRIPTION = "history indexes and the global room"

INDEXES = [
    # Keyset pagination of one user's history, newest first, optionally filtered.
    "CREATE INDEX IF NOT EXISTS job_history_idx ON job (requester, created_at DESC, id DESC)",
    "CREATE INDEX IF NOT EXISTS job_history_status_idx"
    " ON job (requester, status, created_at DESC, id DESC)",
    "CREATE INDEX IF NOT EXISTS job_history_room_idx"
    " ON job (requester, room, created_at DESC, id DESC)",
    "CREATE INDEX IF NOT EXISTS job_history_model_idx"
    " ON job (requester, model_id, created_at DESC, id DESC)",
    # The sweep that marks jobs abandoned looks only at unfinished ones.
    "CREATE INDEX IF NOT EXISTS job_unfinished_idx ON job (updated_at)"
    " WHERE status IN ('queued', 'running')",
    # Live peers of a room.
    "CREATE INDEX IF NOT EXISTS peer_session_live_idx ON peer_session (room, disconnected_at)",
    'CREATE UNIQUE INDEX IF NOT EXISTS room_member_unique_idx ON room_member (room, "user")',
]


class Room(Table, tablename="room", schema=None):
    slug = Varchar(length=48)
    name = Varchar(length=80)
    is_private = Boolean(default=False)
    created_at = Timestamptz()


async def forwards():
    manager = MigrationManager(
        migration_id=ID, app_name="mesh_nanollm", description=DESCRIPTION
    )

    async def run():
        engine = engine_finder()
        # Bind explicitly: this module may be reused by a process migrating a second database.
        Room._meta.db = engine
        for statement in INDEXES:
            await engine.run_ddl(statement)
        if not await Room.exists().where(Room.slug == "global"):
            await Room.insert(
                Room(
                    slug="global",
                    name="Global",
                    is_private=False,
                    created_at=datetime.now(timezone.utc),
                )
            )

    manager.add_raw(run)
    return manager
