"""API tests: a live server, the official `openai` client, and fake peers — real Socket.IO clients
that join a room, report their status and answer `job_run` as docs/realtime.md says a worker does."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import openai
import pytest
import pytest_asyncio
import socketio
from conftest import LiveServer
from support.accounts import Account, create_room, sign_up
from support.servers import serving

MODEL = "tiny-gpt2"
# Short waits, so "no peer" and "the worker went silent" are quick to see.
GATEWAY_ENV = {
    "GATEWAY_QUEUE_WAIT": "2", "GATEWAY_ACK_TIMEOUT": "2", "GATEWAY_STALL_TIMEOUT": "3",
    "GATEWAY_TOKEN_CONCURRENCY": "2",
}


@dataclass
class Script:
    """How a fake peer answers one job: token batches, then done, unless told to stop midway."""

    batches: list[str]
    reason: str = "stop"
    stop_after: int | None = None  # send this many batches, then...
    then: str = "done"  # ..."hang" (go silent), "disconnect", "wait_cancel" (until job_cancel)
    # "hold" (until `hold` is set, then the rest) or "error" (job_error with `error`'s code and message)
    error: tuple[str, str] = ("generate_failed", "")
    prompt_tokens: int = 5
    pause: float = 0.02  # between batches
    seqs: list[int] | None = None  # each batch's `seq` (the tokens so far); else one token a batch
    hold: asyncio.Event = field(default_factory=asyncio.Event)


class FakePeer:
    """A Socket.IO client in a room, serving API jobs from a script."""

    def __init__(self, script: Script | None = None, ack: Any = None, warm: tuple[str, ...] = (MODEL,)) -> None:
        self.client = socketio.AsyncClient(reconnection=False)
        self.script = script or Script(["Hello", ",", " world"])
        self.ack = ack or {"ok": True}
        self.warm = list(warm)
        self.runs: list[dict[str, Any]] = []
        self.cancels: list[str] = []
        self.errors: list[dict[str, Any]] = []
        self.peer_id = ""
        self.cancelled = asyncio.Event()
        self.tasks: set[asyncio.Task[Any]] = set()
        self.client.on("job_run", self._on_run)
        self.client.on("job_cancel", self._on_cancel)
        self.client.on("error", self.errors.append)

    async def join(self, url: str, account: Account, room: str, backend: str = "wasm") -> FakePeer:
        await self.client.connect(url, headers={"Authorization": f"Bearer {account.token}"}, transports=["websocket"], wait_timeout=10)
        capabilities = {"backend": backend, "models_warm": self.warm, "state": "idle"}
        ack = await self.client.call("join_room", {"room": room, "capabilities": capabilities}, timeout=10)
        self.peer_id = ack["peer_id"]
        await self.client.emit("status", {"state": "idle", "backend": backend, "models_warm": self.warm, "queue": 0, "tok_s": 20})
        return self

    async def _on_run(self, data: dict[str, Any]) -> dict[str, Any]:
        self.runs.append(data)
        if self.ack == {"ok": True}:
            task = asyncio.create_task(self._serve(data["job_id"]))
            self.tasks.add(task)
        return self.ack

    async def _on_cancel(self, data: dict[str, Any]) -> None:
        self.cancels.append(data["job_id"])
        self.cancelled.set()

    async def _serve(self, job_id: str) -> None:
        script = self.script
        text, seq = "", 0
        for i, batch in enumerate([*script.batches, None]):
            if script.stop_after is not None and i == script.stop_after:
                if script.then == "disconnect":
                    await self.client.disconnect()
                    return
                if script.then == "wait_cancel":
                    await self.cancelled.wait()
                    metrics = {"tokens": seq, "prompt_tokens": script.prompt_tokens, "reason": "cancelled", "backend": "wasm"}
                    await self.client.emit("job_done", {"job_id": job_id, "text": text, "metrics": metrics})
                if script.then == "error":
                    code, message = script.error
                    await self.client.emit("job_error", {"job_id": job_id, "code": code, "message": message})
                    return
                if script.then == "hold":
                    await script.hold.wait()
                else:
                    return  # "hang": never another word
            if batch is None:
                break
            seq = script.seqs[i] if script.seqs else seq + 1
            text += batch
            await self.client.emit("job_token", {"job_id": job_id, "seq": seq, "text": batch})
            await asyncio.sleep(script.pause)
        metrics = {"tokens": seq, "prompt_tokens": script.prompt_tokens, "reason": script.reason, "backend": "wasm"}
        await self.client.emit("job_done", {"job_id": job_id, "text": text, "metrics": metrics})

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        if self.client.connected:
            await self.client.disconnect()


@pytest.fixture(scope="module")
def gateway_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with serving(tmp_path_factory.mktemp("gateway"), **GATEWAY_ENV) as server:
        yield server


@dataclass
class Room:
    url: str
    account: Account
    slug: str
    peers: list[FakePeer] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"{self.url}/api/rooms/{self.slug}/v1"

    def openai(self, **options: Any) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=self.base_url, api_key=self.account.token, max_retries=0, **options)

    async def add_peer(self, script: Script | None = None, url: str | None = None, account: Account | None = None,
                       **options: Any) -> FakePeer:
        peer = FakePeer(script, **options)
        self.peers.append(peer)
        return await peer.join(url or self.url, account or self.account, self.slug)

    async def job(self, job_id: str) -> dict[str, Any]:
        async with httpx.AsyncClient(base_url=self.url, timeout=10) as http:
            response = await http.get(f"/api/jobs/{job_id}", headers={"Authorization": f"Bearer {self.account.token}"})
            assert response.status_code == 200, response.text
            return response.json()

    async def wait_for_job(self, job_id: str, match: Callable[[dict[str, Any]], bool], timeout: float = 10) -> dict[str, Any]:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            job = await self.job(job_id)
            if match(job) or asyncio.get_running_loop().time() > deadline:
                return job
            await asyncio.sleep(0.1)


@pytest_asyncio.fixture
async def room(gateway_server: LiveServer) -> AsyncIterator[Room]:
    """A fresh account and public room of its own, on the gateway server."""
    account = await sign_up(gateway_server.url, "gw")
    made = await create_room(gateway_server.url, account, "api room", private=False)
    room = Room(gateway_server.url, account, made["slug"])
    yield room
    for peer in room.peers:
        await peer.close()


def job_id_of(completion_id: str) -> str:
    """The job's UUID inside a completion id (`chatcmpl-<hex>` / `cmpl-<hex>`)."""
    import uuid

    return str(uuid.UUID(completion_id.rsplit("-", 1)[1]))
