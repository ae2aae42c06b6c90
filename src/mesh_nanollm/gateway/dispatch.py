"""The server's scheduler for API jobs: which peer runs a job, the bounded wait for one, the relay
of its tokens (stop strings cut here), failover with the text so far, and the records it writes.
The cost model and the limits are in docs/gateway.md."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from mesh_nanollm.catalogue import WORKER_BACKENDS, ModelEntry
from mesh_nanollm.gateway import service
from mesh_nanollm.gateway.stops import StopCutter
from mesh_nanollm.jobs.trace import Recorder
from mesh_nanollm.peers.service import list_peer_sockets
from mesh_nanollm.realtime.jobs import Inbox, JobRelay
from mesh_nanollm.realtime.presence import Presence
from mesh_nanollm.settings import Settings

log = logging.getLogger("mesh_nanollm.gateway")

# The browser's cost model (static/js/lane.js, timeToStart), from what a peer reports in `status`.
DEFAULT_TOK_S = {"webgpu": 40.0, "wasm": 20.0}
LOAD_BASE_MS = 1500.0
LOAD_BYTES_PER_MS = 10_000.0  # 10 MB/s for a model the peer still has to fetch
PREFILL_SPEEDUP = 8.0  # a prompt token costs about an eighth of a generated one
QUEUED_JOB_TOKENS = 128  # what one job in a peer's reported queue is taken to still produce
CHARS_PER_TOKEN = 4  # the prompt's size in tokens, estimated before any tokenizer sees it
# How often a waiting request looks again for a free peer (peers on other instances show up only
# through the database, so there is nothing to wake on for them).
RECHECK_S = 0.5
# A running job's record is brought up to date at least this often (and three times per
# JOB_ABANDON_AFTER), so the sweep never takes a long job for an abandoned one.
PROGRESS_EVERY_S = 60.0
# Declines that will not change by waiting: that peer is not asked again for this job. A peer that
# declined for now (`busy`, `not_ready`, `paused`, `sharing_off`) or did not answer is asked again
# after a pause. `too_large`: the model is over what that peer downloads for others.
FINAL_DECLINES = {"unknown_model", "needs_other_backend", "invalid", "too_large"}
# A peer's `invalid` decline is about the request itself (the worker's prompt over the model's
# context, or empty once tokenised), except the one JobRelay.run_on makes of an ack that is not one.
NOT_AN_ACK = "The ack is not valid"
# What both the headless worker and the page's inference worker (its job_error `too_long`, after the
# ack) say of a prompt over the model's context.
OVER_CONTEXT = re.compile(r"The prompt is \d+ tokens; this model reads at most \d+")
ASK_AGAIN_AFTER_S = 2.0
MB = 1_000_000  # as the page counts its download limit (static/js/serving.js)
# After the server cut the text at a stop string (a peer that does not stop there itself), how long
# it waits for that attempt's job_done, whose prompt_tokens the usage reports.
STOP_DONE_WAIT_S = 2.0


class GatewayError(Exception):
    """An API request that cannot be served; the routes answer it in OpenAI's error shape."""

    def __init__(
        self, status: int, message: str, type_: str = "invalid_request_error",
        code: str | None = None, param: str | None = None, headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.code = code
        self.param = param
        self.headers = headers or {}


@dataclass(frozen=True)
class JobSpec:
    """One API request, validated: what to run, where, for whom."""

    room_id: int
    room_slug: str
    user_id: int
    client: str  # whose concurrency it counts against: a token's hash, or a session's user
    model: ModelEntry
    prompt: str | None  # completions
    messages: list[dict[str, str]] | None  # chat
    record_prompt: str  # what the job's record shows as its prompt
    params: dict[str, Any]  # job_run's params, max_new_tokens included
    stop: tuple[str, ...] = ()
    user: str | None = None  # OpenAI's `user`: recorded, not sent

    @property
    def max_tokens(self) -> int:
        return self.params["max_new_tokens"]


@dataclass(frozen=True)
class Candidate:
    peer_id: str
    sid: str
    backend: str
    models_warm: tuple[str, ...]
    queue: int
    tok_s: float
    age_rank: int  # 0 for the room's oldest peer
    download_mb: int = 0  # a browser's limit on what it fetches for others (its user's sharing settings)
    paused: bool = False


def why_not(peer: Candidate, model: ModelEntry) -> str | None:
    """Why `peer` will not run `model`, whatever it waits for; None when it would. A headless
    worker runs only the models it loaded; a page, those its backend runs that are loaded there or
    within its download limit (the page declines the rest as `too_large`, static/js/serving.js)."""
    if peer.backend in WORKER_BACKENDS:
        return None if model.id in peer.models_warm else f"a worker ({peer.backend}) that has not loaded it"
    if peer.backend not in model.backends:
        return f"a browser whose backend ({peer.backend or 'not known yet'}) does not run it"
    if model.id not in peer.models_warm and model.size_bytes > peer.download_mb * MB:
        return f"a browser ({peer.backend}) where it is not loaded, over its {peer.download_mb} MB download limit"
    return None


def time_to_start_ms(peer: Candidate, model: ModelEntry, prompt_chars: int) -> float:
    """How long until `peer` would produce its first token of this job: its queue, then loading
    the model if it is not warm, then the prompt (lane.js timeToStart with what `status` says)."""
    tok_s = peer.tok_s or DEFAULT_TOK_S.get(peer.backend, DEFAULT_TOK_S["wasm"])
    waiting = peer.queue * QUEUED_JOB_TOKENS * 1000 / tok_s
    load = 0.0 if model.id in peer.models_warm else LOAD_BASE_MS + model.size_bytes / LOAD_BYTES_PER_MS
    prefill = (prompt_chars / CHARS_PER_TOKEN) * 1000 / (tok_s * PREFILL_SPEEDUP)
    return waiting + load + prefill


@dataclass
class Outcome:
    finish_reason: str  # "stop" or "length"
    completion_tokens: int
    prompt_tokens: int


class Gateway:
    """This instance's API jobs: concurrency per client, the wait for peers, who is busy."""

    def __init__(self, relay: JobRelay, presence: Presence, settings: Settings, *, across_instances: bool) -> None:
        self.relay = relay
        self.presence = presence
        self.settings = settings
        self.across_instances = across_instances
        self.waiting = 0
        self.running: dict[str, int] = {}
        self.busy: set[str] = set()  # peers running one of this instance's jobs
        self._freed: asyncio.Event | None = None

    def freed(self) -> asyncio.Event:
        if self._freed is None:
            self._freed = asyncio.Event()
        return self._freed

    def release(self, peer_id: str) -> None:
        self.busy.discard(peer_id)
        self.freed().set()

    async def start(self, spec: JobSpec) -> Run:
        """Record the job and hand it to a peer; the Run relays what the peer makes.
        GatewayError 429 past the client's concurrency cap, 503 when no peer takes it in time."""
        cap = self.settings.gateway_token_concurrency
        if self.running.get(spec.client, 0) >= cap:
            raise GatewayError(
                429, f"At most {cap} requests with this token may run at once; wait for one to finish.",
                "rate_limit_error", "concurrency_limit_exceeded", headers={"Retry-After": "1"},
            )
        self.running[spec.client] = self.running.get(spec.client, 0) + 1
        stack = contextlib.AsyncExitStack()
        stack.callback(self._done_running, spec.client)
        try:
            job_id = await service.record_queued(
                spec.room_id, spec.user_id, spec.model.id, spec.record_prompt,
                spec.params | {
                    "stop": list(spec.stop), "user": spec.user,
                    "endpoint": "chat" if spec.messages is not None else "completions",
                },
            )
            run = Run(self, job_id, spec, stack)
            run.inbox = await stack.enter_async_context(
                self.relay.inbox(str(job_id), self.settings.gateway_buffer, run.overflowed)
            )
            await run.dispatch()
            return run
        except BaseException:
            await stack.aclose()
            raise

    def _done_running(self, client: str) -> None:
        left = self.running.get(client, 1) - 1
        if left:
            self.running[client] = left
        else:
            self.running.pop(client, None)

    async def live_peers(self, room_id: int, *, paused: bool = False) -> list[Candidate]:
        """The room's live peers that serve, oldest first, each with its latest status: first-hand
        for the peers on this instance, as last written for the others. A paused peer (its tab
        hidden, its user not sharing, …) is left out unless asked for: nobody offers it work."""
        found = []
        for rank, row in enumerate(await list_peer_sockets(room_id)):
            peer_id = str(row["peer_id"])
            local = self.presence.peers.get(peer_id)
            limit = row["download_mb"] or 0
            if local is not None:  # this instance hears its status first-hand
                s = local.status
                peer = Candidate(peer_id, local.sid, s.backend, tuple(s.models_warm), s.queue, s.tok_s, rank, limit,
                                 s.state == "paused")
            elif self.across_instances:
                peer = Candidate(
                    peer_id, row["sid"], row["backend"], tuple(row["models_warm"] or ()), row["queue"], row["tok_s"], rank,
                    limit, row["state"] == "paused",
                )
            else:  # a lone instance knows all its peers: this row's peer has left, unflushed
                continue
            if paused or not peer.paused:
                found.append(peer)
        return found

    def candidates(self, spec: JobSpec, peers: list[Candidate], exclude: set[str]) -> list[Candidate]:
        """Of the room's `peers`, those that could run the job now, cheapest first (ties: shorter
        queue, then the peer that has been in the room longest)."""
        found = [
            peer for peer in peers
            if not peer.paused and peer.peer_id not in exclude and peer.peer_id not in self.busy
            and why_not(peer, spec.model) is None
        ]
        chars = len(spec.record_prompt)
        found.sort(key=lambda p: (time_to_start_ms(p, spec.model, chars), p.queue, p.age_rank))
        return found


@dataclass
class Run:
    """One API job from its dispatch to its end, as its HTTP request sees it."""

    gateway: Gateway
    job_id: UUID
    spec: JobSpec
    stack: contextlib.AsyncExitStack
    inbox: Inbox = field(init=False)
    peer: Candidate | None = None
    shunned: dict[str, str] = field(default_factory=dict)  # peers that failed or refused this job, and how
    refusals: dict[str, str] = field(default_factory=dict)  # peers that found the request itself invalid: their reason
    declined: dict[str, float] = field(default_factory=dict)  # peers that declined for now, and when
    text: str = ""  # everything the peers made so far: the next attempt's resume_text
    stop_tokens: int | None = None  # once the server cut at a stop string: the answer's tokens up to it
    tokens_before: int = 0  # tokens of the attempts before this one
    attempt_tokens: int = 0
    attempt_text: str = ""
    first_token_seen: bool = False
    recorded_at: float = 0.0  # when the record last heard of the job's progress (monotonic)
    outcome: Outcome | None = None
    failed: bool = False
    cut_off: bool = False
    reader: asyncio.Task[Any] | None = None
    cutter: StopCutter = field(init=False)
    # The server witnesses API jobs: their trace and decode clock are recorded here (docs/gateway.md).
    trace: Recorder = field(default_factory=Recorder)
    attempts: int = 0

    def __post_init__(self) -> None:
        self.cutter = StopCutter(self.spec.stop)

    @property
    def id(self) -> str:
        return str(self.job_id)

    @property
    def tokens(self) -> int:
        return self.tokens_before + self.attempt_tokens

    def payload(self) -> dict[str, Any]:
        params = self.spec.params | {"max_new_tokens": self.spec.max_tokens - self.tokens_before}
        body: dict[str, Any] = {"job_id": self.id, "model": self.spec.model.id, "params": params}
        if self.spec.messages is not None:
            body["messages"] = self.spec.messages
        else:
            body["prompt"] = self.spec.prompt
        if self.text:
            body["resume_text"] = self.text
        return body

    async def dispatch(self) -> None:
        """Hand the job to the cheapest peer that takes it, waiting up to GATEWAY_QUEUE_WAIT for
        one; GatewayError 503 (and the job recorded failed) when none does."""
        gateway, settings = self.gateway, self.gateway.settings
        if gateway.waiting >= settings.gateway_queue_max:
            await self._no_peer(f"{gateway.waiting} requests are already waiting for a peer")
        deadline = time.monotonic() + settings.gateway_queue_wait_s
        gateway.waiting += 1
        hopeless = None
        try:
            while True:
                now = time.monotonic()
                resting = {p for p, at in self.declined.items() if now - at < ASK_AGAIN_AFTER_S}
                peers = await gateway.live_peers(self.spec.room_id, paused=True)
                for peer in gateway.candidates(self.spec, peers, self.shunned.keys() | resting):
                    if await self._offer(peer):
                        return
                left = deadline - time.monotonic()
                if left <= 0 or (hopeless := self._hopeless(peers)):
                    break
                freed = gateway.freed()
                freed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(freed.wait(), min(RECHECK_S, left))
        finally:
            gateway.waiting -= 1
        if hopeless and self.refusals and not self.text:
            await self._refuse_request()
        await self._no_peer(hopeless or f"no peer took it within {settings.gateway_queue_wait_s} s")

    def _hopeless(self, peers: list[Candidate]) -> str | None:
        """Why waiting cannot help, when every peer in the room has refused this job for good or
        cannot run its model; None while one still could (it is busy, declined for now, paused,
        or still starting), and while the room has no peer at all (one may yet come)."""
        why = []
        for peer in peers:
            if peer.peer_id in self.shunned:
                why.append(self.shunned[peer.peer_id])
            elif not peer.backend or (reason := why_not(peer, self.spec.model)) is None:
                return None
            else:
                why.append(reason)
        return ("waiting would not help: " + "; ".join(why)) if why else None

    async def _offer(self, peer: Candidate) -> bool:
        gateway = self.gateway
        gateway.busy.add(peer.peer_id)
        peer_id = UUID(peer.peer_id)
        self.trace.add("offered", peer=peer_id)
        ack = await gateway.relay.run_on(peer.sid, self.payload(), gateway.settings.gateway_ack_timeout_s)
        if ack is not None and ack.ok:
            self.peer = peer
            self.attempt_tokens, self.attempt_text = 0, ""
            self.first_token_seen = False
            self.attempts += 1
            self.trace.add("accepted", peer=peer_id)
            self.trace.add("dispatched", attempt=self.attempts, peer=peer_id)
            await service.record_attempt(self.job_id, peer.peer_id)
            return True
        gateway.release(peer.peer_id)
        reason = "no answer in time" if ack is None else ack.error.code if ack.error else "declined"
        self.trace.add("declined", peer=peer_id, reason=reason)
        if ack is None:  # it may yet start the job late: make sure it does not
            await gateway.relay.cancel_on(peer.sid, self.id)
            self.declined[peer.peer_id] = time.monotonic()
        elif ack.error is None or ack.error.code in FINAL_DECLINES:
            message = ack.error.message if ack.error else "an answer that was not an ack"
            self.shunned[peer.peer_id] = f"a peer that declined it ({reason}: {message[:200]})"
            if reason == "invalid" and not message.startswith(NOT_AN_ACK):
                self.refusals[peer.peer_id] = message[:500]
        else:
            self.declined[peer.peer_id] = time.monotonic()
        return False

    async def _refuse_request(self) -> None:
        """Every peer of the room refused the job for good, and one of them because of the request
        itself (its prompt over the model's context, say): waiting or retrying cannot help, so the
        client gets a 400 with that peer's reason, not a 503 its client would retry."""
        self.failed = True
        reasons = list(self.refusals.values())
        reason = next((r for r in reasons if OVER_CONTEXT.search(r)), reasons[0])
        field_name = "messages" if self.spec.messages is not None else "prompt"
        too_long = OVER_CONTEXT.search(reason) is not None
        self.trace.add("error", reason=f"refused by the peers: {reason}")
        await service.record_finished(
            self.job_id, "failed", self.cutter.text, self.tokens, None, f"Refused by the room's peers: {reason}", self.trace
        )
        advice = f" Shorten the {field_name}, or use a model that reads more." if too_long else ""
        raise GatewayError(
            400, f"Model “{self.spec.model.id}” cannot run this request: {reason}{advice}", "invalid_request_error",
            "context_length_exceeded" if too_long else None, field_name if too_long else None,
        )

    async def _no_peer(self, why: str) -> None:
        self.failed = True
        room, model = self.spec.room_slug, self.spec.model.id
        self.trace.add("error", reason=f"no peer available: {why}")
        await service.record_finished(
            self.job_id, "failed", self.cutter.text, self.tokens, None, f"No peer available: {why}.", self.trace
        )
        retry = max(1, min(self.gateway.settings.gateway_queue_wait_s, 30))
        raise GatewayError(
            503, f"No peer in room “{room}” can run model “{model}” now ({why}). Open the room on a "
            "device that shares, or try again later.", "server_error", "no_peer_available",
            headers={"Retry-After": str(retry)},
        )

    async def pieces(self) -> AsyncIterator[str]:
        """The answer's text as it arrives, cut at the first stop string, across failovers; then
        `outcome` says how it ended. A failover that finds no peer raises GatewayError."""
        self.reader = asyncio.current_task()
        stall = self.gateway.settings.gateway_stall_timeout_s
        while self.outcome is None:
            event = await self.inbox.get(stall)
            if event is None:
                await self._fail_over(f"the worker sent nothing for {stall} s", "silent")
                continue
            if self.peer is None or event.peer_id != self.peer.peer_id:
                if event.kind != "gone":
                    await self.gateway.relay.refuse(event.sid, "not_your_job", f"Job {self.id} is not running on this peer.")
                continue
            if event.kind == "token":
                if out := await self._token(event.data):
                    yield out
                if self.stop_tokens is not None:
                    await self._end_at_stop()
            elif event.kind == "done":
                if out := await self._done(event.data):
                    yield out
            else:
                error = f"{event.data.get('code')}: {event.data.get('message')}"
                if event.kind == "error" and event.data.get("code") == "too_long" and not self.attempt_tokens:
                    # A page accepts first, then finds the prompt over its model's context.
                    self.refusals[event.peer_id] = str(event.data.get("message"))[:500]
                why = "its socket closed" if event.kind == "gone" else error
                await self._fail_over(f"the worker stopped ({why})", "closed" if event.kind == "gone" else f"error: {error}")

    async def _token(self, data: dict[str, Any]) -> str:
        if not self.first_token_seen:
            self.first_token_seen = True
            self.trace.add("first_token", attempt=self.attempts)
            await service.record_first_token(self.job_id)  # the job's first; later ones change nothing
            self.recorded_at = time.monotonic()
        made = max(0, data["seq"] - self.attempt_tokens)
        if made:
            self.trace.tokens_arrived(made)
        self.attempt_tokens += made
        out = self._add(data["text"], made)
        # A record nobody touches for JOB_ABANDON_AFTER is swept as abandoned: a long job keeps
        # its record fresh, and shows its text so far in the history while it runs.
        every = min(PROGRESS_EVERY_S, self.gateway.settings.abandon_after_s / 3)
        if self.outcome is None and time.monotonic() - self.recorded_at >= every:
            self.recorded_at = time.monotonic()
            await service.record_progress(self.job_id, self.cutter.text[: self.cutter.sent], self.tokens)
        return out

    def _add(self, text: str, made: int) -> str:
        """Relay `text`, the last `made` tokens of the ones counted so far."""
        self.attempt_text += text
        self.text += text
        start = len(self.cutter.text)
        out = self.cutter.feed(text)
        if self.cutter.stopped and self.stop_tokens is None:
            # Only the batch's token count is known, not where in its text each token ends: the
            # tokens up to the stop string's end are taken in proportion to its characters.
            share = (self.cutter.stop_end - start) / len(text) if text else 1.0
            self.stop_tokens = self.tokens - made + min(made, max(1, math.ceil(made * share)))
        return out

    async def _done(self, data: dict[str, Any]) -> str:
        metrics = data.get("metrics") or {}
        whole = data.get("text", "")
        # Batches lost on the way (there should be none) are made good from the whole text.
        made = max(0, (metrics.get("tokens") or 0) - self.attempt_tokens)
        self.attempt_tokens += made
        out = self._add(whole[len(self.attempt_text):], made) if whole.startswith(self.attempt_text) else ""
        if self.stop_tokens is not None:  # a stop string in the text made good ended it
            self._stopped_here(metrics)
            return out
        if metrics.get("reason") == "cancelled":
            await self._fail_over("the worker cancelled the job", "error: cancelled by the worker")
            return out
        # The worker's own clock, where the tokens were made (the decode clock here is where they arrived).
        worker = {key: metrics[key] for key in ("ttft_ms", "tok_s") if isinstance(metrics.get(key), (int, float))}
        self.trace.add("done", attempt=self.attempts, peer=UUID(self.peer.peer_id), tokens=self.tokens, **worker)
        out += self.cutter.flush()
        self.outcome = Outcome(
            "length" if metrics.get("reason") == "length" else "stop", self.tokens, metrics.get("prompt_tokens") or 0
        )
        return out

    async def _end_at_stop(self) -> None:
        """The server cut the text at a stop string the peer did not stop at: cancel the job there
        and wait a little for that attempt's job_done, whose prompt_tokens the usage reports. A peer
        that vanishes or says nothing in time leaves the prompt's size estimated."""
        peer = self.peer
        assert peer is not None
        await self.gateway.relay.cancel_on(peer.sid, self.id)
        deadline = time.monotonic() + min(STOP_DONE_WAIT_S, self.gateway.settings.gateway_stall_timeout_s)
        metrics: dict[str, Any] = {}
        while (left := deadline - time.monotonic()) > 0:
            event = await self.inbox.get(left)
            if event is None or event.peer_id != peer.peer_id:
                continue  # other peers' events are of no interest now: the job has its answer
            if event.kind == "done":
                metrics = event.data.get("metrics") or {}
            if event.kind != "token":
                break
        self._stopped_here(metrics)

    def _stopped_here(self, metrics: dict[str, Any]) -> None:
        """The answer ends at the stop string the server cut at: its usage, as far as it is known."""
        assert self.stop_tokens is not None
        prompt = metrics.get("prompt_tokens") or math.ceil(len(self.spec.record_prompt) / CHARS_PER_TOKEN)
        self.outcome = Outcome("stop", self.stop_tokens, prompt)

    async def _fail_over(self, why: str, reason: str) -> None:
        """The worker is gone or stuck: cancel it there, record the attempt, find another peer
        that continues from the text so far. `reason`, for the trace: closed | silent | error: …."""
        old = self.peer
        assert old is not None
        self.trace.add("failover", attempt=self.attempts, peer=UUID(old.peer_id), reason=reason, tokens=self.tokens)
        self.peer = None
        self.shunned[old.peer_id] = f"a peer that failed it ({reason})"
        self.gateway.release(old.peer_id)
        with contextlib.suppress(Exception):
            await self.gateway.relay.cancel_on(old.sid, self.id)
        self.tokens_before += self.attempt_tokens
        self.attempt_tokens, self.attempt_text = 0, ""
        log.info("API job %s fails over: %s", self.id, why)
        if self.tokens_before >= self.spec.max_tokens:
            self.outcome = Outcome("length", self.tokens, 0)
            return
        await service.record_requeued(self.job_id, self.text, self.tokens_before, f"Attempt failed: {why}.")
        await self.dispatch()

    def overflowed(self) -> None:
        """The client stopped reading and the buffer is full: cut it off, cancel the job."""
        self.cut_off = True
        if self.reader is not None:
            self.reader.cancel()

    async def close(self) -> None:
        """The request is over: record how the job ended (cancelled, if the client left first) and
        free the peer and the client's slot."""
        try:
            if self.outcome is not None:
                tokens = self.outcome.completion_tokens
                if self.trace.events[-1].kind != "done":  # a stop string ended it, here
                    self.trace.add("done", attempt=self.attempts, tokens=tokens)
                await service.record_finished(
                    self.job_id, "succeeded", self.cutter.text, tokens, self.outcome.finish_reason, "", self.trace
                )
            elif not self.failed:
                if self.peer is not None:
                    await self.gateway.relay.cancel_on(self.peer.sid, self.id)
                why = "the client stopped reading" if self.cut_off else "the client closed the connection"
                self.trace.add("cancel", reason=why)
                await service.record_finished(
                    self.job_id, "cancelled", self.cutter.text, self.tokens, None, f"Cancelled: {why}.", self.trace
                )
        finally:
            if self.peer is not None:
                self.gateway.release(self.peer.peer_id)
            await self.stack.aclose()
