"""`mesh-nanollm worker` as a peer of a live server: it serves the gateway's jobs (asked with the
`openai` client), shows in the peers panel as a worker, comes back after the server restarts,
drains on SIGTERM and SIGINT, and exits 1 when the server ends its place (token revoked, room
deleted)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import threading
import uuid
from pathlib import Path

import httpx
import openai
import pytest
from conftest import LiveServer, start_server
from support.accounts import create_room, csrf_token, room_peers, sign_up

from mesh_nanollm.worker.engine import load_engine
from worker.conftest import GATEWAY_ENV, MODEL, PROJECT_ROOT, Room

pytestmark = pytest.mark.slow

MESSAGES = [{"role": "user", "content": "Once upon a time"}]


def greedy(messages: list[dict], max_new_tokens: int) -> str:
    """What the tiny model answers greedily, computed here with the same runtime."""
    engine = load_engine(MODEL, models_dir=PROJECT_ROOT / "models")
    generation = engine.generate(engine.prompt_for(messages), {"max_new_tokens": max_new_tokens},
                                 threading.Event(), count_resumed=False)
    return "".join(generation)


def kill_server(server: LiveServer) -> None:
    """SIGKILL the server and its Granian worker processes: a crash, no goodbye to the sockets."""
    pid = server.process.pid
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    for each in [pid, *map(int, children)]:
        os.kill(each, signal.SIGKILL)
    server.process.wait()


def client(room: Room, url: str | None = None) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{url or room.url}/api/rooms/{room.slug}/v1", api_key=room.account.token, max_retries=0)


async def test_worker_serves_the_gateway_and_shows_as_a_worker(room: Room) -> None:
    worker = room.worker("--model", MODEL)
    try:
        joined = worker.expect(r"joined room")
        assert f"room {room.slug} as peer" in joined and "onnxruntime-cpu" in joined

        [peer] = await room_peers(room.url, room.account, room.slug)
        assert peer["backend"] == "onnxruntime-cpu" and MODEL in peer["models_warm"]
        async with httpx.AsyncClient(base_url=room.url, cookies={"mesh_session": room.account.session_cookie}) as http:
            panel = (await http.get(f"/rooms/{room.slug}/peers")).text
        assert 'data-testid="peer-worker"' in panel and "ONNX Runtime (CPU)" in panel

        api = client(room)
        answer = await api.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=12, temperature=0)
        assert answer.choices[0].message.content == greedy(MESSAGES, 12)
        assert answer.choices[0].finish_reason == "length" and answer.usage.completion_tokens == 12
        job_id = str(uuid.UUID(answer.id.rsplit("-", 1)[1]))
        assert worker.expect(r"^worker: job ").startswith(f"worker: job {job_id} {MODEL}: length, 12 tokens")

        pieces = []
        stream = await api.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=20, temperature=0, stream=True)
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                pieces.append(chunk.choices[0].delta.content)
        assert "".join(pieces) == greedy(MESSAGES, 20)
        worker.expect(rf"job .* {MODEL}: length, 20 tokens")
        await api.completions.create(model=MODEL, prompt="Once", max_tokens=1, temperature=0)
        assert re.search(rf"{MODEL}: length, 1 token(,|$)", worker.expect(r"^worker: job "))

        async with httpx.AsyncClient(base_url=room.url) as http:
            record = (await http.get(f"/api/jobs/{job_id}", headers={"Authorization": f"Bearer {room.account.token}"})).json()
        assert record["status"] == "succeeded" and record["worker_peer"] == peer["peer_id"]
    finally:
        worker.stop()


async def test_worker_stops_at_a_stop_string_and_the_usage_counts_what_it_made(room: Room) -> None:
    prompt = "Permission is hereby granted"
    engine = load_engine(MODEL, models_dir=PROJECT_ROOT / "models")
    whole = engine.generate(prompt, {"max_new_tokens": 60}, threading.Event())
    text = "".join(whole)
    # The tokens up to the one that completed "License", as the worker counts them.
    made = next(n for n in range(1, 61) if "License" in engine.decoder.decode(whole.token_ids[:n]))
    worker = room.worker("--model", MODEL)
    try:
        worker.expect(r"joined room")
        answer = await client(room).completions.create(model=MODEL, prompt=prompt, max_tokens=60, temperature=0, stop=["License"])

        assert answer.choices[0].text == text[: text.index("License")] and answer.choices[0].finish_reason == "stop"
        assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (whole.prompt_tokens, made)
        job_id = str(uuid.UUID(answer.id.rsplit("-", 1)[1]))
        assert worker.expect(r"^worker: job ").startswith(f"worker: job {job_id} {MODEL}: stop, {made} tokens")
        async with httpx.AsyncClient(base_url=room.url) as http:
            record = (await http.get(f"/api/jobs/{job_id}", headers={"Authorization": f"Bearer {room.account.token}"})).json()
        assert (record["output"], record["token_count"]) == (answer.choices[0].text, made)
    finally:
        worker.stop()
    assert worker.finish() == 0


async def test_worker_comes_back_after_the_server_is_killed(tmp_path: Path) -> None:
    server = start_server(tmp_path, **GATEWAY_ENV)
    port = int(server.url.rsplit(":", 1)[1])
    account = await sign_up(server.url, "wk")
    room = Room(server, account, (await create_room(server.url, account, "restart", private=False))["slug"])
    worker = room.worker("--model", MODEL)
    try:
        first = worker.expect(r"joined room")
        stream = await client(room).chat.completions.create(
            model=MODEL, messages=MESSAGES, max_tokens=4096, temperature=0, stream=True)
        async for _ in stream:
            kill_server(server)  # at the first chunk, while the answer streams
            break
        with contextlib.suppress(openai.APIError):
            await stream.close()
        worker.expect(r"lost the server; reconnecting")

        server = start_server(tmp_path, server.database_url, port, **GATEWAY_ENV)
        again = worker.expect(r"joined room", timeout=90)
        assert again != first  # under a new peer id

        answer = await client(room).chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=8, temperature=0)
        assert answer.choices[0].message.content == greedy(MESSAGES, 8)
        worker.expect(rf"{MODEL}: length, 8 tokens")

        kill_server(server)
        worker.expect(r"lost the server; reconnecting")
        worker.process.send_signal(signal.SIGTERM)  # while it tries to reconnect
        assert worker.finish() == 0 and worker.lines[-1] == "worker: left the room"
    finally:
        worker.stop()
        server.stop()


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_a_stop_signal_finishes_the_running_job_then_leaves_and_exits_0(room: Room, stop_signal: signal.Signals) -> None:
    worker = room.worker("--model", MODEL)
    worker.expect(r"joined room")
    stream = await client(room).chat.completions.create(
        model=MODEL, messages=MESSAGES, max_tokens=4096, temperature=0, stream=True)
    pieces, finish = [], None
    async for chunk in stream:
        if not pieces:
            worker.process.send_signal(stop_signal)
        if chunk.choices:
            pieces.append(chunk.choices[0].delta.content or "")
            finish = chunk.choices[0].finish_reason or finish
    # The client got the whole answer (to the model's context), not a cut one.
    assert finish == "length" and "".join(pieces) == greedy(MESSAGES, 4096)
    assert worker.finish() == 0
    stopping = worker.lines.index("worker: stopping: finishing running jobs")
    job = next(i for i, line in enumerate(worker.lines) if f"{MODEL}: length" in line)
    left = worker.lines.index("worker: left the room")
    assert stopping < job < left and left == len(worker.lines) - 1
    # Its own leaving is not a lost server.
    assert not any("Traceback" in line or "reconnecting" in line for line in worker.lines)


async def test_a_second_sigint_cancels_the_running_job_then_leaves_and_exits_0(room: Room) -> None:
    worker = room.worker("--model", MODEL)
    worker.expect(r"joined room")
    stream = await client(room).chat.completions.create(
        model=MODEL, messages=MESSAGES, max_tokens=4096, temperature=0, stream=True)
    async for _ in stream:
        worker.process.send_signal(signal.SIGINT)
        break
    worker.expect(r"^worker: stopping: finishing running jobs$")
    worker.process.send_signal(signal.SIGINT)
    with contextlib.suppress(openai.APIError):
        async for _ in stream:
            pass
    assert worker.finish() == 0
    now = worker.lines.index("worker: stopping now: cancelling running jobs")
    job = next(i for i, line in enumerate(worker.lines) if f"{MODEL}: cancelled" in line)
    assert now < job < worker.lines.index("worker: left the room") == len(worker.lines) - 1


async def revoke_token(room: Room) -> None:
    """Revoke the worker's API token as its owner does, on the Settings page."""
    async with httpx.AsyncClient(base_url=room.url, cookies={"mesh_session": room.account.session_cookie}) as http:
        page = await http.get("/settings/")
        [token_id] = re.findall(r'action="/settings/tokens/(\d+)/revoke"', page.text)
        response = await http.post(f"/settings/tokens/{token_id}/revoke", data={"_csrf_token": await csrf_token(http)})
        assert response.status_code in (200, 303), response.text[:300]


async def delete_room(room: Room, name: str) -> None:
    async with httpx.AsyncClient(base_url=room.url, cookies={"mesh_session": room.account.session_cookie}) as http:
        response = await http.post(f"/rooms/{room.slug}/settings/delete",
                                   data={"confirm": name, "_csrf_token": await csrf_token(http)})
        assert response.status_code in (200, 303), response.text[:300]


async def test_a_revoked_token_ends_the_worker_with_status_1_and_one_line(room: Room) -> None:
    worker = room.worker("--model", MODEL)
    try:
        worker.expect(r"joined room")
        await revoke_token(room)
        assert worker.finish() == 1
    finally:
        worker.stop()
    assert worker.lines[-1] == ("mesh-nanollm: the server closed the connection: the API token was revoked "
                                "(or its account deleted); make one on the Settings page, under API tokens")
    assert not any("Traceback" in line or "ERROR" in line or "reconnecting" in line for line in worker.lines)


async def test_a_deleted_room_ends_the_worker_with_status_1_and_one_line(worker_server: LiveServer) -> None:
    account = await sign_up(worker_server.url, "wk")
    made = await create_room(worker_server.url, account, "doomed room", private=True)
    room = Room(worker_server, account, made["slug"])
    worker = room.worker("--model", MODEL)
    try:
        worker.expect(r"joined room")
        await delete_room(room, "doomed room")
        assert worker.finish() == 1
    finally:
        worker.stop()
    assert worker.lines[-1].startswith(f"mesh-nanollm: the server closed the connection: cannot join room {room.slug!r}: ")
    assert not any("Traceback" in line or "ERROR" in line for line in worker.lines)
