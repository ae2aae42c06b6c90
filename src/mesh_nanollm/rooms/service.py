"""Rooms and who may enter them: the rules, no HTTP (who is in them: the peers service)."""

from __future__ import annotations

import re
import secrets
import unicodedata
from dataclasses import dataclass

from mesh_nanollm.db import as_objects, raw
from mesh_nanollm.errors import Conflict, Forbidden, InvalidInput, NotFound
from mesh_nanollm.peers.service import count_live_peers
from mesh_nanollm.rooms.codes import new_code, normalize_code
from mesh_nanollm.tables import PeerSession, Room, RoomMember, User

GLOBAL_SLUG = "global"
RESERVED_SLUGS = {"join", "new"}
NAME_MAX = 80


@dataclass
class RoomListing:
    room: Room
    peers: int


def slugify(name: str) -> str:
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", ascii_name.lower()).strip("-")[:40] or "room"


def validate_room_name(name: str) -> dict[str, str]:
    if not name.strip():
        return {"name": "Give the room a name."}
    if len(name) > NAME_MAX:
        return {"name": f"Use at most {NAME_MAX} characters."}
    return {}


async def list_visible_rooms(user: User) -> list[Room]:
    """Public rooms and the private rooms `user` belongs to (one query); the global room first,
    then the newest first."""
    rows = await raw(Room, 
        "SELECT room.* FROM room WHERE NOT room.is_private"
        ' OR room.id IN (SELECT room_member.room FROM room_member WHERE room_member."user" = {})'
        " ORDER BY room.created_at DESC",
        user.id,
    )
    rooms = as_objects(Room, rows)
    rooms.sort(key=lambda room: room.slug != GLOBAL_SLUG)
    return rooms


async def list_rooms(user: User) -> list[RoomListing]:
    """The rooms `user` can see, as `list_visible_rooms` orders them, with their live peer counts."""
    counts = await count_live_peers()
    return [RoomListing(room, counts.get(room.id, 0)) for room in await list_visible_rooms(user)]


async def create_room(user: User, name: str, is_private: bool) -> Room:
    name = name.strip()
    if errors := validate_room_name(name):
        raise InvalidInput("Please correct the highlighted fields.", errors)
    base = slugify(name)
    slug = base if base not in RESERVED_SLUGS else f"{base}-room"
    for _ in range(5):
        if not await Room.exists().where(Room.slug == slug):
            room = Room(
                slug=slug,
                name=name,
                owner=user.id,
                is_private=is_private,
                invite_code=new_code() if is_private else None,
            )
            try:
                await room.save()
                break
            except Exception:  # someone took the slug between the check and the insert
                if not await Room.exists().where(Room.slug == slug):
                    raise
        slug = f"{base}-{secrets.token_hex(3)}"
    else:
        raise Conflict("Could not find a free address for that room name; try another name.")
    if is_private:
        await RoomMember.insert(RoomMember(room=room.id, user=user.id))
    return room


async def may_enter(user: User, room: Room) -> bool:
    if not room.is_private:
        return True
    return await RoomMember.exists().where(RoomMember.room == room.id, RoomMember.user == user.id)


async def get_room(user: User, slug: str) -> Room:
    """The room `slug` if `user` may see it; NotFound or Forbidden otherwise."""
    rows = await raw(Room, 
        "SELECT room.*, EXISTS (SELECT 1 FROM room_member WHERE room_member.room = room.id"
        ' AND room_member."user" = {}) AS is_member FROM room WHERE room.slug = {}',
        user.id,
        slug,
    ) if len(slug) <= 48 else []
    if not rows:
        raise NotFound(f"There is no room called “{slug[:48]}”.")
    room = as_objects(Room, rows)[0]
    if room.is_private and not rows[0]["is_member"]:
        raise Forbidden("This room is private. Ask its owner for an invite code.")
    return room


BAD_CODE = "That invite code is not valid."


async def room_for_code(typed: str) -> Room | None:
    """The room whose invite code someone typed. Codes made before the readable alphabet (URL-safe
    base64, case-sensitive) still match exactly as typed, until their owner regenerates them."""
    typed = typed.strip()
    if not 0 < len(typed) <= 64:
        return None
    candidates = list({normalize_code(typed), typed})
    return await Room.objects().where(Room.invite_code.is_in(candidates)).first()


async def add_member(user: User, room: Room) -> None:
    if not await may_enter(user, room):
        await RoomMember.insert(RoomMember(room=room.id, user=user.id))


async def join_by_invite(user: User, code: str) -> Room:
    room = await room_for_code(code)
    if room is None:
        raise InvalidInput(BAD_CODE, {"code": BAD_CODE})
    await add_member(user, room)
    return room


async def join_room_with_code(user: User, slug: str, code: str) -> Room:
    """Enter the private room `slug` with its code (from its 403 page); a code of another room
    is as wrong as no code."""
    room = await room_for_code(code)
    if room is None or room.slug != slug:
        raise InvalidInput(BAD_CODE, {"code": BAD_CODE})
    await add_member(user, room)
    return room


async def owner_names(rooms: list[Room]) -> dict[int, str]:
    """Usernames of the owners of `rooms`, by user id."""
    ids = list({room.owner for room in rooms if room.owner is not None})
    rows = await User.select(User.id, User.username).where(User.id.is_in(ids)) if ids else []
    return {row["id"]: row["username"] for row in rows}


async def get_owned_room(user: User, slug: str) -> Room:
    """The room `slug` if `user` owns it: what renaming, deleting and managing members need."""
    room = await get_room(user, slug)
    if room.owner != user.id:
        raise Forbidden("Only the room's owner can do that.")
    return room


async def rename_room(user: User, slug: str, name: str) -> Room:
    """A new name; the slug (and so every link to the room) stays."""
    room = await get_owned_room(user, slug)
    name = name.strip()
    if errors := validate_room_name(name):
        raise InvalidInput("Please correct the highlighted fields.", errors)
    room.name = name
    await room.save([Room.name])
    return room


async def regenerate_code(user: User, slug: str) -> Room:
    """A new invite code for a private room; the old one stops working at once. Members stay."""
    room = await get_owned_room(user, slug)
    if not room.is_private:
        raise Conflict("Public rooms are open to everyone and have no invite code.")
    room.invite_code = new_code()
    await room.save([Room.invite_code])
    return room


async def delete_room(user: User, slug: str, confirm_name: str) -> list[int]:
    """Delete a room with its members, peers and jobs (the tables cascade). `confirm_name` must be
    the room's name. Returns the ids of users with a live peer in it, whose sockets must go."""
    room = await get_owned_room(user, slug)
    if room.slug == GLOBAL_SLUG:
        raise Forbidden("The global room cannot be deleted.")
    if confirm_name.strip() != room.name:
        message = f"Type the room's name, “{room.name}”, to delete it."
        raise InvalidInput(message, {"confirm": message})
    live = await PeerSession.select(PeerSession.user).where(
        PeerSession.room == room.id, PeerSession.disconnected_at.is_null()
    ).distinct()
    await Room.delete().where(Room.id == room.id)
    return [row["user"] for row in live]
