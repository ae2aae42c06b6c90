"""transformers.js on WASM in headless Chromium, as the room page loads it (the vendored files, a
local model under /models/), served from the repo's files by a small loopback file server, not the
app. The greedy parity test and bench/worker share it."""

from __future__ import annotations

import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import unquote

from playwright.async_api import Page

from mesh_nanollm.app import STATIC_DIR
from mesh_nanollm.vendor import load_vendor_manifest

PAGE = Path(__file__).with_name("blank.html")
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


class Files(ThreadingHTTPServer):
    """A loopback server for the page: a blank page at /, static/ at /static/, the models at /models/
    (plain files: transformers.js and onnxruntime-web need nothing else)."""

    def __init__(self, models_dir: Path) -> None:
        folders = {"/static/": STATIC_DIR, "/models/": models_dir}

        class Handler(SimpleHTTPRequestHandler):
            extensions_map: ClassVar = {**SimpleHTTPRequestHandler.extensions_map, ".mjs": "text/javascript", ".wasm": "application/wasm"}

            def translate_path(self, path: str) -> str:
                path = unquote(path.split("?")[0])
                for prefix, folder in folders.items():
                    if path.startswith(prefix) and ".." not in path:
                        return str(folder / path.removeprefix(prefix))
                return str(PAGE)

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.shutdown()
        self.server_close()


async def open_model(page: Page, files: Files, model: str, dtype: str) -> None:
    """Load `model` in the page; then `generate(page, prompt, params)` runs it."""
    vendor = load_vendor_manifest(STATIC_DIR)
    await page.goto(f"{files.url}/")
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
