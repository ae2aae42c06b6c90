"""Worker runtime benchmark: the engine of `mesh-nanollm worker` against a bare onnxruntime decoding
loop over the same model file (our overhead), and against transformers.js on WASM in headless
Chromium (the browser peer), same machine, model, prompt and token count, in one run.

    uv run python bench/worker/run.py                     # tiny-gpt2 and gpt2-small-random, q8, CPU
    uv run python bench/worker/run.py --model tiny-gpt2 --rounds 5 --tokens 200
    uv run python bench/worker/run.py --device cuda --no-browser

gpt2-small-random is built by scripts/build_gpt2_small.py. All three decode greedily with no
repetition penalty (the bare loop has none), the prompt once, then one token per step with the KV
cache. TTFT is from the call to the first token chosen; tok/s is (tokens - 1) / time from the
first token to the last, both as the worker reports them. Rounds alternate the order of the
three. Method and latest figures: docs/benchmarks.md, "Worker".
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
from support.browser import CHROMIUM, CHROMIUM_ARGS
from worker.transformers_js import Files, open_model
from worker.transformers_js import generate as browser_generate

from mesh_nanollm.worker.engine import PROVIDERS, Engine, load_engine

MODELS = {"tiny-gpt2": ROOT / "models", "gpt2-small-random": ROOT / "bench" / "worker" / "models"}
TOKENS = {"tiny-gpt2": 200, "gpt2-small-random": 64}
PROMPT = "You may"
RESULTS_DIR = ROOT / "bench" / "results"
RATIO_TARGET, TTFT_BUDGET_MS = 0.97, 5.0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", choices=sorted(MODELS), help="default: both")
    parser.add_argument("--dtype", default="q8", help="q8 (what the browser loads) or fp32")
    parser.add_argument("--device", default="cpu", choices=sorted(PROVIDERS))
    parser.add_argument("--tokens", type=int, help="new tokens per run (default 200 tiny, 64 GPT-2 small)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-browser", action="store_true", help="skip transformers.js (no Chromium here)")
    return parser.parse_args()


class BareLoop:
    """The least a decoding loop can do: onnxruntime's own values for the cache, argmax, nothing else."""

    def __init__(self, engine: Engine, folder: Path) -> None:
        # The engine's own session: the same weights in memory and the same thread pool, so the
        # two differ only in the Python around onnxruntime.
        self.session = engine.session
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.empty = engine.empty_cache
        self.cache_names = engine.cache_inputs

    def run(self, prompt: str, tokens: int) -> dict[str, float]:
        start = time.perf_counter()
        step = self.tokenizer.encode(prompt).ids
        cache, past, first, last = dict(self.empty), 0, 0.0, 0.0
        for n in range(tokens):
            feeds = dict(cache)
            feeds["input_ids"] = ort.OrtValue.ortvalue_from_numpy(np.array([step], dtype=np.int64))
            feeds["attention_mask"] = ort.OrtValue.ortvalue_from_numpy(np.ones((1, past + len(step)), dtype=np.int64))
            feeds["position_ids"] = ort.OrtValue.ortvalue_from_numpy(np.arange(past, past + len(step), dtype=np.int64)[None])
            out = self.session.run_with_ort_values(self.outputs, feeds)
            past += len(step)
            step = [int(np.argmax(out[0].numpy()[0, -1]))]
            cache = dict(zip(self.cache_names, out[1:], strict=True))
            last = time.perf_counter()
            first = first or last
        return {"ttft_ms": (first - start) * 1000, "tok_s": (tokens - 1) / (last - first), "tokens": tokens}


def engine_run(engine: Engine, prompt: str, tokens: int) -> dict[str, float]:
    generation = engine.generate(prompt, {"max_new_tokens": tokens, "repetition_penalty": 1.0}, threading.Event())
    for _ in generation:
        pass
    return {"ttft_ms": generation.ttft_ms, "tok_s": generation.tok_s, "tokens": generation.tokens, "ids": generation.token_ids}


def summary(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(r[key] for r in runs) for key in ("ttft_ms", "tok_s", "tokens")}


async def bench_model(model: str, args: argparse.Namespace, browser: Any) -> dict[str, Any]:
    models_dir = MODELS[model]
    if not (models_dir / model).is_dir():
        raise SystemExit(f"{models_dir / model} is missing: build it with scripts/build_gpt2_small.py")
    tokens = args.tokens or TOKENS[model]
    loaded = time.perf_counter()
    engine = load_engine(model, models_dir=models_dir, device=args.device, dtype=args.dtype)
    load_ms = (time.perf_counter() - loaded) * 1000
    bare = BareLoop(engine, models_dir / model)
    kinds = {"engine": lambda: engine_run(engine, PROMPT, tokens), "bare": lambda: bare.run(PROMPT, tokens)}
    page = files = None
    if browser is not None:
        page = await browser.new_page()
        files = Files(models_dir)
        await open_model(page, files, model, args.dtype)

        async def in_browser() -> dict[str, float]:
            result = await browser_generate(page, PROMPT, {"max_new_tokens": tokens, "repetition_penalty": 1.0})
            return {"ttft_ms": result["ttft_ms"], "tok_s": result["tok_s"], "tokens": len(result["ids"]), "ids": result["ids"]}

    runs: dict[str, list[dict[str, float]]] = {kind: [] for kind in [*kinds, *(["browser"] if page else [])]}
    order = list(runs)
    for round_ in range(args.rounds + 1):  # round 0 warms everything up and is dropped
        for kind in order[round_ % len(order):] + order[: round_ % len(order)]:
            result = await in_browser() if kind == "browser" else kinds[kind]()
            if round_:
                runs[kind].append(result)
    if page is not None:
        await page.close()
        files.close()
    medians = {kind: summary(r) for kind, r in runs.items()}
    paired = [e["tok_s"] / b["tok_s"] for e, b in zip(runs["engine"], runs["bare"], strict=True)]
    result = {
        "model": model, "dtype": args.dtype, "device": args.device, "backend": engine.backend, "tokens": tokens,
        "load_ms": load_ms, "medians": medians,
        "engine_vs_bare_tok_s": statistics.median(paired),
        # Paired by round, like the ratio: neighbours in time share the machine's load.
        "engine_minus_bare_ttft_ms": statistics.median(
            e["ttft_ms"] - b["ttft_ms"] for e, b in zip(runs["engine"], runs["bare"], strict=True)
        ),
    }
    if "browser" in medians:
        # The same greedy tokens in both runtimes, on this model too.
        result["same_tokens_as_browser"] = all(r["ids"] == b["ids"] for r, b in zip(runs["engine"], runs["browser"], strict=True))
        result["engine_vs_browser_tok_s"] = medians["engine"]["tok_s"] / medians["browser"]["tok_s"]
        result["browser_minus_engine_ttft_ms"] = medians["browser"]["ttft_ms"] - medians["engine"]["ttft_ms"]
    return result


def report(results: list[dict[str, Any]], load: dict[str, Any]) -> str:
    lines = [f"machine: {load['cpus']} CPUs, load average {load['before']} before, {load['after']} after",
             "| model | dtype/device | kind | tok/s | TTFT ms |", "|---|---|---|---|---|"]
    for r in results:
        for kind, m in r["medians"].items():
            lines.append(f"| {r['model']} | {r['dtype']}/{r['device']} | {kind} | {m['tok_s']:.1f} | {m['ttft_ms']:.2f} |")
    for r in results:
        verdict = "meets" if r["engine_vs_bare_tok_s"] >= RATIO_TARGET and r["engine_minus_bare_ttft_ms"] <= TTFT_BUDGET_MS else "MISSES"
        line = (f"{r['model']} ({r['tokens']} tokens): engine/bare tok/s {r['engine_vs_bare_tok_s']:.3f}, TTFT {r['engine_minus_bare_ttft_ms']:+.2f} ms "
                f"({verdict} >= {RATIO_TARGET}x, <= +{TTFT_BUDGET_MS:.0f} ms)")
        if "engine_vs_browser_tok_s" in r:
            line += f"; engine/transformers.js WASM tok/s {r['engine_vs_browser_tok_s']:.2f}x, TTFT {r['browser_minus_engine_ttft_ms']:+.1f} ms in the engine's favour, same tokens: {r['same_tokens_as_browser']}"
        lines.append(line)
    return "\n".join(lines)


async def main() -> None:
    args = parse_args()
    load = {"cpus": os.cpu_count(), "before": [round(x, 2) for x in os.getloadavg()]}
    results = []
    if args.no_browser:
        results = [await bench_model(model, args, None) for model in args.model or list(MODELS)]
    else:
        from playwright.async_api import async_playwright

        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                results = [await bench_model(model, args, browser) for model in args.model or list(MODELS)]
            finally:
                await browser.close()
    load["after"] = [round(x, 2) for x in os.getloadavg()]
    text = report(results, load)
    print(text)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = RESULTS_DIR / f"worker-{stamp}.json"
    out.write_text(json.dumps({"load": load, "platform": platform.platform(), "onnxruntime": ort.__version__,
                               "threads": "onnxruntime default (intra-op = physical cores); transformers.js WASM 1 thread",
                               "results": results, "report": text}, indent=2))
    print(f"written {out.relative_to(ROOT)}")


if __name__ == "__main__":
    asyncio.run(main())
