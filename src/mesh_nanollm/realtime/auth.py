"""Who opens a socket: the same session cookie or Bearer token the HTTP side accepts."""

from __future__ import annotations

from typing import Any

import msgspec

from mesh_nanollm.security import (
    SESSION_USER_KEY,
    bearer_token,
    hash_token,
    user_for_session,
    user_for_token,
)
from mesh_nanollm.sessions import DatabaseStore
from mesh_nanollm.tables import User

SESSION_COOKIE = "mesh_session"
_store = DatabaseStore()


def _cookie(header: str, name: str) -> str | None:
    for part in header.split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value.strip('"')
    return None


async def authenticate_socket(environ: dict[str, Any], auth: object) -> tuple[User, str] | None:
    """The user behind a Socket.IO handshake and the credential it used, or None.

    Browsers send the session cookie; scripts send `Authorization: Bearer …`, or `auth={"token": …}`
    where their websocket library cannot set headers. The credential is the SHA-256 of the token or
    session id (the token's is its stored `token_hash`): what revoking it names.
    """
    # engine.io already copied the handshake's headers into `environ`; reading them there keeps
    # no parsed copies alive on the long-lived ASGI scope.
    token = bearer_token({"authorization": environ.get("HTTP_AUTHORIZATION", "")})
    if token is None and isinstance(auth, dict) and isinstance(auth.get("token"), str):
        token = auth["token"]
    if token is not None:
        user = await user_for_token(token) if 0 < len(token) <= 200 else None
        return (user, hash_token(token)) if user is not None else None
    session_id = _cookie(environ.get("HTTP_COOKIE", ""), SESSION_COOKIE)
    if not session_id or len(session_id) > 64:
        return None
    raw, user = await _store.get_with_user(session_id)
    if raw is None:
        return None
    try:
        session = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return None
    if not isinstance(session, dict):
        return None
    if user is None or user.id != session.get(SESSION_USER_KEY):
        user = await user_for_session(session)  # a session stored before it named its user
    return (user, hash_token(session_id)) if user is not None else None
