"""Browser sessions stored in the database, so every instance can read them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from litestar.connection import ASGIConnection
from litestar.middleware.session.server_side import (
    ServerSideSessionBackend,
    ServerSideSessionConfig,
)
from litestar.stores.base import Store
from litestar.types import Empty, Message, ScopeSession

from mesh_nanollm.db import as_objects, raw
from mesh_nanollm.security import SESSION_USER_KEY, remember_session_user
from mesh_nanollm.tables import User, WebSession

_LOADED = "mesh.session_loaded"
_LOADED_USER = "mesh.session_user"
_NEW_ID = "mesh.session_new_id"

# A session and its user in one statement: every signed-in page asks for both. Raw SQL, written
# once, because Piccolo spends longer building a statement from query objects than Postgres
# takes to answer this one.
_SESSION_AND_USER = (
    'SELECT web_session.data AS "session:data", web_session.expires_at AS "session:expires_at", app_user.*'
    ' FROM web_session LEFT JOIN app_user ON app_user.id = web_session."user"'
    " WHERE web_session.key = {}"
)


def _now() -> datetime:
    return datetime.now(UTC)


class DatabaseStore(Store):
    """A Litestar store over the `WebSession` table."""

    async def set(self, key: str, value: str | bytes, expires_in: int | timedelta | None = None) -> None:
        data = value.encode() if isinstance(value, str) else value
        if isinstance(expires_in, int):
            expires_in = timedelta(seconds=expires_in)
        expires_at = _now() + expires_in if expires_in else None
        user = _user_id(data)
        updated = await WebSession.update(
            {WebSession.data: data, WebSession.expires_at: expires_at, WebSession.user: user}
        ).where(WebSession.key == key).returning(WebSession.id)
        if not updated:
            await WebSession.insert(WebSession(key=key, data=data, expires_at=expires_at, user=user))

    async def get(self, key: str, renew_for: int | timedelta | None = None) -> bytes | None:
        data, _ = await self.get_with_user(key)
        return data

    async def get_with_user(self, key: str) -> tuple[bytes | None, User | None]:
        """The session's data and the user it names (None for an anonymous or a missing session)."""
        rows = await raw(WebSession, _SESSION_AND_USER, key)
        if not rows:
            return None, None
        row = rows[0]
        expires_at = row["session:expires_at"]
        if expires_at is not None and expires_at <= _now():
            await self.delete(key)
            return None, None
        users = as_objects(User, [row]) if row["id"] is not None else [None]
        return bytes(row["session:data"]), users[0]

    async def delete(self, key: str) -> None:
        await WebSession.delete().where(WebSession.key == key)

    async def delete_all(self) -> None:
        await WebSession.delete(force=True)

    async def exists(self, key: str) -> bool:
        return await self.get(key) is not None

    async def expires_in(self, key: str) -> int | None:
        row = await WebSession.select(WebSession.expires_at).where(WebSession.key == key).first()
        if row is None or row["expires_at"] is None:
            return None
        return max(0, int((row["expires_at"] - _now()).total_seconds()))

    async def delete_user_sessions(self, user_id: int, keep: str | None = None) -> list[str]:
        """End every session of `user_id` but `keep`; returns the ids ended. A session names its
        user; one stored before sessions did is read to find out."""
        rows = await WebSession.select(WebSession.key, WebSession.data).where(
            (WebSession.user == user_id) | WebSession.user.is_null()
        )
        ended = [row["key"] for row in rows if row["key"] != keep and _user_id(bytes(row["data"])) == user_id]
        for start in range(0, len(ended), 500):
            await WebSession.delete().where(WebSession.key.is_in(ended[start : start + 500]))
        return ended

    async def delete_expired(self) -> int:
        deleted = await WebSession.delete().where(WebSession.expires_at <= _now()).returning(WebSession.id)
        return len(deleted)


def _user_id(data: bytes) -> int | None:
    try:
        session = msgspec.json.decode(data)
    except msgspec.DecodeError:
        return None
    user_id = session.get(SESSION_USER_KEY) if isinstance(session, dict) else None
    return user_id if isinstance(user_id, int) else None


class QuietSessionBackend(ServerSideSessionBackend):
    """Litestar's server-side backend, minus the writes nobody needs, plus a new id per sign-in.

    The stock backend writes the session (and sets a cookie) on every response, including an empty
    session for every anonymous visitor; this one writes only when the data changed. It also keeps
    the id from the cookie when someone signs in, so an id planted in a victim's browser would be
    signed in with them (session fixation); this one moves a session to a fresh id whenever the
    user it belongs to changes, and forgets the old id.
    """

    async def load_from_connection(self, connection: ASGIConnection) -> dict[str, Any]:
        data: dict[str, Any] = {}
        if session_id := connection.cookies.get(self.config.key):
            store = self.config.get_store_from_app(connection.scope["app"])
            stored, user = await store.get_with_user(session_id)  # type: ignore[attr-defined]
            if stored is not None:
                data = self.deserialize_data(stored)
                remember_session_user(connection, data, user)
        connection.scope[_LOADED] = self.serialize_data(data, connection.scope) if data else None  # type: ignore[literal-required]
        connection.scope[_LOADED_USER] = data.get(SESSION_USER_KEY)  # type: ignore[literal-required]
        return data

    def get_session_id(self, connection: ASGIConnection) -> str:
        return connection.scope.get(_NEW_ID) or super().get_session_id(connection)  # type: ignore[return-value]

    async def store_in_message(
        self, scope_session: ScopeSession, message: Message, connection: ASGIConnection
    ) -> None:
        loaded = connection.scope.get(_LOADED)
        if scope_session is not Empty and not scope_session and loaded is None:
            return
        if scope_session is not Empty and scope_session:
            if self.serialize_data(scope_session, connection.scope) == loaded:
                return
            if scope_session.get(SESSION_USER_KEY) != connection.scope.get(_LOADED_USER):
                old_id = connection.cookies.get(self.config.key)
                if old_id and old_id != "null":
                    await self.delete(old_id, store=self.config.get_store_from_app(connection.scope["app"]))
                connection.scope[_NEW_ID] = self.generate_session_id()  # type: ignore[literal-required]
        await super().store_in_message(scope_session, message, connection)


@dataclass
class QuietSessionConfig(ServerSideSessionConfig):
    _backend_class = QuietSessionBackend  # type: ignore[assignment]

