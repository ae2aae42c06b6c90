"""Credentials stay live: revoking a token or signing out closes the sockets opened with it."""

from __future__ import annotations

import re

import httpx
import pytest
import socketio
from conftest import LiveServer

from realtime.conftest import Account, Peer, sign_up


async def revoke_token(base_url: str, account: Account) -> None:
    """Revoke the account's API token the way the settings page does."""
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as http:
        http.cookies.set("mesh_session", account.session_cookie)
        page = await http.get("/settings/")
        token_id = re.search(r'action="/settings/tokens/(\d+)/revoke"', page.text)
        assert token_id, page.text[:300]
        response = await http.post(
            f"/settings/tokens/{token_id.group(1)}/revoke",
            headers={"x-csrftoken": http.cookies["csrftoken"]},
        )
        assert response.status_code in (200, 303), response.text[:300]


async def sign_out(base_url: str, account: Account) -> None:
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as http:
        http.cookies.set("mesh_session", account.session_cookie)
        await http.get("/login")
        response = await http.post("/logout", headers={"x-csrftoken": http.cookies["csrftoken"]})
        assert response.status_code == 303, response.text[:300]


async def test_revoke_token_disconnects_its_sockets_only(live_server: LiveServer, peers) -> None:
    revoked, other = await sign_up(live_server.url), await sign_up(live_server.url)
    by_token, by_cookie, bystander = peers(), peers(), peers()
    await by_token.connect(live_server.url, token=revoked.token)
    await by_cookie.connect(live_server.url, cookie=revoked.session_cookie)
    await bystander.connect(live_server.url, token=other.token)
    await by_token.join("global")

    await revoke_token(live_server.url, revoked)

    await by_token.wait_for("disconnect")
    assert not by_token.client.connected
    # The same user's browser session and another user's token were not revoked.
    assert "peer_id" in await by_cookie.join("global")
    assert "peer_id" in await bystander.join("global")
    again = Peer()
    with pytest.raises(socketio.exceptions.ConnectionError):
        await again.connect(live_server.url, token=revoked.token)
    assert "Sign in first" in again.events["connect_error"][0]["message"]


async def test_sign_out_disconnects_that_sessions_sockets_only(live_server: LiveServer, peers) -> None:
    leaving, other = await sign_up(live_server.url), await sign_up(live_server.url)
    by_cookie, by_token, bystander = peers(), peers(), peers()
    await by_cookie.connect(live_server.url, cookie=leaving.session_cookie)
    await by_token.connect(live_server.url, token=leaving.token)
    await bystander.connect(live_server.url, cookie=other.session_cookie)
    await by_cookie.join("global")

    await sign_out(live_server.url, leaving)

    await by_cookie.wait_for("disconnect")
    assert not by_cookie.client.connected
    assert "peer_id" in await by_token.join("global")
    assert "peer_id" in await bystander.join("global")
