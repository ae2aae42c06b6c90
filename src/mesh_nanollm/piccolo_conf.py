"""Piccolo's configuration: the engine for DATABASE_URL and the one app that owns our tables."""

from piccolo.conf.apps import AppRegistry

from mesh_nanollm.db import engine_for
from mesh_nanollm.settings import load_database_url

DB = engine_for(load_database_url())

APP_REGISTRY = AppRegistry(apps=["mesh_nanollm.piccolo_app"])
