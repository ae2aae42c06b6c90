"""Inviting someone, as people do it in headless Chromium: the owner copies the invite link; a
visitor without an account follows it, signs up, joins and lands in the room; someone else types
the code, any case, on the private room's 403 page; the owner removes a member."""

from __future__ import annotations

import re
import uuid

import pytest
from conftest import LiveServer
from playwright.async_api import Browser, expect
from support.browser import CspWatch, new_context
from support.pages import RegisterPage, RoomPage, RoomsPage

pytestmark = pytest.mark.browser
PASSWORD = "correct horse"


def name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def test_invite_link_and_code_bring_people_into_a_private_room(live_server: LiveServer, browser: Browser) -> None:
    base = live_server.url
    owner_context = await new_context(browser)
    await owner_context.grant_permissions(["clipboard-read", "clipboard-write"], origin=base)
    watches = [await CspWatch().attach(owner_context)]
    owner_page = await owner_context.new_page()
    rooms = await (await RegisterPage(owner_page, base).open()).sign_up(name("owner"), PASSWORD)
    room = await rooms.create_room("Invite lab", private=True)
    slug = room.slug
    code = (await room.invite_code.text_content() or "").strip()
    assert re.fullmatch(r"[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{2}", code), code
    link = await room.copy_invite_link()
    assert link == f"{base}/rooms/join/{code}"

    # A visitor with no account follows the link: sign-up first, then the invitation, then the room.
    visitor_context = await new_context(browser)
    watches.append(await CspWatch().attach(visitor_context))
    visitor = await visitor_context.new_page()
    await visitor.goto(link)
    await expect(visitor).to_have_url(re.compile(r"/login\?next="))
    await visitor.get_by_role("link", name="Create an account").click()
    invitee = name("invitee")
    await RegisterPage(visitor, base).sign_up(invitee, PASSWORD, lands_on=f"/rooms/join/{code}")
    await expect(visitor.get_by_role("heading", level=1)).to_have_text("Join “Invite lab”")
    await visitor.get_by_role("button", name="Join the room").click()
    await expect(visitor).to_have_url(f"{base}/rooms/{slug}")
    visitor_room = RoomPage(visitor, base)
    await expect(visitor_room.heading).to_contain_text("Invite lab")
    await expect(visitor_room.invite_code).to_have_count(0)  # only the owner sees it

    # Someone already signed in opens the room's address: the 403 page asks for the code.
    third_context = await new_context(browser)
    watches.append(await CspWatch().attach(third_context))
    third = await third_context.new_page()
    await (await RegisterPage(third, base).open()).sign_up(name("third"), PASSWORD)
    locked = await RoomPage(third, base).open(slug)
    await expect(locked.heading).to_have_text("Private room")
    # Side by side, the code's card as tall as its form, next to the 403 card, not across the page.
    refusal = await third.locator("section", has=locked.heading).bounding_box()
    join = await third.locator("#join-form").bounding_box()
    assert refusal and join and join["height"] < refusal["height"]
    assert 0 < join["x"] - (refusal["x"] + refusal["width"]) < 40
    await locked.enter_code("nope")
    await expect(third.get_by_test_id("flash").filter(has_text="That invite code is not valid.")).to_be_visible()
    await expect(third.get_by_label("Invite code")).to_have_value("nope")
    await locked.enter_code(code.lower().replace("-", " "))
    await expect(third).to_have_url(f"{base}/rooms/{slug}")
    await expect(locked.heading).to_contain_text("Invite lab")

    # The owner sees all three and removes the invitee, who is then refused.
    settings = await RoomPage(owner_page, base).open_settings()
    await expect(settings.members).to_have_count(3)
    await settings.remove_member(invitee)
    await expect(settings.members).to_have_count(2)
    response = await visitor.goto(f"{base}/rooms/{slug}")
    assert response is not None and response.status == 403

    # The third person leaves on their own.
    left: RoomsPage = await (await RoomPage(third, base).open_settings()).leave()
    await expect(left.rows.filter(has_text="Invite lab")).to_have_count(0)

    for context in (owner_context, visitor_context, third_context):
        await context.close()
    assert [watch.violations for watch in watches] == [[], [], []]
