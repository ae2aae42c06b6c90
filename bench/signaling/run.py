"""Signaling benchmark: drive our server, a bare python-socketio server and the Node reference with
the same load generator, one after the other, and print each figure with the ratio ours/Node.

    cd bench/signaling && npm ci && cd ../.. && uv run python bench/signaling/run.py

Each server runs pinned to one core (--server-cpu), the Node load generator on another; docs/benchmarks.md
("Signaling") explains the phases and the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

sys.path.append(str(Path(__file__).resolve().parents[1]))  # bench/launch.py; after the stdlib
import launch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
RESULTS = ROOT / "bench" / "results"


def rss_kib(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        if match := re.search(r"VmRSS:\s+(\d+) kB", status):
            total += int(match.group(1))
    return total


@dataclass
class Server:
    name: str
    process: subprocess.Popen
    url: str
    token: str = ""
    workdir: Path | None = None
    pids: list[int] = field(default_factory=list)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
        if self.workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)


def wait_listening(port: int, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited:\n{log.read_text()[-3000:]}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError(f"server did not listen:\n{log.read_text()[-3000:]}")


def is_ours(name: str) -> bool:
    return name == "ours" or name.startswith("ours@")


def start(name: str, cpu: str, sources: dict[str, str], database_url: str | None = None) -> Server:
    port = launch.free_port()
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
    log = workdir / "server.log"
    pin = ["taskset", "-c", cpu]
    env = os.environ | {"PYTHONUNBUFFERED": "1"}
    if is_ours(name):
        if database_url:
            launch.reset_postgres(database_url)
        if name in sources:  # another checkout of this project, e.g. an earlier commit
            env["PYTHONPATH"] = str(Path(sources[name]) / "src")
        env |= {
            "DATABASE_URL": database_url or f"sqlite:///{workdir / 'bench.sqlite'}",
            "SECRET_KEY": "benchmark",
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "ICE_SERVERS": "[]",
            # The relay phase measures throughput, so the per-connection limit must not cap it;
            # the token bucket still runs on every event.
            "SOCKET_RATE": "1000000",
            "SOCKET_BURST": "1000000",
        }
        cmd = [sys.executable, "-c", "from mesh_nanollm.cli import main; main()"]
    elif name == "bare":
        cmd = [sys.executable, "-m", "granian", "--interface", "asgi", "--host", "127.0.0.1", "--port", str(port),
               "--no-log", "bare_server:app"]
    elif name == "node":
        cmd = ["node", "node_server.mjs", str(port)]
    else:
        raise ValueError(name)
    process = subprocess.Popen(pin + cmd, cwd=workdir if is_ours(name) else HERE, env=env,
                               stdout=log.open("w"), stderr=subprocess.STDOUT)
    server = Server(name, process, f"http://127.0.0.1:{port}", workdir=workdir)
    try:
        wait_listening(port, process, log)
        if is_ours(name):
            server.token = launch.sign_up(server.url, "bench", "benchmark password")
    except Exception:
        server.stop()
        raise
    time.sleep(1)
    server.pids = launch.process_tree(process.pid)
    return server


def room_for(server: Server, peers: int) -> str:
    if not is_ours(server.name):
        return f"bench-{peers}"
    response = httpx.post(f"{server.url}/api/rooms", json={"name": f"bench {peers}"},
                          headers={"Authorization": f"Bearer {server.token}"}, timeout=30)
    response.raise_for_status()
    return response.json()["slug"]


def run_one(server: Server, peers: int, args: argparse.Namespace) -> dict[str, float]:
    config = {
        "url": server.url, "peers": peers, "room": room_for(server, peers), "token": server.token,
        "relaySeconds": args.relay_seconds, "fanoutSeconds": args.fanout_seconds, "latencySeconds": args.latency_seconds,
        "statusEveryMs": args.status_every_ms,
    }
    before = rss_kib(server.pids)
    samples: dict[str, float] = {}
    profiler = None
    gen = subprocess.Popen(["taskset", "-c", args.loadgen_cpu, "node", "loadgen.mjs", json.dumps(config)],
                           cwd=HERE, stdout=subprocess.PIPE, text=True)
    result: dict[str, float] = {}
    assert gen.stdout is not None
    for line in gen.stdout:
        line = line.strip()
        if line.startswith("PHASE "):
            phase = line.split()[1]
            samples[f"cpu_{phase}"] = launch.cpu_seconds(server.pids)
            samples[f"t_{phase}"] = time.monotonic()
            if phase == "connected":
                samples["rss_connected"] = rss_kib(server.pids)
            if phase == f"{args.profile_phase}_start" and args.profile and server.name == args.profile:
                worker = server.pids[-1]
                out = RESULTS / f"profile-{server.name}-{peers}-{args.profile_phase}.txt"
                # The relay phase has a known length; the connect phase ends when every peer joined.
                duration = ["--duration", str(args.relay_seconds)] if args.profile_phase == "relay" else []
                profiler = subprocess.Popen(
                    ["uvx", "py-spy", "record", "--pid", str(worker), *duration,
                     "--nonblocking", "--gil", "--format", "raw", "--rate", "250", "--output", str(out)],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            if phase == "connected" and profiler is not None and args.profile_phase == "connect":
                profiler.send_signal(signal.SIGINT)
        elif line.startswith("RESULT "):
            result = json.loads(line[7:])
    if gen.wait() != 0 or not result:
        raise RuntimeError(f"load generator failed against {server.name} with {peers} peers")
    if profiler is not None:
        profiler.wait()

    def busy(start: str, end: str) -> float:
        return (samples[f"cpu_{end}"] - samples[f"cpu_{start}"]) / (samples[f"t_{end}"] - samples[f"t_{start}"])

    result["server_rss_before_kib"] = before
    result["server_rss_connected_kib"] = samples["rss_connected"]
    result["server_kib_per_peer"] = (samples["rss_connected"] - before) / peers
    result["server_cpu_relay"] = busy("relay_start", "relay_end")
    result["server_cpu_fanout"] = busy("fanout_start", "fanout_end")
    result["server_cpu_latency"] = busy("latency_start", "latency_end")
    # Per core-second of server CPU: the figure that survives other load on a shared machine.
    result["relay_msgs_per_cpu_s"] = result["relay_msgs_per_s"] / max(result["server_cpu_relay"], 1e-6)
    return result


ROWS = [
    ("connect_wall_ms", "connect+join, all peers (ms)", "{:.0f}"),
    ("connect_p50_ms", "connect+join p50 (ms)", "{:.1f}"),
    ("connect_p99_ms", "connect+join p99 (ms)", "{:.1f}"),
    ("relay_msgs_per_s", "relayed msgs/s", "{:.0f}"),
    ("relay_rtt_p50_ms", "round trip p50 at saturation (ms)", "{:.2f}"),
    ("relay_rtt_p99_ms", "round trip p99 at saturation (ms)", "{:.2f}"),
    ("server_cpu_relay", "server CPU in relay (cores)", "{:.2f}"),
    ("relay_msgs_per_cpu_s", "relayed msgs per server CPU-second", "{:.0f}"),
    ("loadgen_cpu_relay", "load generator CPU in relay (cores)", "{:.2f}"),
    ("latency_rtt_p50_ms", "round trip p50 at 4000 relayed msgs/s (ms)", "{:.2f}"),
    ("latency_rtt_p99_ms", "round trip p99 at 4000 relayed msgs/s (ms)", "{:.2f}"),
    ("server_cpu_latency", "server CPU at 4000 relayed msgs/s (cores)", "{:.2f}"),
    ("fanout_msgs_per_s", "presence msgs delivered/s", "{:.0f}"),
    ("fanout_deliveries_per_s", "fan-out deliveries/s (status entries)", "{:.0f}"),
    ("presence_delay_p50_ms", "status to peers p50 (ms)", "{:.0f}"),
    ("presence_delay_p99_ms", "status to peers p99 (ms)", "{:.0f}"),
    ("state_delay_p50_ms", "state change to peers p50 (ms)", "{:.0f}"),
    ("state_delay_p99_ms", "state change to peers p99 (ms)", "{:.0f}"),
    ("server_cpu_fanout", "server CPU in fan-out (cores)", "{:.2f}"),
    ("server_rss_connected_kib", "server RSS, peers connected (MiB)", "{:.1f}"),
    ("server_kib_per_peer", "server RSS per peer (KiB)", "{:.1f}"),
]


def show(results: dict[str, dict[int, dict[str, float]]], servers: list[str], counts: list[int]) -> str:
    """One markdown table per size; a ratio column against Node for each build of ours."""
    ratios = [s for s in servers if is_ours(s)] if "node" in servers else []
    lines = []
    for n in counts:
        head = f"| {n} peers | " + " | ".join(servers) + " |" + "".join(f" {s}/node |" for s in ratios)
        lines += ["", head, "|" + "---|" * (head.count("|") - 1)]
        for key, label, fmt in ROWS:
            cells = []
            for s in servers:
                value = results[s][n].get(key)
                if key == "server_rss_connected_kib" and value is not None:
                    value /= 1024
                cells.append(fmt.format(value) if value is not None else "–")
            for s in ratios:
                a, b = results[s][n].get(key), results["node"][n].get(key)
                cells.append(f"{a / b:.2f}×" if a is not None and b else "–")
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        errors = {s: results[s][n].get("errors") for s in servers if results[s][n].get("errors")}
        if errors:
            lines.append(f"\nerrors seen by the load generator: {errors}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--servers", nargs="+", default=["ours", "bare", "node"],
                        help="ours, bare, node, or ours@LABEL for a checkout given with --source")
    parser.add_argument("--source", action="append", default=[], metavar="LABEL=DIR",
                        help="run ours@LABEL from the project checked out in DIR (its src/ first on PYTHONPATH)")
    parser.add_argument("--peers", nargs="+", type=int, default=[2, 50, 500])
    parser.add_argument("--relay-seconds", type=int, default=10)
    parser.add_argument("--latency-seconds", type=int, default=8)
    parser.add_argument("--fanout-seconds", type=int, default=10)
    parser.add_argument("--status-every-ms", type=int, default=2000)
    parser.add_argument("--server-cpu", default="0")
    parser.add_argument("--loadgen-cpu", default="1")
    parser.add_argument("--profile", metavar="SERVER", help="py-spy (through uvx) one phase of this server")
    parser.add_argument("--profile-phase", choices=["relay", "connect"], default="relay",
                        help="the phase --profile records: the relay (default) or connect + join")
    parser.add_argument("--database-url", help="run ours on this Postgres database (wiped at each start) "
                        "instead of a fresh SQLite file, e.g. postgres://postgres@127.0.0.1:5432/bench_signaling")
    parser.add_argument("--repeat", type=int, default=1, help="runs per server and size; the table shows medians")
    parser.add_argument("--label", default="run", help="name of the JSON file written to bench/results/")
    args = parser.parse_args()
    # A SIGTERM (e.g. from `timeout`) must still stop the servers: the `finally` blocks run on exit.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if not (HERE / "node_modules").is_dir():
        sys.exit("run `npm ci` in bench/signaling first")
    RESULTS.mkdir(parents=True, exist_ok=True)

    sources = {f"ours@{label}": path for label, _, path in (item.partition("=") for item in args.source)}
    runs: dict[str, dict[int, list[dict[str, float]]]] = {name: {n: [] for n in args.peers} for name in args.servers}
    # Rounds interleave the servers, so slow spells on a shared machine hit all of them alike.
    for _ in range(args.repeat):
        for peers in args.peers:
            for name in args.servers:
                server = start(name, args.server_cpu, sources, args.database_url)
                try:
                    runs[name][peers].append(run_one(server, peers, args))
                finally:
                    server.stop()
                print(f"{name:5} {peers:4} peers: {json.dumps(runs[name][peers][-1])}", file=sys.stderr, flush=True)
    (RESULTS / f"signaling-{args.label}.json").write_text(json.dumps(runs, indent=2))
    results = {name: {n: median(runs[name][n]) for n in args.peers} for name in args.servers}
    print(show(results, args.servers, args.peers))


def median(samples: list[dict[str, float]]) -> dict[str, float]:
    merged: dict[str, float] = {}
    for key, value in samples[0].items():
        values = [s[key] for s in samples if isinstance(s.get(key), (int, float))]
        merged[key] = statistics.median(values) if values else value
    return merged


if __name__ == "__main__":
    main()
