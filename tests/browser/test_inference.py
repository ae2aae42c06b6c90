"""Running the tiny model in the room page, in headless Chromium, fully offline: streaming, history,
cancel, the WASM fallback, and the WebGPU path through SwiftShader."""

from __future__ import annotations

from datetime import datetime

import pytest
from conftest import LiveServer
from playwright.async_api import Page, Route, expect
from support.accounts import sign_up
from support.browser import RequestLog, sign_in
from support.pages import MODEL, RoomPage, RoomsPage

from mesh_nanollm.app import STATIC_DIR
from mesh_nanollm.vendor import load_vendor_manifest

pytestmark = pytest.mark.browser

ORT_WASM = load_vendor_manifest(STATIC_DIR).url("ort_wasm_wasm")

# Records every change of the output's length with its time, from before the click on Run.
WATCH_OUTPUT = """() => {
  window.growth = [];
  const output = document.querySelector('[data-testid="output"]');
  new MutationObserver(() => window.growth.push([performance.now(), output.textContent.length]))
    .observe(output, { childList: true, characterData: true, subtree: true });
}"""

# Notes when each jobs API request leaves the page, and the status it records.
WATCH_RECORDING = """() => {
  window.recorded = [];
  const fetch = window.fetch;
  window.fetch = (url, init) => {
    if (String(url).startsWith("/api/jobs")) {
      window.recorded.push([performance.now(), init.method, JSON.parse(init.body).status ?? null]);
    }
    return fetch(url, init);
  };
}"""

# Clicks Cancel the moment the first words appear, as an impatient person would.
CANCEL_ON_FIRST_WORDS = """() => {
  const output = document.querySelector('[data-testid="output"]');
  const observer = new MutationObserver(() => {
    if (output.textContent.trim()) {
      observer.disconnect();
      document.querySelector('[data-testid="cancel"]').click();
    }
  });
  observer.observe(output, { childList: true, characterData: true, subtree: true });
}"""


async def open_warm_room(page: Page, server: LiveServer, query: str = "") -> RoomPage:
    account = await sign_up(server.url)
    await sign_in(page.context, server.url, account.session_cookie)
    room = await RoomPage(page, server.url, account=account).open(query=query)
    await room.wait_until_warm()
    return room


async def test_run_prompt_streams_tokens_and_records_job_with_timings(live_server: LiveServer, page: Page) -> None:
    requests = RequestLog(live_server.url).attach(page.context)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    room = await open_warm_room(page, live_server)

    # The bar counted the model's real bytes (about half a megabyte) and filled up.
    size = int(await room.progress.get_attribute("max") or 0)
    assert size > 400_000
    await expect(room.progress).to_have_attribute("value", str(size))

    await page.evaluate(WATCH_OUTPUT)
    await page.evaluate(WATCH_RECORDING)
    await room.run("You may", max_tokens=200)
    job = await room.recorded_job()
    # The record goes out in order: created, running, and succeeded only once the last token is
    # shown. A short run sends all three after it ends; one that passes a second (a busy machine)
    # is in the history as running while it streams. Either is right; only the order is checked.
    recorded = await page.evaluate("window.recorded")
    assert [(method, status) for _, method, status in recorded] == [
        ("POST", None),
        ("PATCH", "running"),
        ("PATCH", "succeeded"),
    ]
    assert [at for at, _, _ in recorded] == sorted(at for at, _, _ in recorded)

    growth = await page.evaluate("window.growth")
    lengths = [length for _, length in growth]
    # The text arrived in pieces over time, not at once: the first token is shown as it comes (this
    # model is so fast that the worker sends the rest in a batch or two, docs/inference.md).
    assert len(set(lengths)) >= 2, growth
    assert lengths == sorted(lengths) and growth[-1][0] > growth[0][0]
    assert recorded[-1][0] >= growth[-1][0]
    text = await room.output.text_content()
    assert text and len(text.split()) >= 10
    assert job["status"] == "succeeded"
    assert job["output"] == text
    assert job["token_count"] == 200
    assert job["mode"] == "local"
    assert job["params"] == {"max_new_tokens": 200, "repetition_penalty": 1.2, "temperature": 0.0, "top_k": 0, "top_p": 1.0}
    # The history keeps the page's own measures, however late the record left: its time to first
    # token exactly, and the run's moments in their order (how far apart depends on the machine).
    shown = await room.metrics.get_attribute("data-ttft-ms")
    assert job["ttft_ms"] == pytest.approx(float(shown or 0), abs=0.5)
    moments = [datetime.fromisoformat(job[key]) for key in ("created_at", "started_at", "first_token_at", "finished_at")]
    assert moments == sorted(moments), moments
    assert job["tokens_per_s"] > 0
    await expect(room.metrics).to_contain_text("first token")
    await expect(room.metrics).to_contain_text("tok/s")

    # The model stays warm in the page's worker: the next run fetches no model file.
    model_fetches = requests.count("/models/")
    assert model_fetches > 0
    await room.run("The Program", max_tokens=4)
    await expect(room.job_link).not_to_have_attribute("data-job-id", job["id"])
    again = await room.recorded_job()
    assert again["status"] == "succeeded" and again["token_count"] == 4
    assert requests.count("/models/") == model_fetches

    await page.goto(f"{live_server.url}/jobs")
    row = page.locator(f'[data-testid="job-row"][data-job-id="{job["id"]}"]')
    await expect(row).to_contain_text("succeeded")
    await expect(row).to_contain_text(MODEL)
    await expect(row).to_contain_text("200")
    await page.goto(f"{live_server.url}/jobs/{job['id']}")
    await expect(page.get_by_test_id("ttft")).to_contain_text("ms")

    assert requests.count("/static/vendor/") > 0  # the log sees the worker's own fetches too
    assert requests.off_origin == []
    assert errors == []


async def test_reopened_room_reuses_cached_model_files(live_server: LiveServer, page: Page) -> None:
    requests = RequestLog(live_server.url).attach(page.context)
    room = await open_warm_room(page, live_server)
    first_visit = requests.count("/models/")
    await room.open()
    await room.wait_until_warm()
    # transformers.js keeps model files in Cache Storage: a second visit does not fetch them again.
    assert requests.count("/models/") == first_visit
    assert requests.off_origin == []


async def test_cancel_mid_generation_keeps_partial_output_and_records_cancelled(
    live_server: LiveServer, page: Page
) -> None:
    room = await open_warm_room(page, live_server)
    await page.evaluate(CANCEL_ON_FIRST_WORDS)
    # 240 new tokens nearly fill the model's 256-token context: far longer than the cancel takes.
    await room.run("You may", max_tokens=240)
    job = await room.recorded_job()

    assert job["status"] == "cancelled"
    assert 0 < job["token_count"] < 240
    assert job["output"] and job["output"] == await room.output.text_content()
    await expect(room.metrics).to_contain_text("cancelled")
    await expect(page.get_by_test_id("run")).to_be_enabled()
    await expect(page.get_by_test_id("cancel")).to_be_disabled()

    await page.goto(f"{live_server.url}/jobs?status=cancelled")
    await expect(page.locator(f'[data-testid="job-row"][data-job-id="{job["id"]}"]')).to_contain_text("cancelled")


async def test_room_without_webgpu_adapter_runs_on_wasm(live_server: LiveServer, page: Page) -> None:
    # Headless Chromium has navigator.gpu but no adapter; asking for WebGPU must still end on WASM.
    room = await open_warm_room(page, live_server, query="?backend=webgpu")
    await expect(room.backend).to_have_attribute("data-backend", "wasm")
    await expect(room.backend).to_contain_text("WASM")
    await room.run("You may", max_tokens=4)
    assert (await room.recorded_job())["status"] == "succeeded"


async def test_opened_room_starts_one_worker_from_its_head_and_fetches_the_wasm_once(
    live_server: LiveServer, page: Page
) -> None:
    # A first visit: the page's head starts the worker (inference-start.js), the page's peer takes
    # that one over, and ONNX Runtime instantiates the wasm the worker compiled early.
    requests = RequestLog(live_server.url).attach(page.context)
    workers: list[str] = []
    page.on("worker", lambda worker: workers.append(worker.url))
    room = await open_warm_room(page, live_server)
    await expect(room.backend).to_have_attribute("data-backend", "wasm")
    assert requests.count("/static/js/inference-start.js") == 1
    assert [url.rsplit("/", 1)[-1] for url in workers] == ["inference-worker.js"]
    assert requests.count(ORT_WASM) == 1
    await room.run("You may", max_tokens=4)
    assert (await room.recorded_job())["status"] == "succeeded"


async def test_room_swapped_in_by_a_link_starts_its_own_worker(live_server: LiveServer, page: Page) -> None:
    # A swap leaves the head alone: a room page reached from another page has no early start.
    account = await sign_up(live_server.url)
    await sign_in(page.context, live_server.url, account.session_cookie)
    workers: list[str] = []
    page.on("worker", lambda worker: workers.append(worker.url))
    rooms = RoomsPage(page, live_server.url)
    await page.goto(f"{live_server.url}/rooms")
    await rooms.mark_document()
    await rooms.enter("global")
    room = RoomPage(page, live_server.url, account=account)
    await room.wait_until_warm()
    assert await room.same_document()
    await expect(room.backend).to_have_attribute("data-backend", "wasm")
    assert [url.rsplit("/", 1)[-1] for url in workers] == ["inference-worker.js"]
    await room.run("You may", max_tokens=4)
    assert (await room.recorded_job())["status"] == "succeeded"


async def test_mesh_mode_without_peers_runs_here_and_says_so(live_server: LiveServer, page: Page) -> None:
    room = await open_warm_room(page, live_server)
    await room.run("You may", max_tokens=4, mode="mesh")
    job = await room.recorded_job()
    assert job["status"] == "succeeded" and job["worker_peer"] is None
    await expect(room.flash).to_contain_text("in this browser")


@pytest.mark.slow
async def test_webgpu_through_swiftshader_streams_and_records(live_server: LiveServer, gpu_page: Page) -> None:
    requests = RequestLog(live_server.url).attach(gpu_page.context)
    # A software adapter is not a GPU worth using: without the flag the page picks WASM.
    room = await open_warm_room(gpu_page, live_server)
    await expect(room.backend).to_have_attribute("data-backend", "wasm")

    await room.open(query="?backend=webgpu")
    await room.wait_until_warm(timeout=90_000)
    await expect(room.backend).to_have_attribute("data-backend", "webgpu")
    await expect(room.backend).to_contain_text("WebGPU")
    await room.run("You may", max_tokens=3)
    job = await room.recorded_job(timeout=120_000)
    assert job["status"] == "succeeded"
    assert job["token_count"] == 3
    assert job["output"].strip()
    assert requests.off_origin == []


@pytest.mark.slow
async def test_failed_webgpu_session_retries_in_fresh_wasm_worker(live_server: LiveServer, gpu_page: Page) -> None:
    workers: list[str] = []
    gpu_page.on("worker", lambda worker: workers.append(worker.url))

    async def break_first_worker(route: Route) -> None:
        # Only the first (WebGPU) worker sees a broken model file; the WASM retry gets the real one.
        if len(workers) < 2:
            await route.fulfill(status=500, body="broken on purpose")
        else:
            await route.continue_()

    await gpu_page.context.route(f"**/models/{MODEL}/onnx/*.onnx", break_first_worker)
    room = await open_warm_room(gpu_page, live_server, query="?backend=webgpu")
    await expect(room.backend).to_have_attribute("data-backend", "wasm")
    assert [url.rsplit("/", 1)[-1] for url in workers] == ["inference-worker.js", "inference-worker.js"]
    await room.run("You may", max_tokens=4)
    assert (await room.recorded_job())["status"] == "succeeded"
