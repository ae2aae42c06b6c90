"""Every setting the app reads from the environment, in one place."""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_ICE_SERVERS: list[dict[str, object]] = [{"urls": ["stun:stun.l.google.com:19302"]}]


def _half_the_cores() -> int:
    return max(1, (os.cpu_count() or 2) // 2)


class SettingsError(ValueError):
    """A setting is missing or malformed; the message says which and why."""


@dataclass(frozen=True)
class Settings:
    """Each setting with its default, written only here; load_settings reads the overrides."""

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
    socket_auth_timeout_s: int = 10
    ping_interval_s: int = 5
    ping_timeout_s: int = 5
    presence_interval_ms: int = 1000
    peer_stale_after_s: int = 60
    # Sign-in and sign-up throttles, and bcrypt's share of the CPU (docs/deploy.md, "Throttling").
    trusted_client_ip_header: str | None = None
    login_window_s: int = 900
    login_client_limit: int = 5
    login_username_limit: int = 30
    login_address_limit: int = 100
    register_window_s: int = 3600
    register_limit: int = 10
    password_hash_workers: int = field(default_factory=_half_the_cores)
    # JSON request bodies nested deeper are refused with 400 before they are decoded.
    json_max_depth: int = 32
    # The OpenAI-compatible API (docs/gateway.md, "Limits").
    gateway_queue_wait_s: int = 30
    gateway_queue_max: int = 100
    gateway_token_concurrency: int = 4
    gateway_ack_timeout_s: int = 5
    gateway_stall_timeout_s: int = 15
    gateway_buffer: int = 1024
    # `mesh-nanollm worker` (docs/worker.md); its command-line options override these.
    worker_server: str = "http://127.0.0.1:8000"
    worker_token: str | None = None
    worker_room: str = "global"
    worker_models: list[str] = field(default_factory=list)
    worker_device: str = "cpu"
    worker_jobs: int = 1

    @property
    def production(self) -> bool:
        return self.env == "production"

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


DEFAULTS = Settings()


def _secret_key(environ: Mapping[str, str], env: str) -> str:
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


def _json_list(environ: Mapping[str, str], name: str, default: list) -> list:
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


def _int(environ: Mapping[str, str], name: str, default: int) -> int:
    raw = environ.get(name)
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from exc


def _positive(environ: Mapping[str, str], name: str, default: int) -> int:
    value = _int(environ, name, default)
    if value < 1:
        raise SettingsError(f"{name} must be at least 1, got {value}")
    return value


def _non_negative(environ: Mapping[str, str], name: str, default: int) -> int:
    value = _int(environ, name, default)
    if value < 0:
        raise SettingsError(f"{name} must be 0 or more, got {value}")
    return value


def _port(environ: Mapping[str, str]) -> int:
    port = _int(environ, "PORT", DEFAULTS.port)
    if not 1 <= port <= 65535:
        raise SettingsError(f"PORT must be between 1 and 65535, got {port}")
    return port


def _turn(environ: Mapping[str, str]) -> tuple[list[str], str | None, int]:
    """TURN_URLS, TURN_SECRET and TURN_TTL: both of the first two or neither, since half a TURN
    setup would only show up as peers behind strict NATs that never connect."""
    urls = _json_list(environ, "TURN_URLS", DEFAULTS.turn_urls)
    secret = environ.get("TURN_SECRET") or DEFAULTS.turn_secret
    ttl = _int(environ, "TURN_TTL", DEFAULTS.turn_ttl_s)
    if not all(isinstance(url, str) and url.startswith(("turn:", "turns:")) for url in urls):
        raise SettingsError("TURN_URLS must be a JSON list of turn: or turns: URLs")
    if bool(urls) != bool(secret):
        raise SettingsError("TURN_URLS and TURN_SECRET must be set together (coturn's use-auth-secret)")
    if ttl < 60:
        raise SettingsError(f"TURN_TTL must be at least 60 seconds, got {ttl}")
    return urls, secret, ttl


def _json_max_depth(environ: Mapping[str, str]) -> int:
    depth = _int(environ, "JSON_MAX_DEPTH", DEFAULTS.json_max_depth)
    # The decoders recurse once per level; far below Python's recursion limit stays safe.
    if not 1 <= depth <= 256:
        raise SettingsError(f"JSON_MAX_DEPTH must be between 1 and 256, got {depth}")
    return depth


def load_database_url(environ: Mapping[str, str] | None = None) -> str:
    """DATABASE_URL alone, for Piccolo's own CLI, which needs nothing else (and no secret key)."""
    environ = os.environ if environ is None else environ
    database_url = environ.get("DATABASE_URL") or DEFAULTS.database_url
    if not database_url.startswith(("sqlite:///", "postgres://", "postgresql://")):
        raise SettingsError("DATABASE_URL must start with sqlite:///, postgres:// or postgresql://")
    try:
        _ = urlsplit(database_url).port  # parsed lazily; the driver would fail later with a traceback
    except ValueError as exc:
        raise SettingsError(f"DATABASE_URL has a malformed port: {exc}") from exc
    if database_url == "sqlite:///":
        raise SettingsError("DATABASE_URL names no SQLite file after sqlite:///")
    folder = Path(database_url.removeprefix("sqlite:///")).parent
    if database_url.startswith("sqlite:///") and not folder.is_dir():
        raise SettingsError(f"DATABASE_URL points into a folder that does not exist: {folder}")
    return database_url


def load_settings(environ: Mapping[str, str] | None = None, *, secret: bool = True) -> Settings:
    """The settings from `environ`; `secret=False` (the worker and migrations, which sign
    nothing) leaves SECRET_KEY unread: nothing is required or generated for it."""
    environ = os.environ if environ is None else environ
    env = environ.get("MESH_ENV") or DEFAULTS.env
    database_url = load_database_url(environ)
    turn_urls, turn_secret, turn_ttl_s = _turn(environ)
    return Settings(
        env=env,
        database_url=database_url,
        redis_url=environ.get("REDIS_URL") or DEFAULTS.redis_url,
        secret_key=_secret_key(environ, env) if secret else DEFAULTS.secret_key,
        ice_servers=_json_list(environ, "ICE_SERVERS", DEFAULTS.ice_servers),
        turn_urls=turn_urls,
        turn_secret=turn_secret,
        turn_ttl_s=turn_ttl_s,
        models_dir=Path(environ.get("MODELS_DIR") or DEFAULTS.models_dir),
        catalogue_path=Path(environ.get("MODEL_CATALOGUE") or DEFAULTS.catalogue_path),
        # In production the app runs in a container, reachable only through its published port.
        host=environ.get("HOST") or ("0.0.0.0" if env == "production" else DEFAULTS.host),
        port=_port(environ),
        abandon_after_s=_positive(environ, "JOB_ABANDON_AFTER", DEFAULTS.abandon_after_s),
        db_pool_size=_positive(environ, "DB_POOL_SIZE", DEFAULTS.db_pool_size),
        socket_rate=_positive(environ, "SOCKET_RATE", DEFAULTS.socket_rate),
        socket_burst=_positive(environ, "SOCKET_BURST", DEFAULTS.socket_burst),
        socket_auth_timeout_s=_positive(environ, "SOCKET_AUTH_TIMEOUT", DEFAULTS.socket_auth_timeout_s),
        ping_interval_s=_positive(environ, "PING_INTERVAL", DEFAULTS.ping_interval_s),
        ping_timeout_s=_positive(environ, "PING_TIMEOUT", DEFAULTS.ping_timeout_s),
        presence_interval_ms=_positive(environ, "PRESENCE_INTERVAL_MS", DEFAULTS.presence_interval_ms),
        peer_stale_after_s=_positive(environ, "PEER_STALE_AFTER", DEFAULTS.peer_stale_after_s),
        trusted_client_ip_header=environ.get("TRUSTED_CLIENT_IP_HEADER", "").strip().lower() or None,
        login_window_s=_positive(environ, "LOGIN_WINDOW", DEFAULTS.login_window_s),
        login_client_limit=_positive(environ, "LOGIN_CLIENT_LIMIT", DEFAULTS.login_client_limit),
        login_username_limit=_positive(environ, "LOGIN_USERNAME_LIMIT", DEFAULTS.login_username_limit),
        login_address_limit=_positive(environ, "LOGIN_ADDRESS_LIMIT", DEFAULTS.login_address_limit),
        register_window_s=_positive(environ, "REGISTER_WINDOW", DEFAULTS.register_window_s),
        register_limit=_positive(environ, "REGISTER_LIMIT", DEFAULTS.register_limit),
        password_hash_workers=_positive(environ, "PASSWORD_HASH_WORKERS", DEFAULTS.password_hash_workers),
        json_max_depth=_json_max_depth(environ),
        gateway_queue_wait_s=_non_negative(environ, "GATEWAY_QUEUE_WAIT", DEFAULTS.gateway_queue_wait_s),
        gateway_queue_max=_non_negative(environ, "GATEWAY_QUEUE_MAX", DEFAULTS.gateway_queue_max),
        gateway_token_concurrency=_positive(environ, "GATEWAY_TOKEN_CONCURRENCY", DEFAULTS.gateway_token_concurrency),
        gateway_ack_timeout_s=_positive(environ, "GATEWAY_ACK_TIMEOUT", DEFAULTS.gateway_ack_timeout_s),
        gateway_stall_timeout_s=_positive(environ, "GATEWAY_STALL_TIMEOUT", DEFAULTS.gateway_stall_timeout_s),
        gateway_buffer=_positive(environ, "GATEWAY_BUFFER", DEFAULTS.gateway_buffer),
        worker_server=environ.get("WORKER_SERVER") or DEFAULTS.worker_server,
        worker_token=environ.get("WORKER_TOKEN") or DEFAULTS.worker_token,
        worker_room=environ.get("WORKER_ROOM") or DEFAULTS.worker_room,
        worker_models=[m.strip() for m in environ.get("WORKER_MODELS", "").split(",") if m.strip()],
        worker_device=environ.get("WORKER_DEVICE") or DEFAULTS.worker_device,
        worker_jobs=_positive(environ, "WORKER_JOBS", DEFAULTS.worker_jobs),
    )
