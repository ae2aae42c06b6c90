"""Settings from the environment and the `mesh-nanollm` command: help, migrate, clear errors."""

from __future__ import annotations

import os
import re
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import uuid
from collections.abc import Mapping
from pathlib import Path

import httpx
import pytest
from conftest import TEST_DATABASE_URL, free_port, postgres_reachable, require, start_server

from mesh_nanollm.cli import main
from mesh_nanollm.settings import (
    DEFAULT_ICE_SERVERS,
    PROJECT_ROOT,
    Settings,
    SettingsError,
    load_settings,
)

COMMAND = shutil.which("mesh-nanollm", path=str(Path(sys.executable).parent)) or "mesh-nanollm"


def run_cli(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """The installed command in a clean environment: only what the test sets, plus PATH."""
    clean = {key: value for key, value in os.environ.items() if key in ("PATH", "HOME", "LANG", "VIRTUAL_ENV")}
    return subprocess.run(
        [COMMAND, *args], cwd=cwd, env=clean | env, capture_output=True, text=True, timeout=60, check=False
    )


def run_server_cli(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """`run_cli` for a command that should refuse to serve: one that serves instead is stopped, with
    its Granian workers, after a while, and the test sees it still running as exit code None."""
    clean = {key: value for key, value in os.environ.items() if key in ("PATH", "HOME", "LANG", "VIRTUAL_ENV")}
    process = subprocess.Popen(
        [COMMAND, *args], cwd=cwd, env=clean | env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=30)
        return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=30)
        return subprocess.CompletedProcess(process.args, None, stdout, stderr)  # type: ignore[arg-type]


def exit_message(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """What `mesh-nanollm argv` prints when it refuses to start, checked to be an error exit."""
    with pytest.raises(SystemExit) as exited:
        main(list(argv))
    assert exited.value.code not in (0, None)
    return str(exited.value.code) if isinstance(exited.value.code, str) else capsys.readouterr().err


# The command


def test_help_lists_every_option(tmp_path: Path) -> None:
    result = run_cli("--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for option in ("serve", "migrate", "--host", "--port", "--workers", "--no-migrate", "--access-log"):
        assert option in result.stdout, option
    for variable in ("DATABASE_URL", "REDIS_URL", "SECRET_KEY", "MODELS_DIR"):
        assert variable in result.stdout, variable
    serve = run_cli("serve", "--help", cwd=tmp_path)
    for option in ("--host", "--port", "--workers", "--no-migrate", "--access-log"):
        assert option in serve.stdout, option
    assert run_cli("migrate", "--help", cwd=tmp_path).returncode == 0


def test_migrate_creates_the_schema_and_is_repeatable(tmp_path: Path) -> None:
    env = {"DATABASE_URL": f"sqlite:///{tmp_path / 'fresh.sqlite'}", "SECRET_KEY": "k"}
    first = run_cli("migrate", cwd=tmp_path, **env)
    assert first.returncode == 0, first.stderr
    assert "Database is up to date." in first.stdout
    with sqlite3.connect(tmp_path / "fresh.sqlite") as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        rooms = [row[0] for row in conn.execute("SELECT slug FROM room")]
    assert {"app_user", "web_session", "api_token", "room", "room_member", "peer_session", "job"} <= tables
    assert rooms == ["global"]
    again = run_cli("migrate", cwd=tmp_path, **env)
    assert again.returncode == 0, again.stderr
    with sqlite3.connect(tmp_path / "fresh.sqlite") as conn:
        assert conn.execute("SELECT COUNT(*) FROM room").fetchone()[0] == 1


async def test_migrate_works_on_a_fresh_postgres_database(tmp_path: Path) -> None:
    problem = await postgres_reachable(TEST_DATABASE_URL)
    require(problem is None, problem or "")
    import asyncpg

    # Unique, since several checkouts may run this test against one Postgres at once.
    name = f"mesh_cli_migrate_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(TEST_DATABASE_URL.replace("postgres://", "postgresql://", 1))
    try:
        await admin.execute(f"CREATE DATABASE {name}")
        url = TEST_DATABASE_URL.rsplit("/", 1)[0] + "/" + name
        result = run_cli("migrate", cwd=tmp_path, DATABASE_URL=url, SECRET_KEY="k")
        assert result.returncode == 0, result.stderr
        fresh = await asyncpg.connect(url.replace("postgres://", "postgresql://", 1))
        try:
            assert await fresh.fetchval("SELECT slug FROM room") == "global"
            assert await fresh.fetchval("SELECT COUNT(*) FROM job") == 0
        finally:
            await fresh.close()
    finally:
        await admin.execute(f"DROP DATABASE IF EXISTS {name}")
        await admin.close()


def test_unreachable_database_gives_clear_error(tmp_path: Path) -> None:
    result = run_cli("migrate", cwd=tmp_path, DATABASE_URL="postgres://postgres@127.0.0.1:1/test", SECRET_KEY="k")
    assert result.returncode == 1
    assert "mesh-nanollm: cannot use the database in DATABASE_URL (ConnectionRefusedError" in result.stderr
    assert "Traceback" not in result.stderr


async def test_missing_postgres_database_gives_clear_error(tmp_path: Path) -> None:
    problem = await postgres_reachable(TEST_DATABASE_URL)
    require(problem is None, problem or "")
    name = f"no_such_database_{uuid.uuid4().hex[:8]}"
    url = TEST_DATABASE_URL.rsplit("/", 1)[0] + "/" + name
    result = run_cli("migrate", cwd=tmp_path, DATABASE_URL=url, SECRET_KEY="k")
    assert result.returncode == 1
    assert f'database "{name}" does not exist' in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_on_a_port_in_use_refuses_to_start(tmp_path: Path) -> None:
    # Granian listens with SO_REUSEPORT, so a second one would share the port and half the traffic.
    first = start_server(tmp_path)
    try:
        port = first.url.rsplit(":", 1)[1]
        second = run_server_cli(
            "--port", port, cwd=tmp_path, DATABASE_URL=first.database_url, SECRET_KEY="k", PORT=str(free_port())
        )
        assert second.returncode == 1, second.stdout + second.stderr
        assert second.stderr.splitlines() == [
            f"mesh-nanollm: cannot listen on 127.0.0.1:{port}: another server is listening there"
        ]
        assert "Mesh NanoLLM on" not in second.stdout
        assert httpx.get(f"{first.url}/api/health").status_code == 200
    finally:
        first.stop()


def test_serve_on_a_host_name_refuses_to_start(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'app.sqlite'}"
    result = run_server_cli("--host", "localhost", "--port", str(free_port()), cwd=tmp_path, DATABASE_URL=url, SECRET_KEY="k")
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr.splitlines() == [
        "mesh-nanollm: cannot listen on localhost: give an IP address (such as 127.0.0.1), not a name"
    ]


def test_serve_without_migrating_refuses_a_database_without_tables(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'empty.sqlite'}"
    result = run_server_cli("--no-migrate", "--port", str(free_port()), cwd=tmp_path, DATABASE_URL=url, SECRET_KEY="k")
    assert result.returncode == 1, result.stdout + result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith("mesh-nanollm: the database has pending migrations (")
    assert line.endswith("; run `mesh-nanollm migrate`")
    assert "Mesh NanoLLM on" not in result.stdout


def test_serve_without_migrating_refuses_a_database_a_migration_behind(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'behind.sqlite'}"
    assert run_cli("migrate", cwd=tmp_path, DATABASE_URL=url, SECRET_KEY="k").returncode == 0
    with sqlite3.connect(tmp_path / "behind.sqlite") as conn:
        conn.execute("DELETE FROM migration WHERE name = (SELECT MAX(name) FROM migration)")
    result = run_server_cli("--no-migrate", "--port", str(free_port()), cwd=tmp_path, DATABASE_URL=url, SECRET_KEY="k")
    assert result.returncode == 1, result.stdout + result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith("mesh-nanollm: the database has pending migrations (1 not run);")
    assert "Mesh NanoLLM on" not in result.stdout


async def test_serve_without_migrating_refuses_a_missing_postgres_database(tmp_path: Path) -> None:
    problem = await postgres_reachable(TEST_DATABASE_URL)
    require(problem is None, problem or "")
    name = f"no_such_database_{uuid.uuid4().hex[:8]}"
    url = TEST_DATABASE_URL.rsplit("/", 1)[0] + "/" + name
    result = run_server_cli("--no-migrate", "--port", str(free_port()), cwd=tmp_path, DATABASE_URL=url, SECRET_KEY="k")
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr.splitlines() == [
        f'mesh-nanollm: cannot use the database in DATABASE_URL (InvalidCatalogNameError: database "{name}" does not exist)'
    ]
    assert "Mesh NanoLLM on" not in result.stdout


def test_production_without_secret_key_refuses_to_serve_but_migrates(tmp_path: Path) -> None:
    env = {"MESH_ENV": "production", "DATABASE_URL": f"sqlite:///{tmp_path}/p.sqlite"}
    result = run_server_cli("--port", str(free_port()), cwd=tmp_path, **env)
    assert result.returncode == 1
    assert result.stderr.strip() == "mesh-nanollm: SECRET_KEY must be set when MESH_ENV=production"
    # Migrating signs nothing: an operator's one-off `docker run … migrate` needs no secret.
    migrated = run_cli("migrate", cwd=tmp_path, **env)
    assert migrated.returncode == 0, migrated.stderr
    assert migrated.stdout.strip().endswith("Database is up to date.")
    assert not (tmp_path / ".mesh-secret").exists()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DATABASE_URL": "mysql://db/app"}, "DATABASE_URL must start with sqlite:///, postgres:// or postgresql://"),
        ({"DATABASE_URL": "sqlite:app.sqlite"}, "DATABASE_URL must start with sqlite:///"),
        ({"DATABASE_URL": "sqlite:///"}, "DATABASE_URL names no SQLite file after sqlite:///"),
        ({"DATABASE_URL": "postgres://db:five/app"}, "DATABASE_URL has a malformed port"),
        ({"DATABASE_URL": "postgres://db:99999/app"}, "DATABASE_URL has a malformed port"),
        ({"DATABASE_URL": "sqlite:////no/such/folder/app.sqlite"}, "DATABASE_URL points into a folder that does not exist: /no/such/folder"),
        ({"PORT": "eighty"}, "PORT must be an integer, got 'eighty'"),
        ({"PORT": "70000"}, "PORT must be between 1 and 65535, got 70000"),
        ({"PORT": "0"}, "PORT must be between 1 and 65535, got 0"),
        ({"ICE_SERVERS": "stun:example.org"}, "ICE_SERVERS must be a JSON list"),
        ({"ICE_SERVERS": '{"urls": []}'}, "ICE_SERVERS must be a JSON list"),
    ],
    ids=["unknown-scheme", "relative-sqlite", "sqlite-no-file", "url-port-word", "url-port-too-big", "missing-folder",
         "port-word", "port-too-big", "port-zero", "ice-not-json", "ice-not-list"],
)
@pytest.mark.parametrize("command", [[], ["migrate"]], ids=["serve", "migrate"])
def test_malformed_setting_gives_clear_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], env: dict[str, str], message: str,
    command: list[str],
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match="^" + message.replace("(", r"\(")):
        load_settings()
    printed = exit_message(capsys, *command)
    assert printed.startswith(f"mesh-nanollm: {message}")


def test_port_option_must_be_a_number(capsys: pytest.CaptureFixture[str]) -> None:
    printed = exit_message(capsys, "--port", "eighty")
    assert "argument --port: invalid int value: 'eighty'" in printed
    printed = exit_message(capsys, "--port", "70000")
    assert "argument --port: must be between 1 and 65535, got 70000" in printed


# Settings


def test_settings_defaults_suit_local_development(tmp_path: Path) -> None:
    settings = load_settings({"SECRET_KEY_FILE": str(tmp_path / "secret")})
    assert settings.env == "development" and not settings.production
    assert settings.database_url == "sqlite:///mesh-nanollm.sqlite" and settings.is_sqlite
    assert settings.redis_url is None
    assert settings.host == "127.0.0.1" and settings.port == 8000
    assert settings.ice_servers == DEFAULT_ICE_SERVERS


def test_settings_read_the_environment(tmp_path: Path) -> None:
    settings = load_settings(
        {
            "MESH_ENV": "production",
            "SECRET_KEY": "s3cret",
            "DATABASE_URL": "postgresql://app@db:5433/mesh",
            "REDIS_URL": "redis://cache:6379/0",
            "ICE_SERVERS": '[{"urls": ["stun:stun.example.org:3478"]}]',
            "MODELS_DIR": str(tmp_path),
            "PORT": "9000",
        }
    )
    assert settings.production and settings.secret_key == "s3cret"
    assert settings.database_url == "postgresql://app@db:5433/mesh" and not settings.is_sqlite
    assert settings.redis_url == "redis://cache:6379/0"
    assert settings.ice_servers == [{"urls": ["stun:stun.example.org:3478"]}]
    assert settings.models_dir == tmp_path
    assert settings.host == "0.0.0.0" and settings.port == 9000


def test_throttle_settings_trust_no_proxy_header_unless_told(tmp_path: Path) -> None:
    base = {"SECRET_KEY_FILE": str(tmp_path / "secret")}
    defaults = load_settings(base)
    assert defaults.trusted_client_ip_header is None
    assert (defaults.login_window_s, defaults.login_client_limit, defaults.login_username_limit) == (900, 5, 30)
    assert (defaults.register_window_s, defaults.register_limit) == (3600, 10)
    assert defaults.password_hash_workers >= 1
    settings = load_settings(
        base | {"TRUSTED_CLIENT_IP_HEADER": "Fly-Client-IP", "LOGIN_ADDRESS_LIMIT": "7", "PASSWORD_HASH_WORKERS": "3"}
    )
    assert settings.trusted_client_ip_header == "fly-client-ip"
    assert settings.login_address_limit == 7 and settings.password_hash_workers == 3
    with pytest.raises(SettingsError, match="^REGISTER_LIMIT must be at least 1, got 0"):
        load_settings(base | {"REGISTER_LIMIT": "0"})


@pytest.mark.parametrize(
    "name", ["JOB_ABANDON_AFTER", "DB_POOL_SIZE", "SOCKET_RATE", "SOCKET_BURST", "SOCKET_AUTH_TIMEOUT", "PING_INTERVAL",
             "PING_TIMEOUT", "PRESENCE_INTERVAL_MS", "PEER_STALE_AFTER"],
)
def test_intervals_rates_and_sizes_must_be_positive(tmp_path: Path, name: str) -> None:
    # PRESENCE_INTERVAL_MS=0 had the idle server spin a core; none of these means anything at 0.
    base = {"SECRET_KEY_FILE": str(tmp_path / "secret")}
    with pytest.raises(SettingsError, match=f"^{name} must be at least 1, got 0"):
        load_settings(base | {name: "0"})


@pytest.mark.parametrize("name", ["GATEWAY_QUEUE_WAIT", "GATEWAY_QUEUE_MAX"])
def test_the_gateways_queue_may_be_zero_but_not_negative(tmp_path: Path, name: str) -> None:
    base = {"SECRET_KEY_FILE": str(tmp_path / "secret")}
    assert load_settings(base | {name: "0"})
    with pytest.raises(SettingsError, match=f"^{name} must be 0 or more, got -1"):
        load_settings(base | {name: "-1"})


def test_production_requires_secret_key() -> None:
    with pytest.raises(SettingsError, match="SECRET_KEY must be set when MESH_ENV=production"):
        load_settings({"MESH_ENV": "production"})


def test_development_secret_key_is_generated_once_and_kept_private(tmp_path: Path) -> None:
    key_file = tmp_path / "secret"
    first = load_settings({"SECRET_KEY_FILE": str(key_file)}).secret_key
    assert len(first) >= 32
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert load_settings({"SECRET_KEY_FILE": str(key_file)}).secret_key == first


def test_settings_without_environment_are_the_dataclass_defaults() -> None:
    assert load_settings({"SECRET_KEY": "k"}) == Settings(secret_key="k")


class RecordingEnvironment(dict[str, str]):
    """An environment that remembers every variable asked for."""

    def __init__(self, values: Mapping[str, str]) -> None:
        super().__init__(values)
        self.asked: set[str] = set()

    def get(self, key: str, default: str | None = None) -> str | None:  # type: ignore[override]
        self.asked.add(key)
        return super().get(key, default)


def test_readme_documents_every_setting_and_no_other(tmp_path: Path) -> None:
    environ = RecordingEnvironment({"SECRET_KEY_FILE": str(tmp_path / "secret")})
    load_settings(environ)
    readme = (PROJECT_ROOT / "README.md").read_text()
    table = readme.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `([A-Z][A-Z0-9_]*)` \|", table, flags=re.MULTILINE))
    assert environ.asked == documented


@pytest.mark.parametrize("depth", ["0", "257", "deep"])
def test_json_max_depth_out_of_range_is_refused(depth: str) -> None:
    with pytest.raises(SettingsError, match="^JSON_MAX_DEPTH must be"):
        load_settings({"JSON_MAX_DEPTH": depth, "SECRET_KEY": "x"})
    assert load_settings({"JSON_MAX_DEPTH": "8", "SECRET_KEY": "x"}).json_max_depth == 8
