"""Accounts for tests, made the one way a person makes them: the sign-up form, over any HTTP
client (the app in process, or a live server), plus an API token where sockets need one."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

import httpx

PASSWORD = "correct horse"


def unique_name(prefix: str = "user") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def csrf_token(http: httpx.AsyncClient) -> str:
    if not http.cookies.get("csrftoken"):
        await http.get("/login")
    return http.cookies["csrftoken"]


async def submit_sign_up(
    http: httpx.AsyncClient, username: str, password: str = PASSWORD, confirm: str | None = None
) -> httpx.Response:
    """Post the sign-up form as the page does, without following where it leads."""
    data = {
        "username": username,
        "password": password,
        "confirm": password if confirm is None else confirm,
        "_csrf_token": await csrf_token(http),
    }
    return await http.post("/register", data=data, follow_redirects=False)


async def register(http: httpx.AsyncClient, username: str | None = None, password: str = PASSWORD) -> str:
    """Sign up (and so sign in) a fresh user; returns the username."""
    username = username or unique_name()
    response = await submit_sign_up(http, username, password)
    assert response.status_code == 303 and response.headers["location"] == "/rooms", response.text[:500]
    assert (await http.get("/rooms")).status_code == 200  # signed in
    return username


@dataclass
class Account:
    username: str
    session_cookie: str
    token: str


# A test's pages serve each other as before sharing became a choice: on, any model size, and the
# two jobs of others a page used to hold at once (tests/browser/test_api_serving.py counts on it).
SHARING = {"share_device": "on", "share_download_mb": "100000", "share_max_jobs": "2"}
NOT_SHARING = {"share_download_mb": "0", "share_max_jobs": "1"}


async def set_sharing(http: httpx.AsyncClient, form: dict[str, str]) -> None:
    response = await http.post("/settings/sharing", data=form | {"_csrf_token": await csrf_token(http)})
    assert response.status_code == 200, response.text[:300]


async def sign_up(base_url: str, prefix: str = "user", *, share: bool = True) -> Account:
    """A fresh user on a live server, with its session cookie and an API token from /settings.
    It shares its devices with generous limits unless `share=False` (a new account's default)."""
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as http:
        username = await register(http, unique_name(prefix))
        if share:
            await set_sharing(http, SHARING)
        response = await http.post("/settings/tokens", data={"name": "tests", "_csrf_token": await csrf_token(http)})
        token = re.search(r'data-testid="new-token">([^<]+)<', response.text)
        assert token, response.text[:300]
        return Account(username, http.cookies["mesh_session"], token.group(1))


async def create_room(base_url: str, account: Account, name: str, private: bool) -> dict:
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as http:
        response = await http.post(
            "/api/rooms", json={"name": name, "private": private}, headers={"Authorization": f"Bearer {account.token}"}
        )
        assert response.status_code == 201, response.text
        return response.json()


async def room_peers(base_url: str, account: Account, slug: str) -> list[dict]:
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as http:
        response = await http.get(f"/api/rooms/{slug}/peers", headers={"Authorization": f"Bearer {account.token}"})
        assert response.status_code == 200, response.text
        return response.json()
