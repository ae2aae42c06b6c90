"""Accounts and API tokens: the rules, no HTTP."""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime

from mesh_nanollm.errors import Conflict, InvalidInput, NotFound
from mesh_nanollm.security import check_password, hash_password, hash_token
from mesh_nanollm.tables import ApiToken, Room, RoomMember, User

USERNAME_RE = re.compile(r"^[A-Za-z0-9_.-]{3,32}$")
PASSWORD_MIN = 8
PASSWORD_MAX_BYTES = 72  # bcrypt ignores (newer versions reject) anything past 72 bytes
TOKEN_PREFIX = "mnl_"
# Sharing limits (docs/mesh.md, "Sharing"): how much a page downloads for others, how many of
# their jobs it holds at once. The page's inference lane runs one generation at a time, so more
# than a handful of held jobs only makes the last one wait longer.
SHARE_DOWNLOAD_MB_MAX = 100_000
SHARE_MAX_JOBS = (1, 8)


def password_problem(password: str) -> str | None:
    if len(password) < PASSWORD_MIN:
        return f"Use at least {PASSWORD_MIN} characters."
    if len(password.encode()) > PASSWORD_MAX_BYTES:
        return f"Use at most {PASSWORD_MAX_BYTES} bytes."
    return None


def validate_credentials(username: str, password: str) -> dict[str, str]:
    errors: dict[str, str] = {}
    if not USERNAME_RE.fullmatch(username):
        errors["username"] = "Use 3–32 letters, digits, '.', '_' or '-'."
    if problem := password_problem(password):
        errors["password"] = problem
    return errors


async def create_user(username: str, password: str) -> User:
    # Usernames are case-insensitive: stored lower-cased, so the unique index enforces it.
    username = username.strip().lower()
    if errors := validate_credentials(username, password):
        raise InvalidInput("Please correct the highlighted fields.", errors)
    taken = Conflict("That username is taken.", {"username": "That username is taken."})
    if await User.exists().where(User.username == username):
        raise taken
    user = User(username=username, password_hash=await hash_password(password))
    try:
        await user.save()
    except Exception as exc:  # a concurrent sign-up won the unique index
        if await User.exists().where(User.username == username):
            raise taken from exc
        raise
    return user


async def verify_login(username: str, password: str) -> User | None:
    user = None
    if USERNAME_RE.fullmatch(username) and len(password.encode()) <= PASSWORD_MAX_BYTES:
        user = await User.objects().where(User.username == username.lower()).first()
    ok = await check_password(password[:PASSWORD_MAX_BYTES], user.password_hash if user else None)
    return user if ok else None


async def list_tokens(user: User) -> list[ApiToken]:
    return await ApiToken.objects().where(ApiToken.user == user.id).order_by(ApiToken.id, ascending=False)


async def create_token(user: User, name: str) -> tuple[ApiToken, str]:
    """Create a token; the plaintext is returned once and never stored."""
    name = name.strip()
    if not 1 <= len(name) <= 64:
        raise InvalidInput("Give the token a name of 1–64 characters.", {"name": "Give the token a name of 1–64 characters."})
    plaintext = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken(
        user=user.id,
        name=name,
        prefix=plaintext[: len(TOKEN_PREFIX) + 6],
        token_hash=hash_token(plaintext),
        created_at=datetime.now(UTC),
    )
    await token.save()
    return token, plaintext


async def revoke_token(user: User, token_id: int) -> str:
    """Delete one of the user's tokens; returns its hash, which names it to the sockets it opened."""
    if not 0 < token_id < 2**63:  # beyond the id column's range the drivers raise, not miss
        raise NotFound("No such token.")
    deleted = await ApiToken.delete().where(ApiToken.id == token_id, ApiToken.user == user.id).returning(
        ApiToken.token_hash
    )
    if not deleted:
        raise NotFound("No such token.")
    return deleted[0]["token_hash"]


def _whole_number(raw: str, low: int, high: int, field: str, errors: dict[str, str], message: str) -> int:
    raw = raw.strip()
    if raw.isascii() and raw.isdigit() and len(raw) <= 7 and low <= int(raw) <= high:
        return int(raw)
    errors[field] = message
    return low


async def update_sharing(user: User, share: bool, download_mb: str, max_jobs: str) -> User:
    """Save whether `user` shares their devices with their rooms, and within which limits. The
    limits come as the form sent them; InvalidInput names each field out of range."""
    errors: dict[str, str] = {}
    mb = _whole_number(download_mb, 0, SHARE_DOWNLOAD_MB_MAX, "share_download_mb", errors,
                       f"Give a whole number of MB from 0 (only models already loaded) to {SHARE_DOWNLOAD_MB_MAX}.")
    low, high = SHARE_MAX_JOBS
    jobs = _whole_number(max_jobs, low, high, "share_max_jobs", errors, f"Give a whole number of jobs from {low} to {high}.")
    if errors:
        raise InvalidInput("Please correct the highlighted fields.", errors)
    await User.update(
        {User.share_device: share, User.share_download_mb: mb, User.share_max_jobs: jobs}
    ).where(User.id == user.id)
    user.share_device, user.share_download_mb, user.share_max_jobs = share, mb, jobs
    return user


async def change_password(user: User, new_password: str, confirm: str) -> None:
    """Store a new password (the caller has checked the current one)."""
    errors = {"new_password": problem} if (problem := password_problem(new_password)) else {}
    if new_password != confirm:
        errors["confirm_password"] = "The passwords do not match."
    if errors:
        raise InvalidInput("Please correct the highlighted fields.", errors)
    password_hash = await hash_password(new_password)
    await User.update({User.password_hash: password_hash}).where(User.id == user.id)


async def delete_account(user: User) -> list[str]:
    """Delete the user with their tokens, memberships, peers and jobs (the tables cascade).

    Rooms they own: a private room with other members passes to the one who joined first; one
    without is deleted with its jobs; a public room stays, ownerless, like the global room.
    Returns the hashes of their API tokens, which name the sockets those opened.
    """
    async with User._meta.db.transaction():
        owned = await Room.select(Room.id).where(Room.owner == user.id, Room.is_private == True)
        for room in owned:
            heir = await RoomMember.select(RoomMember.user).where(
                RoomMember.room == room["id"], RoomMember.user != user.id
            ).order_by(RoomMember.joined_at).order_by(RoomMember.id).first()
            if heir is None:
                await Room.delete().where(Room.id == room["id"])
            else:
                await Room.update({Room.owner: heir["user"]}).where(Room.id == room["id"])
        tokens = await ApiToken.select(ApiToken.token_hash).where(ApiToken.user == user.id)
        await User.delete().where(User.id == user.id)  # public rooms: the foreign key unsets the owner
    return [row["token_hash"] for row in tokens]
