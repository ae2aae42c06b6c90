"""Peers report their links and the jobs they serve (two JSON columns), and a room's jobs are
found by time (the statistics page and the peers panel's sparklines): raw SQL, as Piccolo's auto
migrations make only single-column indexes."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.columns.column_types import JSON
from piccolo.columns.indexes import IndexMethod
from piccolo.engine import engine_finder

ROOM_TIME_INDEX = "CREATE INDEX IF NOT EXISTS job_room_time_idx ON job (room, created_at DESC)"

ID = "2026-12-05T12:45:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "peers report their links and whom they serve; a room's jobs by time"


async def forwards():
    manager = MigrationManager(
        migration_id=ID, app_name="mesh_nanollm", description=DESCRIPTION
    )

    for column in ("links", "serving"):
        manager.add_column(
            table_class_name="PeerSession",
            tablename="peer_session",
            column_name=column,
            db_column_name=column,
            column_class_name="JSON",
            column_class=JSON,
            params={
                "default": "[]",
                "null": False,
                "primary_key": False,
                "unique": False,
                "index": False,
                "index_method": IndexMethod.btree,
                "choices": None,
                "db_column_name": None,
                "secret": False,
            },
            schema=None,
        )

    async def run():
        await engine_finder().run_ddl(ROOM_TIME_INDEX)

    manager.add_raw(run)
    return manager
