"""Sign-up, sign-in, sign-out, session cookies, CSRF, login throttling and API tokens."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
import threading
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from html import unescape

import httpx
import pytest
from conftest import LiveServer, csrf_token, register, unique_name
from litestar import Litestar
from litestar.testing import AsyncTestClient
from support.accounts import PASSWORD
from support.accounts import submit_sign_up as sign_up  # the form as posted, to see its answers

from mesh_nanollm import db, security, throttle
from mesh_nanollm.app import create_app
from mesh_nanollm.tables import ThrottleHit


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
    assert flash(response.text) == ["That username is taken."]  # at the field, not again on top
    assert 'id="username-error"' in response.text
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
    assert flash(response.text) == ["Please correct the highlighted fields.", message]
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


@contextlib.asynccontextmanager
async def instance(app: Litestar, **changes: object) -> AsyncIterator[httpx.AsyncClient]:
    """Another instance of the app on the same database, with `changes` to its settings.

    Its requests run on the test's own event loop (AsyncTestClient would run the app behind a
    blocking portal, one request at a time), so concurrent requests really are concurrent.
    """
    other = create_app(dataclasses.replace(app.state.settings, **changes))
    transport = httpx.ASGITransport(app=other)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver.local", follow_redirects=True) as other_client:
            yield other_client
    finally:
        db.bind(app.state.settings.database_url)
        security.limit_password_hashing(app.state.settings.password_hash_workers)


def from_address(client: AsyncTestClient, address: str) -> None:
    """Behind a proxy trusted to report it (TRUSTED_CLIENT_IP_HEADER), send as if from `address`."""
    client.headers["fly-client-ip"] = address


async def test_login_throttles_a_username_from_one_address(client: AsyncTestClient) -> None:
    username = await register(client)
    client.cookies.clear()
    for _ in range(5):
        assert (await sign_in(client, username, "wrong password")).status_code == 422
    response = await sign_in(client, username)  # even the right password waits
    assert response.status_code == 429
    assert 0 < int(response.headers["retry-after"]) <= 900
    [message] = flash(response.text)
    assert message.startswith("Too many failed sign-ins. Try again in ")
    # Another account from the same address is not locked out by this one.
    other = await register(client, unique_name())
    client.cookies.clear()
    assert (await sign_in(client, other)).status_code == 303


async def test_login_failures_from_another_address_do_not_lock_the_user_out(client: AsyncTestClient, app: Litestar) -> None:
    async with instance(app, trusted_client_ip_header="fly-client-ip") as proxied:
        from_address(proxied, "203.0.113.7")
        username = await register(proxied)
        proxied.cookies.clear()  # a new browser: no device cookie either
        from_address(proxied, "198.51.100.66")
        for _ in range(5):
            assert (await sign_in(proxied, username, "wrong password")).status_code == 422
        assert (await sign_in(proxied, username, "guess")).status_code == 429
        from_address(proxied, "203.0.113.7")
        assert (await sign_in(proxied, username)).status_code == 303


async def test_login_from_a_known_browser_survives_guessing_from_many_addresses(
    client: AsyncTestClient, app: Litestar
) -> None:
    async with instance(app, trusted_client_ip_header="fly-client-ip", login_username_limit=8) as proxied:
        from_address(proxied, "203.0.113.7")
        username = await register(proxied)  # this browser now carries the device cookie
        device = proxied.cookies["mesh_device"]
        proxied.cookies.clear()
        for attacker in ("198.51.100.1", "198.51.100.2"):
            from_address(proxied, attacker)
            for _ in range(4):
                assert (await sign_in(proxied, username, "wrong password")).status_code == 422
        # The username has had its 8 failures: browsers it has never seen are turned away...
        from_address(proxied, "198.51.100.3")
        assert (await sign_in(proxied, username, "guess")).status_code == 429
        assert (await sign_in(proxied, username)).status_code == 429
        # ...but its owner's browser, from anywhere, still gets in, a typo included.
        proxied.cookies.clear()
        proxied.cookies.set("mesh_device", device)
        assert (await sign_in(proxied, username, "typo")).status_code == 422
        assert (await sign_in(proxied, username)).status_code == 303


def test_live_server_throttles_each_connecting_address_apart(live_server: LiveServer) -> None:
    # 127.0.0.2, 127.0.0.3… are all loopback: three browsers the server tells apart by address.
    def browser(address: str) -> httpx.Client:
        return httpx.Client(base_url=live_server.url, transport=httpx.HTTPTransport(local_address=address))

    def post(client: httpx.Client, path: str, **fields: str) -> int:
        if "csrftoken" not in client.cookies:
            client.get("/login")
        return client.post(path, data=fields | {"_csrf_token": client.cookies["csrftoken"]}).status_code

    username = unique_name()
    with browser("127.0.0.4") as registrar, browser("127.0.0.2") as attacker, browser("127.0.0.3") as owner:
        assert post(registrar, "/register", username=username, password=PASSWORD, confirm=PASSWORD) == 303
        for _ in range(5):
            assert post(attacker, "/login", username=username, password="wrong password") == 422
        assert post(attacker, "/login", username=username, password=PASSWORD) == 429
        assert post(owner, "/login", username=username, password=PASSWORD) == 303


async def test_login_device_cookie_is_httponly_and_only_for_login(client: AsyncTestClient) -> None:
    response = await sign_up(client, unique_name())
    cookie = set_cookie(response, "mesh_device").lower()
    assert "httponly" in cookie and "samesite=lax" in cookie and "path=/login" in cookie


async def test_login_device_cookie_of_another_user_does_not_count(client: AsyncTestClient, app: Litestar) -> None:
    async with instance(app, login_username_limit=5) as other_instance:
        victim = await register(other_instance)
        other_instance.cookies.clear()
        await register(other_instance)  # the attacker's own account gives them a device cookie
        for _ in range(5):
            assert (await sign_in(other_instance, victim, "wrong password")).status_code == 422
        assert (await sign_in(other_instance, victim, "guess")).status_code == 429


async def test_login_throttled_per_client_address_whatever_proxy_headers_claim(
    client: AsyncTestClient, app: Litestar
) -> None:
    # The real limit is 100 per address; a smaller one keeps the bcrypt checks few.
    async with instance(app, login_address_limit=3) as direct:
        for forged in ("192.0.2.1", "192.0.2.2", "192.0.2.3"):
            direct.headers.update({"fly-client-ip": forged, "x-forwarded-for": forged})
            assert (await sign_in(direct, unique_name(), "wrong password")).status_code == 422
        direct.headers.update({"fly-client-ip": "192.0.2.4", "x-forwarded-for": "192.0.2.4"})
        response = await sign_in(direct, unique_name())
        assert response.status_code == 429
        assert int(response.headers["retry-after"]) > 0
        assert flash(response.text)[0].startswith("Too many failed sign-ins.")


async def test_login_throttled_per_trusted_proxy_address(client: AsyncTestClient, app: Litestar) -> None:
    async with instance(app, login_address_limit=3, trusted_client_ip_header="x-forwarded-for") as proxied:
        # X-Forwarded-For: the last hop is the one the trusted proxy added; the rest is the client's.
        for forged in ("192.0.2.1", "192.0.2.2", "192.0.2.3"):
            proxied.headers["x-forwarded-for"] = f"{forged}, 198.51.100.9"
            assert (await sign_in(proxied, unique_name(), "wrong password")).status_code == 422
        assert (await sign_in(proxied, unique_name())).status_code == 429
        proxied.headers["x-forwarded-for"] = "198.51.100.10"
        assert (await sign_in(proxied, unique_name(), "wrong password")).status_code == 422


async def test_login_throttle_holds_across_two_instances(client: AsyncTestClient, app: Litestar) -> None:
    async with instance(app) as first, instance(app) as second:
        username = await register(first)
        first.cookies.clear()
        for index in range(5):
            either = first if index % 2 else second
            assert (await sign_in(either, username, "wrong password")).status_code == 422
        assert (await sign_in(first, username)).status_code == 429
        assert (await sign_in(second, username)).status_code == 429


async def test_register_flood_from_one_address_gets_429(client: AsyncTestClient, app: Litestar) -> None:
    async with instance(app, register_limit=3, trusted_client_ip_header="fly-client-ip") as proxied:
        from_address(proxied, "198.51.100.66")
        await csrf_token(proxied)
        flood = await asyncio.gather(*(sign_up(proxied, unique_name()) for _ in range(6)))
        assert sorted(response.status_code for response in flood) == [303] * 3 + [429] * 3
        refused = next(response for response in flood if response.status_code == 429)
        assert int(refused.headers["retry-after"]) > 0
        assert flash(refused.text)[0].startswith("Too many new accounts from your address. Try again in ")
        assert "<form" in refused.text
        from_address(proxied, "203.0.113.7")
        assert (await sign_up(proxied, unique_name())).status_code == 303


async def test_register_typos_do_not_count_against_the_address(client: AsyncTestClient, app: Litestar) -> None:
    async with instance(app, register_limit=2) as limited:
        taken = await register(limited)
        assert (await sign_up(limited, taken)).status_code == 422
        assert (await sign_up(limited, "x")).status_code == 422
        assert (await sign_up(limited, unique_name())).status_code == 303
        assert (await sign_up(limited, unique_name())).status_code == 429


async def test_throttle_counts_past_their_window_are_deleted(client: AsyncTestClient) -> None:
    now = datetime.now(UTC)
    await ThrottleHit.insert(
        ThrottleHit(bucket="old", at=now - timedelta(hours=2)), ThrottleHit(bucket="recent", at=now)
    )
    await throttle.delete_expired(3600)  # (the client's own sweep may have got there first)
    assert await ThrottleHit.select(ThrottleHit.bucket).output(as_list=True) == ["recent"]


async def test_register_flood_hashes_in_line_while_health_answers(
    client: AsyncTestClient, app: Litestar, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = threading.Event()
    lock = threading.Lock()
    hashing = {"now": 0, "most": 0}
    real_hashpw = security.bcrypt.hashpw

    def held_hashpw(password: bytes, salt: bytes) -> bytes:
        with lock:
            hashing["now"] += 1
            hashing["most"] = max(hashing["most"], hashing["now"])
        release.wait(30)
        try:
            return real_hashpw(password, salt)
        finally:
            with lock:
                hashing["now"] -= 1

    monkeypatch.setattr(security.bcrypt, "hashpw", held_hashpw)
    async with instance(app, password_hash_workers=1, register_limit=100) as flooded:
        await csrf_token(flooded)
        signups = [asyncio.create_task(sign_up(flooded, unique_name())) for _ in range(6)]
        try:
            while not hashing["now"]:  # until a sign-up holds the hashing thread
                await asyncio.sleep(0.01)
            health = await flooded.get("/api/health")
            page = await flooded.get("/login")
            assert not any(signup.done() for signup in signups)  # all still waiting on bcrypt
        finally:
            release.set()
        responses = await asyncio.gather(*signups)
    assert health.status_code == 200 and page.status_code == 200
    assert [response.status_code for response in responses] == [303] * 6
    assert hashing["most"] == 1


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


async def test_bearer_token_use_is_shown_on_the_settings_page(user_client: AsyncTestClient) -> None:
    token = await new_token(user_client)
    assert "never" in (await user_client.get("/settings")).text
    cookies = dict(user_client.cookies)
    user_client.cookies.clear()
    response = await user_client.get("/api/rooms", headers={"authorization": f"Bearer {token}"})
    assert response.status_code == 200
    user_client.cookies.update(cookies)
    listing = (await user_client.get("/settings")).text
    assert "never" not in listing
    assert re.search(r"<td data-label=\"Last used\">\d{4}-\d{2}-\d{2} \d{2}:\d{2}</td>", listing)


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
