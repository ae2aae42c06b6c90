"""The worker in the data-channel mesh: a browser requester in mesh mode gets its job run by the
worker over a data channel (tokens streamed, the job recorded with the worker as worker_peer), its
cancel stops the worker, and the worker leaving mid-job leaves the browser to finish the job."""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import pytest_asyncio
from conftest import LiveServer
from mesh.aiortc_peer import PythonPeer, allow_loopback_candidates
from mesh.conftest import OpenPeer, open_peer, room_name  # noqa: F401 -- open_peer is a fixture
from mesh.test_mesh import CANCEL_ON_FIRST_WORDS
from playwright.async_api import expect
from support.accounts import create_room, sign_up
from support.pages import ChatPage

from mesh_nanollm.worker.engine import load_engine
from mesh_nanollm.worker.mesh import Mesh, ice_servers
from mesh_nanollm.worker.peer import WorkerPeer
from mesh_nanollm.worker.runner import Runner
from worker.conftest import MODEL, PROJECT_ROOT

pytestmark = pytest.mark.browser

PROMPT = "You may"


class Gated:
    """A Generation that stops after its first pieces until `gate` opens (or it is cancelled), so
    a test can act mid-job whatever the machine's speed."""

    def __init__(self, generation: Any, gate: threading.Event, cancelled: threading.Event) -> None:
        self.generation, self.gate, self.cancelled = generation, gate, cancelled

    def __iter__(self) -> Iterator[str]:
        for n, piece in enumerate(self.generation):
            yield piece
            while n >= 3 and not self.gate.is_set() and not self.cancelled.is_set():
                self.gate.wait(0.05)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.generation, name)


class GatedEngine:
    def __init__(self, engine: Any) -> None:
        self.engine, self.gate = engine, threading.Event()

    def generate(self, prompt: str, params: dict, cancelled: threading.Event, *args: Any, **kw: Any) -> Gated:
        return Gated(self.engine.generate(prompt, params, cancelled, *args, **kw), self.gate, cancelled)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)


class InProcessWorker:
    """The worker's WorkerPeer + Runner + Mesh in the test's own loop (loopback ICE candidates)."""

    def __init__(self, url: str, token: str, slug: str) -> None:
        self.engine = GatedEngine(load_engine(MODEL, models_dir=PROJECT_ROOT / "models"))
        self.lines: list[str] = []
        self.peer = WorkerPeer(Runner({MODEL: self.engine}, 1), server=url, token=token, room=slug,
                               say=self.lines.append)
        self.mesh = Mesh(self.peer.runner, self.peer.sio, self.lines.append)
        self.peer.listeners.append(self.mesh.room_event)

    async def wait_for_line(self, needle: str, timeout: float = 30) -> str:
        async with asyncio.timeout(timeout):
            while not (found := [line for line in self.lines if needle in line]):
                await asyncio.sleep(0.05)
        return found[0]


@pytest_asyncio.fixture
async def room_with_worker(live_server: LiveServer) -> AsyncIterator[tuple[Any, dict, InProcessWorker]]:
    allow_loopback_candidates()
    owner = await sign_up(live_server.url)
    room = await create_room(live_server.url, owner, room_name(), private=False)
    worker_account = await sign_up(live_server.url)
    worker = InProcessWorker(live_server.url, worker_account.token, room["slug"])
    yield owner, room, worker
    worker.engine.gate.set()
    await worker.peer.stop(5)


async def test_browser_mesh_job_runs_on_the_worker_over_a_data_channel(
    open_peer: OpenPeer, room_with_worker: tuple[Any, dict, InProcessWorker]  # noqa: F811
) -> None:
    owner, room, worker = room_with_worker
    worker.engine.gate.set()
    alice = await open_peer(room["slug"], owner)
    await worker.peer.start()  # the worker comes to a room the page is in: it makes the offer
    await alice.wait_for_links(1)
    worker_id = worker.peer.peer_id

    local = await alice.run_and_wait(PROMPT, 48, "local")
    meshed = await alice.run_and_wait(PROMPT, 48, "mesh")
    again = await alice.run_and_wait(PROMPT, 48, "mesh")  # with the speed the worker measured

    assert meshed["status"] == "succeeded" and meshed["mode"] == "mesh"
    assert meshed["worker_peer"] == worker_id and meshed["workers"] == [worker_id] and meshed["attempts"] == 1
    assert again["worker_peer"] == worker_id and again["output"] == local["output"]
    # Greedy decoding: the worker's onnxruntime wrote what the browser's transformers.js writes.
    assert meshed["output"] == local["output"] and meshed["token_count"] == local["token_count"]
    await expect(alice.output).to_have_text(local["output"])
    # Named as what it is, on the room page and the job's page: no browser.
    peers = await (await alice.page.context.request.get(f"{alice.base_url}/api/rooms/{room['slug']}/peers")).json()
    [username] = [peer["username"] for peer in peers if peer["peer_id"] == worker_id]
    await expect(alice.metrics).to_contain_text(f"ran on {username}'s worker")
    job_page = await alice.page.context.new_page()
    await job_page.goto(f"{alice.base_url}/jobs/{meshed['id']}")
    await expect(job_page.get_by_text(f"ran in {username}'s worker")).to_be_visible()
    await job_page.close()
    # The worker's own line for the job (the page runs it under its own id, not the record's).
    line = await worker.wait_for_line(f"{MODEL} (mesh, for peer {await alice.own_peer_id()}): ")
    assert line.endswith(f": length, {meshed['token_count']} tokens")

    await alice.page.close()  # the page leaves: the worker lets its connection go
    async with asyncio.timeout(30):
        while worker.mesh.links:
            await asyncio.sleep(0.05)


async def test_a_conversation_answer_runs_on_the_worker(
    open_peer: OpenPeer, room_with_worker: tuple[Any, dict, InProcessWorker]  # noqa: F811
) -> None:
    owner, room, worker = room_with_worker
    worker.engine.gate.set()
    page = await open_peer(room["slug"], owner)
    await worker.peer.start()
    await page.wait_for_links(1)
    chat = ChatPage(page.page, page.base_url, account=owner)
    await chat.send(PROMPT, max_tokens=8, mode="mesh")
    await chat.send("The Program", max_tokens=8, mode="mesh")
    turns = (await chat.stored())["turns"]
    job = await chat.job(turns[3]["job"])
    # The job_run carried the messages; the worker rendered them as the page recorded them.
    assert job["worker_peer"] == worker.peer.peer_id
    assert job["prompt"] == f"user: {PROMPT}\nassistant: {turns[1]['content']}\nuser: The Program\nassistant:"
    expected = "".join(worker.engine.engine.generate(job["prompt"], {"max_new_tokens": 8}, threading.Event()))
    assert job["output"] == expected


async def test_cancel_from_the_page_stops_the_worker(
    open_peer: OpenPeer, room_with_worker: tuple[Any, dict, InProcessWorker]  # noqa: F811
) -> None:
    owner, room, worker = room_with_worker
    await worker.peer.start()
    alice = await open_peer(room["slug"], owner)  # the page comes to the worker: it makes the offer
    await alice.wait_for_links(1)

    await alice.page.evaluate(CANCEL_ON_FIRST_WORDS)
    await alice.run(PROMPT, 200, "mesh")  # the gate holds the worker after a few tokens
    job = await alice.recorded_job()

    assert job["status"] == "cancelled" and job["worker_peer"] == worker.peer.peer_id
    line = await worker.wait_for_line(f"{MODEL} (mesh, for peer {await alice.own_peer_id()}): ")
    assert line.endswith("tokens") and ": cancelled, " in line
    assert int(line.rsplit(", ", 1)[1].split()[0]) < 200  # the worker stopped, not just its stream
    assert not worker.peer.runner.jobs


async def test_worker_leaving_mid_job_leaves_the_browser_to_finish_it(
    open_peer: OpenPeer, room_with_worker: tuple[Any, dict, InProcessWorker]  # noqa: F811
) -> None:
    owner, room, worker = room_with_worker
    await worker.peer.start()
    alice = await open_peer(room["slug"], owner)  # the page comes to the worker: it makes the offer
    await alice.wait_for_links(1)
    worker_id = worker.peer.peer_id
    local = await alice.run_and_wait(PROMPT, 64, "local")

    await alice.run(PROMPT, 64, "mesh")
    await expect(alice.output).not_to_be_empty()  # the worker's first tokens; then the gate holds it
    await worker.peer.sio.disconnect()  # the worker leaves: its links close with it

    job = await alice.recorded_job()
    assert job["status"] == "succeeded" and job["attempts"] == 2
    assert job["workers"] == [worker_id, "local"]
    assert job["output"] == local["output"]  # nothing lost, nothing said twice
    await expect(alice.metrics).to_contain_text("dropped out")


async def test_worker_declines_with_reasons_and_ignores_malformed_messages(
    live_server: LiveServer, room_with_worker: tuple[Any, dict, InProcessWorker]
) -> None:
    owner, room, worker = room_with_worker
    other = PythonPeer(live_server.url, owner.token)  # speaks the protocol by hand
    try:
        await other.join(room["slug"])
        await worker.peer.start()  # the newcomer offers; the Python peer answers
        await asyncio.wait_for(other.opened.wait(), 20)
        hello = await other.expect("hello")
        assert hello["peer_id"] == worker.peer.peer_id
        assert hello["capabilities"]["backend"] == "onnxruntime-cpu" and hello["capabilities"]["models"] == [MODEL]

        other.send_raw("not json")
        other.send_raw(json.dumps({"v": 2, "type": "ping", "n": 1}))
        other.send({"type": "job_offer", "job_id": "not-a-uuid", "model": MODEL, "task": "text-generation"})
        first, second, third = (str(uuid.uuid4()) for _ in range(3))
        other.send({"type": "job_run", "job_id": first, "model": MODEL, "prompt": PROMPT, "params": {}})
        assert (await other.expect("job_error", job_id=first))["code"] == "not_offered"
        for job_id, model, task in ((first, "no-such-model", "text-generation"), (first, MODEL, "summarization")):
            other.send({"type": "job_offer", "job_id": job_id, "model": model, "task": task, "prompt_tokens": 2})
        assert (await other.expect("job_decline", job_id=first))["reason"] == "unknown_model"
        assert (await other.expect("job_decline", job_id=first))["reason"] == "unsupported_task"

        # One slot: the second offer is declined while the first holds its place, then runs.
        other.send({"type": "job_offer", "job_id": second, "model": MODEL, "task": "text-generation", "prompt_tokens": 2})
        await other.expect("job_accept", job_id=second)
        other.send({"type": "job_offer", "job_id": third, "model": MODEL, "task": "text-generation", "prompt_tokens": 2})
        assert (await other.expect("job_decline", job_id=third))["reason"] == "busy"
        worker.engine.gate.set()
        other.send({"type": "job_run", "job_id": second, "model": MODEL, "prompt": PROMPT, "params": {"max_new_tokens": 8}})
        stream = []  # this job's messages, in the order they came: tokens, then job_done
        while not stream or stream[-1]["type"] != "job_done":
            message = await asyncio.wait_for(other.inbox.get(), 15)
            if message.get("job_id") == second:
                stream.append(message)
        *tokens, done = stream
        assert tokens and {m["type"] for m in tokens} == {"token"}
        seqs = [m["seq"] for m in tokens]
        assert seqs == sorted(seqs) and seqs[-1] <= 8
        assert "".join(m["text"] for m in tokens) == done["text"]
        assert done["metrics"]["tokens"] == 8 and done["metrics"]["reason"] == "length"
        other.send({"type": "ping", "n": 5})
        assert (await other.expect("pong", n=5))["v"] == 1  # still up after all that
    finally:
        await other.close()


def test_ice_servers_are_the_pages_less_what_aiortc_cannot_parse() -> None:
    servers = ice_servers([
        {"urls": ["stun:stun.example.org:3478", "stunx:nonsense"]},
        {"urls": "turn:turn.example.org:3478?transport=tcp", "username": "1700000000:7", "credential": "c2VjcmV0"},
        {"urls": ["not a url"]},
        "junk",
    ])
    assert [(s.urls, s.username, s.credential) for s in servers] == [
        (["stun:stun.example.org:3478"], None, None),
        (["turn:turn.example.org:3478?transport=tcp"], "1700000000:7", "c2VjcmV0"),
    ]
