"""Starting this project's server outside the tests (the benchmarks, scripts/screenshot.py) and
reading what its processes use: a free port, the installed CLI, waiting until it is healthy, a
scratch Postgres database, an account with an API token, CPU seconds of a process tree, and of a
browser benchmark's processes by kind."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

TICK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cli() -> str:
    """The `mesh-nanollm` entry point installed beside this interpreter: the project's own."""
    path = Path(sys.executable).parent / "mesh-nanollm"
    if not path.exists():
        sys.exit(
            f"bench: `mesh-nanollm` is not installed; run this with `uv run python {sys.argv[0]}`"
        )
    return str(path)


def wait_healthy(process: subprocess.Popen, url: str, log: Path, timeout: float = 60) -> None:
    """Until `url` answers /api/health with 200; exits with the log's tail if the server exits or
    never gets there (stopping it in that case)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"the server at {url} exited early:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/api/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    process.terminate()
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    sys.exit(f"the server at {url} did not become healthy:\n{log.read_text()[-3000:]}")


def reset_postgres(url: str) -> None:
    """An empty schema in a scratch Postgres database of the benchmark's own (created if missing)."""
    import asyncpg

    base, _, name = url.rpartition("/")
    if name in ("", "postgres", "test", "bench"):
        sys.exit(
            f"bench: refusing to wipe database {name!r}; give the benchmark a scratch database of its own"
        )
    dsn = base.replace("postgres://", "postgresql://", 1)

    async def reset() -> None:
        admin = await asyncpg.connect(f"{dsn}/postgres")
        try:
            if not await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
                await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()
        conn = await asyncpg.connect(f"{dsn}/{name}")
        try:
            await conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public;")
        finally:
            await conn.close()

    asyncio.run(reset())


def sign_up(url: str, username: str, password: str) -> str:
    """An account and an API token, made the way a person would; the token."""
    with httpx.Client(base_url=url, follow_redirects=True, timeout=30) as http:
        http.get("/register")
        csrf = http.cookies["csrftoken"]
        form = {
            "username": username,
            "password": password,
            "confirm": password,
            "_csrf_token": csrf,
        }
        http.post("/register", data=form)
        page = http.post("/settings/tokens", data={"name": "bench", "_csrf_token": csrf}).text
        token = re.search(r'data-testid="new-token">([^<]+)<', page)
        if not token:
            sys.exit(f"bench: could not make an API token:\n{page[:500]}")
        return token.group(1)


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants (Granian runs the app in a child worker)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def cpu_seconds(pids: list[int]) -> float:
    """CPU seconds (user + system) the processes have used so far; those gone count for nothing."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / TICK


def cpu_by_kind(servers: dict[str, int]) -> dict[str, float]:
    """CPU seconds so far of each named server's process tree (`servers`: name → root pid), and of
    the benchmark's other descendants by kind: Chromium's by process type (browser, renderer,
    gpu-process, utility: the network service among them), everything else as "driver"
    (Playwright's, which relays the benchmark's calls into the pages)."""
    trees = {name: process_tree(pid) for name, pid in servers.items()}
    used = {name: cpu_seconds(pids) for name, pids in trees.items()}
    for pid in set(process_tree(os.getpid())).difference({os.getpid()}, *trees.values()):
        try:
            # Chromium's children rewrite theirs into one string: split on spaces too.
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").split()
        except OSError:
            continue
        if not argv:  # a zombie: exited, not yet reaped
            continue
        if argv[0].endswith((b"chromium", b"chrome")):
            kind = next((a[7:].decode() for a in argv if a.startswith(b"--type=")), "browser")
        else:
            kind = "driver"
        used[kind] = used.get(kind, 0.0) + cpu_seconds([pid])
    return used


def cpu_used(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {key: after[key] - before.get(key, 0.0) for key in after}
