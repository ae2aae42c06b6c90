"""Signaling against a real Granian server: who may connect and join, relay, presence, bad input."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest
import socketio
from conftest import LiveServer
from support.accounts import Account, create_room, room_peers

from realtime.conftest import JoinedPair, offer


async def test_connect_without_credentials_is_refused(live_server: LiveServer, peers) -> None:
    peer = peers()
    with pytest.raises(socketio.exceptions.ConnectionError):
        await peer.connect(live_server.url)
    assert "Sign in first" in peer.events["connect_error"][0]["message"]


async def test_connect_with_forged_cookie_or_token_is_refused(live_server: LiveServer, peers) -> None:
    for credentials in ({"cookie": "0" * 64}, {"token": "mnl_not-a-real-token"}, {"auth": {"token": "nope"}}):
        with pytest.raises(socketio.exceptions.ConnectionError):
            await peers().connect(live_server.url, **credentials)


async def test_connect_from_another_site_with_cookie_is_refused(live_server: LiveServer, account: Account) -> None:
    # Cross-site websocket hijacking: a page elsewhere must not ride the user's session cookie.
    url = live_server.url.replace("http", "ws") + "/socket.io/?EIO=4&transport=websocket"
    cookie = {"Cookie": f"mesh_session={account.session_cookie}"}
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(url, headers=cookie | {"Origin": live_server.url}) as ws:
            assert (await ws.receive_str()).startswith("0")  # the page's own origin is welcome
        with pytest.raises(aiohttp.WSServerHandshakeError):
            async with http.ws_connect(url, headers=cookie | {"Origin": "https://evil.example"}) as ws:
                await ws.receive_str()


async def test_connect_with_cookie_token_or_auth_joins_global(live_server: LiveServer, account: Account, peers) -> None:
    for credentials in ({"cookie": account.session_cookie}, {"token": account.token}, {"auth": {"token": account.token}}):
        peer = peers()
        await peer.connect(live_server.url, **credentials)
        ack = await peer.join("global", backend="wasm")
        assert len(ack["peer_id"]) == 36
        assert isinstance(ack["peers"], list) and isinstance(ack["ice_servers"], list)
        await peer.close()


async def test_join_then_second_peer_appears_in_ack_and_presence(live_server: LiveServer, account: Account, other_account: Account, peers) -> None:
    room = await create_room(live_server.url, account, "presence room", private=False)
    alice, bob = peers(), peers()
    await alice.connect(live_server.url, token=account.token)
    await bob.connect(live_server.url, token=other_account.token)
    first = await alice.join(room["slug"], backend="webgpu", models_warm=["tiny-gpt2"])
    assert first["peers"] == []
    second = await bob.join(room["slug"], backend="wasm")

    seen = second["peers"]
    assert [(p["peer_id"], p["username"], p["backend"]) for p in seen] == [(first["peer_id"], account.username, "webgpu")]
    joined = await alice.wait_for("peer_joined", lambda e: any(p["peer_id"] == second["peer_id"] for p in e["peers"]))
    assert joined["room"] == room["slug"]
    listed = await room_peers(live_server.url, account, room["slug"])
    assert {p["peer_id"] for p in listed} == {first["peer_id"], second["peer_id"]}


async def test_status_updates_reach_room_in_one_batch_and_the_database(live_server: LiveServer, joined_pair: JoinedPair, account: Account) -> None:
    room = await create_room(live_server.url, account, "status room", private=False)
    alice, bob = await joined_pair(room["slug"])
    await alice.wait_for("peer_joined", lambda e: any(p["peer_id"] == bob.peer_id for p in e["peers"]))
    for tok_s in (1.0, 2.0, 3.0, 42.5):  # a burst within one presence interval
        await bob.emit("status", {"state": "busy", "backend": "wasm", "models_warm": ["tiny-gpt2"], "queue": 1, "tok_s": tok_s})

    update = await alice.wait_for("peer_updated", lambda e: any(p["tok_s"] == 42.5 for p in e["peers"]))
    assert [p["peer_id"] for p in update["peers"]] == [bob.peer_id]
    assert update["peers"][0]["state"] == "busy"
    # Coalesced: the four updates above arrive as at most two batches, never four.
    assert len(alice.events["peer_updated"]) <= 2
    listed = {p["peer_id"]: p for p in await room_peers(live_server.url, account, room["slug"])}
    assert listed[bob.peer_id]["tok_s"] == 42.5 and listed[bob.peer_id]["models_warm"] == ["tiny-gpt2"]


async def test_signal_relays_with_server_stamped_from(live_server: LiveServer, joined_pair: JoinedPair, account: Account) -> None:
    room = await create_room(live_server.url, account, "relay room", private=False)
    alice, bob = await joined_pair(room["slug"])

    await alice.emit("signal", {"to": bob.peer_id, "kind": "offer", "data": offer(), "from": "someone-else"})
    got = await bob.wait_for("signal")
    assert got == {"from": alice.peer_id, "kind": "offer", "data": offer()}
    candidate = {"candidate": "candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host", "sdpMid": "0", "sdpMLineIndex": 0}
    await bob.emit("signal", {"to": alice.peer_id, "kind": "candidate", "data": candidate})
    back = await alice.wait_for("signal")
    assert back == {"from": bob.peer_id, "kind": "candidate", "data": candidate}


def candidate(n: int) -> dict[str, object]:
    return {"candidate": f"candidate:{n} 1 udp 2122260223 127.0.0.1 {50000 + n} typ host", "sdpMid": "0", "sdpMLineIndex": 0}


async def join_raw(ws: aiohttp.ClientWebSocketResponse, room: str) -> str:
    """Open Socket.IO on a raw engine.io websocket and join `room`; the peer id."""
    assert (await ws.receive_str()).startswith("0")
    await ws.send_str("40")
    assert (await ws.receive_str()).startswith("40")
    await ws.send_str("421" + json.dumps(["join_room", {"room": room}]))
    while not (text := await ws.receive_str()).startswith("431"):
        pass
    return json.loads(text[3:])[0]["peer_id"]


# The relay writes a signal to its recipient's websocket without waiting for the write to finish
# (realtime/engine.py, which leans on Granian's websocket `send`): these pin that nothing is lost,
# reordered or left to trouble the sender.
async def test_signals_arrive_in_the_order_sent(live_server: LiveServer, joined_pair: JoinedPair, account: Account) -> None:
    room = await create_room(live_server.url, account, "ordered room", private=False)
    alice, bob = await joined_pair(room["slug"])

    sent = [candidate(n) for n in range(150)]  # a burst under the rate limit's
    for data in sent:
        await alice.emit("signal", {"to": bob.peer_id, "kind": "candidate", "data": data})
    await bob.wait_for("signal", lambda got: got["data"] == sent[-1])
    assert [got["data"] for got in bob.events["signal"]] == sent
    assert alice.events["error"] == []


async def test_a_peer_reading_slowly_gets_every_signal_in_order(live_server: LiveServer, account: Account, other_account: Account, peers) -> None:
    room = await create_room(live_server.url, account, "slow reader room", private=False)
    alice = peers()
    await alice.connect(live_server.url, token=account.token)
    await alice.join(room["slug"])
    url = live_server.url.replace("http", "ws") + "/socket.io/?EIO=4&transport=websocket"
    async with aiohttp.ClientSession() as http, http.ws_connect(url, headers={"Authorization": f"Bearer {other_account.token}"}) as ws:
        bob_id = await join_raw(ws, room["slug"])
        # 2.4 MB of offers that bob does not read yet: the server's writes to him back up.
        sdps = [f"v=0\r\na=n:{n}\r\na=x:{'y' * 16000}\r\n" for n in range(150)]
        for sdp in sdps:
            await alice.emit("signal", {"to": bob_id, "kind": "offer", "data": offer(sdp)})
        await asyncio.sleep(1)
        got: list[str] = []
        while len(got) < len(sdps):
            text = await ws.receive_str(timeout=10)
            if text == "2":  # engine.io's ping
                await ws.send_str("3")
            elif text.startswith('42["signal"'):
                got.append(json.loads(text[2:])[1]["data"]["sdp"])
        assert got == sdps
    assert alice.events["error"] == []


async def test_signals_to_a_vanished_peer_leave_the_sender_and_server_unharmed(live_server: LiveServer, joined_pair: JoinedPair, account: Account, other_account: Account, peers) -> None:
    room = await create_room(live_server.url, account, "vanishing room", private=False)
    alice, carol = await joined_pair(room["slug"])
    log_from = live_server.log_path.stat().st_size
    url = live_server.url.replace("http", "ws") + "/socket.io/?EIO=4&transport=websocket"
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(url, headers={"Authorization": f"Bearer {other_account.token}"})
        bob_id = await join_raw(ws, room["slug"])
        for n in range(100):
            if n == 20:  # gone mid-burst, without a close frame
                ws._response.connection.transport.abort()
            await alice.emit("signal", {"to": bob_id, "kind": "candidate", "data": candidate(n)})
        await alice.wait_for("peer_left", lambda left: bob_id in left["peer_ids"])

    assert {error["code"] for error in alice.events["error"]} <= {"unknown_peer"}
    await alice.emit("signal", {"to": carol.peer_id, "kind": "candidate", "data": candidate(0)})
    assert (await carol.wait_for("signal"))["from"] == alice.peer_id
    assert alice.client.connected
    newcomer = peers()
    await newcomer.connect(live_server.url, token=account.token)
    assert newcomer.client.connected
    with live_server.log_path.open(errors="replace") as log:
        log.seek(log_from)
        assert "Traceback" not in log.read()


async def test_signal_to_peer_in_another_room_is_refused(live_server: LiveServer, account: Account, other_account: Account, peers) -> None:
    room_a = await create_room(live_server.url, account, "room a", private=False)
    room_b = await create_room(live_server.url, account, "room b", private=False)
    alice, bob = peers(), peers()
    await alice.connect(live_server.url, token=account.token)
    await bob.connect(live_server.url, token=other_account.token)
    await alice.join(room_a["slug"])
    await bob.join(room_b["slug"])

    await alice.emit("signal", {"to": bob.peer_id, "kind": "offer", "data": offer()})
    error = await alice.wait_for("error")
    assert error["code"] == "unknown_peer"
    await asyncio.sleep(0.3)
    assert bob.events["signal"] == []


async def test_private_room_refuses_non_members(live_server: LiveServer, account: Account, other_account: Account, peers) -> None:
    room = await create_room(live_server.url, account, "secret room", private=True)
    owner, stranger = peers(), peers()
    await owner.connect(live_server.url, token=account.token)
    await stranger.connect(live_server.url, token=other_account.token)
    assert "peer_id" in await owner.join(room["slug"])

    ack = await stranger.join(room["slug"])
    assert ack["error"]["code"] == "forbidden"
    assert (await stranger.wait_for("error"))["code"] == "forbidden"
    missing = await stranger.join("no-such-room")
    assert missing["error"]["code"] == "not_found"
    # Still connected, and still able to use rooms it may enter.
    assert "peer_id" in await stranger.join("global")


@pytest.mark.parametrize(
    ("event", "payload", "code"),
    [
        ("signal", {"to": "not-a-peer-id", "kind": "offer", "data": offer()}, "invalid"),
        ("signal", {"to": "00000000-0000-4000-8000-000000000000", "kind": "shout", "data": {}}, "invalid"),
        ("signal", "just a string", "invalid"),
        ("signal", {"to": "00000000-0000-4000-8000-000000000000", "kind": "offer", "data": {"type": "offer", "sdp": "x", "evil": 1}}, "invalid"),
        ("status", {"state": "asleep"}, "invalid"),
        ("status", {"state": "idle", "models_warm": ["m"] * 500}, "invalid"),
        ("status", {"state": "paused", "pause_reason": "bored"}, "invalid"),  # not a reason we know
        ("status", {"state": "paused"}, "invalid"),  # a pause says why
        ("status", {"state": "idle", "pause_reason": "hidden"}, "invalid"),  # and only a pause does
        ("refresh_ice", {"user_id": 1}, "invalid"),
        ("refresh_ice", "fresh please", "invalid"),
        ("teleport", {"where": "mars"}, "unknown_event"),
    ],
)
async def test_malformed_event_gets_error_and_connection_survives(joined_pair: JoinedPair, event: str, payload: object, code: str) -> None:
    alice, bob = await joined_pair("global")

    await alice.emit(event, payload)
    error = await alice.wait_for("error")
    assert error["code"] == code and error["message"]
    await alice.emit("signal", {"to": bob.peer_id, "kind": "offer", "data": offer()})
    assert (await bob.wait_for("signal"))["from"] == alice.peer_id


async def test_oversize_sdp_gets_error_and_connection_survives(joined_pair: JoinedPair) -> None:
    alice, bob = await joined_pair("global")

    await alice.emit("signal", {"to": bob.peer_id, "kind": "offer", "data": offer("a" * 100_000)})
    error = await alice.wait_for("error")
    assert error["code"] == "invalid" and "16384" in error["message"]
    await alice.emit("signal", {"to": bob.peer_id, "kind": "answer", "data": {"type": "answer", "sdp": "ok"}})
    got = await bob.wait_for("signal")
    assert got["kind"] == "answer"  # the oversize offer never reached bob


async def test_undecodable_packet_gets_error_and_connection_survives(live_server: LiveServer, account: Account, peers) -> None:
    alice = peers()
    await alice.connect(live_server.url, token=account.token)
    # Below the client library: a broken Socket.IO EVENT packet straight onto the engine.io socket.
    await alice.client.eio.send('2["signal", {broken json')
    assert (await alice.wait_for("error"))["code"] == "malformed"
    assert "peer_id" in await alice.join("global")


async def test_flood_is_throttled_and_connection_survives(joined_pair: JoinedPair) -> None:
    alice, bob = await joined_pair("global")

    for n in range(600):
        await alice.emit("signal", {"to": bob.peer_id, "kind": "candidate", "data": {"candidate": f"c{n}"}})
    error = await alice.wait_for("error", lambda e: e["code"] == "rate_limited")
    assert "at most" in error["message"]
    await asyncio.sleep(1)  # the bucket refills
    await alice.emit("signal", {"to": bob.peer_id, "kind": "candidate", "data": {"candidate": "after"}})
    await bob.wait_for("signal", lambda e: e["data"]["candidate"] == "after")
    # Relayed in the order sent: what came before "after" is all of the flood that got through,
    # however long a busy machine took to deliver it.
    relayed = [e["data"]["candidate"] for e in bob.events["signal"]].index("after")
    assert 200 <= relayed < 600  # the burst passed, the flood did not
    assert len([e for e in alice.events["error"] if e["code"] == "rate_limited"]) <= 2


async def test_signal_before_join_is_refused(live_server: LiveServer, account: Account, peers) -> None:
    alice = peers()
    await alice.connect(live_server.url, token=account.token)
    await alice.emit("signal", {"to": "00000000-0000-4000-8000-000000000000", "kind": "offer", "data": offer()})
    assert (await alice.wait_for("error"))["code"] == "not_in_room"


async def test_refresh_ice_answers_a_peer_in_a_room_and_only_one(live_server: LiveServer, account: Account, peers) -> None:
    alice = peers()
    await alice.connect(live_server.url, token=account.token)
    early = await alice.client.call("refresh_ice", {}, timeout=10)
    assert early["error"]["code"] == "not_in_room"
    assert (await alice.wait_for("error"))["code"] == "not_in_room"

    joined = await alice.join("global")
    # This server has no TURN: the ICE servers are the configured list (none), and nothing expires.
    assert joined["ice_servers"] == [] and joined["ice_ttl_s"] is None
    assert await alice.client.call("refresh_ice", {}, timeout=10) == {"ice_servers": [], "ice_ttl_s": None}


async def test_leave_and_disconnect_close_peer_session_and_tell_the_room(live_server: LiveServer, account: Account, other_account: Account, peers) -> None:
    room = await create_room(live_server.url, account, "leaving room", private=False)
    alice, bob, carol = peers(), peers(), peers()
    for peer, who in ((alice, account), (bob, other_account), (carol, other_account)):
        await peer.connect(live_server.url, token=who.token)
        await peer.join(room["slug"])

    ack = await bob.client.call("leave_room", {}, timeout=5)
    assert ack == {"ok": True}
    await carol.close()
    gone = {bob.peer_id, carol.peer_id}
    for _ in range(50):
        told = {peer_id for event in alice.events["peer_left"] for peer_id in event["peer_ids"]}
        if gone <= told:
            break
        await asyncio.sleep(0.1)
    assert gone <= told
    listed = await room_peers(live_server.url, account, room["slug"])
    assert [p["peer_id"] for p in listed] == [alice.peer_id]


@pytest.mark.slow
async def test_peer_that_stops_answering_is_dropped_within_seconds(live_server: LiveServer, account: Account, other_account: Account, peers) -> None:
    room = await create_room(live_server.url, account, "silent room", private=False)
    alice = peers()
    await alice.connect(live_server.url, token=account.token)
    await alice.join(room["slug"])

    # A raw engine.io client that joins, then goes silent: no pongs, no close frame.
    url = live_server.url.replace("http", "ws") + "/socket.io/?EIO=4&transport=websocket"
    async with aiohttp.ClientSession() as http, http.ws_connect(
        url, headers={"Authorization": f"Bearer {other_account.token}"}, autoping=False
    ) as ws:
        assert (await ws.receive_str()).startswith("0")
        await ws.send_str("40")
        assert (await ws.receive_str()).startswith("40")
        await ws.send_str("421" + json.dumps(["join_room", {"room": room["slug"]}]))
        silent_id = json.loads((await ws.receive_str())[3:])[0]["peer_id"]
        started = asyncio.get_running_loop().time()
        await alice.wait_for("peer_joined", lambda e: any(p["peer_id"] == silent_id for p in e["peers"]))

        await alice.wait_for("peer_left", lambda e: silent_id in e["peer_ids"], timeout=25)
        # A ping 5 s in, 5 s for its pong, and engine.io's sweep for missed pongs comes round every
        # PING_TIMEOUT (5 s): 10-15 s, plus slack for a loaded machine (once seen: 15.8 s).
        assert asyncio.get_running_loop().time() - started < 18
        # And the server hung up on it rather than holding the dead socket open.
        while (message := await asyncio.wait_for(ws.receive(), 5)).type == aiohttp.WSMsgType.TEXT:
            pass
        assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING)


async def test_disconnect_during_join_leaves_no_live_peer(live_server: LiveServer, account: Account) -> None:
    room = await create_room(live_server.url, account, "hasty room", private=False)
    url = live_server.url.replace("http", "ws") + "/socket.io/?EIO=4&transport=websocket"
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {account.token}"}) as http:
        for _ in range(3):
            async with http.ws_connect(url) as ws:
                assert (await ws.receive_str()).startswith("0")
                await ws.send_str("40")
                assert (await ws.receive_str()).startswith("40")
                await ws.send_str("421" + json.dumps(["join_room", {"room": room["slug"]}]))
            # Gone before the join's database work is done.
    await asyncio.sleep(2.5)  # past a presence flush
    assert await room_peers(live_server.url, account, room["slug"]) == []
