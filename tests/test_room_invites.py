"""Invites: readable codes typed any way, invite links through sign-in, and the code field on a
private room's 403 page."""

from __future__ import annotations

import re

import pytest
from conftest import register
from litestar.testing import AsyncTestClient
from support.accounts import PASSWORD, csrf_token
from test_rooms import HTMX, create_room, flash, invite_code, listed_rooms, switch_user

from mesh_nanollm.rooms.codes import format_code, normalize_code
from mesh_nanollm.tables import Room

READABLE = re.compile(r"[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{2}")


def invite_link(html: str) -> str:
    return re.search(r'href="([^"]+)" data-testid="invite-link"', html).group(1)


async def set_code(slug: str, code: str) -> None:
    await Room.update({Room.invite_code: code}).where(Room.slug == slug)


# The codes themselves


def test_codes_are_read_back_whatever_the_case_spaces_dashes_or_look_alikes() -> None:
    assert normalize_code(" k7qm-4xpz 9d ") == "K7QM4XPZ9D"
    assert normalize_code("K7QM–4XPZ—9D") == "K7QM4XPZ9D"  # dashes a phone or word processor made
    assert normalize_code("i0l-OOAB-CD") == "10100ABCD"  # I and L read as 1, O as 0
    assert format_code("K7QM4XPZ9D") == "K7QM-4XPZ-9D"
    assert format_code("aB3_x-Yz9Qw0") == "aB3_x-Yz9Qw0"  # a code from before: shown as it is


async def test_new_private_room_gets_a_grouped_code_without_look_alikes(user_client: AsyncTestClient) -> None:
    slug = await create_room(user_client, "Readable", private=True)
    assert READABLE.fullmatch(await invite_code(user_client, slug))


@pytest.mark.parametrize("typed", ["lower", "no-dashes", "spaced"])
async def test_join_accepts_the_code_in_any_case_and_grouping(user_client: AsyncTestClient, typed: str) -> None:
    slug = await create_room(user_client, "Any case", private=True)
    code = await invite_code(user_client, slug)
    entered = {"lower": code.lower(), "no-dashes": code.replace("-", ""), "spaced": code.replace("-", " ")}[typed]
    await switch_user(user_client)
    response = await user_client.post("/rooms/join", data={"code": entered}, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == f"/rooms/{slug}"


async def test_join_reads_look_alike_letters_as_digits(user_client: AsyncTestClient) -> None:
    slug = await create_room(user_client, "Look-alikes", private=True)
    await set_code(slug, "10ABCDEF10")
    await switch_user(user_client)
    response = await user_client.post("/rooms/join", data={"code": "lo-abcd-efio"}, follow_redirects=False)
    assert response.headers["location"] == f"/rooms/{slug}"


async def test_code_made_before_the_readable_alphabet_still_works_exactly_as_typed(user_client: AsyncTestClient) -> None:
    slug = await create_room(user_client, "Old code", private=True)
    await set_code(slug, "aB3_x-Yz9Qw0")
    assert await invite_code(user_client, slug) == "aB3_x-Yz9Qw0"
    await switch_user(user_client)
    wrong_case = await user_client.post("/rooms/join", data={"code": "AB3_X-YZ9QW0"})
    assert wrong_case.status_code == 422 and flash(wrong_case.text) == ["That invite code is not valid."]
    response = await user_client.post("/rooms/join", data={"code": " aB3_x-Yz9Qw0 "}, follow_redirects=False)
    assert response.headers["location"] == f"/rooms/{slug}"


# Invite links


async def test_owner_sees_an_invite_link_that_opens_the_room(user_client: AsyncTestClient) -> None:
    slug = await create_room(user_client, "Linked", private=True)
    page = (await user_client.get(f"/rooms/{slug}")).text
    link = invite_link(page)
    assert link == f"/rooms/join/{await invite_code(user_client, slug)}"
    assert 'data-copy="#invite-link"' in page
    # The owner following their own link lands in the room.
    response = await user_client.get(link, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == f"/rooms/{slug}"


async def test_invite_link_asks_a_signed_out_visitor_to_sign_in_and_come_back(user_client: AsyncTestClient) -> None:
    slug = await create_room(user_client, "Come back", private=True)
    link = invite_link((await user_client.get(f"/rooms/{slug}")).text)
    user_client.cookies.clear()
    user_client.headers.pop("x-csrftoken")
    response = await user_client.get(link, follow_redirects=False)
    assert response.status_code == 303
    login = response.headers["location"]
    assert login == f"/login?next={link}"
    page = await user_client.get(login)
    assert f'name="next" value="{link}"' in page.text
    # Someone without an account follows "Create an account", which keeps where to go next.
    register_url = re.search(r'href="(/register\?next=[^"]+)"', page.text).group(1)
    form = await user_client.get(register_url)
    assert f'name="next" value="{link}"' in form.text
    data = {"username": "invitee-" + slug[-6:], "password": PASSWORD, "confirm": PASSWORD, "next": link,
            "_csrf_token": await csrf_token(user_client)}
    signed_up = await user_client.post("/register", data=data, follow_redirects=False)
    assert signed_up.status_code == 303 and signed_up.headers["location"] == link

    invitation = await user_client.get(link)
    assert invitation.status_code == 200
    assert "Join “Come back”" in invitation.text
    user_client.headers["x-csrftoken"] = user_client.cookies["csrftoken"]
    code = re.search(r'name="code" value="([^"]+)"', invitation.text).group(1)
    joined = await user_client.post("/rooms/join", data={"code": code}, follow_redirects=False)
    assert joined.headers["location"] == f"/rooms/{slug}"
    assert (await user_client.get(f"/rooms/{slug}")).status_code == 200
    assert slug in listed_rooms((await user_client.get("/rooms")).text)


async def test_invite_link_with_a_wrong_code_says_so(user_client: AsyncTestClient) -> None:
    response = await user_client.get("/rooms/join/ZZZZ-ZZZZ-ZZ")
    assert response.status_code == 404
    expected = (
        "That invite link does not open any room: the code “ZZZZ-ZZZZ-ZZ” is wrong or has been replaced. "
        "Ask the room's owner for a new link."
    )
    assert flash(response.text) == [expected]


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/", "/\t/evil.example", "/\\evil"])
async def test_register_ignores_offsite_next(client: AsyncTestClient, target: str) -> None:
    data = {"username": "nx-" + str(abs(hash(target)))[:8], "password": PASSWORD, "confirm": PASSWORD,
            "next": target, "_csrf_token": await csrf_token(client)}
    response = await client.post("/register", data=data, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/rooms"


# The private room's 403 page


async def test_private_room_page_offers_a_code_field(user_client: AsyncTestClient) -> None:
    slug = await create_room(user_client, "Knock", private=True)
    await switch_user(user_client)
    page = await user_client.get(f"/rooms/{slug}")
    assert page.status_code == 403
    assert f'action="/rooms/{slug}/join"' in page.text
    assert '<label for="invite-code">Invite code</label>' in page.text


async def test_code_typed_on_the_403_page_lets_the_user_in(user_client: AsyncTestClient) -> None:
    slug = await create_room(user_client, "Knock knock", private=True)
    code = await invite_code(user_client, slug)
    await switch_user(user_client)
    response = await user_client.post(f"/rooms/{slug}/join", data={"code": code.lower().replace("-", "")}, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == f"/rooms/{slug}"
    assert (await user_client.get(f"/rooms/{slug}")).status_code == 200


async def test_wrong_code_on_the_403_page_rerenders_it_with_the_error(user_client: AsyncTestClient) -> None:
    slug = await create_room(user_client, "Wrong knock", private=True)
    other = await create_room(user_client, "Other room", private=True)
    other_code = await invite_code(user_client, other)
    await switch_user(user_client)
    for code in ["nope", "", other_code]:  # another room's code opens only that room
        page = await user_client.post(f"/rooms/{slug}/join", data={"code": code})
        assert page.status_code == 422
        assert "<html" in page.text and f'action="/rooms/{slug}/join"' in page.text
        assert "That invite code is not valid." in flash(page.text)
    fragment = await user_client.post(f"/rooms/{slug}/join", data={"code": "nope"}, headers=HTMX)
    assert fragment.status_code == 422
    assert fragment.text.lstrip().startswith('<section class="card" id="join-form">')
    assert 'value="nope"' in fragment.text
    assert (await user_client.get(f"/rooms/{slug}")).status_code == 403


async def test_code_field_of_an_unknown_room_is_refused(user_client: AsyncTestClient) -> None:
    response = await user_client.post("/rooms/no-such-room/join", data={"code": "K7QM-4XPZ-9D"})
    assert response.status_code == 422


async def test_anonymous_403_page_visit_asks_to_sign_in(client: AsyncTestClient) -> None:
    await register(client)
    client.headers["x-csrftoken"] = client.cookies["csrftoken"]
    slug = await create_room(client, "Anon", private=True)
    client.cookies.clear()
    response = await client.get(f"/rooms/{slug}", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == f"/login?next=/rooms/{slug}"


async def test_api_gives_the_owner_the_grouped_code(user_client: AsyncTestClient) -> None:
    room = (await user_client.post("/api/rooms", json={"name": "Scripted", "private": True})).json()
    assert READABLE.fullmatch(room["invite_code"])
    assert room["invite_code"] == await invite_code(user_client, room["slug"])
