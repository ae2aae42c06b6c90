"""What the room sees of its mesh through presence: a peer's `busy` before anything it does next,
the links and round trips peers report, and whom each serves. The presence tick never comes during
these tests (one hour), so whatever a room hears went out because it mattered at once."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import LiveServer, start_server
from support.accounts import create_room, room_peers, sign_up

from realtime.conftest import Peer

IDLE = {"state": "idle", "backend": "wasm", "models_warm": ["tiny-gpt2"], "queue": 0, "tok_s": 0.0}


class OrderedPeer(Peer):
    """A client that also keeps the order of everything it hears, across events."""

    def __init__(self) -> None:
        self.heard: list[tuple[str, Any]] = []
        super().__init__()

    async def _record(self, event: str, *args: Any) -> None:
        self.heard.append((event, args[0] if len(args) == 1 else list(args)))
        await super()._record(event, *args)


@pytest.fixture(scope="module")
def slow_tick_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = start_server(tmp_path_factory.mktemp("mesh-view"), PRESENCE_INTERVAL_MS="3600000")
    yield server
    server.stop()


async def two_peers(url: str) -> tuple[OrderedPeer, OrderedPeer, dict, Any]:
    account = await sign_up(url, "mv")
    room = await create_room(url, account, "mesh view room", private=False)
    worker, watcher = OrderedPeer(), OrderedPeer()
    for peer in (worker, watcher):
        await peer.connect(url, token=account.token)
        await peer.join(room["slug"], backend="wasm")
    await worker.emit("status", IDLE)  # a change that matters: the joins go out with it
    await watcher.wait_for("peer_joined", lambda e: len(e["peers"]) == 2)
    await worker.wait_for("peer_joined", lambda e: len(e["peers"]) == 2)
    return worker, watcher, room, account


def updates_about(peer: OrderedPeer, peer_id: str) -> list[dict]:
    return [
        p
        for event, payload in peer.heard
        if event == "peer_updated"
        for p in payload["peers"]
        if p["peer_id"] == peer_id
    ]


async def test_busy_reaches_the_room_before_the_peer_s_next_event_is_handled(
    slow_tick_server: LiveServer,
) -> None:
    worker, watcher, _, _ = await two_peers(slow_tick_server.url)
    try:
        # A worker starts serving: `busy`, then at once its first token. The token event here is for
        # a job the server does not know, so the server answers it on the worker's own socket,
        # and that answer's place among what the worker hears shows when the event was handled.
        job_id = str(uuid.uuid4())
        await worker.emit(
            "status",
            IDLE
            | {"state": "busy", "serving": [{"model": "tiny-gpt2", "requester": watcher.peer_id}]},
        )
        await worker.emit("job_token", {"job_id": job_id, "seq": 1, "text": "Once"})
        await worker.wait_for("error", lambda e: e["code"] == "unknown_job")
        order = [event for event, payload in worker.heard if event in ("peer_updated", "error")]
        assert order[:2] == ["peer_updated", "error"], worker.heard
        [busy] = updates_about(worker, worker.peer_id)
        assert busy["state"] == "busy"
        assert busy["serving"] == [{"model": "tiny-gpt2", "requester": watcher.peer_id}]
        await watcher.wait_for(
            "peer_updated", lambda e: any(p["state"] == "busy" for p in e["peers"])
        )
    finally:
        await worker.close()
        await watcher.close()


async def test_link_round_trips_wait_for_the_tick_and_ride_with_the_next_change(
    slow_tick_server: LiveServer,
) -> None:
    url = slow_tick_server.url
    worker, watcher, room, account = await two_peers(url)
    try:
        links = [{"peer_id": watcher.peer_id, "rtt_ms": 2.5}]
        await worker.emit("status", IDLE | {"links": links})  # round trips drift: they wait
        # Served jobs matter: the next status goes out at once, with the links it carries.
        await worker.emit("status", IDLE | {"links": links, "serving": [{"model": "tiny-gpt2"}]})
        await watcher.wait_for("peer_updated", lambda e: any(p.get("serving") for p in e["peers"]))
        assert [
            (p.get("links"), p.get("serving")) for p in updates_about(watcher, worker.peer_id)
        ] == [(links, [{"model": "tiny-gpt2", "requester": None}])]
        listed = {p["peer_id"]: p for p in await room_peers(url, account, room["slug"])}
        assert listed[worker.peer_id]["links"] == links  # written before it was announced
        assert listed[worker.peer_id]["serving"] == [{"model": "tiny-gpt2", "requester": None}]
        assert "links" not in listed[watcher.peer_id]  # none reported: left out, like every default
    finally:
        await worker.close()
        await watcher.close()


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        ({"links": [{"peer_id": str(uuid.uuid4()), "rtt_ms": 1.0}] * 17}, "length <= 16"),
        ({"links": [{"peer_id": "not-a-peer", "rtt_ms": 1.0}]}, "links[0].peer_id"),
        ({"links": [{"peer_id": str(uuid.uuid4()), "rtt_ms": -1}]}, "links[0].rtt_ms"),
        ({"links": [{"peer_id": str(uuid.uuid4()), "rtt_ms": 1, "hops": 3}]}, "hops"),
        ({"serving": [{"model": "", "requester": None}]}, "serving[0].model"),
    ],
)
async def test_status_with_bad_links_or_serving_gets_invalid_and_stays_up(
    slow_tick_server: LiveServer, extra: dict, problem: str
) -> None:
    url = slow_tick_server.url
    account = await sign_up(url, "mv")
    room = await create_room(url, account, "mesh view bad", private=False)
    peer = OrderedPeer()
    try:
        await peer.connect(url, token=account.token)
        await peer.join(room["slug"], backend="wasm")
        await peer.emit("status", IDLE | extra)
        error = await peer.wait_for("error")
        assert error["code"] == "invalid" and problem in error["message"], error
        await peer.emit("status", IDLE | {"state": "busy"})
        # Its join, not yet announced, goes out with this status that matters.
        await peer.wait_for("peer_joined", lambda e: any(p["state"] == "busy" for p in e["peers"]))
    finally:
        await peer.close()
