"""The Piccolo app: our tables and where their migrations live."""

from piccolo.conf.apps import AppConfig, table_finder

from mesh_nanollm.settings import PROJECT_ROOT

APP_CONFIG = AppConfig(
    app_name="mesh_nanollm",
    migrations_folder_path=str(PROJECT_ROOT / "piccolo_migrations"),
    table_classes=table_finder(modules=["mesh_nanollm.tables"], exclude_imported=True),
    migration_dependencies=[],
    commands=[],
)
