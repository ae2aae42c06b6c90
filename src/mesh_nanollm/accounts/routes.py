"""Sign-up, sign-in, sign-out and the settings page with API tokens."""

from __future__ import annotations

from typing import Any, ClassVar

from litestar import Controller, get, post
from litestar.datastructures import Cookie
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, FromQuery, URLEncodedBody
from litestar.plugins.htmx import HTMXRequest, HTMXTemplate
from litestar.response import Redirect, Template
from litestar.types import Dependencies

from mesh_nanollm.accounts import service
from mesh_nanollm.errors import ServiceError
from mesh_nanollm.realtime.auth import SESSION_COOKIE
from mesh_nanollm.realtime.notify import notify_signed_out, notify_token_revoked
from mesh_nanollm.security import (
    SESSION_USER_KEY,
    client_address,
    provide_optional_user,
    provide_user,
)
from mesh_nanollm.tables import User
from mesh_nanollm.throttle import Throttled, Throttles

Form = URLEncodedBody[dict[str, str]]


def safe_next(target: str | None) -> str:
    """Only same-site paths, so `?next=` cannot bounce a user to another site."""
    # Browsers drop tabs and newlines from URLs, so "/\t/evil.example" would become "//evil.example".
    if (
        target
        and target.startswith("/")
        and not target.startswith("//")
        and "\\" not in target
        and not any(char.isspace() or ord(char) < 32 for char in target)
    ):
        return target
    return "/rooms"


DEVICE_COOKIE = "mesh_device"
DEVICE_COOKIE_MAX_AGE = 365 * 24 * 3600


def device_cookie(throttle: Throttles, username: str) -> Cookie:
    """Marks this browser as one `username` signed in with: its failures then count only against it."""
    return Cookie(
        key=DEVICE_COOKIE,
        value=throttle.device_cookie(username),
        path="/login",
        max_age=DEVICE_COOKIE_MAX_AGE,
        httponly=True,
        secure=throttle.settings.production,
        samesite="lax",
    )


def too_many(template: str, context: dict, message: str, exc: Throttled) -> Template:
    context["error"] = f"{message} Try again in {exc.retry_after} seconds."
    return Template(template, context=context, status_code=429, headers={"Retry-After": str(exc.retry_after)})


class AccountController(Controller):
    include_in_schema = False  # HTML for browsers; /schema documents the JSON API
    dependencies: ClassVar[Dependencies] = {"user": Provide(provide_optional_user)}

    @get("/login", name="login")
    async def login_page(self, user: NamedDependency[User | None], next: FromQuery[str | None] = None) -> Template | Redirect:
        if user is not None:
            return Redirect(safe_next(next), status_code=303)
        return Template("login.html", context={"next": safe_next(next), "values": {}, "errors": {}})

    @post("/login", name="login_submit", status_code=200)
    async def login(self, request: HTMXRequest, data: Form, throttle: NamedDependency[Throttles]) -> Template | Redirect:
        username = data.get("username", "").strip()[:64]
        password = data.get("password", "")
        target = safe_next(data.get("next"))
        context = {"next": target, "values": {"username": username}, "errors": {}}
        address = client_address(request, throttle.settings.trusted_client_ip_header)
        device = throttle.device(request.cookies.get(DEVICE_COOKIE), username)
        try:
            attempt = await throttle.begin_login(username, address, device)
        except Throttled as exc:
            return too_many("login.html", context, "Too many failed sign-ins.", exc)
        user = await service.verify_login(username, password)
        if user is None:
            context["error"] = "Wrong username or password."
            return Template("login.html", context=context, status_code=422)
        await throttle.signed_in(attempt, username, address, device)
        request.set_session({SESSION_USER_KEY: user.id})
        cookies = [] if device else [device_cookie(throttle, username)]
        return Redirect(target, status_code=303, cookies=cookies)

    @get("/register", name="register")
    async def register_page(
        self, user: NamedDependency[User | None], next: FromQuery[str | None] = None, account: FromQuery[str | None] = None
    ) -> Template | Redirect:
        if user is not None:
            return Redirect(safe_next(next), status_code=303)
        # Where deleting an account lands (account.py); a notice only, anyone may ask for it.
        context = {"next": safe_next(next), "values": {}, "errors": {}, "account_deleted": account == "deleted"}
        return Template("register.html", context=context)

    @post("/register", name="register_submit", status_code=200)
    async def register(self, request: HTMXRequest, data: Form, throttle: NamedDependency[Throttles]) -> Template | Redirect:
        username = data.get("username", "").strip()[:64]
        password = data.get("password", "")
        target = safe_next(data.get("next"))
        errors: dict[str, str] = {}
        if password != data.get("confirm", ""):
            errors["confirm"] = "The passwords do not match."
        try:
            if errors:
                errors = service.validate_credentials(username, password) | errors
                raise ServiceError("Please correct the highlighted fields.", errors)
            attempt = await throttle.begin_signup(client_address(request, throttle.settings.trusted_client_ip_header))
            try:
                user = await service.create_user(username, password)
            except ServiceError:
                await attempt.withdraw()  # refused before any hashing: a typo costs no sign-up
                raise
        except ServiceError as exc:
            context = {"next": target, "values": {"username": username}, "errors": exc.fields, "error": exc.detail}
            return Template("register.html", context=context, status_code=422)
        except Throttled as exc:
            context = {"next": target, "values": {"username": username}, "errors": {}}
            return too_many("register.html", context, "Too many new accounts from your address.", exc)
        request.set_session({SESSION_USER_KEY: user.id})
        return Redirect(target, status_code=303, cookies=[device_cookie(throttle, username)])

    @post("/logout", name="logout", status_code=200)
    async def logout(self, request: HTMXRequest) -> Redirect:
        session_id = request.cookies.get(SESSION_COOKIE)
        request.clear_session()
        if session_id:
            # Gone from the store first, so a socket that reconnects at once is refused.
            await request.app.state.session_store.delete(session_id)
            await notify_signed_out(request.app.state.realtime, session_id)
        return Redirect("/login", status_code=303)


async def settings_context(user: User, **extra: Any) -> dict[str, Any]:
    """What settings.html needs; the account forms re-render the whole page with it."""
    return {"user": user, "tokens": await service.list_tokens(user), "errors": {}} | extra


class SettingsController(Controller):
    include_in_schema = False
    path = "/settings"
    dependencies: ClassVar[Dependencies] = {"user": Provide(provide_user)}

    @get("/", name="settings")
    async def settings_page(self, user: NamedDependency[User]) -> Template:
        return Template("settings.html", context=await settings_context(user))

    @post("/sharing", name="sharing_update", status_code=200)
    async def update_sharing(self, request: HTMXRequest, user: NamedDependency[User], data: Form) -> Template:
        """The share-this-device switch and its limits, from the settings page or a room page (both
        include `_sharing.html`, which this answers htmx with)."""
        values = {
            "share": data.get("share_device") == "on",
            "download_mb": data.get("share_download_mb", str(user.share_download_mb))[:32],
            "max_jobs": data.get("share_max_jobs", str(user.share_max_jobs))[:32],
        }
        context: dict = {"user": user, "errors": {}, "saved_now": True}
        status = 200
        try:
            await service.update_sharing(user, values["share"], values["download_mb"], values["max_jobs"])
        except ServiceError as exc:
            context |= {"errors": exc.fields, "error": exc.detail, "saved_now": False, "sharing": values}
            status = exc.status_code
        if request.htmx:
            return HTMXTemplate(template_name="_sharing.html", context=context, status_code=status)
        context["tokens"] = await service.list_tokens(user)
        return Template("settings.html", context=context, status_code=status)

    @post("/tokens", name="token_create", status_code=200)
    async def create_token(self, request: HTMXRequest, user: NamedDependency[User], data: Form) -> Template:
        context: dict = {"user": user, "errors": {}}
        status = 200
        try:
            _, context["new_token"] = await service.create_token(user, data.get("name", ""))
        except ServiceError as exc:
            context["errors"] = exc.fields
            status = exc.status_code
        context["tokens"] = await service.list_tokens(user)
        if request.htmx:
            return HTMXTemplate(template_name="_tokens.html", context=context, status_code=status)
        return Template("settings.html", context=context, status_code=status)

    @post("/tokens/{token_id:int}/revoke", name="token_revoke", status_code=200)
    async def revoke_token(self, request: HTMXRequest, user: NamedDependency[User], token_id: FromPath[int]) -> Template | Redirect:
        token_hash = await service.revoke_token(user, token_id)
        await notify_token_revoked(request.app.state.realtime, token_hash)
        if not request.htmx:
            return Redirect("/settings", status_code=303)
        tokens = await service.list_tokens(user)
        return HTMXTemplate(template_name="_tokens.html", context={"user": user, "tokens": tokens, "errors": {}})
