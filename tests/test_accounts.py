"""Sign-up, sign-in, sign-out, session cookies, CSRF, login throttling and API tokens."""

from __future__ import annotations

import dataclasses
import re
from html import unescape

import pytest
from conftest import csrf_token, register, unique_name
from litestar import Litestar
from litestar.testing import AsyncTestClient
from support.accounts import PASSWORD
from support.accounts import submit_sign_up as sign_up  # the form as posted, to see its answers

from mesh_nanollm import db
from mesh_nanollm.app import create_app


async def sign_in(client: AsyncTestClient, username: str, password: str = PASSWORD, **extra: str):
    data = {"username": username, "password": password, "_csrf_token": await csrf_token(client)}
    return await client.post("/login", data=data | extra, follow_redirects=False)


def flash(html: str) -> list[str]:
    """The texts of every data-testid="flash" element, as a user would read them."""
    texts = re.findall(r'data-testid="flash"[^>]*>(.*?)</', html, re.DOTALL)
    return [unescape(re.sub(r"\s+", " ", text).strip()) for text in texts]


def set_cookie(response, name: str) -> str:
    return next(value for value in response.headers.get_list("set-cookie") if value.startswith(f"{name}="))


def token_ids(html: str) -> list[int]:
    return [int(found) for found in re.findall(r'action="/settings/tokens/(\d+)/revoke"', html)]


async def new_token(client: AsyncTestClient, name: str = "script") -> str:
    response = await client.post("/settings/tokens", data={"name": name})
    assert response.status_code == 200
    return re.search(r'data-testid="new-token">([^<]+)<', response.text).group(1)


# Sign-up


async def test_register_page_shows_the_form(client: AsyncTestClient) -> None:
    response = await client.get("/register")
    assert response.status_code == 200
    assert 'name="username"' in response.text and 'name="confirm"' in response.text
    assert "3–32 letters, digits" in response.text  # the hint, until an error replaces it
    assert 'name="_csrf_token"' in response.text


async def test_register_signs_the_new_user_in(client: AsyncTestClient) -> None:
    username = unique_name()
    response = await sign_up(client, username)
    assert response.status_code == 303
    assert response.headers["location"] == "/rooms"
    rooms = await client.get("/rooms")
    assert rooms.status_code == 200
    assert username in rooms.text


async def test_register_taken_username_shows_error(client: AsyncTestClient) -> None:
    username = await register(client)
    client.cookies.clear()
    response = await sign_up(client, username.upper())
    assert response.status_code == 422
    assert "That username is taken." in flash(response.text)
    assert f'value="{username.upper()}"' in response.text


@pytest.mark.parametrize(
    ("username", "password", "confirm", "message"),
    [
        ("ab", PASSWORD, None, "Use 3–32 letters, digits, '.', '_' or '-'."),
        ("has space", PASSWORD, None, "Use 3–32 letters, digits, '.', '_' or '-'."),
        ("x" * 300, PASSWORD, None, "Use 3–32 letters, digits, '.', '_' or '-'."),
        ("valid-name", "short", None, "Use at least 8 characters."),
        ("valid-name", "p" * 73, None, "Use at most 72 bytes."),
        ("valid-name", PASSWORD, "something else", "The passwords do not match."),
    ],
    ids=["too-short-name", "space-in-name", "over-long-name", "short-password", "over-long-password", "mismatch"],
)
async def test_register_invalid_input_rerenders_form_with_error(
    client: AsyncTestClient, username: str, password: str, confirm: str | None, message: str
) -> None:
    response = await sign_up(client, username, password, confirm)
    assert response.status_code == 422
    assert "<form" in response.text
    assert message in flash(response.text)
    assert "mesh_session" not in client.cookies


# Sign-in and sign-out


async def test_login_page_shows_the_form(client: AsyncTestClient) -> None:
    response = await client.get("/login")
    assert response.status_code == 200
    assert 'name="password"' in response.text and 'name="_csrf_token"' in response.text


async def test_login_wrong_password_rerenders_form_with_error(client: AsyncTestClient) -> None:
    username = await register(client)
    client.cookies.clear()
    response = await sign_in(client, username, "wrong password")
    assert response.status_code == 422
    assert flash(response.text) == ["Wrong username or password."]
    assert f'value="{username}"' in response.text
    assert (await client.get("/rooms", follow_redirects=False)).status_code == 303


async def test_login_unknown_user_gets_the_same_error(client: AsyncTestClient) -> None:
    response = await sign_in(client, unique_name())
    assert response.status_code == 422
    assert flash(response.text) == ["Wrong username or password."]


async def test_login_goes_to_next_page(client: AsyncTestClient) -> None:
    username = await register(client)
    client.cookies.clear()
    response = await sign_in(client, username.upper(), next="/jobs?status=failed")
    assert response.status_code == 303
    assert response.headers["location"] == "/jobs?status=failed"
    assert (await client.get("/jobs")).status_code == 200


@pytest.mark.parametrize("target", ["//evil.example/", "https://evil.example/", "/\\evil.example"])
async def test_login_ignores_offsite_next(client: AsyncTestClient, target: str) -> None:
    username = await register(client)
    client.cookies.clear()
    response = await sign_in(client, username, next=target)
    assert response.headers["location"] == "/rooms"


async def test_signed_in_user_skips_login_page(client: AsyncTestClient) -> None:
    await register(client)
    assert (await client.get("/login", follow_redirects=False)).headers["location"] == "/rooms"
    assert (await client.get("/register", follow_redirects=False)).headers["location"] == "/rooms"


async def test_anonymous_page_visit_redirects_to_login_with_next(client: AsyncTestClient) -> None:
    response = await client.get("/jobs?status=queued", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/login?next=/jobs%3Fstatus%3Dqueued"


async def test_logout_ends_the_session(user_client: AsyncTestClient) -> None:
    response = await user_client.post("/logout", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/login"
    after = await user_client.get("/rooms", follow_redirects=False)
    assert after.status_code == 303 and after.headers["location"].startswith("/login")


async def test_signing_in_moves_the_session_to_a_new_id(client: AsyncTestClient) -> None:
    # An attacker's own session id, planted in a victim's browser, must not become the victim's.
    def plant(session_id: str) -> None:
        client.cookies.delete("mesh_session")
        client.cookies.set("mesh_session", session_id, domain="testserver.local")

    await register(client)
    planted = client.cookies["mesh_session"]
    victim = await register(client)
    fresh = client.cookies["mesh_session"]
    assert fresh != planted
    assert (await client.get("/settings")).status_code == 200

    plant(planted)
    assert (await client.get("/rooms", follow_redirects=False)).status_code == 303  # the old id is gone
    assert (await sign_in(client, victim)).status_code == 303
    signed_in = client.cookies["mesh_session"]
    assert signed_in not in (planted, fresh)
    assert (await client.get("/settings")).status_code == 200
    plant(planted)
    assert (await client.get("/rooms", follow_redirects=False)).status_code == 303


async def test_login_throttled_per_username(client: AsyncTestClient) -> None:
    username = await register(client)
    client.cookies.clear()
    for _ in range(5):
        assert (await sign_in(client, username, "wrong password")).status_code == 422
    response = await sign_in(client, username)  # even the right password waits
    assert response.status_code == 429
    assert 0 < int(response.headers["retry-after"]) <= 300
    [message] = flash(response.text)
    assert message.startswith("Too many failed sign-ins. Try again in ")
    # Another account from the same address is not locked out by this one.
    other = await register(client, unique_name())
    client.cookies.clear()
    assert (await sign_in(client, other)).status_code == 303


async def test_login_throttled_per_client_address(
    client: AsyncTestClient, app: Litestar, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The real limit is 20 per address; a smaller one keeps the bcrypt checks few.
    monkeypatch.setattr(app.state.throttle, "per_address", 3)
    for _ in range(3):
        assert (await sign_in(client, unique_name(), "wrong password")).status_code == 422
    response = await sign_in(client, unique_name())
    assert response.status_code == 429
    assert int(response.headers["retry-after"]) > 0
    assert flash(response.text)[0].startswith("Too many failed sign-ins.")


# Session cookie and CSRF


async def test_session_cookie_is_httponly_and_samesite_lax(client: AsyncTestClient) -> None:
    response = await sign_up(client, unique_name())
    cookie = set_cookie(response, "mesh_session").lower()
    assert "httponly" in cookie
    assert "samesite=lax" in cookie
    assert "secure" not in cookie


async def test_production_cookies_are_secure(app: Litestar) -> None:
    production = create_app(dataclasses.replace(app.state.settings, env="production"))
    try:
        async with AsyncTestClient(production, base_url="https://mesh.example") as secure_client:
            response = await sign_up(secure_client, unique_name())
            assert response.status_code == 303
            session = set_cookie(response, "mesh_session").lower()
            csrf = set_cookie(await secure_client.get("/login", headers={"cookie": ""}), "csrftoken").lower()
    finally:
        db.bind(app.state.settings.database_url)
    assert "secure" in session and "httponly" in session and "samesite=lax" in session
    assert "secure" in csrf


async def test_form_post_without_csrf_token_is_forbidden(user_client: AsyncTestClient) -> None:
    del user_client.headers["x-csrftoken"]
    response = await user_client.post("/rooms", data={"name": "No token"})
    assert response.status_code == 403
    assert response.headers["content-type"].startswith("text/html")
    assert flash(response.text) == ["CSRF token verification failed"]
    assert "No token" not in (await user_client.get("/rooms")).text


async def test_api_post_and_patch_without_csrf_token_are_forbidden(user_client: AsyncTestClient) -> None:
    job = (await user_client.post("/api/jobs", json={"room": "global", "model": "tiny-gpt2", "prompt": "hi"})).json()
    del user_client.headers["x-csrftoken"]
    created = await user_client.post("/api/jobs", json={"room": "global", "model": "tiny-gpt2", "prompt": "hi"})
    assert created.status_code == 403
    assert created.json() == {"error": "Not allowed", "detail": "CSRF token verification failed"}
    patched = await user_client.patch(f"/api/jobs/{job['id']}", json={"status": "running"})
    assert patched.status_code == 403
    assert set(patched.json()) == {"error", "detail"}


async def test_bearer_token_needs_no_csrf_token(user_client: AsyncTestClient) -> None:
    token = await new_token(user_client)
    user_client.cookies.clear()
    del user_client.headers["x-csrftoken"]
    bearer = {"authorization": f"Bearer {token}"}
    created = await user_client.post(
        "/api/jobs", json={"room": "global", "model": "tiny-gpt2", "prompt": "hi"}, headers=bearer
    )
    assert created.status_code == 201
    patched = await user_client.patch(f"/api/jobs/{created.json()['id']}", json={"status": "running"}, headers=bearer)
    assert patched.status_code == 200 and patched.json()["status"] == "running"


# API tokens on the settings page


async def test_settings_page_starts_without_tokens(user_client: AsyncTestClient) -> None:
    response = await user_client.get("/settings")
    assert response.status_code == 200
    assert "No tokens yet." in response.text


async def test_create_token_shows_it_once_and_lists_it(user_client: AsyncTestClient) -> None:
    response = await user_client.post("/settings/tokens", data={"name": "laptop script"})
    assert response.status_code == 200
    assert "<html" in response.text
    token = re.search(r'data-testid="new-token">(mnl_[^<]+)<', response.text).group(1)
    assert 'data-testid="token-row"' in response.text and "laptop script" in response.text
    listing = await user_client.get("/settings")
    assert "laptop script" in listing.text
    assert token not in listing.text
    assert token[:10] in listing.text  # the prefix helps tell tokens apart


async def test_create_token_with_htmx_returns_only_the_fragment(user_client: AsyncTestClient) -> None:
    response = await user_client.post("/settings/tokens", data={"name": "ci"}, headers={"HX-Request": "true"})
    assert response.status_code == 200
    assert response.text.lstrip().startswith('<section class="card" id="tokens">')
    assert "<html" not in response.text
    assert 'data-testid="new-token"' in response.text


@pytest.mark.parametrize("name", ["", "   ", "n" * 65])
async def test_create_token_with_bad_name_shows_error(user_client: AsyncTestClient, name: str) -> None:
    response = await user_client.post("/settings/tokens", data={"name": name}, headers={"HX-Request": "true"})
    assert response.status_code == 422
    assert response.text.lstrip().startswith('<section class="card" id="tokens">')
    assert flash(response.text) == ["Give the token a name of 1–64 characters."]
    assert 'data-testid="new-token"' not in response.text


async def test_bearer_token_authenticates_api(user_client: AsyncTestClient) -> None:
    token = await new_token(user_client)
    user_client.cookies.clear()
    response = await user_client.get("/api/rooms", headers={"authorization": f"Bearer {token}"})
    assert response.status_code == 200
    assert "global" in [room["slug"] for room in response.json()]


async def test_revoked_token_gets_401_json(user_client: AsyncTestClient) -> None:
    token = await new_token(user_client)
    [token_id] = token_ids((await user_client.get("/settings")).text)
    response = await user_client.post(f"/settings/tokens/{token_id}/revoke", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/settings"
    assert "No tokens yet." in (await user_client.get("/settings")).text
    refused = await user_client.get("/api/jobs", headers={"authorization": f"Bearer {token}"})
    assert refused.status_code == 401
    assert refused.json() == {"error": "Sign in required", "detail": "Sign in to continue."}


async def test_revoke_token_with_htmx_returns_the_fragment(user_client: AsyncTestClient) -> None:
    await new_token(user_client, "first")
    await new_token(user_client, "second")
    first, second = token_ids((await user_client.get("/settings")).text)
    response = await user_client.post(f"/settings/tokens/{second}/revoke", headers={"HX-Request": "true"})
    assert response.status_code == 200
    assert "<html" not in response.text and 'id="tokens"' in response.text
    assert token_ids(response.text) == [first]


async def test_revoke_someone_elses_token_is_404(client: AsyncTestClient) -> None:
    await register(client)
    client.headers["x-csrftoken"] = client.cookies["csrftoken"]
    await new_token(client)
    [token_id] = token_ids((await client.get("/settings")).text)
    client.cookies.clear()
    del client.headers["x-csrftoken"]
    await register(client)
    client.headers["x-csrftoken"] = client.cookies["csrftoken"]
    response = await client.post(f"/settings/tokens/{token_id}/revoke")
    assert response.status_code == 404
    assert flash(response.text) == ["No such token."]


@pytest.mark.parametrize("token_id", ["0", "123456789", "99999999999999999999999"])
async def test_revoke_unknown_token_is_404(user_client: AsyncTestClient, token_id: str) -> None:
    response = await user_client.post(f"/settings/tokens/{token_id}/revoke", headers={"HX-Request": "true"})
    assert response.status_code == 404
    assert flash(response.text) == ["No such token."]


async def test_unknown_bearer_token_gets_401_json(client: AsyncTestClient) -> None:
    response = await client.get("/api/rooms", headers={"authorization": "Bearer mnl_not-a-real-token"})
    assert response.status_code == 401
    assert response.json()["error"] == "Sign in required"


async def test_anonymous_api_request_gets_401_json(client: AsyncTestClient) -> None:
    response = await client.get("/api/jobs")
    assert response.status_code == 401
    assert set(response.json()) == {"error", "detail"}
