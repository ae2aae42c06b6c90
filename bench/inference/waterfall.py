"""Where one open of a page spends its time until the model is ready: the resource timing of the
page and of its inference worker (on the page's clock), beside the page's "model ready" mark, for
the room page and the bare page, on an empty profile and again in a new tab (warm).

    uv run python bench/inference/waterfall.py              # --opens 1; --help

Each request: when it was asked for, when its first byte came and its last, its transfer size (0
from the HTTP cache, 300 or so for a revalidation). The worker's own start is the row "worker"; its script's request, "inference-worker.js".
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from playwright.async_api import Page, Request, async_playwright
from run import READY_MARK, Pages, serve, sign_up

# The page's resource entries and marks, on its own clock (ms since navigation started).
PAGE_ENTRIES = """() => [
  ...performance.getEntriesByType("resource").map((e) => ({
    name: e.name, start: e.startTime, first_byte: e.responseStart, end: e.responseEnd, bytes: e.transferSize })),
  ...performance.getEntriesByType("mark").map((e) => ({ name: e.name, start: e.startTime })),
  { name: "document", start: 0, end: performance.getEntriesByType("navigation")[0].responseEnd },
]"""
# A worker's resource entries, with its time origin to put them on the page's clock.
WORKER_ENTRIES = """() => ({ origin: performance.timeOrigin, entries: performance.getEntriesByType("resource").map((e) => ({
  name: e.name, start: e.startTime, first_byte: e.responseStart, end: e.responseEnd, bytes: e.transferSize })) })"""


async def entries(page: Page, scripts: list[Request]) -> list[dict[str, Any]]:
    rows = await page.evaluate(PAGE_ENTRIES)
    origin = await page.evaluate("performance.timeOrigin")
    # Worker scripts are in neither timeline: Playwright's timing of their requests (epoch ms).
    for request in scripts:
        timing = request.timing
        start = timing["startTime"] - origin
        rows.append({"name": request.url, "start": start, "first_byte": start + timing["responseStart"],
                     "end": start + timing["responseEnd"], "bytes": "script"})
    for worker in page.workers:
        if not worker.url.endswith(("inference-worker.js", "bare-worker.js")):
            continue  # ONNX Runtime's own thread workers
        found = await worker.evaluate(WORKER_ENTRIES)
        shift = found["origin"] - origin
        rows.append({"name": "worker", "start": shift, "end": shift})
        for row in found["entries"]:
            rows.append(row | {key: row[key] + shift for key in ("start", "first_byte", "end") if row[key]} | {"worker": True})
    return sorted(rows, key=lambda row: row["start"])


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| what | asked ms | first byte ms | done ms | bytes |", "| --- | ---: | ---: | ---: | ---: |"]
    for row in rows:
        name = urlsplit(row["name"]).path.rsplit("/", 1)[-1] or row["name"]
        name = ("(worker) " if row.get("worker") else "") + name
        cells = [f"{row[key]:.0f}" if row.get(key) else "" for key in ("start", "first_byte", "end")]
        lines.append(f"| {name} | {' | '.join(cells)} | {row.get('bytes', '')} |")
    return "\n".join(lines)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--opens", type=int, default=1, help="empty-then-warm opens per page")
    parser.add_argument("--threads", type=int, default=1, help="WASM threads")
    parser.add_argument("--edge", action="store_true", help="through a TLS edge speaking HTTP/2 (run.py --edge)")
    args = parser.parse_args()
    print(f"load average at the start: {os.getloadavg()}")
    with tempfile.TemporaryDirectory(prefix="mesh-bench-waterfall-") as tmp, serve(Path(tmp), args.edge) as served:
        session, rooms = await sign_up(served.app_url)
        pages = Pages(served.base_url, served.bare_url, session, rooms, args.threads, served.chromium_args)
        async with async_playwright() as playwright:
            for _ in range(args.opens):
                for kind in READY_MARK:
                    with tempfile.TemporaryDirectory(prefix="mesh-bench-profile-") as folder:
                        context = await pages.new_profile(playwright, Path(folder))
                        for cache in ("empty", "warm"):
                            page = await context.new_page()
                            scripts: list[Request] = []
                            page.on("requestfinished", lambda r, s=scripts: r.url.endswith("worker.js") and s.append(r))
                            ready = await pages.open(page, kind)
                            rows = await entries(page, scripts)
                            print(f"\n### {kind}, {cache}: model ready at {ready:.0f} ms\n\n{table(rows)}")
                            await asyncio.sleep(5)  # the first visit's cache writes
                            await page.close()
                        await context.close()
    print(f"\nload average at the end: {os.getloadavg()}")


if __name__ == "__main__":
    asyncio.run(main())
