"""The scheduler never offers an API job to a paused peer (its user does not share, its tab is
hidden, …): it runs on a peer that serves, or nowhere (503) until the paused one is back."""

from __future__ import annotations

import asyncio

import openai
import pytest
from support.accounts import room_peers

from gateway.conftest import MODEL, FakePeer, Room


async def pause(room: Room, peer: FakePeer, reason: str | None) -> None:
    """Report the pause (or its end) and wait until the server shows it."""
    status = {"state": "paused", "pause_reason": reason} if reason else {"state": "idle"}
    await peer.client.emit("status", {**status, "backend": "wasm", "models_warm": [MODEL], "queue": 0, "tok_s": 20})
    for _ in range(100):
        listed = {p["peer_id"]: p for p in await room_peers(room.url, room.account, room.slug)}
        if listed[peer.peer_id]["state"] == status["state"]:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"the server never showed {peer.peer_id} as {status}")


async def test_a_paused_peer_gets_no_job_while_another_serves(room: Room) -> None:
    paused = await room.add_peer()
    await pause(room, paused, "sharing_off")
    serving = await room.add_peer()

    for _ in range(3):
        done = await room.openai().completions.create(model=MODEL, prompt="x")
        assert done.choices[0].text == "Hello, world"
    assert paused.runs == [] and len(serving.runs) == 3
    # The models list counts only peers that could run a job now.
    models = {m.id: m for m in (await room.openai().models.list()).data}
    assert models[MODEL].peers_able == 1  # type: ignore[attr-defined]


async def test_a_room_of_paused_peers_answers_503_until_one_is_back(room: Room) -> None:
    hidden = await room.add_peer()
    await pause(room, hidden, "hidden")

    with pytest.raises(openai.APIStatusError) as caught:
        await room.openai().completions.create(model=MODEL, prompt="x")
    assert caught.value.status_code == 503 and hidden.runs == []

    await pause(room, hidden, None)
    done = await room.openai().completions.create(model=MODEL, prompt="x")
    assert done.choices[0].text == "Hello, world" and len(hidden.runs) == 1
