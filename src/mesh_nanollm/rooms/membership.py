"""Who belongs to a private room: the member list, removing a member, leaving. No HTTP."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from mesh_nanollm.errors import Conflict, NotFound
from mesh_nanollm.rooms.service import get_owned_room, get_room
from mesh_nanollm.tables import Room, RoomMember, User


@dataclass
class Member:
    user_id: int
    username: str
    joined_at: datetime
    is_owner: bool


async def list_members(room: Room) -> list[Member]:
    """The members of a private room, the owner first, then by when they joined."""
    rows = await RoomMember.select(
        RoomMember.user, RoomMember.user.username.as_alias("username"), RoomMember.joined_at
    ).where(RoomMember.room == room.id).order_by(RoomMember.joined_at).order_by(RoomMember.id)
    members = [Member(row["user"], row["username"], row["joined_at"], row["user"] == room.owner) for row in rows]
    members.sort(key=lambda member: not member.is_owner)
    return members


async def remove_member(owner: User, slug: str, user_id: int) -> Room:
    """The owner takes a member out of their private room; the member's code no longer lets them
    back in once the owner regenerates it."""
    room = await get_owned_room(owner, slug)
    if user_id == owner.id:
        raise Conflict("You own this room; delete it instead of removing yourself.")
    if not 0 < user_id < 2**63:  # beyond the id column's range the drivers raise, not miss
        raise NotFound("That person is not a member of this room.")
    removed = await RoomMember.delete().where(RoomMember.room == room.id, RoomMember.user == user_id).returning(
        RoomMember.id
    )
    if not removed:
        raise NotFound("That person is not a member of this room.")
    return room


async def leave_room(user: User, slug: str) -> Room:
    """A member leaves a private room; they need a code to come back."""
    room = await get_room(user, slug)
    if room.owner == user.id:
        raise Conflict("You own this room; delete it, or keep it.")
    if not room.is_private:
        raise Conflict("Public rooms are open to everyone; there is nothing to leave.")
    await RoomMember.delete().where(RoomMember.room == room.id, RoomMember.user == user.id)
    return room
