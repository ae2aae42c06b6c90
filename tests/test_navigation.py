"""Links and forms swap the page's body without a reload (hx-boost), so the tab's peer outlives
each page: a boosted request and a history restore get whole pages, an htmx widget its fragment."""

from __future__ import annotations

import pytest
from litestar.testing import AsyncTestClient

HTMX = {"HX-Request": "true"}
BOOSTED = {**HTMX, "HX-Boosted": "true"}
RESTORE = {**HTMX, "HX-History-Restore-Request": "true"}


@pytest.mark.parametrize("headers", [{}, BOOSTED, RESTORE], ids=["direct", "boosted", "history-restore"])
async def test_page_loads_get_the_whole_page(user_client: AsyncTestClient, headers: dict[str, str]) -> None:
    page = (await user_client.get("/jobs", headers=headers)).text
    assert page.lstrip().lower().startswith("<!doctype html>")
    assert "<h1>History</h1>" in page and 'id="job-table"' in page
    # What keeps the peer across swaps: boosting, the dock kept in place, signaling's URL in every head.
    assert 'hx-boost:inherited="true"' in page
    assert 'id="peer-dock"' in page and "hx-preserve" in page
    assert 'name="vendor-socket-io"' in page


@pytest.mark.parametrize("path", ["/jobs", "/rooms", "/settings", "/rooms/global", "/jobs/not-a-job"])
async def test_every_page_is_cross_origin_isolated(user_client: AsyncTestClient, path: str) -> None:
    # A document keeps the isolation of the page it was loaded as, whichever page it swaps in later.
    response = await user_client.get(path)
    assert response.headers["cross-origin-opener-policy"] == "same-origin"
    assert response.headers["cross-origin-embedder-policy"] == "credentialless"


async def test_the_history_filters_still_get_their_fragment(user_client: AsyncTestClient) -> None:
    fragment = (await user_client.get("/jobs?status=running", headers=HTMX)).text
    assert 'id="job-table"' in fragment and "<html" not in fragment


async def test_forms_that_end_the_document_are_not_boosted(user_client: AsyncTestClient) -> None:
    rooms = (await user_client.get("/rooms")).text
    assert 'class="signout" method="post" action="/logout" hx-boost="false"' in rooms
    room = (await user_client.get("/rooms/global")).text
    # room.js runs the prompt form in the page; boosted, it would also reload the page into the body.
    assert '<form id="prompt-form" class="stack" autocomplete="off" hx-boost="false">' in room


async def test_signed_out_pages_load_no_peer(client: AsyncTestClient) -> None:
    page = (await client.get("/login")).text
    assert 'id="peer-dock"' not in page and "dock.js" not in page
    assert 'hx-boost="false"' in page  # signing in rebuilds the whole document, head included
