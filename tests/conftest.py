"""Shared fixtures: the app on SQLite and on Postgres, a live Granian server, headless Chromium.

A test that needs a service or a browser this machine lacks is skipped with the reason, except
in CI (`CI=true`), where the same condition fails the test.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

os.environ.setdefault("SECRET_KEY", "test-secret-key")

from litestar.testing import AsyncTestClient
from support.accounts import csrf_token, register, unique_name  # noqa: F401 (tests import them from here)
from support.browser import CHROMIUM, CHROMIUM_ARGS, new_context

from mesh_nanollm import db, security
from mesh_nanollm.app import create_app
from mesh_nanollm.settings import PROJECT_ROOT, Settings
from mesh_nanollm.tables import ThrottleHit

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test")
TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def require(condition: bool, reason: str) -> None:
    """Skip on a laptop that lacks something; fail in CI, where nothing may be missing."""
    if not condition:
        if IN_CI:
            pytest.fail(f"CI requires it: {reason}")
        pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def postgres_reachable(url: str) -> str | None:
    """None when `url` answers; otherwise why not."""
    import asyncpg

    try:
        conn = await asyncpg.connect(url.replace("postgres://", "postgresql://", 1), timeout=3)
    except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
        return f"Postgres at {url} is unreachable ({exc.__class__.__name__}: {exc})"
    await conn.close()
    return None


async def reset_postgres(url: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url.replace("postgres://", "postgresql://", 1))
    try:
        await conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public;")
    finally:
        await conn.close()


def redis_reachable(url: str) -> str | None:
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        return f"Redis at {url} is unreachable ({exc})"
    return None


def make_settings(database_url: str, **overrides: object) -> Settings:
    return Settings(
        env="test",
        database_url=database_url,
        secret_key="test-secret-key",
        models_dir=PROJECT_ROOT / "models",
        ice_servers=[],
        **overrides,  # type: ignore[arg-type]
    )


@pytest.fixture(scope="session", autouse=True)
def cheap_password_hashing() -> Iterator[None]:
    """bcrypt's real cost (~0.2 s a hash) would dominate the HTTP tests; live servers keep it."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(security, "BCRYPT_ROUNDS", 4)
        yield


@pytest_asyncio.fixture(scope="session", params=["sqlite", "postgres"])
async def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """Every HTTP test runs twice: on the embedded SQLite default and on a real Postgres."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'test.sqlite'}"
    problem = await postgres_reachable(TEST_DATABASE_URL)
    require(problem is None, problem or "")
    await reset_postgres(TEST_DATABASE_URL)
    return TEST_DATABASE_URL


@pytest_asyncio.fixture(scope="session")
async def app(database_url: str):
    application = create_app(make_settings(database_url))
    await db.migrate()
    return application


@pytest_asyncio.fixture
async def client(app) -> AsyncIterator[AsyncTestClient]:
    # Rebind in case another backend's app was built since (Piccolo's engine is global).
    db.bind(app.state.settings.database_url)
    await ThrottleHit.delete(force=True)  # every test client signs in from the same address
    async with AsyncTestClient(app, base_url="http://testserver.local") as test_client:
        yield test_client


@pytest_asyncio.fixture
async def user_client(client: AsyncTestClient) -> AsyncTestClient:
    """A client signed in as a fresh user, sending the CSRF header like the page's htmx does."""
    await register(client)
    client.headers["x-csrftoken"] = client.cookies["csrftoken"]
    return client


@dataclass
class LiveServer:
    url: str
    process: subprocess.Popen
    database_url: str
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()

    def start_again(self) -> None:
        """After stop(): the same server again (port, database, settings), as after a deploy."""
        self.process = start_server(self.log_path.parent, self.database_url, self.port, **self.env).process


def start_server(tmp: Path, database_url: str | None = None, port: int | None = None, **env: str) -> LiveServer:
    """Run `mesh-nanollm` (migrations, then Granian) in a subprocess on `port` (a free one by default)."""
    port = port or free_port()
    database_url = database_url or f"sqlite:///{tmp / 'live.sqlite'}"
    full_env = os.environ | {
        "DATABASE_URL": database_url,
        "PORT": str(port),
        "HOST": "127.0.0.1",
        "SECRET_KEY": "test-secret-key",
        "ICE_SERVERS": "[]",
        # Every test signs up from 127.0.0.1; the real limit would stop a session's server at ten.
        "REGISTER_LIMIT": "100000",
        "PYTHONUNBUFFERED": "1",
    } | env
    log_path = tmp / f"server-{port}.log"
    process = subprocess.Popen(
        [sys.executable, "-c", "from mesh_nanollm.cli import main; main()"],
        env=full_env,
        cwd=tmp,
        stdout=log_path.open("a"),  # a restart on the same port adds to its log
        stderr=subprocess.STDOUT,
    )
    server = LiveServer(f"http://127.0.0.1:{port}", process, database_url, log_path, env)
    # Generous: a healthy server answers in a second or two and this returns then, but a CI host
    # busy with other work has taken over 30 s to start one (imports, migrations, Granian).
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited early:\n{server.log()}")
        try:
            if httpx.get(f"{server.url}/api/health", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"server did not become healthy:\n{server.log()}")


@pytest.fixture(scope="session")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One real Granian server on SQLite, shared by the browser and socket tests."""
    server = start_server(tmp_path_factory.mktemp("live"))
    yield server
    server.stop()


@pytest_asyncio.fixture(scope="session")
async def browser():
    """Debian's headless Chromium driven by Playwright (never a downloaded browser)."""
    require(shutil.which(CHROMIUM) is not None or Path(CHROMIUM).exists(), f"Chromium not found at {CHROMIUM}")
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        instance = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield instance
        await instance.close()


@pytest_asyncio.fixture
async def page(browser):
    context = await new_context(browser)
    page = await context.new_page()
    yield page
    await context.close()
