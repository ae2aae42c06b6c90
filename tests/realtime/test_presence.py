"""Presence against a server whose presence tick never comes during a test (one hour): whatever a
room hears went out at once, so these tests show what is announced at once and what waits."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from conftest import LiveServer
from support.accounts import create_room, room_peers, sign_up
from support.servers import serving

from realtime.conftest import Peer

BUSY = {"state": "busy", "backend": "wasm", "models_warm": [], "queue": 0, "tok_s": 1.0}


@pytest.fixture(scope="module")
def slow_tick_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with serving(tmp_path_factory.mktemp("slow-tick"), PRESENCE_INTERVAL_MS="3600000") as server:
        yield server


def seen(peer: Peer, peer_id: str) -> list[tuple[str, list[str], float]]:
    """Each `peer_updated` entry `peer` heard about `peer_id`, in order: (state, models_warm, tok_s)."""
    return [
        (p["state"], p["models_warm"], p["tok_s"])
        for event in peer.events["peer_updated"] for p in event["peers"] if p["peer_id"] == peer_id
    ]


async def test_state_change_reaches_room_at_once_and_bulk_rides_with_the_next(slow_tick_server: LiveServer, peers) -> None:
    url = slow_tick_server.url
    account, other = await sign_up(url, "pr"), await sign_up(url, "pr")
    room = await create_room(url, account, "presence room", private=False)
    alice, bob = peers(), peers()
    await alice.connect(url, token=account.token)
    await bob.connect(url, token=other.token)
    await alice.join(room["slug"])
    await bob.join(room["slug"], backend="wasm")
    # Joins wait for the tick too, or go out with the first change that matters (alice's backend).
    await alice.emit("status", BUSY | {"state": "idle"})
    joined = await alice.wait_for("peer_joined")
    assert {p["peer_id"] for p in joined["peers"]} == {alice.peer_id, bob.peer_id}

    await bob.emit("status", BUSY)  # idle -> busy: announced at once
    await alice.wait_for("peer_updated", lambda e: any(p["peer_id"] == bob.peer_id for p in e["peers"]))
    assert seen(alice, bob.peer_id) == [("busy", [], 1.0)]
    # Written before it was announced: the peers API, which reads the database, already says so.
    listed = {p["peer_id"]: p for p in await room_peers(url, account, room["slug"])}
    assert listed[bob.peer_id]["state"] == "busy"

    # Speed and queue alone wait for the tick; the next change that matters takes them along.
    await bob.emit("status", BUSY | {"queue": 2, "tok_s": 5.0})
    await bob.emit("status", BUSY | {"queue": 2, "tok_s": 6.0, "models_warm": ["tiny-gpt2"]})
    await alice.wait_for("peer_updated", lambda e: any(p["models_warm"] == ["tiny-gpt2"] for p in e["peers"]))
    assert seen(alice, bob.peer_id) == [("busy", [], 1.0), ("busy", ["tiny-gpt2"], 6.0)]

    await bob.emit("status", BUSY | {"state": "idle", "models_warm": ["tiny-gpt2"], "tok_s": 7.0})
    await alice.wait_for("peer_updated", lambda e: any(p["state"] == "idle" for p in e["peers"]))
    assert seen(alice, bob.peer_id)[-1] == ("idle", ["tiny-gpt2"], 7.0)
    await bob.wait_for("peer_updated", lambda e: any(p["state"] == "idle" for p in e["peers"]))
    assert seen(bob, bob.peer_id) == seen(alice, bob.peer_id)  # the sender hears its room's batches too


async def test_peers_joining_at_once_each_get_a_peer_and_see_those_before_them(slow_tick_server: LiveServer, peers) -> None:
    url = slow_tick_server.url
    account = await sign_up(url, "burst")
    room = await create_room(url, account, "burst room", private=False)
    crowd = [peers() for _ in range(30)]
    await asyncio.gather(*(peer.connect(url, token=account.token) for peer in crowd))

    acks = await asyncio.gather(*(peer.join(room["slug"]) for peer in crowd))

    ids = [ack["peer_id"] for ack in acks]
    assert len(set(ids)) == len(crowd)
    listed = {p["peer_id"] for p in await room_peers(url, account, room["slug"])}
    assert listed == set(ids)
    saw = {ack["peer_id"]: {p["peer_id"] for p in ack["peers"]} for ack in acks}
    for a in ids:
        assert a not in saw[a] and saw[a] <= set(ids)
        for b in ids:
            # Of two peers joining together, the one whose ack came later lists the other.
            assert a == b or b in saw[a] or a in saw[b]
