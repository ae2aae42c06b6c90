"""The worker's engine and the browser's transformers.js choose the same tokens and stream the same
text pieces for the tiny model: greedy, with the generation_config's repetition penalty (1.2) where
the job leaves it out, or the job's own; and seeded sampling draws the same tokens."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from playwright.async_api import Page

from mesh_nanollm.worker.engine import Engine, load_engine
from worker.transformers_js import Files, generate, open_model

pytestmark = pytest.mark.browser

MODELS_DIR = Path(__file__).resolve().parents[2] / "models"
CASES = [
    ("You may", {"max_new_tokens": 40}),
    ("The licence", {"max_new_tokens": 60}),
    ("Copyright (C) 2007 Free Software Foundation", {"max_new_tokens": 30, "repetition_penalty": 1.0}),
    ("Café, naïve, 日本語: the Program\n", {"max_new_tokens": 25, "repetition_penalty": 1.5}),
    ("you", {"max_new_tokens": 120}),
    # Seeded sampling too: the same Mersenne Twister stream, temperature and top-k (default 50).
    ("The Program", {"temperature": 0.9, "seed": 7, "max_new_tokens": 40}),
    ("The Program", {"temperature": 1.3, "seed": 11, "max_new_tokens": 40, "top_k": 5}),
]


@pytest.mark.parametrize("dtype", ["q8", "fp32"])
async def test_greedy_tokens_equal_transformers_js(page: Page, dtype: str) -> None:
    engine = load_engine("tiny-gpt2", models_dir=MODELS_DIR, dtype=dtype)
    files = Files(MODELS_DIR)
    try:
        await open_model(page, files, "tiny-gpt2", dtype)
        await compare(page, engine)
    finally:
        files.close()


async def compare(page: Page, engine: Engine) -> None:
    for prompt, params in CASES:
        browser = await generate(page, prompt, params)
        ours = engine.generate(prompt, params, threading.Event())
        pieces = list(ours)
        assert ours.token_ids == browser["ids"], (prompt, params)
        assert pieces == browser["pieces"], (prompt, params)
        assert ours.tokens == len(browser["ids"])
