from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.columns.column_types import BigInt
from piccolo.columns.column_types import Integer
from piccolo.engine import engine_finder

ID = "2026-12-03T20:05:21:558276"
VERSION = "1.38.0"
DESCRIPTION = "peer counters as bigint"


async def forwards():
    manager = MigrationManager(
        migration_id=ID,
        app_name="mesh_nanollm",
        description=DESCRIPTION,
        # SQLite has no ALTER COLUMN ... TYPE, and its INTEGER already holds 64 bits: there the
        # change is recorded (later auto migrations diff against it), not run.
        fake=engine_finder().engine_type == "sqlite",
    )

    manager.alter_column(
        table_class_name="PeerSession",
        tablename="peer_session",
        column_name="jobs_run",
        db_column_name="jobs_run",
        params={},
        old_params={},
        column_class=BigInt,
        old_column_class=Integer,
        schema=None,
    )

    manager.alter_column(
        table_class_name="PeerSession",
        tablename="peer_session",
        column_name="tokens_generated",
        db_column_name="tokens_generated",
        params={},
        old_params={},
        column_class=BigInt,
        old_column_class=Integer,
        schema=None,
    )

    return manager
