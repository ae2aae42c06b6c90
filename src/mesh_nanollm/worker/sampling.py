"""Choosing the next token from the logits, as transformers.js 4.3 does: repetition penalty, then
greedy, or temperature and top-k with its Mersenne Twister (Python's `random` is the same generator)."""

from __future__ import annotations

import random

import numpy as np


class RepetitionPenalty:
    """Every token seen so far (prompt included): a positive logit divided, a negative one multiplied."""

    def __init__(self, penalty: float, vocab_size: int, ids: list[int]) -> None:
        self.penalty = np.float32(penalty)
        self.seen = np.zeros(vocab_size, dtype=bool)
        self.seen[[i for i in ids if i < vocab_size]] = True
        self.indices = np.flatnonzero(self.seen)

    def add(self, token: int) -> None:
        if token < self.seen.size and not self.seen[token]:
            self.seen[token] = True
            self.indices = np.flatnonzero(self.seen)

    def apply(self, logits: np.ndarray) -> None:
        picked = logits[self.indices]
        logits[self.indices] = np.where(picked < 0, picked * self.penalty, picked / self.penalty)


def greedy(logits: np.ndarray) -> int:
    return int(np.argmax(logits))


def sample(logits: np.ndarray, rng: random.Random, temperature: float, top_k: int, top_p: float) -> int:
    """One multinomial draw. transformers.js scales by temperature, keeps the top_k logits (0: all),
    softmaxes them and draws with one random() call; top_p < 1 then keeps the smallest head of
    that distribution reaching top_p (transformers.js 4.3 accepts top_p but does not apply it; the
    browser's inference worker applies it this way too)."""
    scaled = logits if temperature == 1 else (logits.astype(np.float64) / temperature).astype(np.float32)
    k = scaled.size if top_k <= 0 else min(top_k, scaled.size)
    head = np.argpartition(-scaled, k - 1)[:k] if k < scaled.size else np.arange(scaled.size)
    order = head[np.argsort(-scaled[head], kind="stable")]
    values = scaled[order].astype(np.float64)
    exps = np.exp(values - values[0]).astype(np.float32)
    probs = (exps / np.cumsum(exps, dtype=np.float64)[-1]).astype(np.float32)
    if top_p < 1:
        keep = int(np.searchsorted(np.cumsum(probs, dtype=np.float64), top_p)) + 1
        probs = probs[:keep]
    total = np.cumsum(probs, dtype=np.float64)
    index = int(np.searchsorted(total, rng.random() * total[-1], side="right"))
    return int(order[min(index, total.size - 1)])
