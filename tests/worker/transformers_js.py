"""transformers.js on WASM in headless Chromium, as the room page loads it (the vendored files, a
local model under /models/), with no server: Playwright answers every request from the repo's files.
The greedy parity test and bench/worker share it."""

from __future__ import annotations

import mimetypes
from pathlib import Path
from typing import Any

from playwright.async_api import Page, Route

from mesh_nanollm.app import STATIC_DIR
from mesh_nanollm.vendor import load_vendor_manifest

ORIGIN = "http://worker-parity.test"
# One generate(): the token ids (EOS included), the streamer's pieces, and timings like bare.js's.
OPEN = """async ({ config }) => {
  const { env, pipeline, TextStreamer, random } = await import(config.transformers);
  env.backends.onnx.wasm.wasmPaths = { mjs: config.mjs, wasm: config.wasm };
  env.backends.onnx.wasm.numThreads = 1;
  env.allowLocalModels = true;
  env.allowRemoteModels = false;
  env.localModelPath = "/models/";
  const generator = await pipeline("text-generation", config.model, { device: "wasm", dtype: config.dtype });
  window.generate = async (prompt, options, seed) => {
    const ids = [];
    const pieces = [];
    let first = 0;
    let last = 0;
    const streamer = new TextStreamer(generator.tokenizer, {
      skip_prompt: true,
      callback_function: (piece) => pieces.push(piece),
      token_callback_function: (tokens) => {
        last = performance.now();
        first ||= last;
        ids.push(...tokens.map(Number));
      },
    });
    if (seed !== null) random.seed(seed);
    const sent = performance.now();
    await generator(prompt, { ...options, streamer });
    return { ids, pieces, ttft_ms: first - sent, tok_s: ((ids.length - 1) * 1000) / (last - first) };
  };
}"""


def browser_options(params: dict[str, Any]) -> dict[str, Any]:
    """What inference-worker.js's generationOptions passes to the pipeline for these job params."""
    options: dict[str, Any] = {}
    if "max_new_tokens" in params:
        options["max_new_tokens"] = params["max_new_tokens"]
    if "repetition_penalty" in params:
        options["repetition_penalty"] = params["repetition_penalty"]
    options["do_sample"] = params.get("temperature", 0) > 0
    if options["do_sample"]:
        options["temperature"] = params["temperature"]
        options.update({k: params[k] for k in ("top_k", "top_p") if k in params})
    return options


async def serve_files(page: Page, models_dir: Path) -> None:
    """Answer the page's requests from static/ and the models folder."""

    async def answer(route: Route) -> None:
        path = route.request.url.removeprefix(ORIGIN).split("?")[0]
        if path == "/":
            await route.fulfill(body="<!doctype html><title>parity</title>", content_type="text/html")
            return
        if path.startswith("/static/"):
            file = STATIC_DIR / path.removeprefix("/static/")
        elif path.startswith("/models/"):
            file = models_dir / path.removeprefix("/models/")
        else:
            file = None
        if file is None or not file.is_file():
            await route.fulfill(status=404, body="not found")
            return
        kind = "text/javascript" if file.suffix == ".mjs" else mimetypes.guess_type(file.name)[0]
        await route.fulfill(path=file, content_type=kind or "application/octet-stream")

    await page.route(f"{ORIGIN}/**", answer)


async def open_model(page: Page, models_dir: Path, model: str, dtype: str) -> None:
    """Load `model` in the page; then `generate(page, prompt, params)` runs it."""
    vendor = load_vendor_manifest(STATIC_DIR)
    await serve_files(page, models_dir)
    await page.goto(f"{ORIGIN}/")
    config = {
        "transformers": vendor.url("transformers"),
        "mjs": vendor.url("ort_wasm_mjs"),
        "wasm": vendor.url("ort_wasm_wasm"),
        "model": model,
        "dtype": dtype,
    }
    await page.evaluate(OPEN, {"config": config})


async def generate(page: Page, prompt: str, params: dict[str, Any]) -> dict[str, Any]:
    seed = params.get("seed") if params.get("temperature", 0) > 0 else None
    return await page.evaluate(
        "([prompt, options, seed]) => window.generate(prompt, options, seed)",
        [prompt, browser_options(params), seed],
    )
