"""Settings from the environment and the `mesh-nanollm` command: help, migrate, clear errors."""

from __future__ import annotations

import os
import shutil
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TEST_DATABASE_URL, postgres_reachable, require

from mesh_nanollm.cli import main
from mesh_nanollm.settings import DEFAULT_ICE_SERVERS, SettingsError, load_settings

COMMAND = shutil.which("mesh-nanollm", path=str(Path(sys.executable).parent)) or "mesh-nanollm"


def run_cli(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """The installed command in a clean environment: only what the test sets, plus PATH."""
    clean = {key: value for key, value in os.environ.items() if key in ("PATH", "HOME", "LANG", "VIRTUAL_ENV")}
    return subprocess.run(
        [COMMAND, *args], cwd=cwd, env=clean | env, capture_output=True, text=True, timeout=60, check=False
    )


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

    admin = await asyncpg.connect(TEST_DATABASE_URL.replace("postgres://", "postgresql://", 1))
    try:
        await admin.execute("DROP DATABASE IF EXISTS mesh_cli_migrate")
        await admin.execute("CREATE DATABASE mesh_cli_migrate")
        url = TEST_DATABASE_URL.rsplit("/", 1)[0] + "/mesh_cli_migrate"
        result = run_cli("migrate", cwd=tmp_path, DATABASE_URL=url, SECRET_KEY="k")
        assert result.returncode == 0, result.stderr
        fresh = await asyncpg.connect(url.replace("postgres://", "postgresql://", 1))
        try:
            assert await fresh.fetchval("SELECT slug FROM room") == "global"
            assert await fresh.fetchval("SELECT COUNT(*) FROM job") == 0
        finally:
            await fresh.close()
    finally:
        await admin.execute("DROP DATABASE IF EXISTS mesh_cli_migrate")
        await admin.close()


def test_unreachable_database_gives_clear_error(tmp_path: Path) -> None:
    result = run_cli("migrate", cwd=tmp_path, DATABASE_URL="postgres://postgres@127.0.0.1:1/test", SECRET_KEY="k")
    assert result.returncode == 1
    assert "mesh-nanollm: cannot use the database in DATABASE_URL (ConnectionRefusedError" in result.stderr
    assert "Traceback" not in result.stderr


async def test_missing_postgres_database_gives_clear_error(tmp_path: Path) -> None:
    problem = await postgres_reachable(TEST_DATABASE_URL)
    require(problem is None, problem or "")
    url = TEST_DATABASE_URL.rsplit("/", 1)[0] + "/no_such_database"
    result = run_cli("migrate", cwd=tmp_path, DATABASE_URL=url, SECRET_KEY="k")
    assert result.returncode == 1
    assert 'database "no_such_database" does not exist' in result.stderr
    assert "Traceback" not in result.stderr


def test_production_without_secret_key_refuses_to_start(tmp_path: Path) -> None:
    result = run_cli("migrate", cwd=tmp_path, MESH_ENV="production", DATABASE_URL=f"sqlite:///{tmp_path}/p.sqlite")
    assert result.returncode == 1
    assert result.stderr.strip() == "mesh-nanollm: SECRET_KEY must be set when MESH_ENV=production"
    assert not (tmp_path / ".mesh-secret").exists()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DATABASE_URL": "mysql://db/app"}, "DATABASE_URL must start with sqlite:///, postgres:// or postgresql://"),
        ({"DATABASE_URL": "sqlite:app.sqlite"}, "DATABASE_URL must start with sqlite:///"),
        ({"DATABASE_URL": "postgres://db:five/app"}, "DATABASE_URL has a malformed port"),
        ({"DATABASE_URL": "postgres://db:99999/app"}, "DATABASE_URL has a malformed port"),
        ({"DATABASE_URL": "sqlite:////no/such/folder/app.sqlite"}, "DATABASE_URL points into a folder that does not exist: /no/such/folder"),
        ({"PORT": "eighty"}, "PORT must be an integer, got 'eighty'"),
        ({"PORT": "70000"}, "PORT must be between 1 and 65535, got 70000"),
        ({"PORT": "0"}, "PORT must be between 1 and 65535, got 0"),
        ({"ICE_SERVERS": "stun:example.org"}, "ICE_SERVERS must be a JSON list"),
        ({"ICE_SERVERS": '{"urls": []}'}, "ICE_SERVERS must be a JSON list"),
    ],
    ids=["unknown-scheme", "relative-sqlite", "missing-folder", "port-not-number", "port-out-of-range", "port-word", "port-too-big",
         "port-zero", "ice-not-json", "ice-not-list"],
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


def test_production_requires_secret_key() -> None:
    with pytest.raises(SettingsError, match="SECRET_KEY must be set when MESH_ENV=production"):
        load_settings({"MESH_ENV": "production"})


def test_development_secret_key_is_generated_once_and_kept_private(tmp_path: Path) -> None:
    key_file = tmp_path / "secret"
    first = load_settings({"SECRET_KEY_FILE": str(key_file)}).secret_key
    assert len(first) >= 32
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert load_settings({"SECRET_KEY_FILE": str(key_file)}).secret_key == first


@pytest.mark.parametrize("depth", ["0", "257", "deep"])
def test_json_max_depth_out_of_range_is_refused(depth: str) -> None:
    with pytest.raises(SettingsError, match="^JSON_MAX_DEPTH must be"):
        load_settings({"JSON_MAX_DEPTH": depth, "SECRET_KEY": "x"})
    assert load_settings({"JSON_MAX_DEPTH": "8", "SECRET_KEY": "x"}).json_max_depth == 8
