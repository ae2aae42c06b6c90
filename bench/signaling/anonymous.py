"""What hostile clients leave behind: RSS after N websockets that never sign in are opened and
closed, and after signed-in sockets send every kind of malformed frame (binary attachments of
250 KiB included); tracebacks in the server's log.

    uv run python bench/signaling/anonymous.py --peers 500
    _RJEM_MALLOC_CONF=dirty_decay_ms:0,muzzy_decay_ms:0 uv run python bench/signaling/anonymous.py

The second form returns Granian's freed websocket buffers to the OS at once (docs/realtime.md).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

import aiohttp

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from run import rss_kib, start

# Each is sent on its own signed-in socket: engine.io garbage (closes the socket), broken
# Socket.IO packets, a binary event announcing 99,999 attachments and then its attachments.
MALFORMED = ["", "9", "x", "0{}", "6", "4", "4{", "42[", '40{"token":1', "43999[]", "41", "4-",
             '4599999-["status",{"_placeholder":true,"num":0}]', '461-[{"_placeholder":true,"num":0}]']
ATTACHMENT = b"\x00" * 250 * 1024


async def hold(url: str, headers: dict[str, str], frames: list[str | bytes], opened: list[int],
               release: asyncio.Event) -> None:
    async with aiohttp.ClientSession(headers=headers) as http, http.ws_connect(url) as ws:
        await ws.receive_str()
        if headers:
            await ws.send_str("40")
        for frame in frames:
            await (ws.send_bytes(frame) if isinstance(frame, bytes) else ws.send_str(frame))
        opened.append(1)

        async def pong() -> None:
            async for message in ws:
                if message.type == aiohttp.WSMsgType.TEXT and message.data == "2":
                    await ws.send_str("3")

        answering = asyncio.create_task(pong())
        await release.wait()
        answering.cancel()


async def wave(server, clients: list[tuple[dict[str, str], list[str | bytes]]], hold_s: float) -> int:
    """Open every client, hold them `hold_s`, close them; returns the peak RSS."""
    url = server.url.replace("http", "ws") + "/socket.io/?EIO=4&transport=websocket"
    opened: list[int] = []
    release = asyncio.Event()
    tasks = [asyncio.create_task(hold(url, headers, frames, opened, release)) for headers, frames in clients]
    while len(opened) < len(clients) and not all(t.done() for t in tasks):
        await asyncio.sleep(0.1)
    await asyncio.sleep(hold_s)
    peak = rss_kib(server.pids)
    release.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.sleep(3)
    return peak


async def main(args: argparse.Namespace) -> None:
    server = start("ours", args.cpu, {})
    try:
        mib = lambda kib: f"{kib / 1024:.1f} MiB"
        start_rss = rss_kib(server.pids)
        print(f"start: {mib(start_rss)}")
        for n in range(args.rounds):
            peak = await wave(server, [({}, []) for _ in range(args.peers)], args.hold)
            after = rss_kib(server.pids)
            print(f"{args.peers} unauthenticated sockets, round {n + 1}: peak {mib(peak)}, after close "
                  f"{mib(after)} ({(after - start_rss) / 1024:+.1f} MiB)")
        signed_in = {"Authorization": f"Bearer {server.token}"}
        clients = [(signed_in, [frame]) for frame in MALFORMED]
        clients.append((signed_in, ['4599999-["status",{"_placeholder":true,"num":0}]', *[ATTACHMENT] * args.attachments]))
        before = rss_kib(server.pids)
        peak = await wave(server, clients, args.hold)
        after = rss_kib(server.pids)
        tried = len(MALFORMED) + 1 + args.attachments
        log = (server.workdir / "server.log").read_text(errors="replace")
        print(f"{tried} malformed frames ({args.attachments} binary attachments of 250 KiB): peak {mib(peak)}, "
              f"after close {mib(after)} ({(after - before) / 1024:+.1f} MiB); tracebacks in the log: "
              f"{log.count('Traceback')}")
    finally:
        server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peers", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--hold", type=float, default=3, help="seconds the sockets stay open")
    parser.add_argument("--attachments", type=int, default=400)
    parser.add_argument("--cpu", default="0", help="the CPU the server is pinned to (taskset)")
    asyncio.run(main(parser.parse_args()))
