"""Who is asking, and from where: passwords, session and Bearer authentication, CSRF, client address."""

from __future__ import annotations

import asyncio
import hashlib
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import bcrypt
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException
from litestar.middleware.csrf import CSRFMiddleware
from litestar.types import Receive, Scope, Send

from mesh_nanollm.db import as_objects, raw
from mesh_nanollm.tables import ApiToken, User

SESSION_USER_KEY = "user_id"
_SCOPE_USER = "mesh.user"
_SCOPE_SESSION_USER = "mesh.session_user_row"  # the user read along with the session
BCRYPT_ROUNDS = 12  # tests lower it; the stored hash records the cost, so checks follow it
# Compared against when the username is unknown, so a miss costs as much as a hit.
_DUMMY_HASH = bcrypt.hashpw(b"not a password", bcrypt.gensalt(rounds=12))


# bcrypt is deliberately slow (a core for ~0.2 s a hash): it runs off the event loop, on threads of
# its own, at most this many at once. The rest wait in line, so a flood of sign-ups or sign-ins
# leaves the event loop and the default thread pool a core to answer everything else.
_hashing = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bcrypt")


def limit_password_hashing(workers: int) -> None:
    """Run at most `workers` bcrypt hashes at once (PASSWORD_HASH_WORKERS); set by the app factory."""
    global _hashing
    _hashing.shutdown(wait=False)  # hashes already queued still finish
    _hashing = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="bcrypt")


async def _bcrypt(function: Any, *args: bytes) -> Any:
    return await asyncio.get_running_loop().run_in_executor(_hashing, function, *args)


async def hash_password(password: str) -> str:
    hashed = await _bcrypt(bcrypt.hashpw, password.encode(), bcrypt.gensalt(rounds=BCRYPT_ROUNDS))
    return hashed.decode()


async def check_password(password: str, password_hash: str | None) -> bool:
    target = password_hash.encode() if password_hash else _DUMMY_HASH
    ok = await _bcrypt(bcrypt.checkpw, password.encode(), target)
    return ok and password_hash is not None


def client_address(connection: ASGIConnection, trusted_header: str | None) -> str:
    """Where a request comes from, for throttles: the connecting address, or the one a proxy in
    front reports in `trusted_header` (TRUSTED_CLIENT_IP_HEADER). A header is read only when that
    is configured, since any client can send one."""
    if trusted_header:
        # X-Forwarded-For lists every hop; the last one is the one the trusted proxy added.
        reported = connection.headers.get(trusted_header, "").rsplit(",", 1)[-1].strip()
        if reported:
            return reported[:64]
    return connection.client.host if connection.client else "unknown"


# A token and its user in one raw statement: every API request and every socket opened with a
# token runs it, and Piccolo took longer to build the joined query than the database to answer it.
_TOKEN_AND_USER = (
    'SELECT api_token.id AS "token:id", api_token.last_used_at AS "token:last_used_at", app_user.*'
    ' FROM api_token JOIN app_user ON app_user.id = api_token."user" WHERE api_token.token_hash = {}'
)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def bearer_token(headers: Any) -> str | None:
    value = headers.get("authorization", "")
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


async def user_for_token(token: str) -> User | None:
    rows = await raw(ApiToken, _TOKEN_AND_USER, hash_token(token))
    if not rows:
        return None
    row = rows[0]
    last_used_at = row["token:last_used_at"]
    if time.time() - (last_used_at.timestamp() if last_used_at else 0) > 60:  # a write a minute at most
        await ApiToken.update({ApiToken.last_used_at: datetime.now(UTC)}).where(ApiToken.id == row["token:id"])
    return as_objects(User, [row])[0]


async def user_for_session(session: dict[str, Any]) -> User | None:
    user_id = session.get(SESSION_USER_KEY)
    if not isinstance(user_id, int):
        return None
    return await User.objects().where(User.id == user_id).first()


def remember_session_user(connection: ASGIConnection, session: dict[str, Any], user: User | None) -> None:
    """Keep the user the session store read with `session`, so authenticating costs no statement."""
    if user is not None and user.id == session.get(SESSION_USER_KEY):
        connection.scope[_SCOPE_SESSION_USER] = user  # type: ignore[literal-required]


async def authenticate(connection: ASGIConnection) -> User | None:
    """The user behind a request: a Bearer token wins over the session cookie."""
    if _SCOPE_USER in connection.scope:
        return connection.scope[_SCOPE_USER]  # type: ignore[literal-required]
    token = bearer_token(connection.headers)
    if token is not None:
        user = await user_for_token(token)
    else:
        user = connection.scope.get(_SCOPE_SESSION_USER)  # type: ignore[assignment]
        if user is None and "session" in connection.scope:
            user = await user_for_session(connection.session)  # a session stored before it named its user
    connection.scope[_SCOPE_USER] = user  # type: ignore[literal-required]
    return user


async def provide_user(request: ASGIConnection) -> User:
    user = await authenticate(request)
    if user is None:
        raise NotAuthorizedException("Sign in to continue.")
    return user


async def provide_optional_user(request: ASGIConnection) -> User | None:
    return await authenticate(request)


class BearerAwareCSRFMiddleware(CSRFMiddleware):
    """Litestar's CSRF check, skipped for Bearer requests: browsers never attach those on their own."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for name, value in scope["headers"]:
                if name == b"authorization" and value[:7].lower() == b"bearer ":
                    await self.app(scope, receive, send)
                    return
        await super().__call__(scope, receive, send)
