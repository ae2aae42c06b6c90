"""The conversations page (a user's list: reopen, rename, delete) and the conversations API."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar
from uuid import UUID

from litestar import Controller, delete, get, patch, post
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, JSONBody, QueryParameter, URLEncodedBody
from litestar.plugins.htmx import HTMXRequest, HTMXTemplate, HXLocation
from litestar.response import Redirect, Template
from litestar.types import Dependencies

from mesh_nanollm.conversations import service
from mesh_nanollm.conversations.schemas import (
    ConversationCreate,
    ConversationPatch,
    ConversationSummary,
    ConversationView,
    TurnCreate,
    TurnView,
)
from mesh_nanollm.errors import ServiceError
from mesh_nanollm.openapi import BEARER, errors
from mesh_nanollm.rooms.routes import go_to
from mesh_nanollm.rooms.service import get_room
from mesh_nanollm.security import provide_user
from mesh_nanollm.tables import User

Form = URLEncodedBody[dict[str, str]]
RoomQuery = Annotated[str | None, QueryParameter(max_length=48)]


def back_to(data: dict[str, str]) -> str:
    """Where a form goes back to: the page it came from, if it names one of ours."""
    target = data.get("next", "")
    return (
        target
        if target.startswith("/") and not target.startswith("//") and len(target) <= 300
        else "/conversations"
    )


class ConversationPages(Controller):
    path = "/conversations"
    include_in_schema = False  # HTML for browsers; /schema documents the JSON API
    dependencies: ClassVar[Dependencies] = {"user": Provide(provide_user)}

    async def _page(self, user: User, status: int = 200, **extra: Any) -> Template:
        context = {
            "user": user,
            "conversations": await service.list_conversations(user),
            "errors": {},
        } | extra
        return Template("conversations.html", context=context, status_code=status)

    @get("/", name="conversations")
    async def conversations(
        self, request: HTMXRequest, user: NamedDependency[User], room: RoomQuery = None
    ) -> Template:
        if request.htmx and room:
            # The room page's list of its conversations, reloading itself after one was stored.
            found = await get_room(user, room)
            context = {
                "room": found,
                "conversations": await service.list_conversations(user, found),
                "conversation": None,
            }
            return HTMXTemplate(template_name="_conversation_list.html", context=context)
        return await self._page(user)

    @post("/{conversation_id:uuid}/rename", name="conversation_rename", status_code=200)
    async def rename(
        self,
        request: HTMXRequest,
        user: NamedDependency[User],
        conversation_id: FromPath[UUID],
        data: Form,
    ) -> Template | Redirect | HXLocation:
        try:
            await service.rename_conversation(user, conversation_id, data.get("title", ""))
        except ServiceError as exc:
            if exc.status_code == 404:
                raise
            # The list again, this row's field showing what was typed and why it was refused.
            errors = {str(conversation_id): exc.fields.get("title", exc.detail)}
            values = {str(conversation_id): data.get("title", "")[:200]}
            return await self._page(user, 422, errors=errors, values=values)
        return go_to(request, back_to(data))

    @post("/{conversation_id:uuid}/delete", name="conversation_delete", status_code=200)
    async def delete(
        self,
        request: HTMXRequest,
        user: NamedDependency[User],
        conversation_id: FromPath[UUID],
        data: Form,
    ) -> Redirect | HXLocation:
        await service.delete_conversation(user, conversation_id)
        return go_to(request, back_to(data))


class ConversationApi(Controller):
    path = "/api/conversations"
    tags: ClassVar[list[str]] = ["conversations"]
    security = BEARER
    dependencies: ClassVar[Dependencies] = {"user": Provide(provide_user)}

    @get("/", summary="List conversations", responses=errors(400, 401, 403, 404))
    async def list_conversations(
        self, user: NamedDependency[User], room: RoomQuery = None
    ) -> list[ConversationSummary]:
        """The caller's conversations, most recently used first; only one room's with `room`."""
        return await service.list_conversations(user, await get_room(user, room) if room else None)

    @post("/", summary="Start a conversation", responses=errors(400, 401, 403, 404, 422))
    async def create_conversation(
        self, user: NamedDependency[User], data: JSONBody[ConversationCreate]
    ) -> ConversationView:
        """A new, empty conversation in a room the caller may enter."""
        return await service.create_conversation(user, data)

    @get("/{conversation_id:uuid}", summary="Get a conversation", responses=errors(400, 401, 404))
    async def get_conversation(
        self, user: NamedDependency[User], conversation_id: FromPath[UUID]
    ) -> ConversationView:
        """The conversation with its turns; an assistant turn's `html` is its Markdown, sanitised."""
        return await service.get_conversation(user, conversation_id)

    @patch(
        "/{conversation_id:uuid}",
        summary="Rename or change the system prompt",
        responses=errors(400, 401, 403, 404, 422),
    )
    async def update_conversation(
        self,
        user: NamedDependency[User],
        conversation_id: FromPath[UUID],
        data: JSONBody[ConversationPatch],
    ) -> ConversationView:
        """A new title (not blank), or the system prompt the next answers run with."""
        return await service.update_conversation(user, conversation_id, data)

    @delete(
        "/{conversation_id:uuid}",
        summary="Delete a conversation",
        responses=errors(400, 401, 403, 404),
    )
    async def delete_conversation(
        self, user: NamedDependency[User], conversation_id: FromPath[UUID]
    ) -> None:
        """The conversation and its turns; the jobs that answered stay in the history."""
        await service.delete_conversation(user, conversation_id)

    @post(
        "/{conversation_id:uuid}/turns",
        summary="Add a turn",
        responses=errors(400, 401, 403, 404, 422),
    )
    async def add_turn(
        self,
        user: NamedDependency[User],
        conversation_id: FromPath[UUID],
        data: JSONBody[TurnCreate],
    ) -> TurnView:
        """Append a turn; an assistant turn names the job that wrote it."""
        return await service.add_turn(user, conversation_id, data)

    @delete(
        "/{conversation_id:uuid}/turns/{position:int}",
        summary="Remove turns from one on",
        responses=errors(400, 401, 403, 404),
    )
    async def cut_turns(
        self, user: NamedDependency[User], conversation_id: FromPath[UUID], position: FromPath[int]
    ) -> None:
        """Remove the turn at `position` and every later one: to regenerate, or to edit and resend."""
        await service.cut_turns(user, conversation_id, position)
