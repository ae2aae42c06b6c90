from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.columns.base import OnDelete
from piccolo.columns.base import OnUpdate
from piccolo.columns.column_types import Bytea
from piccolo.columns.column_types import ForeignKey
from piccolo.columns.column_types import Integer
from piccolo.columns.column_types import Real
from piccolo.columns.column_types import UUID
from piccolo.columns.defaults.uuid import UUID4
from piccolo.columns.indexes import IndexMethod
from piccolo.table import Table


class Job(Table, tablename="job", schema=None):
    id = UUID(
        default=UUID4(),
        null=False,
        primary_key=True,
        unique=False,
        index=False,
        index_method=IndexMethod.btree,
        choices=None,
        db_column_name="id",
        secret=False,
    )


ID = "2026-12-05T12:30:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "job traces and the run's own decode clock"


def _params(**overrides):
    return {
        "null": False,
        "primary_key": False,
        "unique": False,
        "index": False,
        "index_method": IndexMethod.btree,
        "choices": None,
        "db_column_name": None,
        "secret": False,
    } | overrides


async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="mesh_nanollm", description=DESCRIPTION)

    manager.add_column(
        table_class_name="Job",
        tablename="job",
        column_name="decode_ms",
        db_column_name="decode_ms",
        column_class_name="Real",
        column_class=Real,
        params=_params(default=None, null=True),
        schema=None,
    )

    manager.add_column(
        table_class_name="Job",
        tablename="job",
        column_name="decode_tokens",
        db_column_name="decode_tokens",
        column_class_name="Integer",
        column_class=Integer,
        params=_params(default=0),
        schema=None,
    )

    manager.add_table(class_name="JobTrace", tablename="job_trace", schema=None, columns=None)

    manager.add_column(
        table_class_name="JobTrace",
        tablename="job_trace",
        column_name="job",
        db_column_name="job",
        column_class_name="ForeignKey",
        column_class=ForeignKey,
        params=_params(
            references=Job,
            on_delete=OnDelete.cascade,
            on_update=OnUpdate.cascade,
            target_column=None,
            unique=True,
        ),
        schema=None,
    )

    manager.add_column(
        table_class_name="JobTrace",
        tablename="job_trace",
        column_name="events",
        db_column_name="events",
        column_class_name="Bytea",
        column_class=Bytea,
        params=_params(default=b""),
        schema=None,
    )

    return manager
