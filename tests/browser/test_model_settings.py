"""The room page's model tools in headless Chromium, offline: sampling settings from the model's
generation_config (a seed repeats a sampled answer, top-p narrows it), what the picker says about
each model, the models this browser keeps, and plain-words load failures that fall back."""

from __future__ import annotations

import json
import re
import threading

import pytest
from conftest import LiveServer
from playwright.async_api import Page, Route, expect
from support.browser import RequestLog
from support.pages import MODEL, RoomPage, open_room

from mesh_nanollm.jobs.params import SEED_MAX
from mesh_nanollm.settings import PROJECT_ROOT
from mesh_nanollm.worker.engine import load_engine

pytestmark = pytest.mark.browser

SMOL = "HuggingFaceTB/SmolLM2-135M-Instruct"
DISTIL = "Xenova/distilgpt2"
HUB = "https://huggingface.co/**"
TINY_FILES = PROJECT_ROOT / "models" / MODEL

# What this browser's model cache holds: [url, bytes] per file.
CACHED = """async () => {
  const cache = await caches.open("transformers-cache");
  const out = [];
  for (const request of await cache.keys()) out.push([request.url, (await (await cache.match(request)).blob()).size]);
  return out;
}"""


async def settle(page: Page, **settings: str) -> None:
    """Open the Settings (if closed) and fill them: temperature, top_p, top_k, seed, ..."""
    if await page.locator("#sampling").get_attribute("open") is None:
        await page.locator("#sampling > summary").click()
    for key, value in settings.items():
        await page.get_by_label(
            key.replace("_", "-").capitalize() if key != "top_p" else "Top-p"
        ).fill(value)


async def answer(room: RoomPage, prompt: str = "You may", max_tokens: int = 30) -> tuple[str, dict]:
    job = await room.run_and_wait(prompt, max_tokens)
    assert job["status"] == "succeeded", job
    return await room.output.inner_text(), job


async def test_settings_start_from_generation_config_and_a_seed_repeats_a_sampled_answer(
    live_server: LiveServer, page: Page
) -> None:
    room = await open_room(page, live_server.url)
    summary = page.locator("#sampling > summary")
    # tiny-gpt2's generation_config.json: greedy, repetition_penalty 1.2, max_new_tokens 40.
    await expect(summary).to_contain_text("greedy, repetition penalty 1.2")
    await expect(page.get_by_label("Max tokens")).to_have_value("40")
    await settle(page)
    await expect(page.get_by_label("Repetition penalty")).to_have_value("1.2")
    await expect(page.get_by_label("Temperature")).to_have_value("0")
    await expect(page.locator("#sampling-source")).to_have_text(
        re.compile("generation_config.json")
    )

    await settle(page, temperature="1.2", seed="7")
    await expect(summary).to_contain_text("temperature 1.2, top-p 1, top-k 50, seed 7")
    first, job = await answer(room)
    assert job["params"] == {
        "max_new_tokens": 30,
        "temperature": 1.2,
        "top_p": 1.0,
        "top_k": 50,
        "repetition_penalty": 1.2,
        "seed": 7,
    }
    again, _ = await answer(room)
    assert again == first and len(first.split()) >= 5
    await settle(page, seed="8")
    other, job = await answer(room)
    assert other != first and job["params"]["seed"] == 8
    # Without a seed, the answer is drawn afresh and the record says no seed.
    await settle(page, seed="")
    _, job = await answer(room)
    assert "seed" not in job["params"]


async def test_top_p_keeps_a_sampled_answer_to_the_likeliest_tokens(
    live_server: LiveServer, page: Page
) -> None:
    room = await open_room(page, live_server.url)
    greedy, job = await answer(room, "The Program", 30)
    assert job["params"]["temperature"] == 0 and "seed" not in job["params"]
    # A hot temperature samples far from the greedy answer, unless top-p keeps only the likeliest token.
    await settle(page, temperature="1.8", top_p="1", seed="3")
    hot, _ = await answer(room, "The Program", 30)
    assert hot != greedy
    await settle(page, top_p="0.01")
    narrowed, job = await answer(room, "The Program", 30)
    assert narrowed == greedy and job["params"]["top_p"] == 0.01


async def test_a_sampled_answer_is_the_one_a_headless_worker_draws(
    live_server: LiveServer, page: Page
) -> None:
    """The page's worker and the headless worker's engine sample alike (seed, temperature, top-k,
    top-p): a mesh job gives the same answer whichever of them runs it."""
    engine = load_engine(MODEL, models_dir=PROJECT_ROOT / "models", dtype="q8")
    room = await open_room(page, live_server.url)
    for seed, top_p, top_k in [("5", "0.9", "50"), ("21", "0.6", "20"), ("8", "1", "40")]:
        await settle(page, temperature="1.1", top_p=top_p, top_k=top_k, seed=seed)
        text, job = await answer(room, "The Program", 40)
        params = {
            key: job["params"][key]
            for key in ("temperature", "top_p", "top_k", "seed", "repetition_penalty")
        }
        ours = "".join(
            engine.generate("The Program", {**params, "max_new_tokens": 40}, threading.Event())
        )
        assert text == ours, params


async def test_picker_describes_each_model_with_its_own_defaults(
    live_server: LiveServer, page: Page
) -> None:
    await page.context.route(HUB, lambda route: route.abort("internetdisconnected"))
    await open_room(page, live_server.url)
    info = page.get_by_test_id("model-info")
    for field, value in [
        ("parameters", "244 K"),
        ("context", "256 tokens"),
        ("quantisation", "8-bit (q8)"),
        ("download", "0.5 MB from this server"),
        ("licence", "same as this project"),
        ("runs on", "WebGPU, WASM (CPU)"),
    ]:
        await expect(info.locator(f'dd[data-field="{field}"]')).to_contain_text(value)
    await expect(info.locator('dd[data-field="about"]')).to_contain_text("toy model")

    # A hub model out of reach: its facts still show, its defaults are general ones, and it says so.
    await page.get_by_test_id("model").select_option(SMOL)
    for field, value in [
        ("parameters", "135 M"),
        ("context", "8,192 tokens"),
        ("quantisation", "4-bit (q4)"),
        ("download", "118.0 MB from the Hugging Face hub"),
        ("licence", "Apache 2.0"),
    ]:
        await expect(info.locator(f'dd[data-field="{field}"]')).to_contain_text(value)
    await expect(page.locator("#sampling-source")).to_have_text(
        re.compile("could not be read; these are general ones")
    )
    await expect(page.get_by_label("Max tokens")).to_have_value("64")
    await expect(page.locator("#sampling > summary")).to_contain_text("greedy")

    # Reachable, its generation_config.json decides (a sampling one here).
    async def config(route: Route) -> None:
        body = {
            "do_sample": True,
            "temperature": 0.6,
            "top_p": 0.9,
            "top_k": 20,
            "max_new_tokens": 100,
        }
        await route.fulfill(status=200, content_type="application/json", body=json.dumps(body))

    await page.context.unroute(HUB)
    await page.context.route(
        f"https://huggingface.co/{DISTIL}/resolve/main/generation_config.json", config
    )
    await page.get_by_test_id("model").select_option(DISTIL)
    await expect(page.locator("#sampling > summary")).to_contain_text(
        "temperature 0.6, top-p 0.9, top-k 20, random seed"
    )
    await expect(page.get_by_label("Max tokens")).to_have_value("100")
    await expect(info.locator('dd[data-field="context"]')).to_contain_text("1,024 tokens")


async def test_models_on_this_device_lists_what_the_browser_keeps_and_clears_it(
    live_server: LiveServer, page: Page
) -> None:
    requests = RequestLog(live_server.url).attach(page.context)
    await open_room(page, live_server.url)
    panel = page.get_by_test_id("device-models")
    tiny = panel.locator(f'[data-testid="device-model"][data-model-id="{MODEL}"]')
    await expect(tiny).to_contain_text("Tiny GPT-2")
    # transformers.js keeps this server's model files too: the panel counts exactly those bytes.
    cached = await page.evaluate(CACHED)
    model_files = {
        url.split(f"/models/{MODEL}/", 1)[1]: size
        for url, size in cached
        if f"/models/{MODEL}/" in url
    }
    assert "onnx/model_quantized.onnx" in model_files and "tokenizer.json" in model_files
    assert all((TINY_FILES / name).stat().st_size == size for name, size in model_files.items())
    await expect(tiny).to_have_attribute("data-bytes", str(sum(model_files.values())))

    # A fresh page loads the model from the cache, fetching no weights from the server.
    await page.evaluate("""async () => {
      const cache = await caches.open("transformers-cache");
      await cache.put("https://huggingface.co/Xenova/distilgpt2/resolve/main/config.json", new Response("x".repeat(1000)));
      await cache.put(location.origin + "/static/not-a-model.wasm", new Response("runtime"));
    }""")
    weights = requests.count(f"/models/{MODEL}/onnx/")
    await page.reload()
    await RoomPage(page, live_server.url).wait_until_warm()
    assert requests.count(f"/models/{MODEL}/onnx/") == weights
    distil = panel.locator(f'[data-testid="device-model"][data-model-id="{DISTIL}"]')
    await expect(distil).to_contain_text("DistilGPT-2")
    await expect(distil).to_have_attribute("data-bytes", "1000")

    # The cache can hold more than models (transformers.js's own wasm cache, when it is on).
    others = sorted(
        url
        for url, _ in await page.evaluate(CACHED)
        if "/models/" not in url and "huggingface.co" not in url
    )
    assert f"{live_server.url}/static/not-a-model.wasm" in others
    await tiny.get_by_role("button", name="Clear").click()
    await expect(tiny).to_have_count(0)
    await expect(distil).to_be_visible()
    assert not [url for url, _ in await page.evaluate(CACHED) if "/models/" in url]
    await panel.get_by_test_id("clear-models").click()
    await expect(panel.get_by_test_id("device-model")).to_have_count(0)
    await expect(panel).to_contain_text("No model is saved in this browser yet")
    await expect(panel.get_by_test_id("clear-models")).to_be_disabled()
    # Only model files go: what else shares the cache stays.
    assert sorted(url for url, _ in await page.evaluate(CACHED)) == others


async def test_a_failing_hub_model_says_why_offers_retry_and_falls_back(
    live_server: LiveServer, page: Page
) -> None:
    await page.context.route(HUB, lambda route: route.abort("internetdisconnected"))
    room = await open_room(page, live_server.url)
    await page.get_by_test_id("model").select_option(SMOL)
    await page.get_by_test_id("prompt").fill("Hello")
    await page.get_by_test_id("run").click()

    card = page.get_by_test_id("model-error")
    await expect(card).to_have_attribute("data-reason", "hub_unreachable", timeout=30_000)
    await expect(card).to_contain_text(
        "SmolLM2 135M Instruct could not be downloaded: the Hugging Face hub could not be reached"
    )
    await expect(card).to_be_in_viewport()
    # Right above the conversation, where its answer would have streamed.
    box, output = await card.bounding_box(), await page.locator(".output-wrap").bounding_box()
    assert box and output and box["y"] + box["height"] <= output["y"]
    await expect(room.flash).to_have_text("")  # said once, not again below the output
    # The picker is back on the model that loaded here, and the card offers the ones that work.
    await expect(room.model_picker).to_have_value(MODEL)
    await expect(
        card.get_by_role("button", name="Tiny GPT-2 (built here, offline)")
    ).to_be_visible()
    await expect(card).to_contain_text("The picker is back on Tiny GPT-2 (built here, offline)")
    await room.wait_until_warm()  # and has it loaded again

    # Retry asks the hub again, for the model that failed, and says why again.
    worker_asks = lambda request: request.url.endswith(f"{SMOL}/resolve/main/config.json")
    async with page.context.expect_event("request", worker_asks):
        await card.get_by_test_id("retry").click()
    await expect(card).to_have_attribute("data-reason", "hub_unreachable", timeout=30_000)
    await expect(card).to_have_attribute("data-model", SMOL)
    await expect(room.model_picker).to_have_value(MODEL, timeout=30_000)

    await card.get_by_role("button", name="Tiny GPT-2 (built here, offline)").click()
    await expect(card).to_be_hidden()
    job = await room.run_and_wait("You may", 5)
    assert job["status"] == "succeeded"


@pytest.mark.parametrize(
    ("status", "reason", "words"),
    [
        (404, "not_found", "could not be found on the Hugging Face hub"),
        # The hub answers 401, not 404, for a repository that does not exist.
        (401, "not_found", "could not be found on the Hugging Face hub"),
        (503, "hub_error", "the Hugging Face hub answered with an error"),
        (None, "offline", "this device is offline"),
    ],
    ids=["not-found", "no-such-repo", "hub-error", "offline"],
)
async def test_each_load_failure_is_said_in_plain_words(
    live_server: LiveServer, page: Page, status: int | None, reason: str, words: str
) -> None:
    async def answer_with(route: Route) -> None:
        await route.fulfill(status=status, body="no")

    room = await open_room(page, live_server.url)
    if status is None:
        await page.context.set_offline(True)
    else:
        await page.context.route(HUB, answer_with)
    await page.get_by_test_id("model").select_option(DISTIL)
    # Plain text, so the model's own load fails (a chat turn first reads its tokenizer: the hub
    # test above goes that way).
    await page.get_by_label("Prompt as").select_option("complete")
    await page.get_by_test_id("prompt").fill("Hello")
    await page.get_by_test_id("run").click()
    card = page.get_by_test_id("model-error")
    await expect(card).to_have_attribute("data-reason", reason, timeout=30_000)
    await expect(card.locator("p").first).to_have_text(re.compile(f"^DistilGPT-2 .*{words}"))
    await expect(room.model_picker).to_have_value(MODEL)


async def test_memory_and_webgpu_failures_are_named_from_the_errors_they_raise(
    live_server: LiveServer, page: Page
) -> None:
    await open_room(page, live_server.url)
    seen = await page.evaluate("""async () => {
      const { loadFailureReason, describeLoadFailure } = await import("/static/js/load-failure.js");
      const hub = { source: "hub", device: "wasm", online: true };
      const reasons = {
        range: loadFailureReason(new RangeError("Array buffer allocation failed"), hub),
        wasm_oom: loadFailureReason(new Error("Aborted(). Build with -sASSERTIONS for more info. failed to allocate a buffer of size 461000000"), hub),
        webgpu: loadFailureReason(new Error("no available backend found. ERR: [webgpu] backend not found."), hub),
        webgpu_on_gpu: loadFailureReason(new Error("[webgpu] device lost"), { ...hub, device: "webgpu" }),
      };
      return { reasons, text: describeLoadFailure("out_of_memory", { name: "Qwen2.5 0.5B Instruct" }) };
    }""")
    assert seen["reasons"] == {
        "range": "out_of_memory",
        "wasm_oom": "out_of_memory",
        "webgpu": "needs_webgpu",
        "webgpu_on_gpu": "other",
    }
    assert seen["text"].startswith("Qwen2.5 0.5B Instruct does not fit in this device's memory.")


async def test_a_pages_seed_travels_to_mesh_peers_within_pythons_range(
    live_server: LiveServer, page: Page
) -> None:
    await page.goto(f"{live_server.url}/login")
    kept = await page.evaluate(
        """async (max) => {
      const { cleanParams } = await import("/static/js/protocol.js");
      return [0, 7, max, max + 1, -1, 1.5].map((seed) => cleanParams({ temperature: 1, seed }).seed ?? null);
    }""",
        SEED_MAX,
    )
    assert kept == [0, 7, SEED_MAX, None, None, None]


async def test_a_webgpu_only_model_is_refused_on_wasm_before_any_download(
    live_server: LiveServer, page: Page
) -> None:
    requests = RequestLog(live_server.url).attach(page.context)
    room = await open_room(page, live_server.url)
    qwen = room.model_picker.locator('option[value="onnx-community/Qwen2.5-0.5B-Instruct"]')
    await expect(qwen).to_be_disabled()  # this browser runs WASM only
    # Picked anyway (say, before the page knew its backend): Run says why, and downloads nothing.
    await qwen.evaluate("(option) => { option.disabled = false; }")
    await room.model_picker.select_option("onnx-community/Qwen2.5-0.5B-Instruct")
    await page.get_by_test_id("prompt").fill("Hello")
    await page.get_by_test_id("run").click()
    card = page.get_by_test_id("model-error")
    await expect(card).to_have_attribute("data-reason", "needs_webgpu")
    await expect(card.locator("p").first).to_have_text(
        re.compile("^Qwen2.5 0.5B Instruct needs WebGPU, which this browser does not offer here")
    )
    await expect(room.model_picker).to_have_value(MODEL)
    assert not [url for url in requests.urls if "Qwen" in url and "generation_config" not in url]
