"""Rooms: the list, creating and joining them, privacy, the room page, its peers, and the rooms API."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from html import unescape

import pytest
from conftest import register, unique_name
from litestar.testing import AsyncTestClient

from mesh_nanollm.tables import PeerSession, Room, User

HTMX = {"HX-Request": "true"}


def flash(html: str) -> list[str]:
    texts = re.findall(r'data-testid="flash"[^>]*>(.*?)</', html, re.DOTALL)
    return [unescape(re.sub(r"\s+", " ", text).strip()) for text in texts]


def listed_rooms(html: str) -> list[str]:
    return re.findall(r'data-testid="room-row" data-room="([^"]+)"', html)


async def create_room(client: AsyncTestClient, name: str, private: bool = False) -> str:
    """Create a room through the form; returns its slug."""
    data = {"name": name} | ({"private": "on"} if private else {})
    response = await client.post("/rooms", data=data, follow_redirects=False)
    assert response.status_code == 303, response.text[:300]
    return response.headers["location"].removeprefix("/rooms/")


async def invite_code(client: AsyncTestClient, slug: str) -> str:
    page = await client.get(f"/rooms/{slug}")
    return re.search(r'data-testid="invite-code">([^<]+)<', page.text).group(1)


async def switch_user(client: AsyncTestClient) -> str:
    """Sign out and in as a brand-new user on the same client."""
    client.cookies.clear()
    client.headers.pop("x-csrftoken", None)
    username = await register(client)
    client.headers["x-csrftoken"] = client.cookies["csrftoken"]
    return username


async def add_peer(slug: str, username: str, connected: bool = True) -> str:
    """A browser peer as the socket layer records it on join_room; returns its peer id."""
    room = await Room.select(Room.id).where(Room.slug == slug).first()
    user = await User.select(User.id).where(User.username == username).first()
    now = datetime.now(UTC)
    peer = PeerSession(
        room=room["id"],
        user=user["id"],
        backend="wasm",
        state="busy",
        tok_s=42.0,
        models_warm=["tiny-gpt2"],
        connected_at=now,
        last_seen_at=now,
        disconnected_at=None if connected else now,
    )
    await peer.save()
    return str(peer.peer_id)


# The list page, creating and joining


async def test_rooms_page_lists_global_room_first(user_client: AsyncTestClient) -> None:
    await create_room(user_client, "Later room")
    response = await user_client.get("/rooms")
    assert response.status_code == 200
    assert listed_rooms(response.text)[0] == "global"
    assert 'id="room-form"' in response.text and 'id="join-form"' in response.text


async def test_create_public_room_opens_it_for_everyone(user_client: AsyncTestClient) -> None:
    name = f"Lab bench {unique_name()}"
    slug = await create_room(user_client, name)
    assert slug.startswith("lab-bench-")
    page = await user_client.get(f"/rooms/{slug}")
    assert page.status_code == 200 and name in page.text
    await switch_user(user_client)
    assert slug in listed_rooms((await user_client.get("/rooms")).text)
    assert (await user_client.get(f"/rooms/{slug}")).status_code == 200


async def test_create_room_with_htmx_sends_browser_to_the_room(user_client: AsyncTestClient) -> None:
    response = await user_client.post("/rooms", data={"name": "Htmx room"}, headers=HTMX, follow_redirects=False)
    assert response.status_code == 200
    target = json.loads(response.headers["hx-location"])["path"]
    assert target.startswith("/rooms/htmx-room")
    assert (await user_client.get(target)).status_code == 200


async def test_same_name_twice_gets_two_rooms(user_client: AsyncTestClient) -> None:
    name = f"Twin {unique_name()}"
    assert await create_room(user_client, name) != await create_room(user_client, name)


async def test_room_named_join_does_not_shadow_join_route(user_client: AsyncTestClient) -> None:
    slug = await create_room(user_client, "Join")
    assert slug != "join"
    assert (await user_client.get(f"/rooms/{slug}")).status_code == 200


async def test_create_private_room_shows_owner_the_invite_code(user_client: AsyncTestClient) -> None:
    slug = await create_room(user_client, "Secret lab", private=True)
    page = await user_client.get(f"/rooms/{slug}")
    assert page.status_code == 200
    assert len(await invite_code(user_client, slug)) >= 8
    assert slug in listed_rooms((await user_client.get("/rooms")).text)


async def test_private_room_is_forbidden_to_non_members(user_client: AsyncTestClient) -> None:
    slug = await create_room(user_client, "Members only", private=True)
    await switch_user(user_client)
    assert slug not in listed_rooms((await user_client.get("/rooms")).text)
    page = await user_client.get(f"/rooms/{slug}")
    assert page.status_code == 403
    assert page.headers["content-type"].startswith("text/html")
    assert flash(page.text) == ["This room is private. Ask its owner for an invite code."]
    assert (await user_client.get(f"/rooms/{slug}/peers")).status_code == 403
    api = await user_client.get(f"/api/rooms/{slug}")
    assert api.status_code == 403
    assert api.json() == {"error": "Not allowed", "detail": "This room is private. Ask its owner for an invite code."}
    assert (await user_client.get(f"/api/rooms/{slug}/peers")).status_code == 403


async def test_join_by_invite_lets_a_new_member_in(user_client: AsyncTestClient) -> None:
    slug = await create_room(user_client, "Invited", private=True)
    code = await invite_code(user_client, slug)
    await switch_user(user_client)
    response = await user_client.post("/rooms/join", data={"code": f"  {code} "}, follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == f"/rooms/{slug}"
    page = await user_client.get(f"/rooms/{slug}")
    assert page.status_code == 200
    assert 'data-testid="invite-code"' not in page.text  # only the owner sees it
    assert slug in listed_rooms((await user_client.get("/rooms")).text)
    # Joining twice is harmless.
    assert (await user_client.post("/rooms/join", data={"code": code}, follow_redirects=False)).status_code == 303


async def test_join_with_htmx_sends_browser_to_the_room(user_client: AsyncTestClient) -> None:
    slug = await create_room(user_client, "Htmx invite", private=True)
    code = await invite_code(user_client, slug)
    await switch_user(user_client)
    response = await user_client.post("/rooms/join", data={"code": code}, headers=HTMX, follow_redirects=False)
    assert response.status_code == 200
    assert json.loads(response.headers["hx-location"]) == {"path": f"/rooms/{slug}", "target": "body"}


@pytest.mark.parametrize("code", ["not-a-code", "", "c" * 500])
async def test_join_with_bad_code_shows_error(user_client: AsyncTestClient, code: str) -> None:
    response = await user_client.post("/rooms/join", data={"code": code})
    assert response.status_code == 422
    assert "<html" in response.text
    assert "That invite code is not valid." in flash(response.text)


async def test_join_with_bad_code_htmx_returns_only_the_join_form(user_client: AsyncTestClient) -> None:
    response = await user_client.post("/rooms/join", data={"code": "nope"}, headers=HTMX)
    assert response.status_code == 422
    assert response.text.lstrip().startswith('<section class="card" id="join-form">')
    assert "<html" not in response.text
    assert flash(response.text) == ["That invite code is not valid."]
    assert 'value="nope"' in response.text


@pytest.mark.parametrize(
    ("name", "message"),
    [("", "Give the room a name."), ("   ", "Give the room a name."), ("n" * 81, "Use at most 80 characters.")],
    ids=["empty", "blank", "over-long"],
)
async def test_create_room_with_bad_name_htmx_returns_form_with_error(
    user_client: AsyncTestClient, name: str, message: str
) -> None:
    response = await user_client.post("/rooms", data={"name": name}, headers=HTMX)
    assert response.status_code == 422
    assert response.text.lstrip().startswith('<section class="card" id="room-form">')
    assert "<html" not in response.text
    assert flash(response.text) == [message]


async def test_create_room_with_bad_name_rerenders_page(user_client: AsyncTestClient) -> None:
    response = await user_client.post("/rooms", data={"name": ""})
    assert response.status_code == 422
    assert "<html" in response.text and listed_rooms(response.text)[0] == "global"
    assert flash(response.text) == ["Give the room a name."]


async def test_unknown_room_is_404(user_client: AsyncTestClient) -> None:
    page = await user_client.get("/rooms/no-such-room")
    assert page.status_code == 404
    assert flash(page.text) == ["There is no room called “no-such-room”."]
    long_slug = await user_client.get("/rooms/" + "x" * 300)
    assert long_slug.status_code == 404
    api = await user_client.get("/api/rooms/no-such-room")
    assert api.status_code == 404
    assert api.json()["error"] == "Not found"
    assert (await user_client.get("/api/rooms/no-such-room/peers")).status_code == 404


# The room page and its peers


async def test_room_page_is_cross_origin_isolated(user_client: AsyncTestClient) -> None:
    response = await user_client.get("/rooms/global")
    assert response.status_code == 200
    assert response.headers["cross-origin-opener-policy"] == "same-origin"
    assert response.headers["cross-origin-embedder-policy"] in ("require-corp", "credentialless")


async def test_room_page_model_picker_offers_the_tiny_model(user_client: AsyncTestClient) -> None:
    response = await user_client.get("/rooms/global")
    picker = re.search(r'<select[^>]*data-testid="model"[^>]*>(.*?)</select>', response.text, re.DOTALL).group(1)
    tiny = re.search(r'<option value="tiny-gpt2"[^>]*>', picker)
    assert tiny is not None and "selected" in tiny.group(0)
    for testid in ("prompt", "run", "output", "mode", "backend", "peers"):
        assert f'data-testid="{testid}"' in response.text, testid


async def test_peers_fragment_starts_empty(user_client: AsyncTestClient) -> None:
    slug = await create_room(user_client, "Quiet room")
    response = await user_client.get(f"/rooms/{slug}/peers", headers=HTMX)
    assert response.status_code == 200
    assert response.text.lstrip().startswith('<section class="card peers" id="peers" data-testid="peers"')
    assert "<html" not in response.text
    assert "No peers online yet." in response.text
    assert (await user_client.get(f"/api/rooms/{slug}/peers")).json() == []


async def test_peers_fragment_lists_connected_peers(user_client: AsyncTestClient) -> None:
    username = await switch_user(user_client)
    slug = await create_room(user_client, "Busy room")
    peer_id = await add_peer(slug, username)
    await add_peer(slug, username, connected=False)
    fragment = await user_client.get(f"/rooms/{slug}/peers")
    assert re.findall(r'data-testid="peer" data-peer-id="([^"]+)"', fragment.text) == [peer_id]
    assert username in fragment.text and "WASM" in fragment.text and "42.0 tok/s" in fragment.text
    [peer] = (await user_client.get(f"/api/rooms/{slug}/peers")).json()
    assert peer["peer_id"] == peer_id
    assert peer["username"] == username and peer["models_warm"] == ["tiny-gpt2"]
    assert "sid" not in peer
    assert (await user_client.get(f"/api/rooms/{slug}")).json()["peers"] == 1
    listing = (await user_client.get("/rooms")).text
    assert re.search(rf'data-room="{slug}".*?1 peer online', listing, re.DOTALL)


# The rooms API


async def test_api_lists_visible_rooms(user_client: AsyncTestClient) -> None:
    public = await create_room(user_client, "Open API room")
    private = await create_room(user_client, "Closed API room", private=True)
    rooms = {room["slug"]: room for room in (await user_client.get("/api/rooms")).json()}
    assert {"global", public, private} <= set(rooms)
    assert rooms[private]["private"] is True and rooms[private]["invite_code"]
    assert rooms[public]["invite_code"] is None
    await switch_user(user_client)
    others = {room["slug"] for room in (await user_client.get("/api/rooms")).json()}
    assert public in others and private not in others


async def test_api_create_room_returns_it(user_client: AsyncTestClient) -> None:
    username = await switch_user(user_client)
    response = await user_client.post("/api/rooms", json={"name": "From a script", "private": True})
    assert response.status_code == 201
    room = response.json()
    assert room["name"] == "From a script" and room["private"] is True
    assert room["owner"] == username and room["peers"] == 0 and room["invite_code"]
    fetched = await user_client.get(f"/api/rooms/{room['slug']}")
    assert fetched.status_code == 200
    assert fetched.json() == room


async def test_api_room_shows_its_owner(user_client: AsyncTestClient) -> None:
    username = await switch_user(user_client)
    slug = (await user_client.post("/api/rooms", json={"name": "Owned"})).json()["slug"]
    await switch_user(user_client)
    room = (await user_client.get(f"/api/rooms/{slug}")).json()
    assert room["owner"] == username
    assert [r["owner"] for r in (await user_client.get("/api/rooms")).json() if r["slug"] == slug] == [username]


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"name": ""}, "name"),
        ({"name": "n" * 81}, "name"),
        ({"name": 42}, "name"),
        ({"name": "ok", "private": "yes"}, "private"),
        ({"name": "ok", "colour": "red"}, "colour"),
        ({}, "name"),
        (["name"], "object"),
    ],
    ids=["empty-name", "over-long-name", "name-not-string", "private-not-bool", "unknown-field", "missing-name", "not-an-object"],
)
async def test_api_create_room_bad_input_is_400(user_client: AsyncTestClient, body: object, fragment: str) -> None:
    response = await user_client.post("/api/rooms", json=body)
    assert response.status_code == 400
    error = response.json()
    assert error["error"] == "Bad request"
    assert fragment in error["detail"]


async def test_api_create_room_blank_name_is_422(user_client: AsyncTestClient) -> None:
    response = await user_client.post("/api/rooms", json={"name": "   "})
    assert response.status_code == 422
    assert response.json()["fields"] == {"name": "Give the room a name."}


async def test_api_create_room_malformed_json_is_400(user_client: AsyncTestClient) -> None:
    response = await user_client.post(
        "/api/rooms", content=b'{"name": "half', headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert set(response.json()) == {"error", "detail"}
