"""HTTP benchmark on Postgres: the room page (alone, and with three live peers), the job history,
a deep "load more" page and one of the page's own modules, for a user with 1,000 jobs and one
with 1,000,000. With `--compare`,
another checkout's code answers the same pages, measured in the same rounds.
Usage: `uv run python bench/http.py [--help]`.
"""

from __future__ import annotations

import sys
from pathlib import Path

# This file shares its name with the standard library's `http` package; run as a script, its
# folder comes first on sys.path and `import httpx` would find this file instead.
if sys.path and Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
    del sys.path[0]
sys.path.append(str(Path(__file__).resolve().parent))  # bench/launch.py, after the stdlib's http

import argparse
import asyncio
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx
import launch
import socketio

from mesh_nanollm.jobs.service import encode_cursor
from mesh_nanollm.settings import PROJECT_ROOT

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/bench"
PASSWORD = "bench-password"
USERS = {"bench-1k": 1_000, "bench-1m": 1_000_000}
ROOMS = {"global": "Global", "bench-lab": "Bench lab", "bench-team": "Bench team", "bench-demo": "Bench demo"}
# Three live peers in bench-lab, as one more user, each with SPARK_JOBS recent jobs it ran: the room
# page as people see it, with its peers panel, mesh drawing and sparklines.
LAB = "bench-lab"
PEER_USER = "bench-peer"
LAB_PEERS = 3
SPARK_JOBS = 20
SEED_BATCH = 100_000
HISTORY_DAYS = 365
ROWS_PER_PAGE = 25
RATIO_TARGET = 1.2
FLOOR = "GET /login (floor)"
STATIC = "GET /static/js/room.js"
RESULTS_DIR = PROJECT_ROOT / "bench" / "results"

# One INSERT ... SELECT per batch: Postgres builds the rows itself, so seeding a million jobs
# takes seconds rather than the minutes that shipping them from Python would. Rows are spread
# evenly over the last HISTORY_DAYS with jitter, across rooms, models, statuses and modes.
SEED_SQL = """
INSERT INTO job (id, room, requester, requester_peer, worker_peer, model_id, task, mode, prompt,
                 params, status, output, error, attempts, workers, token_count,
                 created_at, started_at, first_token_at, finished_at, updated_at,
                 decode_ms, decode_tokens)
SELECT gen_random_uuid(), s.room, $1, s.peer, s.worker, s.model, 'text-generation', s.mode,
       'Prompt ' || s.i || ': ' || (ARRAY['Write a haiku about meshes.',
           'Summarise the licence in one sentence.', 'Continue the story: the browser woke up',
           'List three uses of a tiny language model.'])[1 + s.i % 4],
       '{"max_new_tokens": 128, "temperature": 0.7}'::json,
       s.status,
       CASE WHEN s.status = 'succeeded' THEN repeat('generated text ', 4 + s.i % 12) ELSE '' END,
       CASE WHEN s.status = 'failed' THEN 'The worker ran out of memory.'
            WHEN s.status = 'abandoned' THEN 'The requester left before the job finished.'
            ELSE '' END,
       1 + (s.i % 17 = 0)::int,
       (CASE WHEN s.worker IS NULL THEN '["local"]' ELSE '["' || s.worker || '"]' END)::json,
       s.tokens, s.created_at, s.created_at + interval '40 ms',
       s.created_at + interval '90 ms', s.created_at + s.tokens * interval '12 ms',
       s.created_at + s.tokens * interval '12 ms',
       (s.tokens - 1) * 12.0, s.tokens - 1
FROM (
    SELECT i,
           (SELECT array_agg(id ORDER BY id) FROM room WHERE slug = ANY($2::text[]))[1 + i % cardinality($2::text[])] AS room,
           ($3::text[])[1 + (i * 7) % cardinality($3::text[])] AS model,
           CASE WHEN i % 100 < 86 THEN 'succeeded' WHEN i % 100 < 93 THEN 'failed'
                WHEN i % 100 < 97 THEN 'cancelled' ELSE 'abandoned' END AS status,
           CASE WHEN i % 3 = 0 THEN 'mesh' ELSE 'local' END AS mode,
           gen_random_uuid() AS peer,
           CASE WHEN i % 3 = 0 THEN gen_random_uuid() END AS worker,
           16 + (i * 37) % 240 AS tokens,
           $4::timestamptz + ($5::float8 * i + random() * $5::float8) * interval '1 second' AS created_at
    FROM generate_series($6::int, $7::int) AS i
) AS s
"""

# Every job gets a trace like a one-attempt run's (created, offered, accepted, dispatched, first
# token, done, tokens per 100 ms): about 500 bytes, in job_trace, which the history never reads.
# One INSERT ... SELECT per user, built by Postgres from the job rows themselves.
SEED_TRACES_SQL = """
INSERT INTO job_trace (job, events)
SELECT j.id, convert_to(format(
    '{"events":[{"t":0,"kind":"created"},{"t":2,"kind":"offered","peer":"%1$s"},'
    '{"t":9,"kind":"accepted","peer":"%1$s","eta_ms":12},{"t":10,"kind":"dispatched","attempt":1,"peer":"%1$s"},'
    '{"t":90,"kind":"first_token","attempt":1},'
    '{"t":%2$s,"kind":"done","attempt":1,"peer":"%1$s","tokens":%3$s,"ttft_ms":31.5,"tok_s":83.3}],'
    '"tokens":{"start_ms":90,"bucket_ms":100,"counts":%4$s}}',
    coalesce(j.worker_peer, j.requester_peer), 90 + (j.token_count - 1) * 12, j.token_count,
    array_to_json(array_fill(8, ARRAY[1 + (j.token_count * 12) / 100]))), 'UTF8')
FROM job j WHERE j.requester = $1
"""


@dataclass
class Cell:
    """One measurement: an endpoint hammered for a fixed time as one user, on one server."""

    server: str  # "after" (this checkout), or "before" (the code --compare points at)
    target: str
    user: str
    round: int
    requests: int
    rps: float
    p50_ms: float
    p99_ms: float
    server_cpu: float  # share of one core the server used while measured
    generator_cpu: float  # share of one core the load generator used


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reseed", action="store_true", help="drop the bench database's tables and seed them again")
    parser.add_argument("--duration", type=int, default=2, help="seconds per measurement (default 2)")
    parser.add_argument("--warmup", type=int, default=2,
                        help="seconds of unmeasured load per cell before the first round (default 2)")
    parser.add_argument("--connections", type=int, default=8, help="concurrent closed-loop clients (default 8)")
    # Many short rounds rather than a few long ones: the two users' cells sit seconds apart, so
    # a burst of load from elsewhere on the machine tends to hit both, and the median ratio
    # over rounds shrugs off the rounds it does not.
    parser.add_argument("--rounds", type=int, default=15, help="rounds; each measures every cell once (default 15)")
    parser.add_argument("--generator", choices=["auto", "wrk", "httpx"], default="auto",
                        help="load generator: wrk when installed (auto), or the built-in httpx one")
    parser.add_argument("--users", nargs="+", choices=list(USERS), default=list(USERS),
                        help="whose pages to measure (default both; the 1M/1k ratio needs both)")
    parser.add_argument("--compare", type=Path, metavar="SRC",
                        help="also serve the code in SRC (another checkout's src/, on PYTHONPATH) on the same"
                             " database, and measure both in every round, one right after the other")
    parser.add_argument("--pages", nargs="+", metavar="TEXT",
                        help="measure only the requests whose name contains one of these (the floor always)")
    return parser.parse_args()


def pg_dsn(url: str) -> str:
    return url.replace("postgres://", "postgresql://", 1)


async def ensure_database(url: str, reseed: bool) -> None:
    name = urlsplit(url).path.lstrip("/")
    if name in ("", "test", "postgres"):
        sys.exit(f"bench: refusing to use database {name!r}; point BENCH_DATABASE_URL at a scratch database")
    admin = await asyncpg.connect(pg_dsn(urlsplit(url)._replace(path="/postgres").geturl()))
    try:
        if not await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            await admin.execute(f'CREATE DATABASE "{name}"')
            print(f"created database {name}")
    finally:
        await admin.close()
    if reseed:
        conn = await asyncpg.connect(pg_dsn(url))
        try:
            await conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public;")
        finally:
            await conn.close()
        print("dropped the bench tables")


def server_env(database_url: str, port: int) -> dict[str, str]:
    return os.environ | {
        # As deployed: templates are not checked for edits on every render, and cookies are Secure
        # (sign_in carries them by hand over this plain-HTTP loopback).
        "MESH_ENV": "production",
        "DATABASE_URL": database_url,
        "SECRET_KEY": "bench-secret-key",
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "ICE_SERVERS": "[]",
        "PYTHONUNBUFFERED": "1",
    }


def start_server(database_url: str, workdir: Path, src: Path | None = None) -> tuple[subprocess.Popen, str]:
    """A server of this checkout, or of the code in `src` (first on PYTHONPATH)."""
    port = launch.free_port()
    env = server_env(database_url, port) | ({"PYTHONPATH": str(src.resolve())} if src else {})
    subprocess.run([launch.cli(), "migrate"], env=env, cwd=workdir, check=True)
    log_path = workdir / f"server-{port}.log"
    process = subprocess.Popen(
        [launch.cli(), "serve", "--no-migrate", "--workers", "1"],
        env=env, cwd=workdir, stdout=log_path.open("w"), stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    launch.wait_healthy(process, url, log_path, timeout=90)  # two servers start on a busy machine
    return process, url


def sign_in(url: str, username: str) -> str:
    """Register `username` (or sign in if it exists); returns the Cookie header of its session.
    The server's cookies are Secure, which an HTTP client keeps from plain http: kept here instead."""
    cookies: dict[str, str] = {}

    def post(client: httpx.Client, path: str, form: dict[str, str]) -> httpx.Response:
        headers = {"Cookie": "; ".join(f"{name}={value}" for name, value in cookies.items())}
        response = client.post(path, data=form, headers=headers)
        keep(response)
        return response

    def keep(response: httpx.Response) -> None:
        for header in response.headers.get_list("set-cookie"):
            name, _, rest = header.partition("=")
            cookies[name.strip()] = rest.split(";", 1)[0]

    with httpx.Client(base_url=url, timeout=30) as client:
        keep(client.get("/login"))
        form = {"username": username, "password": PASSWORD, "_csrf_token": cookies["csrftoken"]}
        response = post(client, "/register", form | {"confirm": PASSWORD})
        if response.headers.get("location") != "/rooms":
            response = post(client, "/login", form | {"next": "/rooms"})
        if response.headers.get("location") != "/rooms":
            sys.exit(f"bench: could not sign in as {username}: HTTP {response.status_code}")
        return "; ".join(f"{name}={value}" for name, value in cookies.items())


async def seed(database_url: str) -> None:
    """Give each bench user exactly its number of jobs; keep what an earlier run seeded."""
    conn = await asyncpg.connect(pg_dsn(database_url))
    try:
        now = datetime.now(UTC)
        await conn.executemany(
            "INSERT INTO room (slug, name, owner, is_private, invite_code, created_at)"
            " VALUES ($1, $2, NULL, false, NULL, $3) ON CONFLICT (slug) DO NOTHING",
            [(slug, name, now) for slug, name in ROOMS.items()],
        )
        models = json.loads((PROJECT_ROOT / "catalogue.json").read_text())["models"]
        model_ids = [model["id"] for model in models]
        seeded = False
        for username, count in USERS.items():
            user_id = await conn.fetchval("SELECT id FROM app_user WHERE username = $1", username)
            have = await conn.fetchval("SELECT count(*) FROM job WHERE requester = $1", user_id)
            traced = await conn.fetchval(
                "SELECT count(*) FROM job_trace t JOIN job j ON j.id = t.job WHERE j.requester = $1", user_id
            )
            if have == count == traced:
                print(f"{username}: reusing {have:,} jobs and their traces")
                continue
            await conn.execute("DELETE FROM job WHERE requester = $1", user_id)
            started = time.perf_counter()
            step_s = HISTORY_DAYS * 86400 / count
            since = now.timestamp() - HISTORY_DAYS * 86400
            for first in range(1, count + 1, SEED_BATCH):
                last = min(first + SEED_BATCH - 1, count)
                await conn.execute(
                    SEED_SQL, user_id, list(ROOMS), model_ids,
                    datetime.fromtimestamp(since, UTC), step_s, first, last,
                )
            await conn.execute(SEED_TRACES_SQL, user_id)
            print(f"{username}: seeded {count:,} jobs and their traces in {time.perf_counter() - started:.1f} s")
            seeded = True
        if seeded:
            await conn.execute("VACUUM ANALYZE job")
            await conn.execute("VACUUM ANALYZE job_trace")
    finally:
        await conn.close()


async def seed_lab_jobs(database_url: str, peer_ids: list[str]) -> None:
    """SPARK_JOBS succeeded jobs of the last hour for each lab peer, as the worker that ran them,
    and their speeds (what the peers' sparklines draw); those of earlier runs go first."""
    conn = await asyncpg.connect(pg_dsn(database_url))
    try:
        user_id = await conn.fetchval("SELECT id FROM app_user WHERE username = $1", PEER_USER)
        room_id = await conn.fetchval("SELECT id FROM room WHERE slug = $1", LAB)
        await conn.execute("DELETE FROM job WHERE requester = $1", user_id)
        await conn.execute(
            "INSERT INTO job (id, room, requester, requester_peer, worker_peer, model_id, task, mode, prompt,"
            " params, status, output, error, attempts, workers, token_count, created_at, started_at,"
            " first_token_at, finished_at, updated_at, decode_ms, decode_tokens)"
            " SELECT gen_random_uuid(), $2, $1, gen_random_uuid(), p.peer::uuid, 'bench-model', 'text-generation',"
            " 'mesh', 'Prompt', '{}'::json, 'succeeded', 'text', '', 1, json_build_array(p.peer), 64,"
            " now() - i * interval '1 minute', now() - i * interval '1 minute', now() - i * interval '1 minute',"
            " now() - i * interval '1 minute', now(), 500 + 20 * i, 63"
            " FROM unnest($3::text[]) AS p(peer), generate_series(1, $4) AS i",
            user_id, room_id, peer_ids, SPARK_JOBS,
        )
        # As finishing those jobs would have credited them: each peer keeps its jobs' speeds, which
        # this code's panel draws (the code the issue was filed on reads them from the jobs).
        await conn.execute(
            "UPDATE peer_session SET speeds = (SELECT json_agg(round(63000.0 / (500 + 20 * i), 2) ORDER BY i DESC)"
            " FROM generate_series(1, $2) AS i) WHERE peer_id = ANY($1::uuid[])",
            peer_ids, SPARK_JOBS,
        )
    finally:
        await conn.close()


class LabPeers:
    """LAB_PEERS Socket.IO clients in the lab room, linked to each other, on a thread of their own
    (the load generator's event loops come and go)."""

    def __init__(self, url: str, cookie: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.clients = [socketio.AsyncClient(reconnection=False) for _ in range(LAB_PEERS)]
        self.peer_ids = self._run(self._join(url, cookie))

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    async def _join(self, url: str, cookie: str) -> list[str]:
        peer_ids = []
        for client in self.clients:
            await client.connect(url, headers={"Cookie": cookie}, transports=["websocket"], wait_timeout=10)
            capabilities = {"backend": "wasm", "models_warm": ["bench-model"]}
            ack = await client.call("join_room", {"room": LAB, "capabilities": capabilities}, timeout=10)
            peer_ids.append(ack["peer_id"])
        for n, client in enumerate(self.clients):
            links = [{"peer_id": peer, "rtt_ms": 1.5 + n} for peer in peer_ids if peer != peer_ids[n]]
            await client.emit("status", {"state": "idle", "backend": "wasm", "models_warm": ["bench-model"],
                                         "tok_s": 80.0, "links": links})
        await asyncio.sleep(2)  # the status batch reaches the database
        return peer_ids

    async def _leave(self) -> None:
        await asyncio.gather(*(client.disconnect() for client in self.clients))

    def close(self) -> None:
        self._run(self._leave())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


async def deep_cursor(database_url: str, username: str) -> str:
    """The cursor of "load more" after half of the user's history (row 500,000 of 1,000,000)."""
    conn = await asyncpg.connect(pg_dsn(database_url))
    try:
        row = await conn.fetchrow(
            "SELECT j.created_at, j.id FROM job j JOIN app_user u ON u.id = j.requester"
            " WHERE u.username = $1 ORDER BY j.created_at DESC, j.id DESC OFFSET $2 LIMIT 1",
            username, USERS[username] // 2 - 1,
        )
    finally:
        await conn.close()
    return encode_cursor(row["created_at"], row["id"])


WRK_REPORT = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('{"requests": %d, "duration_us": %d, "bad_status": %d, "socket_errors": %d, '
    .. '"p50_us": %d, "p99_us": %d}\\n', summary.requests, summary.duration, e.status,
    e.connect + e.read + e.write + e.timeout, latency:percentile(50), latency:percentile(99)))
end
"""


def run_wrk(url: str, headers: dict[str, str], seconds: int, connections: int, script: Path) -> dict:
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "30s",
               "-s", str(script)]
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    output = subprocess.run([*command, url], capture_output=True, text=True, check=True).stdout
    report = json.loads(re.findall(r"^\{.*\}$", output, re.MULTILINE)[-1])
    if report["bad_status"] or report["socket_errors"]:
        sys.exit(f"bench: {url} answered badly under load:\n{output}")
    return {"requests": report["requests"], "seconds": report["duration_us"] / 1e6,
            "p50_ms": report["p50_us"] / 1000, "p99_ms": report["p99_us"] / 1000}


async def run_httpx(url: str, headers: dict[str, str], seconds: int, connections: int) -> dict:
    latencies: list[float] = []
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(headers=headers, limits=limits, timeout=30) as client:
        deadline = time.perf_counter() + seconds

        async def loop() -> None:
            while (start := time.perf_counter()) < deadline:
                response = await client.get(url)
                if response.status_code != 200:
                    sys.exit(f"bench: {url} answered HTTP {response.status_code} under load")
                latencies.append(time.perf_counter() - start)

        started = time.perf_counter()
        await asyncio.gather(*(loop() for _ in range(connections)))
        elapsed = time.perf_counter() - started
    quantiles = statistics.quantiles(latencies, n=100)
    return {"requests": len(latencies), "seconds": elapsed,
            "p50_ms": quantiles[49] * 1000, "p99_ms": quantiles[98] * 1000}


def load(args: argparse.Namespace, url: str, headers: dict[str, str], seconds: int, script: Path) -> dict:
    if args.generator == "wrk":
        return run_wrk(url, headers, seconds, args.connections, script)
    return asyncio.run(run_httpx(url, headers, seconds, args.connections))


def measure(args: argparse.Namespace, server: subprocess.Popen, name: str, target: str, user: str, round_: int,
            url: str, headers: dict[str, str], script: Path) -> Cell:
    if round_ == 1 and args.warmup > 0:
        load(args, url, headers, args.warmup, script)
    server_before = launch.cpu_seconds(launch.process_tree(server.pid))
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    own = time.process_time()
    result = load(args, url, headers, args.duration, script)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    generator_s = (after.ru_utime + after.ru_stime - children.ru_utime - children.ru_stime
                   + time.process_time() - own)
    return Cell(
        server=name, target=target, user=user, round=round_, requests=result["requests"],
        rps=result["requests"] / result["seconds"], p50_ms=result["p50_ms"], p99_ms=result["p99_ms"],
        server_cpu=(launch.cpu_seconds(launch.process_tree(server.pid)) - server_before) / result["seconds"],
        generator_cpu=generator_s / result["seconds"],
    )


def page_headers(target: str, cookie: str, extra: dict[str, str]) -> dict[str, str]:
    return extra if target == FLOOR else {"Cookie": cookie} | extra


async def queries_per_request(database_url: str, pages: dict[str, tuple[str, dict[str, str]]],
                              requests: int = 50) -> dict[str, float]:
    """Statements the server runs per request of each page, from Postgres's transaction count for
    the database (Piccolo runs each statement outside a transaction in one of its own)."""

    async def committed() -> int:
        # An idle backend reports its counts within PGSTAT_IDLE_INTERVAL (10 s in Postgres 15).
        await asyncio.sleep(11)
        conn = await asyncpg.connect(pg_dsn(database_url))
        try:
            return await conn.fetchval(
                "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()")
        finally:
            await conn.close()

    counts: dict[str, float] = {}
    before = await committed()
    for target, (url, headers) in pages.items():
        async with httpx.AsyncClient(headers=headers, timeout=30) as client:
            for _ in range(requests):
                (await client.get(url)).raise_for_status()
        after = await committed()
        counts[target] = (after - before - 1) / requests  # minus our own reading connection's
        before = after
    return counts


def check_page(url: str, headers: dict[str, str], rows: int | None) -> None:
    """Fail early, not under load, if a page is not what a signed-in user would see."""
    response = httpx.get(url, headers=headers, timeout=30)
    if response.status_code != 200:
        sys.exit(f"bench: {url} answered HTTP {response.status_code}")
    found = response.text.count('data-testid="job-row"')
    if rows is not None and found != rows:
        sys.exit(f"bench: {url} showed {found} jobs, expected {rows}")


def per_cpu_s(cell: Cell) -> float:
    return cell.rps / cell.server_cpu


def report(cells: list[Cell], targets: list[str], users: list[str], queries: dict[str, dict[str, float]]) -> dict[str, float]:
    ratios: dict[str, float] = {}
    for name in queries:
        print(f"\n{name}:\n{'endpoint':<26}{'user':<10}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'server':>8}"
              f"{'loadgen':>9}{'req/CPU-s':>11}{'CPU ms/req':>11}{'queries':>9}{'÷ floor':>9}")
        floor = statistics.median(per_cpu_s(c) for c in cells if c.server == name and c.target == FLOOR)
        for target in targets:
            for user in users:
                mine = [c for c in cells if c.server == name and c.target == target and c.user == user]
                rate = statistics.median(per_cpu_s(c) for c in mine)
                print(f"{target:<26}{user:<10}{statistics.median(c.rps for c in mine):>9.0f}"
                      f"{statistics.median(c.p50_ms for c in mine):>9.2f}"
                      f"{statistics.median(c.p99_ms for c in mine):>9.2f}"
                      f"{statistics.median(c.server_cpu for c in mine):>8.0%}"
                      f"{statistics.median(c.generator_cpu for c in mine):>9.0%}"
                      f"{rate:>11.0f}{1000 / rate:>11.2f}{queries[name][target]:>9.1f}"
                      f"{rate / floor:>8.2f}x")
    print("\nmedians over rounds; server and loadgen = share of one CPU core used while measured;"
          " req/CPU-s = requests per second of server CPU; queries = database statements per request")
    if "before" in queries:
        print("\nreq/CPU-s after ÷ before, median of the per-round ratios (each round measures both"
              " servers back to back):")
        for target in targets:
            for user in users:
                cell = {(c.server, c.round): c for c in cells if c.target == target and c.user == user}
                by_round = [per_cpu_s(cell["after", r]) / per_cpu_s(cell["before", r])
                            for r in sorted({r for _, r in cell})]
                print(f"  {target:<26}{user:<10}{statistics.median(by_round):.2f}x"
                      f" (rounds {min(by_round):.2f}-{max(by_round):.2f})")
    if len(users) < 2:
        return ratios
    small, large = users
    print(f"\nratio {large}/{small}, median of the per-round ratios (each round measures both users"
          " back to back, so a ratio per round cancels most noise):")
    for target in targets:
        by_round = {(c.user, c.round): c for c in cells if c.server == "after" and c.target == target}
        rounds = sorted({r for _, r in by_round})
        p99 = [by_round[large, r].p99_ms / by_round[small, r].p99_ms for r in rounds]
        p50 = [by_round[large, r].p50_ms / by_round[small, r].p50_ms for r in rounds]
        ratios[target] = statistics.median(p99)
        print(f"  {target:<26} p99 {ratios[target]:.2f}x (rounds {min(p99):.2f}-{max(p99):.2f})"
              f"   p50 {statistics.median(p50):.2f}x (rounds {min(p50):.2f}-{max(p50):.2f})")
    return ratios


def main() -> None:
    args = parse_args()
    if args.generator == "auto":
        args.generator = "wrk" if shutil.which("wrk") else "httpx"
    users = [user for user in USERS if user in args.users]
    database_url = os.environ.get("BENCH_DATABASE_URL", DEFAULT_DATABASE_URL)
    asyncio.run(ensure_database(database_url, args.reseed))
    with tempfile.TemporaryDirectory(prefix="mesh-bench-") as tmp:
        workdir = Path(tmp)
        script = workdir / "report.lua"
        script.write_text(WRK_REPORT)
        servers = {"after": start_server(database_url, workdir)}
        lab = None
        try:
            if args.compare:
                # Started before the lab's peers join: a lone server closes every open peer at start.
                servers["before"] = start_server(database_url, workdir, args.compare)
            url = servers["after"][1]
            cookies = {username: sign_in(url, username) for username in [*USERS, PEER_USER]}
            asyncio.run(seed(database_url))
            lab = LabPeers(url, cookies[PEER_USER])
            asyncio.run(seed_lab_jobs(database_url, lab.peer_ids))
            cursors = {username: asyncio.run(deep_cursor(database_url, username)) for username in users}
            targets = {
                # The floor: the same app rendering a page without touching the database (no
                # session cookie, so no session or user lookup either).
                FLOOR: ("/login", {}, None),
                "GET /rooms/global": ("/rooms/global", {}, None),
                f"GET /rooms/{LAB} (3 peers)": (f"/rooms/{LAB}", {}, None),
                "GET /jobs": ("/jobs", {}, ROWS_PER_PAGE),
                "GET /jobs?cursor=<half>": ("/jobs?cursor={cursor}", {"HX-Request": "true"}, ROWS_PER_PAGE),
                # One of the ~33 own modules and stylesheets a room page asks for (revalidates, once
                # cached) on every visit, by a signed-in browser: its cookie comes along.
                STATIC: ("/static/js/room.js", {}, None),
            }
            if args.pages:
                targets = {name: target for name, target in targets.items()
                           if name == FLOOR or any(text in name for text in args.pages)}
            for _, base in servers.values():
                for target, (path, extra, rows) in targets.items():
                    for username in users:
                        headers = page_headers(target, cookies[username], extra)
                        check_page(base + path.format(cursor=cursors[username]), headers, rows)
            small = users[0]  # how many statements a page runs does not depend on the history's size
            queries = {
                name: asyncio.run(queries_per_request(database_url, {
                    target: (base + path.format(cursor=cursors[small]), page_headers(target, cookies[small], extra))
                    for target, (path, extra, _) in targets.items()
                }))
                for name, (_, base) in servers.items()
            }
            print(f"\n{args.generator}, {args.connections} connections, {args.duration} s per cell, "
                  f"{args.rounds} rounds, servers {', '.join(servers)} (Granian, 1 worker each),"
                  f" Postgres {urlsplit(database_url).path}")
            cells: list[Cell] = []
            for round_ in range(1, args.rounds + 1):
                # Alternate who goes first, so neither user (nor server) always gets the warmer or
                # quieter slot.
                order = users if round_ % 2 else users[::-1]
                names = list(servers) if round_ % 2 else list(servers)[::-1]
                for target, (path, extra, _) in targets.items():
                    for username in order:
                        for name in names:
                            process, base = servers[name]
                            headers = page_headers(target, cookies[username], extra)
                            cells.append(measure(args, process, name, target, username, round_,
                                                 base + path.format(cursor=cursors[username]), headers, script))
                shown = "  ".join(
                    f"{c.server} {c.target} {c.user} {per_cpu_s(c):.0f}" for c in cells if c.round == round_
                )
                print(f"round {round_:>2}/{args.rounds}  req/CPU-s:  {shown}", flush=True)
        finally:
            if lab is not None:
                lab.close()
            for process, _ in servers.values():
                process.terminate()
                process.wait(10)
    ratios = report(cells, list(targets), users, queries)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    result_path = RESULTS_DIR / f"http-{stamp}.json"
    result_path.write_text(json.dumps(
        {"args": vars(args) | {"compare": str(args.compare) if args.compare else None},
         "cells": [asdict(c) for c in cells], "p99_ratios": ratios, "queries_per_request": queries}, indent=2))
    print(f"raw results: {result_path.relative_to(PROJECT_ROOT)}")
    if "GET /jobs" not in ratios:
        return
    jobs_ratio = ratios["GET /jobs"]
    verdict = "met" if jobs_ratio <= RATIO_TARGET else "MISSED"
    print(f"target p99(1M)/p99(1k) <= {RATIO_TARGET}x for GET /jobs: {verdict} ({jobs_ratio:.2f}x)")
    sys.exit(0 if jobs_ratio <= RATIO_TARGET else 1)


if __name__ == "__main__":
    main()
