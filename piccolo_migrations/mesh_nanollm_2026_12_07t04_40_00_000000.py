"""A peer keeps the speeds of its latest measured jobs (one JSON column), which the peers panel
draws as its sparkline: the room page reads them with the peer instead of from `job`."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.columns.column_types import JSON
from piccolo.columns.indexes import IndexMethod

ID = "2026-12-07T04:40:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "peers keep their latest jobs' speeds"


async def forwards():
    manager = MigrationManager(
        migration_id=ID, app_name="mesh_nanollm", description=DESCRIPTION
    )
    manager.add_column(
        table_class_name="PeerSession",
        tablename="peer_session",
        column_name="speeds",
        db_column_name="speeds",
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
    return manager
