"""The share-this-device setting: off for a new account, saved from the settings page or a room
page, its limits checked (an invalid form comes back with its errors, never a 500)."""

from __future__ import annotations

import json
import re
from html import unescape

import pytest
from litestar.testing import AsyncTestClient

HTMX = {"HX-Request": "true"}


def saved_settings(html: str) -> dict:
    """What the page hands its scripts: the `sharing-settings` element."""
    found = re.search(r'<script type="application/json" id="sharing-settings">(.*?)</script>', html, re.DOTALL)
    assert found, html[:500]
    return json.loads(unescape(found.group(1)))


def share_box_checked(html: str) -> bool:
    box = re.search(r'<input type="checkbox" name="share_device" data-testid="share"[^>]*>', html)
    assert box, html[:500]
    return "checked" in box.group(0)


def field_errors(html: str) -> dict[str, str]:
    return {
        name: unescape(text).strip()
        for name, text in re.findall(r'class="field-error" id="([a-z_]+)-error" data-testid="flash">(.*?)</p>', html, re.DOTALL)
    }


async def test_new_account_does_not_share_until_it_chooses_to(user_client: AsyncTestClient) -> None:
    page = await user_client.get("/settings")
    assert page.status_code == 200
    assert saved_settings(page.text) == {"share": False, "download_mb": 0, "max_jobs": 1}
    assert not share_box_checked(page.text)
    room = await user_client.get("/rooms/global")
    assert saved_settings(room.text)["share"] is False and not share_box_checked(room.text)


async def test_sharing_saved_from_the_room_page_is_remembered(user_client: AsyncTestClient) -> None:
    response = await user_client.post(
        "/settings/sharing", data={"share_device": "on", "share_download_mb": "50", "share_max_jobs": "3"}, headers=HTMX
    )
    assert response.status_code == 200
    assert response.text.lstrip().startswith("<section") and 'id="sharing"' in response.text  # the fragment alone
    assert saved_settings(response.text) == {"share": True, "download_mb": 50, "max_jobs": 3}
    assert "Saved." in response.text
    # Another page, later: the server remembers it for this user.
    room = await user_client.get("/rooms/global")
    assert saved_settings(room.text) == {"share": True, "download_mb": 50, "max_jobs": 3} and share_box_checked(room.text)
    # The switch alone turns it off again; the limits stay as they were.
    off = await user_client.post("/settings/sharing", data={"share_download_mb": "50", "share_max_jobs": "3"}, headers=HTMX)
    assert saved_settings(off.text) == {"share": False, "download_mb": 50, "max_jobs": 3}


@pytest.mark.parametrize(
    ("form", "field"),
    [
        ({"share_download_mb": "100001", "share_max_jobs": "1"}, "share_download_mb"),
        ({"share_download_mb": "-1", "share_max_jobs": "1"}, "share_download_mb"),
        ({"share_download_mb": "ten", "share_max_jobs": "1"}, "share_download_mb"),
        ({"share_download_mb": "1.5", "share_max_jobs": "1"}, "share_download_mb"),
        ({"share_download_mb": "0", "share_max_jobs": "0"}, "share_max_jobs"),
        ({"share_download_mb": "0", "share_max_jobs": "9"}, "share_max_jobs"),
        ({"share_download_mb": "0", "share_max_jobs": "٣"}, "share_max_jobs"),  # a digit, but not ASCII
        ({"share_download_mb": "9" * 40, "share_max_jobs": "1"}, "share_download_mb"),
    ],
)
async def test_sharing_limits_out_of_range_are_refused_with_the_form(
    user_client: AsyncTestClient, form: dict[str, str], field: str
) -> None:
    for headers in (HTMX, {}):
        response = await user_client.post("/settings/sharing", data={"share_device": "on", **form}, headers=headers)
        assert response.status_code == 422, response.text[:300]
        assert list(field_errors(response.text)) == [field]
        assert "Please correct the highlighted fields." in response.text
        # What was typed comes back, and nothing was saved.
        assert share_box_checked(response.text)
        assert saved_settings(response.text) == {"share": False, "download_mb": 0, "max_jobs": 1}
    assert (await user_client.get("/settings")).text.count("Please correct") == 0
    assert saved_settings((await user_client.get("/settings")).text)["share"] is False


async def test_sharing_form_needs_a_signed_in_user(client: AsyncTestClient) -> None:
    response = await client.post("/settings/sharing", data={"share_device": "on"}, follow_redirects=False)
    assert response.status_code in (302, 303, 401, 403)
