"""Piccolo's configuration (PICCOLO_CONF=mesh_nanollm.piccolo_conf): our one app and its engine."""

from piccolo.conf.apps import AppRegistry
from piccolo.engine.base import Engine

from mesh_nanollm import db

APP_REGISTRY = AppRegistry(apps=["mesh_nanollm.piccolo_app"])


def __getattr__(name: str) -> Engine:
    # Piccolo looks `DB` up each time it needs an engine (a migration does, step by step). Answering
    # with the engine db.bind chose keeps migrations on the database the app was given, and spares
    # db.py from reaching into this module.
    if name == "DB":
        return db.bound_engine()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
