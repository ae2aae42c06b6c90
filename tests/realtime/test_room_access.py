"""Losing a room closes the sockets in it: a removed member's, a leaving member's, and every
peer's when the room is deleted; the same user's sockets elsewhere stay up."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator

import httpx
from conftest import LiveServer

from realtime.conftest import Account, create_room, sign_up


@contextlib.asynccontextmanager
async def as_browser(base_url: str, account: Account) -> AsyncIterator[httpx.AsyncClient]:
    """The account's browser session, sending the CSRF header like the page does."""
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as http:
        http.cookies.set("mesh_session", account.session_cookie)
        await http.get("/login")
        http.headers["x-csrftoken"] = http.cookies["csrftoken"]
        yield http


async def user_id(http: httpx.AsyncClient, slug: str, username: str) -> int:
    page = await http.get(f"/rooms/{slug}/settings")
    found = re.search(rf'data-username="{username}">.*?/members/(\d+)/remove', page.text, re.DOTALL)
    assert found, page.text[:500]
    return int(found.group(1))


async def test_removed_member_loses_their_socket_in_the_room_only(live_server: LiveServer, peers) -> None:
    owner, member = await sign_up(live_server.url), await sign_up(live_server.url)
    room = await create_room(live_server.url, owner, "Access lab", private=True)
    async with as_browser(live_server.url, owner) as owner_http, as_browser(live_server.url, member) as member_http:
        joined = await member_http.post("/rooms/join", data={"code": room["invite_code"]}, follow_redirects=False)
        assert joined.status_code == 303
        in_room, elsewhere, owners = peers(), peers(), peers()
        await in_room.connect(live_server.url, token=member.token)
        await elsewhere.connect(live_server.url, cookie=member.session_cookie)
        await owners.connect(live_server.url, token=owner.token)
        assert "peer_id" in await in_room.join(room["slug"])
        assert "peer_id" in await elsewhere.join("global")
        assert "peer_id" in await owners.join(room["slug"])

        member_id = await user_id(owner_http, room["slug"], member.username)
        removed = await owner_http.post(f"/rooms/{room['slug']}/settings/members/{member_id}/remove", follow_redirects=False)
        assert removed.status_code == 303

        await in_room.wait_for("disconnect")
        await owners.wait_for("peer_left", lambda data: in_room.peer_id in data["peer_ids"])
        assert elsewhere.client.connected and owners.client.connected
        # The token still signs in; the room refuses it now.
        again = peers()
        await again.connect(live_server.url, token=member.token)
        ack = await again.join(room["slug"])
        assert ack["error"]["code"] == "forbidden", ack


async def test_deleting_a_room_closes_every_socket_in_it(live_server: LiveServer, peers) -> None:
    owner, visitor = await sign_up(live_server.url), await sign_up(live_server.url)
    room = await create_room(live_server.url, owner, "Short-lived", private=False)
    async with as_browser(live_server.url, owner) as owner_http:
        owners, visitors, bystander = peers(), peers(), peers()
        await owners.connect(live_server.url, token=owner.token)
        await visitors.connect(live_server.url, token=visitor.token)
        await bystander.connect(live_server.url, token=visitor.token)
        await owners.join(room["slug"])
        await visitors.join(room["slug"])
        await bystander.join("global")

        deleted = await owner_http.post(
            f"/rooms/{room['slug']}/settings/delete", data={"confirm": "Short-lived"}, follow_redirects=False
        )
        assert deleted.status_code == 303

        await owners.wait_for("disconnect")
        await visitors.wait_for("disconnect")
        assert bystander.client.connected
