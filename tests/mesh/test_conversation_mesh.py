"""A conversation's answers run on another peer: the job_run carries the conversation's messages and
the other browser renders them with the same template, so its answer is the one this model gives
to the recorded prompt (the whole conversation so far)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest
from conftest import LiveServer
from playwright.async_api import expect
from support.accounts import create_room, sign_up
from support.pages import ChatPage

from mesh.conftest import OpenPeer, room_name
from mesh_nanollm.worker.engine import load_engine

pytestmark = pytest.mark.browser

MODELS_DIR = Path(__file__).resolve().parents[2] / "models"


def greedy(prompt: str, job: dict) -> str:
    engine = load_engine("tiny-gpt2", models_dir=MODELS_DIR, dtype="q8")
    # The model's own generation_config supplies the rest (repetition_penalty 1.2), as in the browser.
    return "".join(
        engine.generate(
            prompt, {"max_new_tokens": job["params"]["max_new_tokens"]}, threading.Event()
        )
    )


async def test_a_conversation_answer_runs_on_another_browser(
    live_server: LiveServer, open_peer: OpenPeer
) -> None:
    owner = await sign_up(live_server.url)
    room = await create_room(live_server.url, owner, room_name(), private=False)
    alice_room, bob = await asyncio.gather(open_peer(room["slug"], owner), open_peer(room["slug"]))
    await alice_room.wait_for_links(1)
    bob_id = await bob.own_peer_id()
    alice = ChatPage(alice_room.page, live_server.url, account=owner, console=alice_room.console)

    await alice.set_system_prompt("Be brief.")
    await alice.send("You may", max_tokens=10, mode="mesh")
    await alice.send("The Program", max_tokens=10, mode="mesh")
    turns = (await alice.stored())["turns"]
    first, second = await alice.job(turns[1]["job"]), await alice.job(turns[3]["job"])
    assert first["worker_peer"] == bob_id and second["worker_peer"] == bob_id
    assert (
        second["prompt"]
        == f"system: Be brief.\nuser: You may\nassistant: {turns[1]['content']}\nuser: The Program\nassistant:"
    )
    # Bob's browser read exactly that text: the answer is the model's own to it.
    assert second["output"] == greedy(second["prompt"], second)
    await expect(alice.answer_of_job(second["id"])).to_contain_text(
        f"ran on {bob.account.username}'s browser"
    )
    assert not [line for line in alice.console + bob.console if line.startswith("pageerror")]
