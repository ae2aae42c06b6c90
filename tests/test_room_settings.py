"""A room's settings page: the owner renames it, makes a new code, removes members and deletes it;
a member leaves it. Everyone else is refused with a readable 4xx."""

from __future__ import annotations

import re

import pytest
import pytest_asyncio
from conftest import register
from litestar.testing import AsyncTestClient
from support.second_browser import SecondBrowser
from test_rooms import create_room, flash, invite_code, listed_rooms

from mesh_nanollm.tables import Room, User


@pytest_asyncio.fixture
async def member(user_client: AsyncTestClient) -> SecondBrowser:
    """A second signed-in user, in a browser of their own (user_client is the owner)."""
    other = SecondBrowser(user_client)
    await register(other)
    other.headers["x-csrftoken"] = other.cookies["csrftoken"]
    return other


async def private_room_with_member(owner: AsyncTestClient, member: SecondBrowser, name: str) -> str:
    slug = await create_room(owner, name, private=True)
    joined = await member.post("/rooms/join", data={"code": await invite_code(owner, slug)}, follow_redirects=False)
    assert joined.status_code == 303
    return slug


async def user_id(client: AsyncTestClient) -> int:
    username = re.search(r'<span class="who">([^<]+)</span>', (await client.get("/rooms")).text).group(1)
    return (await User.select(User.id).where(User.username == username).first())["id"]


def members(html: str) -> list[str]:
    return re.findall(r'data-testid="member-row" data-username="([^"]+)"', html)


# The page


async def test_owner_sees_name_invite_members_and_delete(user_client: AsyncTestClient, member: SecondBrowser) -> None:
    slug = await private_room_with_member(user_client, member, "Settings lab")
    page = await user_client.get(f"/rooms/{slug}/settings")
    assert page.status_code == 200
    for heading in ("Name", "Invite", "Members", "Delete this room"):
        assert f">{heading}</h2>" in page.text
    assert "Leave this room" not in page.text
    assert len(members(page.text)) == 2
    room_page = (await user_client.get(f"/rooms/{slug}")).text
    assert f'href="/rooms/{slug}/settings"' in room_page


async def test_member_sees_only_leave(user_client: AsyncTestClient, member: SecondBrowser) -> None:
    slug = await private_room_with_member(user_client, member, "Member view")
    page = await member.get(f"/rooms/{slug}/settings")
    assert page.status_code == 200
    assert ">Leave this room</h2>" in page.text
    assert "Delete this room" not in page.text and 'data-testid="invite-code"' not in page.text


async def test_settings_of_a_public_room_are_for_its_owner_only(user_client: AsyncTestClient, member: SecondBrowser) -> None:
    slug = await create_room(user_client, "Open settings")
    assert (await user_client.get(f"/rooms/{slug}/settings")).status_code == 200
    page = await member.get(f"/rooms/{slug}/settings")
    assert page.status_code == 403
    assert flash(page.text) == ["Only the room's owner can change it; public rooms have nothing else to set."]
    assert (await member.get("/rooms/global/settings")).status_code == 403


async def test_settings_of_a_private_room_are_forbidden_to_outsiders(user_client: AsyncTestClient, member: SecondBrowser) -> None:
    slug = await create_room(user_client, "Closed settings", private=True)
    assert (await member.get(f"/rooms/{slug}/settings")).status_code == 403
    assert (await member.get("/rooms/no-such-room/settings")).status_code == 404


# Renaming


async def test_owner_renames_the_room_and_its_address_stays(user_client: AsyncTestClient) -> None:
    slug = await create_room(user_client, "Old name")
    response = await user_client.post(f"/rooms/{slug}/settings/name", data={"name": "  New name "}, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == f"/rooms/{slug}/settings"
    page = await user_client.get(f"/rooms/{slug}")
    assert "<h1>New name" in page.text


@pytest.mark.parametrize(("name", "message"), [("  ", "Give the room a name."), ("n" * 81, "Use at most 80 characters.")])
async def test_rename_to_a_bad_name_rerenders_the_page_with_the_error(user_client: AsyncTestClient, name: str, message: str) -> None:
    slug = await create_room(user_client, "Keep me")
    page = await user_client.post(f"/rooms/{slug}/settings/name", data={"name": name})
    assert page.status_code == 422
    assert message in flash(page.text)
    assert (await Room.select(Room.name).where(Room.slug == slug).first())["name"] == "Keep me"


async def test_member_cannot_rename(user_client: AsyncTestClient, member: SecondBrowser) -> None:
    slug = await private_room_with_member(user_client, member, "Not yours")
    page = await member.post(f"/rooms/{slug}/settings/name", data={"name": "Mine now"})
    assert page.status_code == 403
    assert flash(page.text) == ["Only the room's owner can do that."]


# A new invite code


async def test_new_code_replaces_the_old_one(user_client: AsyncTestClient, member: SecondBrowser) -> None:
    slug = await create_room(user_client, "Rotate", private=True)
    old = await invite_code(user_client, slug)
    response = await user_client.post(f"/rooms/{slug}/settings/code", follow_redirects=False)
    assert response.status_code == 303
    new = await invite_code(user_client, slug)
    assert new != old
    refused = await member.post("/rooms/join", data={"code": old})
    assert refused.status_code == 422 and "That invite code is not valid." in flash(refused.text)
    assert (await member.get(f"/rooms/join/{old}")).status_code == 404
    joined = await member.post("/rooms/join", data={"code": new}, follow_redirects=False)
    assert joined.headers["location"] == f"/rooms/{slug}"


async def test_new_code_is_refused_for_public_rooms_and_non_owners(user_client: AsyncTestClient, member: SecondBrowser) -> None:
    public = await create_room(user_client, "No code")
    page = await user_client.post(f"/rooms/{public}/settings/code")
    assert page.status_code == 409
    assert flash(page.text) == ["Public rooms are open to everyone and have no invite code."]
    slug = await private_room_with_member(user_client, member, "Members cannot rotate")
    assert (await member.post(f"/rooms/{slug}/settings/code")).status_code == 403


# Members


async def test_owner_removes_a_member_who_then_cannot_enter(user_client: AsyncTestClient, member: SecondBrowser) -> None:
    slug = await private_room_with_member(user_client, member, "Removal")
    member_id = await user_id(member)
    response = await user_client.post(f"/rooms/{slug}/settings/members/{member_id}/remove", follow_redirects=False)
    assert response.status_code == 303
    assert len(members((await user_client.get(f"/rooms/{slug}/settings")).text)) == 1
    assert (await member.get(f"/rooms/{slug}")).status_code == 403
    assert slug not in listed_rooms((await member.get("/rooms")).text)


async def test_remove_refuses_the_owner_a_stranger_and_non_owners(user_client: AsyncTestClient, member: SecondBrowser) -> None:
    slug = await private_room_with_member(user_client, member, "Removal rules")
    owner_id, member_id = await user_id(user_client), await user_id(member)
    itself = await user_client.post(f"/rooms/{slug}/settings/members/{owner_id}/remove")
    assert itself.status_code == 409
    assert flash(itself.text) == ["You own this room; delete it instead of removing yourself."]
    for stranger in (owner_id + 10_000, 2**63):
        page = await user_client.post(f"/rooms/{slug}/settings/members/{stranger}/remove")
        assert page.status_code == 404, stranger
        assert flash(page.text) == ["That person is not a member of this room."]
    assert (await member.post(f"/rooms/{slug}/settings/members/{owner_id}/remove")).status_code == 403
    assert (await user_client.post(f"/rooms/{slug}/settings/members/abc/remove")).status_code == 404
    assert len(members((await user_client.get(f"/rooms/{slug}/settings")).text)) == 2
    assert member_id != owner_id


async def test_member_leaves_and_needs_a_code_to_return(user_client: AsyncTestClient, member: SecondBrowser) -> None:
    slug = await private_room_with_member(user_client, member, "Exit")
    response = await member.post(f"/rooms/{slug}/settings/leave", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/rooms"
    assert (await member.get(f"/rooms/{slug}")).status_code == 403


async def test_leaving_is_refused_to_the_owner_and_in_public_rooms(user_client: AsyncTestClient, member: SecondBrowser) -> None:
    slug = await create_room(user_client, "Stay", private=True)
    page = await user_client.post(f"/rooms/{slug}/settings/leave")
    assert page.status_code == 409 and flash(page.text) == ["You own this room; delete it, or keep it."]
    public = await member.post("/rooms/global/settings/leave")
    assert public.status_code == 409
    assert flash(public.text) == ["Public rooms are open to everyone; there is nothing to leave."]
    assert (await member.post(f"/rooms/{slug}/settings/leave")).status_code == 403


# Deleting


async def test_delete_needs_the_room_name_typed(user_client: AsyncTestClient) -> None:
    slug = await create_room(user_client, "Doomed", private=True)
    page = await user_client.post(f"/rooms/{slug}/settings/delete", data={"confirm": "doomed"})
    assert page.status_code == 422
    assert "Type the room's name, “Doomed”, to delete it." in flash(page.text)
    response = await user_client.post(f"/rooms/{slug}/settings/delete", data={"confirm": "Doomed"}, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/rooms"
    assert (await user_client.get(f"/rooms/{slug}")).status_code == 404
    assert slug not in listed_rooms((await user_client.get("/rooms")).text)


async def test_delete_is_refused_to_members(user_client: AsyncTestClient, member: SecondBrowser) -> None:
    slug = await private_room_with_member(user_client, member, "Not deletable")
    page = await member.post(f"/rooms/{slug}/settings/delete", data={"confirm": "Not deletable"})
    assert page.status_code == 403
    assert (await member.get(f"/rooms/{slug}")).status_code == 200


async def test_global_room_cannot_be_deleted_even_by_an_owner(user_client: AsyncTestClient) -> None:
    owner_id = await user_id(user_client)
    await Room.update({Room.owner: owner_id}).where(Room.slug == "global")
    try:
        page = await user_client.get("/rooms/global/settings")
        assert "Delete this room" not in page.text
        refused = await user_client.post("/rooms/global/settings/delete", data={"confirm": "Global"})
        assert refused.status_code == 403 and flash(refused.text) == ["The global room cannot be deleted."]
    finally:
        await Room.update({Room.owner: None}).where(Room.slug == "global")
    assert (await user_client.get("/rooms/global")).status_code == 200


async def test_settings_forms_need_the_csrf_token(user_client: AsyncTestClient) -> None:
    slug = await create_room(user_client, "Guarded")
    del user_client.headers["x-csrftoken"]
    refused = await user_client.post(f"/rooms/{slug}/settings/delete", data={"confirm": "Guarded"})
    assert refused.status_code == 403
    assert (await user_client.get(f"/rooms/{slug}")).status_code == 200
