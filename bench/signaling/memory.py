"""Where a connected peer's memory goes, per peer.

    uv run python bench/signaling/memory.py --peers 250            # RSS, ours and bare
    uv run python bench/signaling/memory.py --peers 500 --trace    # Python allocations, ours

Without --trace: each server (as run.py starts it) gets N idle peers, then N more; the RSS grown by
the second batch, divided by N, is what one more peer costs once pools, arenas and caches have
grown (the first batch's figure includes those). With --trace: our ASGI app on Granian embedded
in this process under tracemalloc; the snapshot diff across N peers, split into what was
allocated under our code and everything else.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import tempfile
import tracemalloc
from collections import Counter
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.append(str(HERE.parent))  # bench/launch.py; after the stdlib

from launch import free_port
from run import room_for, start
from run import rss_kib as tree_rss_kib


def rss_kib() -> int:
    return int(re.search(r"VmRSS:\s+(\d+)", Path("/proc/self/status").read_text()).group(1))


async def hold(url: str, token: str, room: str, peers: int, seconds: int, connected: asyncio.Event) -> None:
    config = {"url": url, "token": token, "room": room, "peers": peers, "holdSeconds": seconds, "settleMs": 1500}
    gen = await asyncio.create_subprocess_exec(
        "node", "loadgen.mjs", json.dumps(config), cwd=HERE, stdout=asyncio.subprocess.PIPE
    )
    assert gen.stdout is not None
    try:
        async for line in gen.stdout:
            if line.startswith(b"PHASE connected"):
                connected.set()
        if await gen.wait() != 0:
            raise RuntimeError("load generator failed")
    finally:
        if gen.returncode is None:
            gen.kill()
            await gen.wait()


async def batches(name: str, peers: int) -> None:
    server = start(name, "0", {})
    try:
        room = room_for(server, peers)
        before = tree_rss_kib(server.pids)
        sizes = []
        holders = []
        for _ in range(2):
            connected = asyncio.Event()
            holders.append(asyncio.create_task(hold(server.url, server.token, room, peers, 600, connected)))
            await connected.wait()
            await asyncio.sleep(3)
            sizes.append(tree_rss_kib(server.pids))
        for holder in holders:
            holder.cancel()
        await asyncio.gather(*holders, return_exceptions=True)
    finally:
        server.stop()
    first, second = (sizes[0] - before) / peers, (sizes[1] - sizes[0]) / peers
    print(f"{name:5} RSS per peer: first {peers}: {first:6.1f} KiB, next {peers}: {second:6.1f} KiB "
          f"({before / 1024:.0f} → {sizes[0] / 1024:.0f} → {sizes[1] / 1024:.0f} MiB)")


async def main(peers: int, frames: int) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="bench-memory-"))
    os.environ |= {
        "DATABASE_URL": f"sqlite:///{workdir / 'memory.sqlite'}",
        "SECRET_KEY": "benchmark",
        "ICE_SERVERS": "[]",
        "SOCKET_RATE": "1000000",
        "SOCKET_BURST": "1000000",
    }
    from granian.constants import Interfaces
    from granian.server.embed import Server

    from mesh_nanollm import db
    from mesh_nanollm.app import create_asgi
    from mesh_nanollm.settings import load_settings

    db.bind(load_settings().database_url)
    await db.migrate()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = Server(create_asgi(), address="127.0.0.1", port=port, interface=Interfaces.ASGI, log_enabled=False)
    serving = asyncio.create_task(server.serve())
    async with httpx.AsyncClient(base_url=url, follow_redirects=True, timeout=30) as http:
        for _ in range(100):
            try:
                await http.get("/login")
                break
            except httpx.HTTPError:
                await asyncio.sleep(0.1)
        csrf = http.cookies["csrftoken"]
        await http.post("/register", data={"username": "memory", "password": "benchmark pw", "confirm": "benchmark pw", "_csrf_token": csrf})
        page = (await http.post("/settings/tokens", data={"name": "memory", "_csrf_token": csrf})).text
        token = re.search(r'data-testid="new-token">([^<]+)<', page).group(1)
        room = (await http.post("/api/rooms", json={"name": "memory"}, headers={"Authorization": f"Bearer {token}"})).json()["slug"]

    # Warm up (imports, pools, caches) with a few peers that come and go.
    warm = asyncio.Event()
    await hold(url, token, room, 10, 1, warm)
    await asyncio.sleep(2)

    tracemalloc.start(frames)
    before, rss_before = tracemalloc.take_snapshot(), rss_kib()
    connected = asyncio.Event()
    holder = asyncio.create_task(hold(url, token, room, peers, 20, connected))
    await connected.wait()
    await asyncio.sleep(1.5)  # at least one presence flush
    after, rss_after = tracemalloc.take_snapshot(), rss_kib()
    await holder
    tracemalloc.stop()
    await server.shutdown()
    serving.cancel()

    ours: Counter[str] = Counter()
    total = 0
    for stat in after.compare_to(before, "traceback"):
        total += stat.size_diff
        mine = [f for f in stat.traceback if "mesh_nanollm" in f.filename]
        if mine:
            # Charged to the innermost frame of our code that led to the allocation.
            ours[f"{Path(mine[-1].filename).name}:{mine[-1].lineno}"] += stat.size_diff
    print(f"{peers} peers connected and joined, idle")
    print(f"  process RSS:                 {(rss_after - rss_before) / peers:7.1f} KiB per peer")
    print(f"  all Python allocations:      {total / 1024 / peers:7.1f} KiB per peer")
    print(f"  allocations under our code:  {sum(ours.values()) / 1024 / peers:7.1f} KiB per peer")
    for where, size in ours.most_common(12):
        print(f"    {size / 1024 / peers:6.2f} KiB  {where}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peers", type=int, default=500)
    parser.add_argument("--servers", nargs="+", default=["ours", "bare"])
    parser.add_argument("--trace", action="store_true", help="trace our app's Python allocations instead")
    parser.add_argument("--frames", type=int, default=16, help="traceback depth tracemalloc keeps")
    args = parser.parse_args()
    if not (HERE / "node_modules").is_dir():
        sys.exit("run `npm ci` in bench/signaling first")
    if args.trace:
        asyncio.run(main(args.peers, args.frames))
    else:
        for name in args.servers:
            asyncio.run(batches(name, args.peers))
