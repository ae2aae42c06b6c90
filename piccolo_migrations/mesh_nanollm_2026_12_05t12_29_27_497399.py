"""The indexes a user's conversation lists and a conversation's turns need.

Raw SQL that both SQLite and Postgres accept; a migration of its own, because Piccolo runs a
migration's raw steps before the tables it adds.
"""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.engine import engine_finder

ID = "2026-12-05T12:29:27:497399"
VERSION = "1.38.0"
DESCRIPTION = "conversation indexes"

INDEXES = [
    # A user's conversations, most recently used first; the same within one room.
    "CREATE INDEX IF NOT EXISTS conversation_owner_idx ON conversation (owner, updated_at DESC)",
    "CREATE INDEX IF NOT EXISTS conversation_room_idx ON conversation (owner, room, updated_at DESC)",
    "CREATE UNIQUE INDEX IF NOT EXISTS turn_position_idx ON turn (conversation, position)",
]


async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="mesh_nanollm", description=DESCRIPTION)

    async def run():
        engine = engine_finder()
        for statement in INDEXES:
            await engine.run_ddl(statement)

    manager.add_raw(run)
    return manager
