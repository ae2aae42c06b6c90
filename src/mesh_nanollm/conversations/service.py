"""Conversations: stored, listed per room and per user, renamed, cut back, deleted. No HTTP."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import msgspec
from markupsafe import escape

from mesh_nanollm.conversations.markdown import render_markdown
from mesh_nanollm.conversations.schemas import (
    TITLE_MAX,
    ConversationCreate,
    ConversationPatch,
    ConversationSummary,
    ConversationView,
    TurnCreate,
    TurnView,
)
from mesh_nanollm.db import raw
from mesh_nanollm.errors import InvalidInput, NotFound
from mesh_nanollm.rooms.service import get_room
from mesh_nanollm.tables import Conversation, Job, Room, Turn, User

LIST_MAX = 100
NOT_FOUND = "No such conversation."


def _now() -> datetime:
    return datetime.now(UTC)


def title_from(text: str) -> str:
    """A title from a first question: its first line, cut at a word near TITLE_MAX/2."""
    line = " ".join(text.split())
    if len(line) <= 60:
        return line
    cut = line[:60].rsplit(" ", 1)[0] or line[:60]
    return f"{cut}…"


def turn_view(row: dict[str, Any]) -> TurnView:
    html = (
        render_markdown(row["content"])
        if row["role"] == "assistant"
        else str(escape(row["content"]))
    )
    return TurnView(
        position=row["position"],
        role=row["role"],
        content=row["content"],
        html=html,
        job=row["job"],
        model=row["model_id"],
        ran_on=row["ran_on"],
        ttft_ms=row["ttft_ms"],
        tok_s=row["tok_s"],
        trimmed=row["trimmed"],
        created_at=row["created_at"],
    )


async def _owned(user: User, conversation_id: UUID) -> Conversation:
    conversation = (
        await Conversation.objects()
        .where(Conversation.id == conversation_id, Conversation.owner == user.id)
        .first()
    )
    if conversation is None:
        raise NotFound(NOT_FOUND)
    return conversation


async def _view(conversation: Conversation, room_slug: str) -> ConversationView:
    rows = await Turn.select().where(Turn.conversation == conversation.id).order_by(Turn.position)
    return ConversationView(
        id=conversation.id,
        room=room_slug,
        title=conversation.title,
        system_prompt=conversation.system_prompt,
        created_at=conversation.created_at,
        updated_at=conversation.updated_at,
        turns=[turn_view(row) for row in rows],
    )


async def _room_slug(conversation: Conversation) -> str:
    row = await Room.select(Room.slug).where(Room.id == conversation.room).first()
    return row["slug"] if row else ""


async def create_conversation(user: User, data: ConversationCreate) -> ConversationView:
    room = await get_room(user, data.room)
    now = _now()
    conversation = Conversation(
        room=room.id,
        owner=user.id,
        title=data.title.strip(),
        system_prompt=data.system_prompt,
        created_at=now,
        updated_at=now,
    )
    await conversation.save()
    return await _view(conversation, room.slug)


async def get_conversation(user: User, conversation_id: UUID) -> ConversationView:
    conversation = await _owned(user, conversation_id)
    return await _view(conversation, await _room_slug(conversation))


async def conversation_in_room(user: User, conversation_id: UUID, room: Room) -> ConversationView:
    """The user's conversation `conversation_id`, if it belongs to `room`; NotFound otherwise."""
    conversation = await _owned(user, conversation_id)
    if conversation.room != room.id:
        raise NotFound(NOT_FOUND)
    return await _view(conversation, room.slug)


async def list_conversations(user: User, room: Room | None = None) -> list[ConversationSummary]:
    """The user's conversations, most recently used first; only those of `room`, if given."""
    # One statement, turn counts included, in raw SQL: the room page lists these on every load.
    in_room = " AND conversation.room = {}" if room is not None else ""
    rows = await raw(Conversation, 
        "SELECT conversation.id, conversation.title, conversation.updated_at, room.slug AS room_slug,"
        " room.name AS room_name,"
        " (SELECT count(*) FROM turn WHERE turn.conversation = conversation.id) AS turns"
        " FROM conversation JOIN room ON room.id = conversation.room"
        f" WHERE conversation.owner = {{}}{in_room} ORDER BY conversation.updated_at DESC LIMIT {{}}",
        *([user.id, room.id] if room is not None else [user.id]),
        LIST_MAX,
    )
    return [
        ConversationSummary(
            id=row["id"],
            room=row["room_slug"],
            room_name=row["room_name"],
            title=row["title"],
            turns=row["turns"],
            updated_at=row["updated_at"],
        )
        for row in rows
    ]


def _clean_title(title: str) -> str:
    title = " ".join(title.split())
    if not title:
        raise InvalidInput("Give the conversation a title.", {"title": "A title cannot be empty."})
    if len(title) > TITLE_MAX:
        raise InvalidInput(
            f"A title has at most {TITLE_MAX} characters.",
            {"title": f"At most {TITLE_MAX} characters."},
        )
    return title


async def update_conversation(
    user: User, conversation_id: UUID, patch: ConversationPatch
) -> ConversationView:
    conversation = await _owned(user, conversation_id)
    if patch.title is not None:
        conversation.title = _clean_title(patch.title)
    if patch.system_prompt is not None:
        conversation.system_prompt = patch.system_prompt
    conversation.updated_at = _now()
    await conversation.save(
        [Conversation.title, Conversation.system_prompt, Conversation.updated_at]
    )
    return await _view(conversation, await _room_slug(conversation))


async def rename_conversation(user: User, conversation_id: UUID, title: str) -> ConversationView:
    return await update_conversation(user, conversation_id, ConversationPatch(title=title))


async def delete_conversation(user: User, conversation_id: UUID) -> None:
    """Gone with its turns; the jobs that wrote its answers stay in the history."""
    conversation = await _owned(user, conversation_id)
    await Conversation.delete().where(Conversation.id == conversation.id)


async def add_turn(user: User, conversation_id: UUID, data: TurnCreate) -> TurnView:
    conversation = await _owned(user, conversation_id)
    if data.job is not None:
        job = await Job.select(Job.room).where(Job.id == data.job, Job.requester == user.id).first()
        if job is None:
            raise InvalidInput(
                f"job {data.job} is not one of your jobs.", {"job": "Not one of your jobs."}
            )
        if job["room"] != conversation.room:
            raise InvalidInput("That job ran in another room.", {"job": "It ran in another room."})
        if data.role != "assistant":
            raise InvalidInput(
                "Only an assistant turn is written by a job.", {"job": "Only for assistant turns."}
            )
    last = (
        await Turn.select(Turn.position)
        .where(Turn.conversation == conversation.id)
        .order_by(Turn.position, ascending=False)
        .first()
    )
    now = _now()
    turn = Turn(
        conversation=conversation.id,
        position=last["position"] + 1 if last else 0,
        role=data.role,
        content=data.content,
        job=data.job,
        model_id=data.model,
        ran_on=data.ran_on,
        ttft_ms=data.ttft_ms,
        tok_s=data.tok_s,
        trimmed=data.trimmed,
        created_at=now,
    )
    await turn.save()
    conversation.updated_at = now
    fields = [Conversation.updated_at]
    if not conversation.title and data.role == "user" and data.content.strip():
        conversation.title = title_from(data.content)
        fields.append(Conversation.title)
    await conversation.save(fields)
    return turn_view(turn.to_dict())


async def cut_turns(user: User, conversation_id: UUID, position: int) -> None:
    """Remove the turn at `position` and every later one (to regenerate or edit from there)."""
    conversation = await _owned(user, conversation_id)
    await Turn.delete().where(Turn.conversation == conversation.id, Turn.position >= position)
    conversation.updated_at = _now()
    await conversation.save([Conversation.updated_at])


async def conversation_of_job(user: User, job_id: UUID) -> dict[str, Any] | None:
    """{id, title, position} of the user's conversation turn that `job_id` wrote, if any."""
    return (
        await Turn.select(
            Turn.conversation.id.as_alias("id"),
            Turn.conversation.title.as_alias("title"),
            Turn.conversation.room.slug.as_alias("room"),
            Turn.position,
        )
        .where(Turn.job == job_id, Turn.conversation.owner == user.id)
        .first()
    )


async def room_context(user: User, room: Room, conversation_id: UUID | None) -> dict[str, Any]:
    """What the room page shows of conversations: this room's list, and the one reopened (if any)."""
    opened = await conversation_in_room(user, conversation_id, room) if conversation_id else None
    return {
        "conversations": await list_conversations(user, room),
        "conversation": opened,
        "conversation_data": msgspec.to_builtins(opened) if opened else None,
    }
