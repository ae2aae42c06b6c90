"""Room pages (list, create, join, the room itself, its peers fragment) and the rooms API."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar
from uuid import UUID

from jinja2 import Environment
from litestar import Controller, MediaType, Request, Response, get, post
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, JSONBody, QueryParameter, URLEncodedBody
from litestar.plugins.htmx import HTMXRequest, HTMXTemplate, HXLocation
from litestar.response import Redirect, Template
from litestar.types import Dependencies

from mesh_nanollm.conversations import service as conversations
from mesh_nanollm.errors import Forbidden, ServiceError
from mesh_nanollm.openapi import BEARER, errors
from mesh_nanollm.peers.panel import PeersPanel
from mesh_nanollm.peers.schemas import PeerView
from mesh_nanollm.peers.service import list_live_peers
from mesh_nanollm.rooms import service
from mesh_nanollm.rooms.codes import format_code
from mesh_nanollm.rooms.schemas import RoomCreate, RoomView
from mesh_nanollm.security import provide_user
from mesh_nanollm.tables import Room, User

Form = URLEncodedBody[dict[str, str]]


def room_view(room: Room, peers: int, user: NamedDependency[User], owner_name: str | None = None) -> RoomView:
    return RoomView(
        slug=room.slug,
        name=room.name,
        private=room.is_private,
        owner=owner_name,
        peers=peers,
        created_at=room.created_at,
        invite_code=format_code(room.invite_code) if room.invite_code and room.owner == user.id else None,
    )


def templates(request: Request) -> Environment:
    return request.app.template_engine.engine  # type: ignore[union-attr]  # the app's Jinja engine


def panel(request: Request) -> PeersPanel:
    # From the app's state rather than a dependency: a handler with two dependencies has Litestar
    # resolve them in a task group of their own, about 3% of a room page's CPU.
    return request.app.state.peers_panel


def go_to(request: HTMXRequest, path: str) -> Redirect | HXLocation:
    # fetch() follows a 303 by itself, so htmx would swap the whole next page into the form. htmx
    # loads `path` into the body instead, as a boosted link does: the tab's peer stays (base.html).
    return HXLocation(redirect_to=path, target="body") if request.htmx else Redirect(path, status_code=303)


class RoomPages(Controller):
    path = "/rooms"
    include_in_schema = False  # HTML for browsers; /schema documents the JSON API
    dependencies: ClassVar[Dependencies] = {"user": Provide(provide_user)}

    async def _list_page(self, user: NamedDependency[User], **extra: Any) -> dict[str, Any]:
        return {"user": user, "rooms": await service.list_rooms(user), "errors": {}, "values": {}} | extra

    @get("/", name="rooms")
    async def rooms(self, user: NamedDependency[User]) -> Template:
        return Template("rooms.html", context=await self._list_page(user))

    @post("/", name="room_create", status_code=200)
    async def create(self, request: HTMXRequest, user: NamedDependency[User], data: Form) -> Template | Redirect | HXLocation:
        name = data.get("name", "")
        try:
            room = await service.create_room(user, name, data.get("private") in ("on", "true", "1"))
        except ServiceError as exc:
            context = await self._list_page(user, errors=exc.fields, values={"name": name[:200]})
            if request.htmx:
                return HTMXTemplate(template_name="_room_form.html", context=context, status_code=422)
            return Template("rooms.html", context=context, status_code=422)
        return go_to(request, f"/rooms/{room.slug}")

    @post("/join", name="room_join", status_code=200)
    async def join(self, request: HTMXRequest, user: NamedDependency[User], data: Form) -> Template | Redirect | HXLocation:
        code = data.get("code", "")
        try:
            room = await service.join_by_invite(user, code)
        except ServiceError as exc:
            context = await self._list_page(user, join_errors=exc.fields, join_values={"code": code[:64]})
            if request.htmx:
                return HTMXTemplate(template_name="_join_form.html", context=context, status_code=422)
            return Template("rooms.html", context=context, status_code=422)
        return go_to(request, f"/rooms/{room.slug}")

    @get("/join/{code:str}", name="invite")
    async def invite(self, user: NamedDependency[User], code: FromPath[str]) -> Template | Redirect:
        """Where an invite link leads (after signing in): the room it opens, and a button to join."""
        room = await service.room_for_code(code)
        if room is not None and await service.may_enter(user, room):
            return Redirect(f"/rooms/{room.slug}", status_code=303)
        context = {"user": user, "room": room, "code": format_code(room.invite_code) if room else code[:64]}
        return Template("invite.html", context=context, status_code=200 if room else 404)

    @get("/{slug:str}", name="room")
    async def room(
        self, request: Request, user: NamedDependency[User], slug: FromPath[str],
        conversation: Annotated[UUID | None, QueryParameter()] = None,
    ) -> Template:
        try:
            room = await service.get_room(user, slug)
        except Forbidden as exc:
            return self._locked(user, slug, exc.detail, 403)
        context = {
            "user": user,
            "room": room,
            "peers_panel": await panel(request).render(templates(request), room, {"request": request}),
            "is_owner": room.owner == user.id,
            "invite_code": format_code(room.invite_code) if room.invite_code else None,
            **await conversations.room_context(user, room, conversation),
        }
        # Cross-origin isolated, as every page is (app.security_headers).
        return Template("room.html", context=context, media_type=MediaType.HTML)

    def _locked(self, user: User, slug: str, detail: str, status: int, **extra: Any) -> Template:
        """The page of a private room for someone not in it: why, and a field for its code."""
        context = {"user": user, "slug": slug, "detail": detail, "join_errors": {}, "join_values": {}} | extra
        return Template("room_locked.html", context=context, status_code=status)

    @post("/{slug:str}/join", name="room_enter", status_code=200)
    async def enter(self, request: HTMXRequest, user: NamedDependency[User], slug: FromPath[str], data: Form) -> Template | Redirect | HXLocation:
        """The code field of a private room's page: the right code makes the user a member."""
        code = data.get("code", "")
        try:
            room = await service.join_room_with_code(user, slug, code)
        except ServiceError as exc:
            context = {"join_errors": exc.fields, "join_values": {"code": code[:64]}, "join_action": f"/rooms/{slug}/join"}
            if request.htmx:
                return HTMXTemplate(template_name="_join_form.html", context=context, status_code=422)
            return self._locked(user, slug, "This room is private. Enter its invite code to join.", 422, **context)
        return go_to(request, f"/rooms/{room.slug}")

    @get("/{slug:str}/peers", name="room_peers")
    async def peers(
        self, request: Request, user: NamedDependency[User], slug: FromPath[str]
    ) -> Response[str]:
        room = await service.get_room(user, slug)
        return Response(await panel(request).render(templates(request), room, {"request": request}), media_type=MediaType.HTML)


class RoomApi(Controller):
    path = "/api/rooms"
    tags: ClassVar[list[str]] = ["rooms"]
    security = BEARER
    dependencies: ClassVar[Dependencies] = {"user": Provide(provide_user)}

    @get("/", summary="List rooms", responses=errors(401))
    async def list_rooms(self, user: NamedDependency[User]) -> list[RoomView]:
        """Rooms the caller may see: public ones and private ones they belong to."""
        listings = await service.list_rooms(user)
        owners = await service.owner_names([listing.room for listing in listings])
        return [room_view(r.room, r.peers, user, owners.get(r.room.owner)) for r in listings]

    @post("/", summary="Create a room", responses=errors(400, 401, 403, 409, 413, 422))
    async def create_room(self, user: NamedDependency[User], data: JSONBody[RoomCreate]) -> RoomView:
        """Create a room; a private room gets an invite code only its owner sees."""
        room = await service.create_room(user, data.name, data.private)
        return room_view(room, 0, user, user.username)

    @get("/{slug:str}", summary="Get a room", responses=errors(400, 401, 403, 404))
    async def get_room(self, user: NamedDependency[User], slug: FromPath[str]) -> RoomView:
        """One room by its slug, with its live peer count (and its invite code, for its owner)."""
        room = await service.get_room(user, slug)
        peers = await list_live_peers(room)
        owners = await service.owner_names([room])
        return room_view(room, len(peers), user, owners.get(room.owner))

    @get("/{slug:str}/peers", summary="List a room's peers", responses=errors(400, 401, 403, 404))
    async def list_peers(self, user: NamedDependency[User], slug: FromPath[str]) -> list[PeerView]:
        """Live peers in the room, oldest first."""
        room = await service.get_room(user, slug)
        return await list_live_peers(room)
