"""The account part of settings: change the password (other sessions end), delete the account
(its rooms handled, its credentials dead)."""

from __future__ import annotations

import re

import pytest
from conftest import register
from litestar.testing import AsyncTestClient
from support.accounts import PASSWORD
from support.second_browser import SecondBrowser
from test_accounts import flash, new_token, sign_in
from test_rooms import HTMX, create_room, invite_code

from mesh_nanollm.tables import ApiToken, Job, Room, RoomMember, User

NEW_PASSWORD = "battery staple"


@pytest.fixture
def second_browser(user_client: AsyncTestClient) -> SecondBrowser:
    return SecondBrowser(user_client)


async def me(client: AsyncTestClient) -> User:
    username = re.search(r'<span class="who">([^<]+)</span>', (await client.get("/rooms")).text).group(1)
    return await User.objects().where(User.username == username).first()


def change(current: str, new: str = NEW_PASSWORD, confirm: str | None = None) -> dict[str, str]:
    return {"current_password": current, "new_password": new, "confirm_password": new if confirm is None else confirm}


async def test_settings_page_has_the_account_forms(user_client: AsyncTestClient) -> None:
    page = await user_client.get("/settings")
    assert 'id="account"' in page.text
    for label in ("Current password", "New password", "Repeat the new password", "Your password"):
        assert f">{label}</label>" in page.text


# Changing the password


async def test_change_password_keeps_this_session_and_ends_the_others(
    user_client: AsyncTestClient, second_browser: SecondBrowser
) -> None:
    user = await me(user_client)
    assert (await sign_in(second_browser, user.username)).status_code == 303
    assert (await second_browser.get("/settings", follow_redirects=False)).status_code == 200

    page = await user_client.post("/settings/account/password", data=change(PASSWORD))
    assert page.status_code == 200
    assert "Password changed. Your other sessions have been signed out; API tokens keep working." in flash(page.text)
    assert (await user_client.get("/settings", follow_redirects=False)).status_code == 200
    other = await second_browser.get("/settings", follow_redirects=False)
    assert other.status_code == 303 and other.headers["location"].startswith("/login")

    second_browser.cookies.clear()
    assert (await sign_in(second_browser, user.username, PASSWORD)).status_code == 422
    assert (await sign_in(second_browser, user.username, NEW_PASSWORD)).status_code == 303


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        (change("wrong password"), "current_password", "That is not your current password."),
        (change(PASSWORD, "short"), "new_password", "Use at least 8 characters."),
        (change(PASSWORD, "é" * 40), "new_password", "Use at most 72 bytes."),
        (change(PASSWORD, NEW_PASSWORD, "battery stapler"), "confirm_password", "The passwords do not match."),
    ],
    ids=["wrong-current", "short", "too-long", "mismatch"],
)
async def test_change_password_with_bad_input_rerenders_the_form(
    user_client: AsyncTestClient, data: dict[str, str], field: str, message: str
) -> None:
    page = await user_client.post("/settings/account/password", data=data)
    assert page.status_code == 422
    assert "<html" in page.text
    assert f'id="{field}-error"' in page.text and message in flash(page.text)
    fragment = await user_client.post("/settings/account/password", data=data, headers=HTMX)
    assert fragment.status_code == 422
    assert fragment.text.lstrip().startswith('<section class="card stack-lg" id="account"')
    user = await me(user_client)
    assert (await sign_in(user_client, user.username, PASSWORD)).status_code == 303  # unchanged


async def test_change_password_needs_a_session(client: AsyncTestClient) -> None:
    await client.get("/login")
    response = await client.post("/settings/account/password", data=change(PASSWORD) | {"_csrf_token": client.cookies["csrftoken"]},
                                 follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"].startswith("/login")


# Deleting the account


async def test_delete_account_with_a_wrong_password_rerenders_the_form(user_client: AsyncTestClient) -> None:
    page = await user_client.post("/settings/account/delete", data={"password": "not it"})
    assert page.status_code == 422
    assert 'id="password-error"' in page.text and "That is not your current password." in flash(page.text)
    assert (await user_client.get("/settings", follow_redirects=False)).status_code == 200


async def test_delete_account_ends_every_credential_and_handles_the_rooms(
    user_client: AsyncTestClient, second_browser: SecondBrowser
) -> None:
    user = await me(user_client)
    token = await new_token(user_client)
    shared = await create_room(user_client, "Shared", private=True)
    alone = await create_room(user_client, "Alone", private=True)
    public = await create_room(user_client, "Public")
    heir = await register(second_browser)
    second_browser.headers["x-csrftoken"] = second_browser.cookies["csrftoken"]
    await second_browser.post("/rooms/join", data={"code": await invite_code(user_client, shared)})
    rooms = {row["slug"]: row["id"] for row in await Room.select(Room.slug, Room.id).where(Room.slug.is_in([shared, alone, public]))}
    await Job(room=rooms[public], requester=user.id, model_id="tiny-gpt2", prompt="mine", mode="local").save()

    response = await user_client.post("/settings/account/delete", data={"password": PASSWORD}, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/register?account=deleted"
    assert flash((await user_client.get(response.headers["location"])).text) == ["Your account has been deleted."]

    assert (await user_client.get("/rooms", follow_redirects=False)).status_code == 303
    assert (await user_client.get("/api/rooms", headers={"Authorization": f"Bearer {token}"})).status_code == 401
    assert (await sign_in(user_client, user.username)).status_code == 422
    assert not await User.exists().where(User.id == user.id)
    assert not await ApiToken.exists().where(ApiToken.user == user.id)
    assert not await Job.exists().where(Job.requester == user.id)
    # The shared private room passes to the member; the one nobody else was in is gone; the public
    # room stays open, without an owner.
    heir_id = (await User.select(User.id).where(User.username == heir).first())["id"]
    owners = {row["slug"]: row["owner"] for row in await Room.select(Room.slug, Room.owner).where(Room.id.is_in(list(rooms.values())))}
    assert owners == {shared: heir_id, public: None}
    assert await RoomMember.count().where(RoomMember.room == rooms[shared]) == 1
    settings = await second_browser.get(f"/rooms/{shared}/settings")
    assert ">Delete this room</h2>" in settings.text


async def test_delete_account_signs_out_the_other_browsers_too(
    user_client: AsyncTestClient, second_browser: SecondBrowser
) -> None:
    user = await me(user_client)
    await sign_in(second_browser, user.username)
    await user_client.post("/settings/account/delete", data={"password": PASSWORD})
    response = await second_browser.get("/rooms", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"].startswith("/login")


async def test_guessing_the_current_password_is_throttled_like_sign_in(user_client: AsyncTestClient) -> None:
    for _ in range(5):
        assert (await user_client.post("/settings/account/password", data=change("guess"))).status_code == 422
    page = await user_client.post("/settings/account/password", data=change(PASSWORD))  # even the right one waits
    assert page.status_code == 429
    assert any(message.startswith("Too many wrong passwords. Try again in ") for message in flash(page.text))
    deleting = await user_client.post("/settings/account/delete", data={"password": PASSWORD})
    assert deleting.status_code == 429
    assert (await user_client.get("/settings", follow_redirects=False)).status_code == 200
