"""Inference benchmark: the room page (worker + UI + job recording) against bare.html (transformers.js
called directly on the main thread), in one headless Chromium, same model, prompt and WASM thread
count; bare.js in a worker of its own shows what being in a worker costs by itself.

    uv run python bench/inference/run.py                # threads 1 and 2, results in bench/results/
    uv run python bench/inference/run.py --threads 1 --rounds 3 --cold 1

Measures tokens/s and time to first token on a warm model, and "model ready" time from opening the
page with an empty and with a warm browser cache. Method and latest figures: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from playwright.async_api import Browser, BrowserContext, Page, Playwright, async_playwright

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.append(str(ROOT / "bench"))  # launch.py
from bare_server import ISOLATION, BareServer
from conftest import CHROMIUM, CHROMIUM_ARGS, free_port, start_server
from edge import Edge
from launch import cpu_by_kind, cpu_used

from mesh_nanollm.vendor import load_vendor_manifest

MODEL, DTYPE = "tiny-gpt2", "q8"
PROMPT = "You may"
RESULTS_DIR = ROOT / "bench" / "results"
READY_MARK = {"ours": "mesh:model-ready", "bare": "bare:model-ready"}
# Opened for "model ready": the room page, its reference (bare), and bare.js in a worker of its own,
# which shows how much of ours over bare is the worker itself (the room page must run one).
OPEN_KINDS = ("ours", "bare", "bare-worker")
# For the breakdown only: the room page with its jobs API calls answered inside the page, which
# shows what recording (browser network work plus the server on these same cores) costs a run.
UNRECORDED = """(() => {
  const fetch = window.fetch;
  let n = 0;
  window.fetch = (url, init) => String(url).startsWith("/api/jobs")
    ? Promise.resolve(Response.json({ id: `unrecorded-${n++}` }))
    : fetch(url, init);
})()"""
# For the breakdown only: the room page with job-trace.js answered by a version that records nothing
# (the same speed rule, no events, no token buckets), which shows what tracing costs a run.
UNTRACED = """import { JOB_LIMITS } from "/static/js/protocol.js";
export function honestTokS(decodeMs, decodeTokens) {
  if (decodeMs < JOB_LIMITS.speed_min_decode_ms || decodeTokens < JOB_LIMITS.speed_min_decode_tokens) return null;
  return (decodeTokens * 1000) / decodeMs;
}
export class JobTrace {
  events = [];
  add() {}
  tokens() {}
  at() { return 0; }
  toJSON() { return { events: [{ t: 0, kind: "created" }] }; }
}
"""
RATIO_TARGET, TTFT_BUDGET_MS = 0.97, 10.0
STEADY_KINDS = ("ours", "ours-unrecorded", "ours-untraced", "bare", "bare-worker")
# Runs the room page's form and resolves once the run is recorded (the metrics line links its job).
RUN_IN_PAGE = """async () => {
  const metrics = document.querySelector("#metrics");
  const previous = metrics.querySelector("a")?.dataset.jobId;
  const recorded = new Promise((resolve) => new MutationObserver((_, observer) => {
    const id = metrics.querySelector("a")?.dataset.jobId;
    if (id && id !== previous) {
      observer.disconnect();
      resolve();
    }
  }).observe(metrics, { childList: true, subtree: true }));
  document.querySelector("#prompt-form").requestSubmit();
  await recorded;
  const m = metrics.dataset;
  return { ttft_ms: Number(m.ttftMs), tok_s: Number(m.tokS), tokens: Number(m.tokens),
           text: document.querySelector("#output").textContent, job_id: metrics.querySelector("a").dataset.jobId };
}"""


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="WASM thread counts to compare")
    parser.add_argument("--rounds", type=int, default=9, help="measured generations per page and thread count")
    parser.add_argument("--tokens", type=int, default=200, help="new tokens per generation (model context: 256)")
    parser.add_argument("--cold", type=int, default=3, help="cold and warm-cache page opens per page")
    parser.add_argument("--settle", type=float, default=5, help="seconds between the empty-cache and the warm open")
    parser.add_argument("--opens-only", action="store_true", help="measure model-ready times only, no generations")
    parser.add_argument("--server-priority", choices=["low", "same"], default="low",
                        help="low: renice the app server and the bare page's to 19, standing in for servers on another machine")
    parser.add_argument("--edge", action="store_true",
                        help="serve both pages through a TLS edge speaking HTTP/2, as fly.io's proxy does (needs nginx)")
    return parser.parse_args()


async def sign_up(base_url: str) -> tuple[str, dict[str, str]]:
    """A fresh account's session cookie, registered the way the browser does it, and a private room
    of its own for each kind of room page: two of our pages in one room would link up and answer
    each other's status changes, which is the mesh benchmark's business, not this one's."""
    async with httpx.AsyncClient(base_url=base_url, follow_redirects=True, timeout=30) as http:
        await http.get("/register")
        password = "bench password"
        form = {"username": f"bench-{uuid.uuid4().hex[:8]}", "password": password, "confirm": password,
                "_csrf_token": http.cookies["csrftoken"]}
        response = await http.post("/register", data=form)
        assert response.url.path == "/rooms", response.text[:300]
        rooms = {}
        for kind in ("ours", "ours-unrecorded", "ours-untraced"):
            created = await http.post("/api/rooms", json={"name": f"bench {kind}", "private": True},
                                      headers={"x-csrftoken": http.cookies["csrftoken"]})
            assert created.is_success, created.text[:300]
            rooms[kind] = created.json()["slug"]
        return http.cookies["mesh_session"], rooms


class Pages:
    """Opens either page in a browser context and drives one generation through it."""

    def __init__(self, base_url: str, bare_url: str, session: str, rooms: dict[str, str], threads: int,
                 chromium_args: list[str] = CHROMIUM_ARGS) -> None:
        vendor = load_vendor_manifest(ROOT / "static")
        self.base_url, self.session, self.rooms, self.threads = base_url, session, rooms, threads
        self.chromium_args = chromium_args
        config = {"transformers": vendor.url("transformers"), "mjs": vendor.url("ort_wasm_mjs"),
                  "wasm": vendor.url("ort_wasm_wasm"), "model": MODEL, "dtype": DTYPE, "threads": threads}
        self.bare_urls = {kind: f"{bare_url}/bench/bare#{quote(json.dumps(config | {'worker': kind == 'bare-worker'}))}"
                          for kind in ("bare", "bare-worker")}

    async def new_context(self, browser: Browser, unrecorded: bool = False, untraced: bool = False) -> BrowserContext:
        context = await browser.new_context()
        if unrecorded:
            await context.add_init_script(UNRECORDED)
        if untraced:
            headers = {"content-type": "text/javascript; charset=utf-8", **ISOLATION}
            await context.route(f"{self.base_url}/static/js/job-trace.js*",
                                lambda route: route.fulfill(body=UNTRACED, headers=headers))
        await context.add_cookies([{"name": "mesh_session", "value": self.session, "url": self.base_url}])
        return context

    async def new_profile(self, playwright: Playwright, folder: Path) -> BrowserContext:
        """A browser of its own on an empty profile kept on disk, as a person's is: V8 keeps the
        code it compiled (the ORT wasm's included) beside the HTTP cache's entries."""
        context = await playwright.chromium.launch_persistent_context(folder, executable_path=CHROMIUM, args=self.chromium_args)
        await context.add_cookies([{"name": "mesh_session", "value": self.session, "url": self.base_url}])
        return context

    async def open(self, page: Page, kind: str) -> float:
        """Navigate and return the "model ready" time in ms since navigation started."""
        url = self.bare_urls.get(kind) or f"{self.base_url}/rooms/{self.rooms[kind]}?threads={self.threads}"
        await page.goto(url)
        return await self.ready(page, kind)

    async def ready(self, page: Page, kind: str) -> float:
        mark = READY_MARK["bare" if kind.startswith("bare") else "ours"]
        await page.wait_for_function("m => performance.getEntriesByName(m).length > 0", arg=mark, timeout=120_000)
        return await page.evaluate("m => performance.getEntriesByName(m)[0].startTime", mark)

    async def generate(self, page: Page, kind: str, tokens: int) -> dict[str, Any]:
        if kind.startswith("bare"):
            return await page.evaluate("([p, n]) => window.generate(p, n)", [PROMPT, tokens])
        await page.fill("#prompt", PROMPT)
        await page.fill("#max-tokens", str(tokens))
        # Submitted from inside the page, the path a click or Enter takes: Playwright's synthetic
        # click costs 10-15 ms of input handling in headless Chromium before any page code runs.
        return await page.evaluate(RUN_IN_PAGE)


def renice_tree(pid: int, niceness: int) -> None:
    """Lower the CPU priority of a process and all its descendants (Granian forks workers)."""
    os.setpriority(os.PRIO_PROCESS, pid, niceness)
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            renice_tree(int(child), niceness)


def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def median_interval(values: list[float], resamples: int = 4000) -> tuple[float, float]:
    """A 95% bootstrap interval for the median: how far noise alone could move it, resampling these
    same runs (seeded, so one run's results always give the same interval)."""
    rng = random.Random(0)
    medians = sorted(statistics.median(rng.choices(values, k=len(values))) for _ in range(resamples))
    return medians[int(0.025 * resamples)], medians[int(0.975 * resamples) - 1]


async def steady_state(browser: Browser, pages: Pages, rounds: int, tokens: int) -> dict[str, Any]:
    """Warm model: take turns generating on each page, after one warm-up run each."""
    opened: dict[str, Page] = {}
    for kind in STEADY_KINDS:
        context = await pages.new_context(browser, unrecorded=kind == "ours-unrecorded", untraced=kind == "ours-untraced")
        page = await context.new_page()
        await pages.open(page, kind)
        await pages.generate(page, kind, tokens)  # the first run of a session pays ORT's warm-up
        opened[kind] = page
    isolated = {kind: await page.evaluate("crossOriginIsolated") for kind, page in opened.items()}
    runs: dict[str, list[dict[str, Any]]] = {kind: [] for kind in STEADY_KINDS}
    for round_ in range(rounds):
        for kind in STEADY_KINDS if round_ % 2 == 0 else STEADY_KINDS[::-1]:
            runs[kind].append(await pages.generate(opened[kind], kind, tokens))
    # The room page traces every run (docs/inference.md, "Traces"): each measured run's trace was recorded.
    recorded = 0
    for run in runs["ours"]:
        response = await opened["ours"].request.get(f"{pages.base_url}/api/jobs/{run['job_id']}/trace")
        events = (await response.json())["events"] if response.ok else []
        recorded += any(event["kind"] == "done" and event.get("tokens") == run["tokens"] for event in events)
    for page in opened.values():
        await page.context.close()
    texts = {kind: {run["text"] for run in results} for kind, results in runs.items()}
    # Each ours/bare pair ran back to back, so their ratio cancels slow drifts in the machine's load.
    paired = [o["tok_s"] / b["tok_s"] for o, b in zip(runs["ours"], runs["bare"], strict=True)]
    # Tracing's own cost: ours against ours with a job-trace.js that records nothing, pair by pair.
    traced = [o["tok_s"] / u["tok_s"] for o, u in zip(runs["ours"], runs["ours-untraced"], strict=True)]
    return {
        "traced_tok_s_ratio": summary(traced) | {"ci95": median_interval(traced)},
        "isolated": isolated,
        "ours_traced": f"{recorded}/{len(runs['ours'])}",
        "paired_tok_s_ratio": summary(paired) | {"ci95": median_interval(paired)},
        "runs": {kind: [{"tok_s": r["tok_s"], "ttft_ms": r["ttft_ms"]} for r in results] for kind, results in runs.items()},
        "same_text": len(set.union(*texts.values())) == 1,
        "tokens": {kind: sorted({run["tokens"] for run in results}) for kind, results in runs.items()},
        **{kind: {"tok_s": summary([r["tok_s"] for r in results]), "ttft_ms": summary([r["ttft_ms"] for r in results])}
           for kind, results in runs.items()},
    }


async def page_opens(playwright: Playwright, pages: Pages, times: int, settle: float,
                     servers: dict[str, int]) -> dict[str, Any]:
    """"Model ready" when opening the page on an empty profile, then in a new tab after closing the
    first (warm: a new renderer process, as when a person comes back to the room), and the CPU
    seconds each open cost until then: the browser's by process type and the page's server's."""
    ready: dict[str, dict[str, list[float]]] = {kind: {"empty": [], "warm": []} for kind in OPEN_KINDS}
    cpu: dict[str, dict[str, list[dict[str, float]]]] = {kind: {"empty": [], "warm": []} for kind in OPEN_KINDS}

    async def open_(page: Page, kind: str, cache: str) -> None:
        before = cpu_by_kind(servers)
        ready[kind][cache].append(await pages.open(page, kind))
        used = cpu_used(before, cpu_by_kind(servers))
        # Only the server this page asks counts: the other one idles meanwhile.
        mine = "app server" if kind == "ours" else "bare server"
        cpu[kind][cache].append({key: value for key, value in used.items() if key not in servers or key == mine})

    for round_ in range(times):
        # Each kind first, middle and last in turn, so no kind always follows the same one.
        shift = round_ % len(OPEN_KINDS)
        for kind in OPEN_KINDS[shift:] + OPEN_KINDS[:shift]:
            with tempfile.TemporaryDirectory(prefix="mesh-bench-profile-") as folder:
                context = await pages.new_profile(playwright, Path(folder))
                page = await context.new_page()
                await open_(page, kind, "empty")
                # Let the first visit finish its writes: transformers.js's Cache Storage copies, and
                # V8's compiled wasm once its optimising tier is done.
                await asyncio.sleep(settle)
                await page.close()
                page = await context.new_page()
                await open_(page, kind, "warm")
                await context.close()
    opens: dict[str, Any] = {kind: {cache: summary(values) for cache, values in by_cache.items()} for kind, by_cache in ready.items()}
    # The kinds of one round are opened back to back: their ratios cancel slow drifts in the load.
    def ratios(top: str, bottom: str) -> dict[str, dict[str, float]]:
        return {cache: summary([t / b for t, b in zip(ready[top][cache], ready[bottom][cache], strict=True)])
                for cache in ("empty", "warm")}

    opens["ratios"] = ratios("ours", "bare")
    opens["ratios_worker"] = {"ours ÷ bare-worker": ratios("ours", "bare-worker"),
                              "bare-worker ÷ bare": ratios("bare-worker", "bare")}
    opens["cpu_s"] = {kind: {cache: {key: statistics.median(row.get(key, 0.0) for row in rows)
                                      for key in sorted({key for row in rows for key in row})}
                             for cache, rows in by_cache.items()} for kind, by_cache in cpu.items()}
    opens["raw"] = ready
    opens["raw_cpu_s"] = cpu
    return opens


def compare(steady: dict[str, Any]) -> dict[str, float]:
    """Ours against bare, on medians and on the best run of each (the least disturbed by other load)."""
    ours, bare = steady["ours"], steady["bare"]
    return {
        "tok_s_ratio": ours["tok_s"]["median"] / bare["tok_s"]["median"],
        "ttft_delta_ms": ours["ttft_ms"]["median"] - bare["ttft_ms"]["median"],
        "best_tok_s_ratio": ours["tok_s"]["max"] / bare["tok_s"]["max"],
        "best_ttft_delta_ms": ours["ttft_ms"]["min"] - bare["ttft_ms"]["min"],
        "paired_tok_s_ratio": steady["paired_tok_s_ratio"]["median"],
    }


def spread(stats: dict[str, float] | None, digits: int = 0) -> str:
    if stats is None:
        return "—"
    return f"{stats['median']:.{digits}f} ({stats['min']:.{digits}f}–{stats['max']:.{digits}f})"


def report_opens(results: dict[str, Any]) -> str:
    lines = ["| WASM threads | page | ready ms, empty cache | ready ms, warm (new tab) |", "| --- | --- | ---: | ---: |"]
    for threads, result in results["by_threads"].items():
        opens = result["opens"]
        for kind in OPEN_KINDS:
            lines.append(f"| {threads} | {kind} | {spread(opens[kind]['empty'])} | {spread(opens[kind]['warm'])} |")
        ratios = opens["ratios"]
        lines.append(f"| {threads} | ours ÷ bare, median of rounds (min–max) | **{spread(ratios['empty'], 2)}×** "
                     f"| **{spread(ratios['warm'], 2)}×** |")
        for name, pair in opens["ratios_worker"].items():
            lines.append(f"| {threads} | {name} | {spread(pair['empty'], 2)}× | {spread(pair['warm'], 2)}× |")
    lines += ["", ("CPU seconds until the model was ready, medians: all processes (the page's server; renderers; "
                   "the rest: Chromium's browser, GPU and network processes, Playwright's driver, the edge if any):"), "",
              "| WASM threads | page | empty cache | warm (new tab) |", "| --- | --- | ---: | ---: |"]
    for threads, result in results["by_threads"].items():
        for kind, by_cache in result["opens"]["cpu_s"].items():
            lines.append(f"| {threads} | {kind} | {cpu_cell(by_cache['empty'])} | {cpu_cell(by_cache['warm'])} |")
    return "\n".join(lines)


def cpu_cell(used: dict[str, float]) -> str:
    server = sum(value for key, value in used.items() if key.endswith("server"))
    renderer = used.get("renderer", 0.0)
    return f"{sum(used.values()):.2f} ({server:.2f}; {renderer:.2f}; {sum(used.values()) - server - renderer:.2f})"


def report(results: dict[str, Any]) -> str:
    if results["opens_only"]:
        return report_opens(results)
    lines = ["| WASM threads | page | tok/s: median (min–max) | TTFT ms: median (min–max) | ready ms, empty cache | ready ms, warm cache |",
             "| --- | --- | ---: | ---: | ---: | ---: |"]
    for threads, result in results["by_threads"].items():
        for kind in STEADY_KINDS:
            steady, opens = result["steady"][kind], result["opens"].get(kind, {})
            lines.append(f"| {threads} | {kind} | {spread(steady['tok_s'])} | {spread(steady['ttft_ms'], 1)} "
                         f"| {spread(opens.get('empty'))} | {spread(opens.get('warm'))} |")
        for label, ratio, delta in (("medians", result["tok_s_ratio"], result["ttft_delta_ms"]),
                                    ("median of pairs", result["paired_tok_s_ratio"], result["ttft_delta_ms"]),
                                    ("best runs", result["best_tok_s_ratio"], result["best_ttft_delta_ms"])):
            verdict = "meets" if ratio >= RATIO_TARGET and delta <= TTFT_BUDGET_MS else "misses"
            lines.append(f"| {threads} | ours ÷ bare, {label} | **{ratio:.3f}×** | **{delta:+.1f}** | {verdict} the target | |")
        low, high = result["steady"]["paired_tok_s_ratio"]["ci95"]
        lines.append(f"| {threads} | median of pairs, 95% interval | {low:.3f}–{high:.3f}× | | | |")
        traced = result["steady"]["traced_tok_s_ratio"]
        low, high = traced["ci95"]
        lines.append(f"| {threads} | ours ÷ ours-untraced, median of pairs (95% interval) "
                     f"| {traced['median']:.3f}× ({low:.3f}–{high:.3f}×) | | | |")
        lines.append(f"| {threads} | ours' runs with their trace recorded | {result['steady']['ours_traced']} | | | |")
    return "\n".join(lines) + "\n\n" + report_opens(results)


@dataclass
class Served:
    """Both pages' servers, running: the addresses the browser uses (through the edge, if any),
    the flags Chromium needs for them, and each server's pid."""

    base_url: str
    bare_url: str
    chromium_args: list[str]
    servers: dict[str, int]
    app_url: str  # the app server itself, for signing up over HTTP


@contextlib.contextmanager
def serve(folder: Path, edge: bool) -> Iterator[Served]:
    """The app server, the bare page's server and, with `edge`, the TLS edge in front of both;
    all stopped at the end, or as soon as one of them fails to start."""
    server = start_server(folder)
    bare = front = None
    try:
        bare = BareServer()
        front = Edge([server.url, bare.url], [free_port(), free_port()]) if edge else None
        yield Served(
            base_url=front.urls[server.url] if front else server.url,
            bare_url=front.urls[bare.url] if front else bare.url,
            chromium_args=CHROMIUM_ARGS + (front.chromium_args if front else []),
            servers={"app server": server.process.pid, "bare server": bare.process.pid},
            app_url=server.url,
        )
    finally:
        if front:
            front.stop()
        if bare:
            bare.stop()
        server.stop()


async def main() -> None:
    args = parse_args()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="mesh-bench-inference-") as tmp, serve(Path(tmp), args.edge) as served:
        if args.server_priority == "low":
            for pid in served.servers.values():
                renice_tree(pid, 19)
        session, rooms = await sign_up(served.app_url)
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=served.chromium_args)
            by_threads = {}
            for threads in args.threads:
                pages = Pages(served.base_url, served.bare_url, session, rooms, threads, served.chromium_args)
                started = time.monotonic()
                steady = None if args.opens_only else await steady_state(browser, pages, args.rounds, args.tokens)
                opens = await page_opens(playwright, pages, args.cold, args.settle, served.servers)
                by_threads[threads] = {
                    "steady": steady,
                    "opens": opens,
                    **(compare(steady) if steady else {}),
                    "seconds": time.monotonic() - started,
                }
                print(f"threads={threads}: done in {by_threads[threads]['seconds']:.0f} s", flush=True)
            chromium = browser.version
            await browser.close()
    results = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "chromium": chromium,
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "load_average": {"before": load_before, "after": os.getloadavg()},
        "server_priority": args.server_priority,
        "transport": "HTTP/2 through a TLS edge" if args.edge else "HTTP/1.1 straight to the servers",
        "model": MODEL, "dtype": DTYPE, "prompt": PROMPT, "tokens": args.tokens, "rounds": args.rounds,
        "opens_only": args.opens_only, "settle_s": args.settle,
        "by_threads": by_threads,
    }
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"inference-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(json.dumps(results, indent=2))
    print(f"transport: {results['transport']}")
    print(report(results))
    print(f"\nload average before {load_before}, after {results['load_average']['after']}; saved {path}")


if __name__ == "__main__":
    asyncio.run(main())
