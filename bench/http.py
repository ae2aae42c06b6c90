"""HTTP benchmark on Postgres: the room page, the job history and a deep "load more" page,
for a user with 1,000 jobs and one with 1,000,000. Usage: `uv run python bench/http.py [--help]`.
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
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit

import asyncpg
import httpx
import launch

from mesh_nanollm.jobs.service import encode_cursor
from mesh_nanollm.settings import PROJECT_ROOT

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/bench"
PASSWORD = "bench-password"
USERS = {"bench-1k": 1_000, "bench-1m": 1_000_000}
ROOMS = {"global": "Global", "bench-lab": "Bench lab", "bench-team": "Bench team", "bench-demo": "Bench demo"}
SEED_BATCH = 100_000
HISTORY_DAYS = 365
ROWS_PER_PAGE = 25
RATIO_TARGET = 1.2
FLOOR = "GET /login (floor)"
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
    """One measurement: an endpoint hammered for a fixed time as one user."""

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
        "DATABASE_URL": database_url,
        "SECRET_KEY": "bench-secret-key",
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "ICE_SERVERS": "[]",
        "PYTHONUNBUFFERED": "1",
    }


def start_server(database_url: str, workdir: Path) -> tuple[subprocess.Popen, str]:
    port = launch.free_port()
    env = server_env(database_url, port)
    subprocess.run([launch.cli(), "migrate"], env=env, cwd=workdir, check=True)
    log_path = workdir / "server.log"
    process = subprocess.Popen(
        [launch.cli(), "serve", "--no-migrate", "--workers", "1"],
        env=env, cwd=workdir, stdout=log_path.open("w"), stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    launch.wait_healthy(process, url, log_path, timeout=30)
    return process, url


def sign_in(url: str, username: str) -> str:
    """Register `username` (or sign in if it exists); returns the Cookie header of its session."""
    with httpx.Client(base_url=url, follow_redirects=True, timeout=30) as client:
        client.get("/login")
        form = {"username": username, "password": PASSWORD, "_csrf_token": client.cookies["csrftoken"]}
        response = client.post("/register", data=form | {"confirm": PASSWORD})
        if response.url.path != "/rooms":
            response = client.post("/login", data=form | {"next": "/rooms"})
        if response.url.path != "/rooms":
            sys.exit(f"bench: could not sign in as {username}: HTTP {response.status_code}")
        return "; ".join(f"{name}={value}" for name, value in client.cookies.items())


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


def measure(args: argparse.Namespace, server: subprocess.Popen, target: str, user: str, round_: int,
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
        target=target, user=user, round=round_, requests=result["requests"],
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


def report(cells: list[Cell], targets: list[str], queries: dict[str, float]) -> dict[str, float]:
    print(f"\n{'endpoint':<26}{'user':<10}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'server':>8}{'loadgen':>9}"
          f"{'req/CPU-s':>11}{'CPU ms/req':>11}{'queries':>9}{'÷ floor':>9}")
    floor = statistics.median(c.rps / c.server_cpu for c in cells if c.target == FLOOR)
    for target in targets:
        for user in USERS:
            mine = [c for c in cells if c.target == target and c.user == user]
            per_cpu_s = statistics.median(c.rps / c.server_cpu for c in mine)
            print(f"{target:<26}{user:<10}{statistics.median(c.rps for c in mine):>9.0f}"
                  f"{statistics.median(c.p50_ms for c in mine):>9.2f}"
                  f"{statistics.median(c.p99_ms for c in mine):>9.2f}"
                  f"{statistics.median(c.server_cpu for c in mine):>8.0%}"
                  f"{statistics.median(c.generator_cpu for c in mine):>9.0%}"
                  f"{per_cpu_s:>11.0f}{1000 / per_cpu_s:>11.2f}{queries[target]:>9.1f}"
                  f"{per_cpu_s / floor:>8.2f}x")
    print("\nmedians over rounds; server and loadgen = share of one CPU core used while measured;"
          " req/CPU-s = requests per second of server CPU; queries = database statements per request")
    ratios: dict[str, float] = {}
    small, large = USERS
    print(f"\nratio {large}/{small}, median of the per-round ratios (each round measures both users"
          " back to back, so a ratio per round cancels most noise):")
    for target in targets:
        by_round = {(c.user, c.round): c for c in cells if c.target == target}
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
    database_url = os.environ.get("BENCH_DATABASE_URL", DEFAULT_DATABASE_URL)
    asyncio.run(ensure_database(database_url, args.reseed))
    with tempfile.TemporaryDirectory(prefix="mesh-bench-") as tmp:
        workdir = Path(tmp)
        script = workdir / "report.lua"
        script.write_text(WRK_REPORT)
        server, url = start_server(database_url, workdir)
        try:
            cookies = {username: sign_in(url, username) for username in USERS}
            asyncio.run(seed(database_url))
            cursors = {username: asyncio.run(deep_cursor(database_url, username)) for username in USERS}
            targets = {
                # The floor: the same app rendering a page without touching the database (no
                # session cookie, so no session or user lookup either).
                FLOOR: ("/login", {}, None),
                "GET /rooms/global": ("/rooms/global", {}, None),
                "GET /jobs": ("/jobs", {}, ROWS_PER_PAGE),
                "GET /jobs?cursor=<half>": ("/jobs?cursor={cursor}", {"HX-Request": "true"}, ROWS_PER_PAGE),
            }
            for target, (path, extra, rows) in targets.items():
                for username in USERS:
                    headers = page_headers(target, cookies[username], extra)
                    check_page(url + path.format(cursor=cursors[username]), headers, rows)
            small = next(iter(USERS))  # how many statements a page runs does not depend on the history's size
            queries = asyncio.run(queries_per_request(database_url, {
                target: (url + path.format(cursor=cursors[small]), page_headers(target, cookies[small], extra))
                for target, (path, extra, _) in targets.items()
            }))
            print(f"\n{args.generator}, {args.connections} connections, {args.duration} s per cell, "
                  f"{args.rounds} rounds, server {url} (Granian, 1 worker), Postgres {urlsplit(database_url).path}")
            cells: list[Cell] = []
            for round_ in range(1, args.rounds + 1):
                # Alternate who goes first, so neither user always gets the warmer or quieter slot.
                order = list(USERS) if round_ % 2 else list(reversed(USERS))
                for target, (path, extra, _) in targets.items():
                    for username in order:
                        headers = page_headers(target, cookies[username], extra)
                        cell = measure(args, server, target, username, round_,
                                       url + path.format(cursor=cursors[username]), headers, script)
                        cells.append(cell)
                p99 = {(c.target, c.user): c.p99_ms for c in cells if c.round == round_}
                shown = "  ".join(
                    f"{target} {' / '.join(f'{p99[target, user]:.0f}' for user in USERS)}" for target in targets
                )
                print(f"round {round_:>2}/{args.rounds}  p99 ms {'/'.join(USERS)}:  {shown}", flush=True)
        finally:
            server.terminate()
            server.wait(10)
    ratios = report(cells, list(targets), queries)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    result_path = RESULTS_DIR / f"http-{stamp}.json"
    result_path.write_text(json.dumps(
        {"args": vars(args), "cells": [asdict(c) for c in cells], "p99_ratios": ratios,
         "queries_per_request": queries}, indent=2))
    print(f"raw results: {result_path.relative_to(PROJECT_ROOT)}")
    jobs_ratio = ratios["GET /jobs"]
    verdict = "met" if jobs_ratio <= RATIO_TARGET else "MISSED"
    print(f"target p99(1M)/p99(1k) <= {RATIO_TARGET}x for GET /jobs: {verdict} ({jobs_ratio:.2f}x)")
    sys.exit(0 if jobs_ratio <= RATIO_TARGET else 1)


if __name__ == "__main__":
    main()
