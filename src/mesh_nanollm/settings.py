"""Every setting the app reads from the environment, in one place."""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_ICE_SERVERS: list[dict[str, object]] = [{"urls": ["stun:stun.l.google.com:19302"]}]


class SettingsError(ValueError):
    """A setting is missing or malformed; the message says which and why."""


@dataclass(frozen=True)
class Settings:
    env: str = "development"
    database_url: str = "sqlite:///mesh-nanollm.sqlite"
    redis_url: str | None = None
    secret_key: str = ""
    ice_servers: list[dict[str, object]] = field(default_factory=lambda: DEFAULT_ICE_SERVERS)
    turn_urls: list[str] = field(default_factory=list)
    turn_secret: str | None = None
    turn_ttl_s: int = 3600
    models_dir: Path = PROJECT_ROOT / "models"
    catalogue_path: Path = PROJECT_ROOT / "catalogue.json"
    host: str = "127.0.0.1"
    port: int = 8000
    abandon_after_s: int = 600
    db_pool_size: int = 10
    # Socket.IO: per-connection token bucket, liveness pings, presence batching (docs/realtime.md).
    socket_rate: int = 50
    socket_burst: int = 200
    ping_interval_s: int = 5
    ping_timeout_s: int = 5
    presence_interval_ms: int = 1000
    peer_stale_after_s: int = 60
    # JSON request bodies nested deeper are refused with 400 before they are decoded.
    json_max_depth: int = 32

    @property
    def production(self) -> bool:
        return self.env == "production"

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


def _secret_key(environ: dict[str, str], env: str) -> str:
    if key := environ.get("SECRET_KEY"):
        return key
    if env == "production":
        raise SettingsError("SECRET_KEY must be set when MESH_ENV=production")
    # Development keeps a generated key on disk so sessions survive restarts.
    path = Path(environ.get("SECRET_KEY_FILE", ".mesh-secret"))
    if path.exists():
        return path.read_text().strip()
    key = secrets.token_urlsafe(48)
    path.write_text(key)
    path.chmod(0o600)
    return key


def _json_list(environ: dict[str, str], name: str, default: list) -> list:
    raw = environ.get(name)
    if not raw:
        return default
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise SettingsError(f"{name} must be a JSON list: {exc}") from exc
    if not isinstance(value, list):
        raise SettingsError(f"{name} must be a JSON list")
    return value


def _int(environ: dict[str, str], name: str, default: int) -> int:
    raw = environ.get(name)
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from exc


def _port(environ: dict[str, str]) -> int:
    port = _int(environ, "PORT", 8000)
    if not 1 <= port <= 65535:
        raise SettingsError(f"PORT must be between 1 and 65535, got {port}")
    return port


def _turn(environ: dict[str, str]) -> tuple[list[str], str | None, int]:
    """TURN_URLS, TURN_SECRET and TURN_TTL: both of the first two or neither, since half a TURN
    setup would only show up as peers behind strict NATs that never connect."""
    urls = _json_list(environ, "TURN_URLS", [])
    secret = environ.get("TURN_SECRET") or None
    ttl = _int(environ, "TURN_TTL", 3600)
    if not all(isinstance(url, str) and url.startswith(("turn:", "turns:")) for url in urls):
        raise SettingsError("TURN_URLS must be a JSON list of turn: or turns: URLs")
    if bool(urls) != bool(secret):
        raise SettingsError("TURN_URLS and TURN_SECRET must be set together (coturn's use-auth-secret)")
    if ttl < 60:
        raise SettingsError(f"TURN_TTL must be at least 60 seconds, got {ttl}")
    return urls, secret, ttl


def _json_max_depth(environ: dict[str, str]) -> int:
    depth = _int(environ, "JSON_MAX_DEPTH", 32)
    # The decoders recurse once per level; far below Python's recursion limit stays safe.
    if not 1 <= depth <= 256:
        raise SettingsError(f"JSON_MAX_DEPTH must be between 1 and 256, got {depth}")
    return depth


def load_database_url(environ: dict[str, str] | None = None) -> str:
    environ = dict(os.environ if environ is None else environ)
    database_url = environ.get("DATABASE_URL") or "sqlite:///mesh-nanollm.sqlite"
    if not database_url.startswith(("sqlite:///", "postgres://", "postgresql://")):
        raise SettingsError("DATABASE_URL must start with sqlite:///, postgres:// or postgresql://")
    try:
        _ = urlsplit(database_url).port  # parsed lazily; the driver would fail later with a traceback
    except ValueError as exc:
        raise SettingsError(f"DATABASE_URL has a malformed port: {exc}") from exc
    folder = Path(database_url.removeprefix("sqlite:///")).parent
    if database_url.startswith("sqlite:///") and not folder.is_dir():
        raise SettingsError(f"DATABASE_URL points into a folder that does not exist: {folder}")
    return database_url


def load_settings(environ: dict[str, str] | None = None) -> Settings:
    environ = dict(os.environ if environ is None else environ)
    env = environ.get("MESH_ENV", "development")
    database_url = load_database_url(environ)
    turn_urls, turn_secret, turn_ttl_s = _turn(environ)
    return Settings(
        env=env,
        database_url=database_url,
        redis_url=environ.get("REDIS_URL") or None,
        secret_key=_secret_key(environ, env),
        ice_servers=_json_list(environ, "ICE_SERVERS", DEFAULT_ICE_SERVERS),
        turn_urls=turn_urls,
        turn_secret=turn_secret,
        turn_ttl_s=turn_ttl_s,
        models_dir=Path(environ.get("MODELS_DIR") or PROJECT_ROOT / "models"),
        catalogue_path=Path(environ.get("MODEL_CATALOGUE") or PROJECT_ROOT / "catalogue.json"),
        host=environ.get("HOST", "0.0.0.0" if env == "production" else "127.0.0.1"),
        port=_port(environ),
        abandon_after_s=_int(environ, "JOB_ABANDON_AFTER", 600),
        db_pool_size=_int(environ, "DB_POOL_SIZE", 10),
        socket_rate=_int(environ, "SOCKET_RATE", 50),
        socket_burst=_int(environ, "SOCKET_BURST", 200),
        ping_interval_s=_int(environ, "PING_INTERVAL", 5),
        ping_timeout_s=_int(environ, "PING_TIMEOUT", 5),
        presence_interval_ms=_int(environ, "PRESENCE_INTERVAL_MS", 1000),
        peer_stale_after_s=_int(environ, "PEER_STALE_AFTER", 60),
        json_max_depth=_json_max_depth(environ),
    )
