"""A room's settings page: its owner renames it, manages its invite and members, deletes it; a
member leaves it. Plain forms that redirect back (or re-render with their error)."""

from __future__ import annotations

from typing import Any, ClassVar

from litestar import Controller, Request, get, post
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, URLEncodedBody
from litestar.response import Redirect, Template
from litestar.types import Dependencies

from mesh_nanollm.errors import Forbidden, ServiceError
from mesh_nanollm.realtime.notify import notify_access_lost
from mesh_nanollm.rooms import membership, service
from mesh_nanollm.rooms.codes import format_code
from mesh_nanollm.security import provide_user
from mesh_nanollm.tables import Room, User

Form = URLEncodedBody[dict[str, str]]


async def settings_context(user: User, room: Room) -> dict[str, Any]:
    is_owner = room.owner == user.id
    if not is_owner and not room.is_private:
        raise Forbidden("Only the room's owner can change it; public rooms have nothing else to set.")
    return {
        "user": user,
        "room": room,
        "is_owner": is_owner,
        "can_delete": is_owner and room.slug != service.GLOBAL_SLUG,
        "invite_code": format_code(room.invite_code) if is_owner and room.invite_code else None,
        "members": await membership.list_members(room) if is_owner and room.is_private else [],
        "errors": {},
        "values": {},
    }


class RoomSettingsPages(Controller):
    path = "/rooms/{slug:str}/settings"
    include_in_schema = False  # HTML for browsers; /schema documents the JSON API
    dependencies: ClassVar[Dependencies] = {"user": Provide(provide_user)}

    async def _invalid(self, user: User, slug: str, exc: ServiceError, values: dict[str, str]) -> Template:
        context = await settings_context(user, await service.get_room(user, slug))
        context |= {"errors": exc.fields, "error": exc.detail, "values": values}
        return Template("room_settings.html", context=context, status_code=exc.status_code)

    @get("/", name="room_settings")
    async def page(self, user: NamedDependency[User], slug: FromPath[str]) -> Template:
        room = await service.get_room(user, slug)
        return Template("room_settings.html", context=await settings_context(user, room))

    @post("/name", name="room_rename", status_code=200)
    async def rename(self, user: NamedDependency[User], slug: FromPath[str], data: Form) -> Template | Redirect:
        name = data.get("name", "")
        try:
            await service.rename_room(user, slug, name)
        except ServiceError as exc:
            if exc.status_code != 422:
                raise
            return await self._invalid(user, slug, exc, {"name": name[:200]})
        return Redirect(f"/rooms/{slug}/settings", status_code=303)

    @post("/code", name="room_new_code", status_code=200)
    async def new_code(self, user: NamedDependency[User], slug: FromPath[str]) -> Redirect:
        await service.regenerate_code(user, slug)
        return Redirect(f"/rooms/{slug}/settings", status_code=303)

    @post("/members/{user_id:int}/remove", name="room_remove_member", status_code=200)
    async def remove(self, request: Request, user: NamedDependency[User], slug: FromPath[str], user_id: FromPath[int]) -> Redirect:
        await membership.remove_member(user, slug, user_id)
        await notify_access_lost(request.app.state.realtime, slug, [user_id])
        return Redirect(f"/rooms/{slug}/settings", status_code=303)

    @post("/leave", name="room_leave", status_code=200)
    async def leave(self, request: Request, user: NamedDependency[User], slug: FromPath[str]) -> Redirect:
        await membership.leave_room(user, slug)
        await notify_access_lost(request.app.state.realtime, slug, [user.id])
        return Redirect("/rooms", status_code=303)

    @post("/delete", name="room_delete", status_code=200)
    async def delete(self, request: Request, user: NamedDependency[User], slug: FromPath[str], data: Form) -> Template | Redirect:
        confirm = data.get("confirm", "")
        try:
            live_users = await service.delete_room(user, slug, confirm)
        except ServiceError as exc:
            if exc.status_code != 422:
                raise
            return await self._invalid(user, slug, exc, {"confirm": confirm[:200]})
        await notify_access_lost(request.app.state.realtime, slug, live_users)
        return Redirect("/rooms", status_code=303)
