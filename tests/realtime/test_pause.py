"""A paused peer (tab hidden, battery low, GPU lost, sharing off) as the room and the server see it:
its `status` says why, the room hears it at once, the peers API and the peers panel show it."""

from __future__ import annotations

import httpx
from conftest import LiveServer
from support.accounts import Account, create_room, room_peers


async def peers_panel(live_server: LiveServer, account: Account, slug: str) -> str:
    async with httpx.AsyncClient(base_url=live_server.url, timeout=10, cookies={"mesh_session": account.session_cookie}) as http:
        response = await http.get(f"/rooms/{slug}/peers", headers={"HX-Request": "true"})
        assert response.status_code == 200, response.text[:300]
        return response.text


async def test_a_pause_and_its_reason_reach_the_room_the_api_and_the_panel(
    live_server: LiveServer, account: Account, other_account: Account, peers
) -> None:
    room = await create_room(live_server.url, account, "pause room", private=False)
    alice, bob = peers(), peers()
    await alice.connect(live_server.url, token=account.token)
    await bob.connect(live_server.url, token=other_account.token)
    await alice.join(room["slug"])
    # A page whose user does not share joins paused, so nobody offers it work even for a moment.
    await bob.join(room["slug"], state="paused", pause_reason="sharing_off")
    joined = await alice.wait_for("peer_joined", lambda e: any(p["peer_id"] == bob.peer_id for p in e["peers"]))
    bob_seen = next(p for p in joined["peers"] if p["peer_id"] == bob.peer_id)
    assert (bob_seen["state"], bob_seen["pause_reason"]) == ("paused", "sharing_off")
    # Said as the choice it is, not as a pause.
    panel = await peers_panel(live_server, account, room["slug"])
    assert "not sharing" in panel and "paused —" not in panel

    await bob.emit("status", {"state": "paused", "pause_reason": "hidden", "backend": "wasm"})
    update = await alice.wait_for("peer_updated", lambda e: any(p.get("pause_reason") == "hidden" for p in e["peers"]))
    assert [(p["peer_id"], p["state"]) for p in update["peers"]] == [(bob.peer_id, "paused")]
    listed = {p["peer_id"]: p for p in await room_peers(live_server.url, account, room["slug"])}
    assert (listed[bob.peer_id]["state"], listed[bob.peer_id]["pause_reason"]) == ("paused", "hidden")
    assert "paused — tab hidden" in await peers_panel(live_server, account, room["slug"])

    # Back: the reason goes with the pause.
    await bob.emit("status", {"state": "idle", "backend": "wasm"})
    update = await alice.wait_for("peer_updated", lambda e: any(p["state"] == "idle" for p in e["peers"]))
    assert [("pause_reason" in p) for p in update["peers"] if p["peer_id"] == bob.peer_id] == [False]
    listed = {p["peer_id"]: p for p in await room_peers(live_server.url, account, room["slug"])}
    assert listed[bob.peer_id]["state"] == "idle" and "pause_reason" not in listed[bob.peer_id]
    assert "paused —" not in await peers_panel(live_server, account, room["slug"])


async def test_a_join_paused_without_a_reason_is_refused(live_server: LiveServer, account: Account, peers) -> None:
    alice = peers()
    await alice.connect(live_server.url, token=account.token)
    ack = await alice.join("global", state="paused")
    assert ack["error"]["code"] == "invalid" and "pause_reason" in ack["error"]["message"]
    assert "peer_id" in await alice.join("global", state="paused", pause_reason="battery")
