"""The worker's loaded engines and its `--jobs` slots, shared by every job source (Socket.IO API
jobs, data-channel jobs): a job is refused at once (busy, unknown model, bad parameters) or runs
in a thread, its text pieces forwarded in batches; cancel stops it within one decoding step."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from mesh_nanollm.worker.engine import Engine, EngineError, Generation

# A batch of text pieces goes out at most this often: well under the server's 50 events/s per
# connection however fast the model writes (the browser batches ~33 ms the same way).
BATCH_S = 0.05

# Refusal codes, as the browser acks them (docs/realtime.md, "API jobs").
MESSAGES = {
    "busy": "This worker already holds as many jobs as it takes.",
    "unknown_model": "This worker has not loaded that model.",
    "not_ready": "This worker is shutting down.",
    "invalid": "This worker already holds a job with this id.",
}


def tokens(count: int) -> str:
    """How a job's line counts what it made: "1 token", "12 tokens"."""
    return f"{count} token" if count == 1 else f"{count} tokens"


class Refused(Exception):
    """A job this worker will not take: `code` is the reason code the browser uses."""

    def __init__(self, code: str, message: str | None = None) -> None:
        super().__init__(message or MESSAGES[code])
        self.code = code


@dataclass(slots=True)
class Outcome:
    """A finished job: this attempt's whole text and its metrics (the job_done payload's)."""

    text: str
    metrics: dict[str, Any]


@dataclass(slots=True)
class Job:
    id: str
    model: str
    generation: Generation
    cancelled: threading.Event = field(default_factory=threading.Event)
    started: float = field(default_factory=time.perf_counter)


class Runner:
    def __init__(self, engines: dict[str, Engine], slots: int) -> None:
        self.engines = engines
        self.slots = slots
        self.jobs: dict[str, Job] = {}
        self.tok_s = 0.0  # the last job's measured decoding speed
        self.closed = False  # draining: no new jobs
        self.changed: Callable[[], None] = lambda: None  # told when a job starts or ends

    @property
    def backend(self) -> str:
        return next(iter(self.engines.values())).backend

    def start(self, job_id: str, model: str, params: dict, *, prompt: str | None = None,
              messages: list[dict] | None = None, resume_text: str = "", count_resumed: bool = True) -> Job:
        """Take a job into a slot, or raise Refused. `prompt` is a room prompt (through the chat
        template as one user message when the model has one); `messages` an API chat."""
        if self.closed:
            raise Refused("not_ready")
        engine = self.engines.get(model)
        if engine is None:
            raise Refused("unknown_model")
        if job_id in self.jobs:
            raise Refused("invalid")
        if len(self.jobs) >= self.slots:
            raise Refused("busy")
        if messages is not None:
            text = engine.prompt_for(messages)
        elif engine.has_chat_template:
            text = engine.prompt_for([{"role": "user", "content": prompt or ""}])
        else:
            text = prompt or ""
        cancelled = threading.Event()
        try:
            generation = engine.generate(text, params, cancelled, resume_text, count_resumed=count_resumed)
        except EngineError as exc:
            raise Refused("invalid", str(exc)) from None
        job = Job(job_id, model, generation, cancelled)
        self.jobs[job_id] = job
        self.changed()
        return job

    def cancel(self, job_id: str) -> bool:
        job = self.jobs.get(job_id)
        if job is not None:
            job.cancelled.set()
        return job is not None

    def cancel_all(self) -> None:
        for job_id in list(self.jobs):
            self.cancel(job_id)

    async def run(self, job: Job, send: Callable[[int, str], Awaitable[None]]) -> Outcome:
        """Decode `job` in a thread; `send(seq, text)` gets each batch of new text with the tokens
        generated so far. Errors from the runtime propagate (the caller sends job_error)."""
        loop = asyncio.get_running_loop()
        pieces: asyncio.Queue[str | None] = asyncio.Queue()

        def decode() -> None:
            try:
                for piece in job.generation:
                    loop.call_soon_threadsafe(pieces.put_nowait, piece)
            finally:
                loop.call_soon_threadsafe(pieces.put_nowait, None)

        worker = loop.run_in_executor(None, decode)
        text: list[str] = []
        try:
            ended = False
            while not ended:
                batch = [await pieces.get()]
                while not pieces.empty():
                    batch.append(pieces.get_nowait())
                ended = batch[-1] is None
                added = "".join(p for p in batch if p is not None)
                if added:
                    text.append(added)
                    await send(max(job.generation.tokens, 1), added)
                if not ended:
                    await asyncio.sleep(BATCH_S)
            await worker  # raises what decoding raised
        finally:
            job.cancelled.set()  # a caller that gave up stops the thread within a step
            with contextlib.suppress(Exception):
                await asyncio.shield(worker)
            self.jobs.pop(job.id, None)
            self.changed()
        g = job.generation
        if g.tok_s:
            self.tok_s = g.tok_s
        metrics = {
            "tokens": g.tokens,
            "resumed_tokens": g.resumed_tokens,
            "prompt_tokens": g.prompt_tokens,
            "ttft_ms": g.ttft_ms,
            "tok_s": g.tok_s,
            "total_ms": (time.perf_counter() - job.started) * 1000,
            "reason": g.finish_reason,
            "backend": self.backend,
        }
        return Outcome("".join(text), metrics)

    async def drain(self, bound_s: float) -> None:
        """Take no new jobs; wait up to `bound_s` for the running ones, then cancel what is left
        and wait for those to answer."""
        self.closed = True
        deadline = time.monotonic() + bound_s
        while self.jobs and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        self.cancel_all()
        while self.jobs:
            await asyncio.sleep(0.05)
