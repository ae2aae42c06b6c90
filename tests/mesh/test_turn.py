"""TURN: when it is configured, every peer that joins a room gets short-lived credentials in
coturn's shared-secret scheme beside the STUN servers, and new ones when it asks (`refresh_ice`);
half a configuration refuses to start."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import time
from pathlib import Path

import pytest
import socketio
from conftest import start_server
from support.accounts import create_room, sign_up

from mesh_nanollm.settings import SettingsError, load_settings
from mesh_nanollm.worker.mesh import Mesh

SECRET = "coturn static-auth-secret"
TURN_URLS = (
    '["turn:turn.example.org:3478?transport=udp", "turns:turn.example.org:5349?transport=tcp"]'
)
STUN = '[{"urls": ["stun:stun.example.org:3478"]}]'


def coturn_password(secret: str, username: str) -> str:
    """What coturn computes for `use-auth-secret`: base64(HMAC-SHA1(secret, username))."""
    return base64.b64encode(
        hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    ).decode()


async def test_join_hands_out_turn_credentials_coturn_accepts(tmp_path: Path) -> None:
    server = start_server(
        tmp_path, ICE_SERVERS=STUN, TURN_URLS=TURN_URLS, TURN_SECRET=SECRET, TURN_TTL="600"
    )
    client = socketio.AsyncClient(reconnection=False)
    try:
        account = await sign_up(server.url)
        room = await create_room(server.url, account, "turn", private=False)
        await client.connect(
            server.url,
            headers={"Authorization": f"Bearer {account.token}"},
            transports=["websocket"],
            wait_timeout=10,
        )
        ack = await client.call("join_room", {"room": room["slug"]}, timeout=10)
    finally:
        await client.disconnect()
        server.stop()

    stun, turn = ack["ice_servers"]
    assert stun == {"urls": ["stun:stun.example.org:3478"]}
    assert turn["urls"] == [
        "turn:turn.example.org:3478?transport=udp",
        "turns:turn.example.org:5349?transport=tcp",
    ]
    expires, _, user_id = turn["username"].partition(":")
    assert (
        user_id.isdigit() and abs(int(expires) - (time.time() + 600)) < 30
    )  # short-lived, as configured
    assert turn["credential"] == coturn_password(SECRET, turn["username"])


async def test_refresh_ice_hands_out_new_credentials_for_the_same_user(tmp_path: Path) -> None:
    server = start_server(tmp_path, ICE_SERVERS=STUN, TURN_URLS=TURN_URLS, TURN_SECRET=SECRET, TURN_TTL="600")
    client = socketio.AsyncClient(reconnection=False)
    try:
        account = await sign_up(server.url)
        await client.connect(
            server.url, headers={"Authorization": f"Bearer {account.token}"}, transports=["websocket"], wait_timeout=10
        )
        joined = await client.call("join_room", {"room": "global"}, timeout=10)
        await asyncio.sleep(1.1)  # the expiry is in whole seconds: the next one must be later
        refreshed = await client.call("refresh_ice", {}, timeout=10)
    finally:
        await client.disconnect()
        server.stop()

    assert joined["ice_ttl_s"] == refreshed["ice_ttl_s"] == 600
    old, new = joined["ice_servers"][1], refreshed["ice_servers"][1]
    assert refreshed["ice_servers"][0] == {"urls": ["stun:stun.example.org:3478"]}
    assert new["urls"] == old["urls"]
    old_expiry, _, old_user = old["username"].partition(":")
    new_expiry, _, new_user = new["username"].partition(":")
    assert new_user == old_user and int(new_expiry) > int(old_expiry)
    assert new["credential"] == coturn_password(SECRET, new["username"]) != old["credential"]


async def test_the_headless_worker_asks_for_new_credentials_before_its_expire(tmp_path: Path) -> None:
    server = start_server(tmp_path, ICE_SERVERS=STUN, TURN_URLS=TURN_URLS, TURN_SECRET=SECRET, TURN_TTL="600")
    client = socketio.AsyncClient(reconnection=False)
    said: list[str] = []
    mesh = Mesh(runner=None, sio=client, say=said.append)  # type: ignore[arg-type] -- no job comes
    try:
        account = await sign_up(server.url)
        await client.connect(
            server.url, headers={"Authorization": f"Bearer {account.token}"}, transports=["websocket"], wait_timeout=10
        )
        joined = await client.call("join_room", {"room": "global"}, timeout=10)
        # As if these credentials lived 1.25 s: the worker asks for new ones a second later.
        await mesh.room_event("joined", joined | {"ice_ttl_s": 1.25})
        first = mesh.ice[1].username
        async with asyncio.timeout(30):
            while mesh.ice[1].username == first:
                await asyncio.sleep(0.1)
        await mesh.room_event("left", {})
    finally:
        await client.disconnect()
        server.stop()

    old_expiry, _, old_user = first.partition(":")
    new_expiry, _, new_user = mesh.ice[1].username.partition(":")
    assert new_user == old_user and int(new_expiry) > int(old_expiry)
    assert mesh.ice[1].credential == coturn_password(SECRET, mesh.ice[1].username)
    assert mesh.ice_refresh is None and said == []  # left the room: no more asking


def test_without_turn_settings_peers_get_only_ice_servers(tmp_path: Path) -> None:
    settings = load_settings(
        {"ICE_SERVERS": STUN, "SECRET_KEY": "k", "DATABASE_URL": f"sqlite:///{tmp_path / 'db'}"}
    )
    assert settings.turn_urls == [] and settings.turn_secret is None


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"TURN_URLS": TURN_URLS}, "must be set together"),
        ({"TURN_SECRET": SECRET}, "must be set together"),
        ({"TURN_URLS": '["stun:stun.example.org"]', "TURN_SECRET": SECRET}, "turn: or turns: URLs"),
        (
            {"TURN_URLS": "turn:turn.example.org", "TURN_SECRET": SECRET},
            "TURN_URLS must be a JSON list",
        ),
        ({"TURN_URLS": TURN_URLS, "TURN_SECRET": SECRET, "TURN_TTL": "5"}, "at least 60 seconds"),
    ],
)
def test_half_or_malformed_turn_settings_are_refused(
    tmp_path: Path, env: dict[str, str], message: str
) -> None:
    with pytest.raises(SettingsError, match=message):
        load_settings({"SECRET_KEY": "k", "DATABASE_URL": f"sqlite:///{tmp_path / 'db'}"} | env)
