"""Two Granian instances, one Postgres, one Redis: presence and relay cross between instances."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from conftest import LiveServer
from support import servers
from support.accounts import create_room, room_peers, sign_up

from realtime.conftest import offer
from realtime.test_credentials import revoke_token, sign_out

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def two_instances(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, LiveServer]]:
    with servers.two_instances(tmp_path_factory.mktemp("instances"), "_realtime") as both:
        yield both


async def test_peers_on_two_instances_see_presence_and_relay(two_instances, peers) -> None:
    one, two = two_instances
    alice_account = await sign_up(one.url)
    bob_account = await sign_up(two.url)
    room = await create_room(one.url, alice_account, "spanning room", private=False)
    elsewhere = await create_room(two.url, bob_account, "other room", private=False)
    alice, bob, carol = peers(), peers(), peers()
    # The session cookie made on instance one works on instance two: sessions live in Postgres.
    await alice.connect(one.url, cookie=alice_account.session_cookie)
    await bob.connect(two.url, cookie=alice_account.session_cookie)
    await carol.connect(two.url, token=bob_account.token)
    await alice.join(room["slug"], backend="webgpu")
    bob_ack = await bob.join(room["slug"], backend="wasm")
    await carol.join(elsewhere["slug"])

    assert [p["peer_id"] for p in bob_ack["peers"]] == [alice.peer_id]  # presence from the database
    await alice.wait_for("peer_joined", lambda e: any(p["peer_id"] == bob.peer_id for p in e["peers"]))
    listed = await room_peers(one.url, alice_account, room["slug"])
    assert {p["peer_id"] for p in listed} == {alice.peer_id, bob.peer_id}

    await alice.emit("signal", {"to": bob.peer_id, "kind": "offer", "data": offer()})
    assert await bob.wait_for("signal") == {"from": alice.peer_id, "kind": "offer", "data": offer()}
    await bob.emit("signal", {"to": alice.peer_id, "kind": "answer", "data": {"type": "answer", "sdp": "v=0"}})
    assert (await alice.wait_for("signal"))["from"] == bob.peer_id

    await bob.emit("status", {"state": "busy", "backend": "wasm", "tok_s": 12.5})
    await alice.wait_for("peer_updated", lambda e: any(p["peer_id"] == bob.peer_id and p["state"] == "busy" for p in e["peers"]))

    # Carol is on instance two, but in another room: a signal addressed to her from alice's room
    # must not reach her.
    await alice.emit("signal", {"to": carol.peer_id, "kind": "offer", "data": offer()})
    await asyncio.sleep(1)
    assert carol.events["signal"] == []

    await bob.close()
    await alice.wait_for("peer_left", lambda e: bob.peer_id in e["peer_ids"])
    listed = await room_peers(one.url, alice_account, room["slug"])
    assert [p["peer_id"] for p in listed] == [alice.peer_id]


async def test_revoking_on_one_instance_disconnects_sockets_on_the_other(two_instances, peers) -> None:
    one, two = two_instances
    leaving, staying = await sign_up(one.url), await sign_up(one.url)
    by_token, by_cookie, bystander = peers(), peers(), peers()
    await by_token.connect(two.url, token=leaving.token)
    await by_cookie.connect(two.url, cookie=leaving.session_cookie)
    await bystander.connect(two.url, token=staying.token)

    await revoke_token(one.url, leaving)
    await by_token.wait_for("disconnect")
    await sign_out(one.url, leaving)
    await by_cookie.wait_for("disconnect")

    assert "peer_id" in await bystander.join("global")
