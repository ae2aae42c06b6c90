"""What Granian itself holds per websocket: a bare ASGI app that accepts websockets and waits, with
N idle connections from Node, RSS before and after. Options after `--` go to Granian.

    uv run python bench/signaling/granian_ws.py --peers 500
    uv run python bench/signaling/granian_ws.py --peers 500 -- --http1-buffer-size 8192
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from run import free_port, rss_kib, tree, wait_listening

HOLD = """
const WebSocket = require("ws");
const [url, n] = [process.argv[1], Number(process.argv[2])];
let open = 0;
for (let i = 0; i < n; i++) {
  const ws = new WebSocket(url, { perMessageDeflate: false });
  ws.on("open", () => { if (++open === n) console.log("open"); });
  ws.on("error", (e) => { console.error(e.message); process.exit(1); });
}
process.stdin.on("end", () => process.exit(0)).resume();
"""


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Accept a websocket and wait for it to close; nothing else."""
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        while (await receive())["type"] != "websocket.disconnect":
            pass
    elif scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peers", type=int, default=500)
    parser.add_argument("granian", nargs="*", help="extra Granian options")
    args = parser.parse_args()
    port = free_port()
    log = Path("/tmp") / f"granian-ws-{port}.log"
    server = subprocess.Popen(
        [sys.executable, "-m", "granian", "--interface", "asgi", "--port", str(port), "--no-log", *args.granian,
         "granian_ws:app"], cwd=HERE, stdout=log.open("w"), stderr=subprocess.STDOUT)
    try:
        wait_listening(port, server, log)
        time.sleep(1)
        pids = tree(server.pid)
        before = rss_kib(pids)
        holder = subprocess.Popen(["node", "-e", HOLD, f"ws://127.0.0.1:{port}/", str(args.peers)], cwd=HERE,
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert holder.stdout is not None
        if holder.stdout.readline().strip() != "open":
            raise RuntimeError("connections failed")
        time.sleep(2)
        after = rss_kib(pids)
        holder.communicate("")
    finally:
        server.terminate()
        server.wait(10)
    extra = " ".join(args.granian) or "defaults"
    print(f"Granian ({extra}), {args.peers} idle websockets: {(after - before) / args.peers:.1f} KiB per connection "
          f"(RSS {before / 1024:.1f} → {after / 1024:.1f} MiB)")


if __name__ == "__main__":
    main()
