"""Gateway benchmark: what relaying an API job through the server costs.

    uv run python bench/gateway/run.py [--help]

1. added TTFT: one request at a time, the first token at the HTTP client minus the moment the
   fake worker emitted it; on one instance, then with the client on instance A and the worker on
   instance B (Redis between them, one Postgres);
2. relay cost: N fake workers streaming 50 tok/s each (batched as the browser worker batches) to N
   concurrent streaming clients of one instance pinned to one core, N stepped up; server CPU per
   relayed token (from /proc) and the delay the relay adds to each batch, p50/p99.

Needs Postgres (BENCH_DATABASE_URL, a scratch database that each server start wipes) and Redis
(BENCH_REDIS_URL). docs/benchmarks.md ("Gateway") explains the figures; raw results go to
bench/results/gateway-<time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.append(str(Path(__file__).resolve().parents[1]))  # bench/launch.py; after the stdlib
import launch
from load import FakeWorker, Relayed, Stream, match, stream_chat

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results"
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/bench_gateway"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
PASSWORD = "benchmark password"
PAUSE_S = 0.2  # between TTFT requests
# Caps that would turn the relay benchmark into a test of the limits: one API token runs every
# stream, and the streams arrive together.
SERVER_ENV = {
    "SECRET_KEY": "benchmark",
    "HOST": "127.0.0.1",
    "ICE_SERVERS": "[]",
    "PYTHONUNBUFFERED": "1",
    "GATEWAY_TOKEN_CONCURRENCY": "100000",
    "GATEWAY_QUEUE_MAX": "100000",
}
TARGETS = {
    "ttft_one_p50_ms": 5.0,
    "ttft_redis_p50_ms": 10.0,
    "us_per_token": 100.0,
    "streams_per_core": 200,
    "delay_p99_ms": 25.0,
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--phases", nargs="+", choices=["ttft", "relay"], default=["ttft", "relay"])
    parser.add_argument(
        "--requests",
        type=int,
        default=200,
        help="TTFT: requests per setup, one at a time (default 200)",
    )
    parser.add_argument(
        "--streams",
        nargs="+",
        type=int,
        default=[50, 100, 200, 300, 400, 500],
        help="relay: concurrent streams per step; stops after the first step that misses (default 50 … 500)",
    )
    parser.add_argument(
        "--tok-s", type=float, default=50, help="tokens a second per fake worker (default 50)"
    )
    parser.add_argument(
        "--seconds", type=int, default=10, help="relay: measured seconds per step (default 10)"
    )
    parser.add_argument(
        "--ramp",
        type=float,
        default=5,
        help="relay: seconds over which a step's streams start (default 5)",
    )
    parser.add_argument(
        "--room-size", type=int, default=50, help="relay: workers per room (default 50)"
    )
    parser.add_argument(
        "--server-cpu", default="0", help="core the servers are pinned to (default 0)"
    )
    parser.add_argument(
        "--loadgen-cpu", default="1", help="core this process is pinned to (default 1)"
    )
    return parser.parse_args()


def load_average() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def quantile(values: list[float], q: int) -> float:
    return (
        statistics.quantiles(values, n=100, method="inclusive")[q - 1]
        if len(values) > 1
        else values[0]
    )


# --- servers -------------------------------------------------------------------------------------


def reset_postgres(url: str) -> None:
    """An empty schema in the benchmark's own database (created if missing), migrated."""
    launch.reset_postgres(url)
    subprocess.run(
        [launch.cli(), "migrate"],
        env=os.environ | SERVER_ENV | {"DATABASE_URL": url},
        check=True,
        stdout=subprocess.DEVNULL,
    )


@dataclass
class Server:
    process: subprocess.Popen
    url: str
    log: Path

    def cpu_s(self) -> float:
        """CPU seconds (user + system) the server and its worker have used so far."""
        return launch.cpu_seconds(launch.process_tree(self.process.pid))

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_server(workdir: Path, cpu: str, database_url: str, redis_url: str | None) -> Server:
    port = launch.free_port()
    env = os.environ | SERVER_ENV | {"DATABASE_URL": database_url, "PORT": str(port)}
    env.pop("REDIS_URL", None)
    if redis_url:
        env["REDIS_URL"] = redis_url
    log = workdir / f"server-{port}.log"
    process = subprocess.Popen(
        ["taskset", "-c", cpu, launch.cli(), "serve", "--no-migrate", "--workers", "1"],
        env=env,
        cwd=workdir,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    server = Server(process, f"http://127.0.0.1:{port}", log)
    launch.wait_healthy(process, server.url, log)
    return server


def sign_up(url: str) -> str:
    """An account and an API token, made the way a person would; the token."""
    return launch.sign_up(url, f"bench{int(time.time())}", PASSWORD)


async def create_room(http: httpx.AsyncClient, url: str, token: str, name: str) -> str:
    response = await http.post(
        f"{url}/api/rooms", json={"name": name}, headers={"Authorization": f"Bearer {token}"}
    )
    response.raise_for_status()
    return response.json()["slug"]


async def join_all(
    workers: list[FakeWorker], url: str, token: str, rooms: list[str], room_size: int
) -> None:
    gate = asyncio.Semaphore(50)

    async def join(i: int, worker: FakeWorker) -> None:
        async with gate:
            await worker.join(url, token, rooms[i // room_size])

    await asyncio.gather(*(join(i, w) for i, w in enumerate(workers)))


# --- added TTFT ----------------------------------------------------------------------------------


async def ttft(client_url: str, worker_url: str, token: str, args: argparse.Namespace) -> dict:
    """`args.requests` streamed requests one after the other, after ten unmeasured ones."""
    async with httpx.AsyncClient(timeout=60) as http:
        room = await create_room(http, client_url, token, f"ttft {time.time_ns()}")
        worker = FakeWorker(args.tok_s)
        await worker.join(worker_url, token, room)
        await asyncio.sleep(1.5)  # another instance sees the peer once its presence is written
        base = f"{client_url}/api/rooms/{room}/v1"
        added, total = [], []
        try:
            for i in range(10 + args.requests):
                seen = await stream_chat(http, base, token, max_tokens=4)
                if seen.error:
                    sys.exit(f"bench: a TTFT request failed: {seen.error}")
                first = match(seen, [worker])[0]
                if i >= 10:
                    added.append(first.delay * 1000)
                    total.append((first.arrived - seen.started) * 1000)
                # A request sends six events (two statuses, three batches, done): back to back they
                # would pass the socket's rate limit (SOCKET_RATE, 50/s), which drops the excess.
                await asyncio.sleep(PAUSE_S)
        finally:
            await worker.close()
    return {
        "requests": len(added),
        "added_p50_ms": quantile(added, 50),
        "added_p99_ms": quantile(added, 99),
        "added_min_ms": min(added),
        "request_to_first_token_p50_ms": quantile(total, 50),
        "added_ms": added,
    }


def run_ttft(
    args: argparse.Namespace,
    runner: asyncio.Runner,
    database_url: str,
    redis_url: str,
    workdir: Path,
) -> dict:
    results = {}
    reset_postgres(database_url)
    with ExitStack() as stack:
        one = start_server(workdir, args.server_cpu, database_url, None)
        stack.callback(one.stop)
        token = sign_up(one.url)
        results["one_instance"] = runner.run(ttft(one.url, one.url, token, args)) | {
            "load": load_average()
        }
    reset_postgres(database_url)
    with ExitStack() as stack:
        a = start_server(workdir, args.server_cpu, database_url, redis_url)
        stack.callback(a.stop)
        b = start_server(workdir, args.server_cpu, database_url, redis_url)
        stack.callback(b.stop)
        token = sign_up(a.url)
        results["via_redis"] = runner.run(ttft(a.url, b.url, token, args)) | {
            "load": load_average()
        }
    for name, r in results.items():
        print(
            f"added TTFT, {name:12}: p50 {r['added_p50_ms']:.2f} ms  p99 {r['added_p99_ms']:.2f} ms  "
            f"min {r['added_min_ms']:.2f} ms  ({r['requests']} requests; request to first token p50 "
            f"{r['request_to_first_token_p50_ms']:.1f} ms; load {r['load']})",
            flush=True,
        )
    return results


# --- relay cost ----------------------------------------------------------------------------------


async def relay_step(server: Server, token: str, n: int, args: argparse.Namespace) -> dict:
    """N workers, N streams ramped up over `args.ramp` s, then `args.seconds` measured."""
    settle = 2.0
    window_start = args.ramp + settle
    window_end = window_start + args.seconds
    max_tokens = int(args.tok_s * (window_end + 3))
    limits = httpx.Limits(max_connections=n + 10, max_keepalive_connections=n + 10)
    async with httpx.AsyncClient(timeout=120, limits=limits) as http:
        rooms = [
            await create_room(http, server.url, token, f"relay {n} {i} {time.time_ns()}")
            for i in range((n + args.room_size - 1) // args.room_size)
        ]
        workers = [FakeWorker(args.tok_s) for _ in range(n)]
        try:
            await join_all(workers, server.url, token, rooms, args.room_size)
            await asyncio.sleep(1)
            t0 = time.perf_counter()
            samples: dict[str, tuple[float, float, float]] = {}

            async def sample(name: str, at: float) -> None:
                await asyncio.sleep(max(0.0, t0 + at - time.perf_counter()))
                samples[name] = (time.perf_counter(), server.cpu_s(), time.process_time())

            async def one(i: int) -> Stream:
                await asyncio.sleep(max(0.0, t0 + args.ramp * i / n - time.perf_counter()))
                return await stream_chat(
                    http,
                    f"{server.url}/api/rooms/{rooms[i // args.room_size]}/v1",
                    token,
                    max_tokens,
                )

            *streams, _, _ = await asyncio.gather(
                *(one(i) for i in range(n)),
                sample("start", window_start),
                sample("end", window_end),
            )
        finally:
            await asyncio.gather(*(w.close() for w in workers))
    errors = [s.error for s in streams if s.error]
    if errors:
        return {"streams": n, "errors": len(errors), "first_error": errors[0]}
    (w0, cpu0, own0), (w1, cpu1, own1) = samples["start"], samples["end"]
    late = sum(1 for s in streams if not s.arrivals or s.arrivals[0] > w0)
    relayed: list[Relayed] = [r for s in streams for r in match(s, workers) if w0 <= r.arrived < w1]
    tokens = sum(r.tokens for r in relayed)
    delays = [r.delay * 1000 for r in relayed]
    wall = w1 - w0
    return {
        "streams": n,
        "errors": 0,
        "late_starters": late,
        "window_s": wall,
        "batches": len(relayed),
        "tokens": tokens,
        "tokens_per_s": tokens / wall,
        "offered_tokens_per_s": n * args.tok_s,
        "server_cores": (cpu1 - cpu0) / wall,
        "us_per_token": (cpu1 - cpu0) / tokens * 1e6,
        "loadgen_cores": (own1 - own0) / wall,
        "delay_p50_ms": quantile(delays, 50),
        "delay_p99_ms": quantile(delays, 99),
        "delay_max_ms": max(delays),
        "load": load_average(),
    }


def run_relay(
    args: argparse.Namespace, runner: asyncio.Runner, database_url: str, workdir: Path
) -> list[dict]:
    reset_postgres(database_url)
    steps = []
    with ExitStack() as stack:
        server = start_server(workdir, args.server_cpu, database_url, None)
        stack.callback(server.stop)
        token = sign_up(server.url)
        print(
            f"\n{'streams':>7}{'tok/s':>8}{'offered':>9}{'server':>8}{'µs/tok':>8}{'p50 ms':>8}{'p99 ms':>8}"
            f"{'max ms':>8}{'loadgen':>9}  load",
            flush=True,
        )
        for n in args.streams:
            step = runner.run(relay_step(server, token, n, args))
            steps.append(step)
            if step["errors"]:
                print(
                    f"{n:>7}  {step['errors']} streams failed, e.g. {step['first_error']}",
                    flush=True,
                )
                break
            print(
                f"{n:>7}{step['tokens_per_s']:>8.0f}{step['offered_tokens_per_s']:>9.0f}{step['server_cores']:>8.2f}"
                f"{step['us_per_token']:>8.1f}{step['delay_p50_ms']:>8.2f}{step['delay_p99_ms']:>8.2f}"
                f"{step['delay_max_ms']:>8.1f}{step['loadgen_cores']:>9.2f}  {step['load']}"
                + (
                    f"  ({step['late_starters']} streams started late)"
                    if step["late_starters"]
                    else ""
                ),
                flush=True,
            )
            if step["delay_p99_ms"] > TARGETS["delay_p99_ms"]:
                break
    print(
        "server / loadgen: cores used in the measured window; p50/p99/max: delay the relay added to a batch"
    )
    return steps


def main() -> None:
    args = parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # `finally` still stops the servers
    os.sched_setaffinity(0, {int(c) for c in args.loadgen_cpu.split(",")})
    database_url = os.environ.get("BENCH_DATABASE_URL", DEFAULT_DATABASE_URL)
    redis_url = os.environ.get("BENCH_REDIS_URL", DEFAULT_REDIS_URL)
    RESULTS.mkdir(parents=True, exist_ok=True)
    print(
        f"servers on core {args.server_cpu}, load generator on core {args.loadgen_cpu}; load average {load_average()}"
    )
    results: dict = {"args": vars(args), "started_load": load_average()}
    with (
        tempfile.TemporaryDirectory(prefix="bench-gateway-") as tmp,
        asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner,
    ):
        if "ttft" in args.phases:
            results["ttft"] = run_ttft(args, runner, database_url, redis_url, Path(tmp))
        if "relay" in args.phases:
            results["relay"] = run_relay(args, runner, database_url, Path(tmp))
    results["ended_load"] = load_average()
    path = RESULTS / f"gateway-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    path.write_text(json.dumps(results, indent=2))
    print(
        f"\nraw results: {path.relative_to(ROOT)}; load average at the end {results['ended_load']}"
    )
    verdict(results)


def verdict(results: dict) -> None:
    lines = []
    if ttft := results.get("ttft"):
        one, redis = ttft["one_instance"]["added_p50_ms"], ttft["via_redis"]["added_p50_ms"]
        lines.append(
            f"added TTFT p50, one instance {one:.2f} ms (target ≤ {TARGETS['ttft_one_p50_ms']:.0f}): "
            + ("met" if one <= TARGETS["ttft_one_p50_ms"] else "MISSED")
        )
        lines.append(
            f"added TTFT p50, via Redis {redis:.2f} ms (target ≤ {TARGETS['ttft_redis_p50_ms']:.0f}): "
            + ("met" if redis <= TARGETS["ttft_redis_p50_ms"] else "MISSED")
        )
    if steps := [s for s in results.get("relay", []) if not s["errors"]]:
        cost = statistics.median(s["us_per_token"] for s in steps)
        held = max(
            (s["streams"] for s in steps if s["delay_p99_ms"] <= TARGETS["delay_p99_ms"]), default=0
        )
        lines.append(
            f"server CPU per relayed token, median over steps {cost:.1f} µs (target ≤ "
            f"{TARGETS['us_per_token']:.0f}): "
            + ("met" if cost <= TARGETS["us_per_token"] else "MISSED")
        )
        lines.append(
            f"most streams held on one core with p99 added delay ≤ {TARGETS['delay_p99_ms']:.0f} ms: {held} "
            f"(target ≥ {TARGETS['streams_per_core']}): "
            + ("met" if held >= TARGETS["streams_per_core"] else "MISSED")
        )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
