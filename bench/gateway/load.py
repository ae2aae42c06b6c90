"""The gateway benchmark's load: fake workers (Socket.IO clients that serve API jobs as a browser
tab does) and streaming HTTP clients of the OpenAI-compatible API, each side stamping every batch
of tokens, so the delay the server adds to each one is known. Clocks: both sides read
`time.perf_counter()` (CLOCK_MONOTONIC, one clock for the whole machine)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import msgspec
import socketio

MODEL = "tiny-gpt2"
TOKEN = " tok"  # every token's text: 4 characters
# The browser worker's batching (static/js/inference-worker.js, `due`): the first token at once,
# then whatever came since the last post once TOKEN_BATCH_MS have passed (FAST_BATCH_MS when
# FAST_BATCH_TOKENS or more came in between).
TOKEN_BATCH_S = 0.033
FAST_BATCH_TOKENS = 8
FAST_BATCH_S = 0.100

_decode = msgspec.json.Decoder().decode


def due(tokens: int, posted: int, last: float, posted_at: float) -> bool:
    waited = last - posted_at
    return (
        posted == 0
        or waited >= FAST_BATCH_S
        or (waited >= TOKEN_BATCH_S and tokens - posted < FAST_BATCH_TOKENS)
    )


@dataclass
class Batch:
    sent: float  # when the worker emitted its job_token
    tokens: int  # tokens in it


class FakeWorker:
    """One peer in a room: joins with an API token, reports its status, acks `job_run` and streams
    `job_token` batches at `tok_s` tokens a second, then `job_done`."""

    def __init__(self, tok_s: float) -> None:
        self.tok_s = tok_s
        self.client = socketio.AsyncClient(reconnection=False)
        self.jobs: dict[str, list[Batch]] = {}
        self.tasks: set[asyncio.Task[Any]] = set()
        self.cancelled: set[str] = set()
        self.errors: list[Any] = []
        self.client.on("job_run", self._on_run)
        self.client.on("job_cancel", lambda data: self.cancelled.add(data["job_id"]))
        self.client.on("error", self.errors.append)

    def status(self, state: str, queue: int) -> dict[str, Any]:
        return {
            "state": state,
            "backend": "wasm",
            "models_warm": [MODEL],
            "queue": queue,
            "tok_s": self.tok_s,
        }

    async def join(self, url: str, token: str, room: str) -> None:
        await self.client.connect(
            url,
            headers={"Authorization": f"Bearer {token}"},
            transports=["websocket"],
            wait_timeout=30,
        )
        capabilities = {"backend": "wasm", "models_warm": [MODEL], "state": "idle"}
        ack = await self.client.call(
            "join_room", {"room": room, "capabilities": capabilities}, timeout=30
        )
        if "peer_id" not in ack:
            raise RuntimeError(f"join_room refused: {ack}")
        await self.client.emit("status", self.status("idle", 0))

    async def _on_run(self, data: dict[str, Any]) -> dict[str, Any]:
        task = asyncio.create_task(self._serve(data["job_id"], data["params"]["max_new_tokens"]))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return {"ok": True}

    async def _serve(self, job_id: str, max_tokens: int) -> None:
        await self.client.emit("status", self.status("busy", 1))
        batches = self.jobs.setdefault(job_id, [])
        step = 1 / self.tok_s
        start = time.perf_counter()
        tokens = posted = 0
        posted_at = 0.0
        # Token k is made at start + k·step; the loop sleeps straight to the next token that makes
        # a batch due, so a worker wakes once per batch, not once per token.
        while tokens < max_tokens and job_id not in self.cancelled:
            tokens += 1
            last = start + (tokens - 1) * step
            if tokens < max_tokens and not due(tokens, posted, last, posted_at):
                continue
            delay = last - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            sent = time.perf_counter()
            await self.client.emit(
                "job_token", {"job_id": job_id, "seq": tokens, "text": TOKEN * (tokens - posted)}
            )
            batches.append(Batch(sent, tokens - posted))
            posted, posted_at = tokens, last
        reason = "cancelled" if job_id in self.cancelled else "length"
        metrics = {"tokens": posted, "prompt_tokens": 3, "reason": reason, "backend": "wasm"}
        await self.client.emit(
            "job_done", {"job_id": job_id, "text": TOKEN * posted, "metrics": metrics}
        )
        await self.client.emit("status", self.status("idle", 0))

    async def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        if self.client.connected:
            await self.client.disconnect()


@dataclass
class Stream:
    """One streaming chat completion as the HTTP client saw it."""

    started: float = 0.0
    job_id: str = ""
    arrivals: list[float] = field(default_factory=list)  # one per content chunk
    text: str = ""
    error: str = ""


async def stream_chat(
    http: httpx.AsyncClient, base_url: str, token: str, max_tokens: int
) -> Stream:
    """POST a streamed chat completion and stamp each content chunk as it is parsed."""
    seen = Stream(started=time.perf_counter())
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Benchmark"}],
        "max_tokens": max_tokens,
        "stream": True,
    }
    headers = {"Authorization": f"Bearer {token}"}
    try:
        async with http.stream(
            "POST", f"{base_url}/chat/completions", json=body, headers=headers
        ) as response:
            if response.status_code != 200:
                seen.error = f"HTTP {response.status_code}: {(await response.aread())[:300]!r}"
                return seen
            pending = b""
            async for data in response.aiter_raw():
                now = time.perf_counter()
                pending += data
                *events, pending = pending.split(b"\n\n")
                for event in events:
                    payload = event.removeprefix(b"data: ")
                    if payload == b"[DONE]":
                        continue
                    chunk = _decode(payload)
                    if "error" in chunk:
                        seen.error = str(chunk["error"])
                        continue
                    if not seen.job_id:
                        seen.job_id = chunk["id"].rsplit("-", 1)[1]
                    content = (
                        chunk["choices"][0]["delta"].get("content") if chunk["choices"] else None
                    )
                    if content:
                        seen.arrivals.append(now)
                        seen.text += content
    except httpx.HTTPError as exc:
        seen.error = f"{type(exc).__name__}: {exc}"
    return seen


@dataclass
class Relayed:
    """One batch of tokens matched across the relay: emitted by the worker, parsed by the client."""

    sent: float
    arrived: float
    tokens: int

    @property
    def delay(self) -> float:
        return self.arrived - self.sent


def match(stream: Stream, workers: list[FakeWorker]) -> list[Relayed]:
    """Pair the i-th content chunk with the i-th job_token batch of the same job (the gateway
    relays each batch as one chunk; the text proves nothing was merged, split or lost)."""
    import uuid

    job_id = str(uuid.UUID(stream.job_id))
    batches = next((w.jobs[job_id] for w in workers if job_id in w.jobs), None)
    if batches is None:
        raise RuntimeError(f"no worker ran job {job_id}")
    errors = [e for w in workers for e in w.errors]
    if errors:
        raise RuntimeError(f"the server refused a worker's event: {errors[0]}")
    if len(batches) != len(stream.arrivals) or stream.text != TOKEN * sum(
        b.tokens for b in batches
    ):
        raise RuntimeError(
            f"job {job_id}: {len(batches)} batches sent, {len(stream.arrivals)} chunks received"
        )
    return [Relayed(b.sent, a, b.tokens) for b, a in zip(batches, stream.arrivals, strict=True)]
