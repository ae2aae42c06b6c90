"""The account part of the settings page: change the password, delete the account. Both ask for
the current password, and a wrong one counts like a failed sign-in."""

from __future__ import annotations

from typing import Any, ClassVar

from litestar import Controller, post
from litestar.di import NamedDependency, Provide
from litestar.params import URLEncodedBody
from litestar.plugins.htmx import HTMXRequest, HTMXTemplate
from litestar.response import Redirect, Template
from litestar.types import Dependencies

from mesh_nanollm.accounts import service
from mesh_nanollm.accounts.routes import settings_context
from mesh_nanollm.errors import InvalidInput, ServiceError
from mesh_nanollm.realtime.auth import SESSION_COOKIE
from mesh_nanollm.realtime.notify import notify_signed_out, notify_token_revoked
from mesh_nanollm.security import client_address, provide_user
from mesh_nanollm.sessions import DatabaseStore
from mesh_nanollm.tables import User
from mesh_nanollm.throttle import Throttled, Throttles

Form = URLEncodedBody[dict[str, str]]
WRONG_PASSWORD = "That is not your current password."


async def check_current_password(request: HTMXRequest, throttle: Throttles, user: User, password: str, field: str) -> None:
    address = client_address(request, throttle.settings.trusted_client_ip_header)
    attempt = await throttle.begin_login(user.username, address, None)
    if await service.verify_login(user.username, password) is None:
        raise InvalidInput(WRONG_PASSWORD, {field: WRONG_PASSWORD})
    await attempt.withdraw()


class AccountSettings(Controller):
    path = "/settings/account"
    include_in_schema = False  # HTML for browsers; /schema documents the JSON API
    dependencies: ClassVar[Dependencies] = {"user": Provide(provide_user)}

    async def _answer(self, request: HTMXRequest, user: User, status: int, **account: Any) -> Template:
        context = await settings_context(user, **account)
        if request.htmx:
            return HTMXTemplate(template_name="_account.html", context=context, status_code=status)
        return Template("settings.html", context=context, status_code=status)

    @post("/password", name="account_password", status_code=200)
    async def change_password(
        self, request: HTMXRequest, user: NamedDependency[User], data: Form, throttle: NamedDependency[Throttles]
    ) -> Template:
        """A new password; every other session of the user is signed out (API tokens stay)."""
        try:
            await check_current_password(request, throttle, user, data.get("current_password", ""), "current_password")
            await service.change_password(user, data.get("new_password", ""), data.get("confirm_password", ""))
        except ServiceError as exc:
            return await self._answer(request, user, exc.status_code, password_errors=exc.fields)
        except Throttled as exc:
            message = f"Too many wrong passwords. Try again in {exc.retry_after} seconds."
            return await self._answer(request, user, 429, password_errors={"current_password": message})
        store: DatabaseStore = request.app.state.session_store
        for session_id in await store.delete_user_sessions(user.id, keep=request.cookies.get(SESSION_COOKIE)):
            await notify_signed_out(request.app.state.realtime, session_id)
        return await self._answer(request, user, 200, password_changed=True)

    @post("/delete", name="account_delete", status_code=200)
    async def delete_account(
        self, request: HTMXRequest, user: NamedDependency[User], data: Form, throttle: NamedDependency[Throttles]
    ) -> Template | Redirect:
        """Delete the account (see service.delete_account for its rooms); every session ends."""
        try:
            await check_current_password(request, throttle, user, data.get("password", ""), "password")
        except ServiceError as exc:
            return await self._answer(request, user, exc.status_code, delete_errors=exc.fields)
        except Throttled as exc:
            message = f"Too many wrong passwords. Try again in {exc.retry_after} seconds."
            return await self._answer(request, user, 429, delete_errors={"password": message})
        token_hashes = await service.delete_account(user)
        store: DatabaseStore = request.app.state.session_store
        request.clear_session()
        realtime = request.app.state.realtime
        for session_id in await store.delete_user_sessions(user.id):
            await notify_signed_out(realtime, session_id)
        for token_hash in token_hashes:
            await notify_token_revoked(realtime, token_hash)
        return Redirect("/register?account=deleted", status_code=303)
