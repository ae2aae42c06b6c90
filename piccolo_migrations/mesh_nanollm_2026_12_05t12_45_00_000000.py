from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.columns.column_types import JSON
from piccolo.columns.indexes import IndexMethod

ID = "2026-12-05T12:45:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "peers report their links and whom they serve"


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

    return manager
