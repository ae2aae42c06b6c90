"""Who is asking: passwords, session and Bearer authentication, CSRF, login throttling."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict, deque
from datetime import UTC, datetime
from typing import Any

import bcrypt
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException
from litestar.middleware.csrf import CSRFMiddleware
from litestar.types import Receive, Scope, Send

from mesh_nanollm.tables import ApiToken, User

SESSION_USER_KEY = "user_id"
_SCOPE_USER = "mesh.user"
BCRYPT_ROUNDS = 12  # tests lower it; the stored hash records the cost, so checks follow it
# Compared against when the username is unknown, so a miss costs as much as a hit.
_DUMMY_HASH = bcrypt.hashpw(b"not a password", bcrypt.gensalt(rounds=12))


async def hash_password(password: str) -> str:
    # bcrypt is deliberately slow: keep it off the event loop.
    hashed = await asyncio.to_thread(bcrypt.hashpw, password.encode(), bcrypt.gensalt(rounds=BCRYPT_ROUNDS))
    return hashed.decode()


async def check_password(password: str, password_hash: str | None) -> bool:
    target = password_hash.encode() if password_hash else _DUMMY_HASH
    ok = await asyncio.to_thread(bcrypt.checkpw, password.encode(), target)
    return ok and password_hash is not None


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def bearer_token(headers: Any) -> str | None:
    value = headers.get("authorization", "")
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


async def user_for_token(token: str) -> User | None:
    row = await ApiToken.objects(ApiToken.user).where(ApiToken.token_hash == hash_token(token)).first()
    if row is None:
        return None
    now = time.time()
    last = row.last_used_at.timestamp() if row.last_used_at else 0
    if now - last > 60:  # a write per minute at most, not per request
        await ApiToken.update({ApiToken.last_used_at: datetime.now(UTC)}).where(ApiToken.id == row.id)
    return row.user


async def user_for_session(session: dict[str, Any]) -> User | None:
    user_id = session.get(SESSION_USER_KEY)
    if not isinstance(user_id, int):
        return None
    return await User.objects().where(User.id == user_id).first()


async def authenticate(connection: ASGIConnection) -> User | None:
    """The user behind a request: a Bearer token wins over the session cookie."""
    if _SCOPE_USER in connection.scope:
        return connection.scope[_SCOPE_USER]  # type: ignore[literal-required]
    token = bearer_token(connection.headers)
    if token is not None:
        user = await user_for_token(token)
    else:
        user = await user_for_session(connection.session) if "session" in connection.scope else None
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


class LoginThrottle:
    """Counts failed logins per username and per client address in a sliding window."""

    def __init__(
        self, per_user: int = 5, per_address: int = 20, window_s: float = 300, max_keys: int = 100_000
    ) -> None:
        self.per_user = per_user
        self.per_address = per_address
        self.window_s = window_s
        self.max_keys = max_keys
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def _recent(self, key: str, now: float) -> deque[float]:
        stamps = self._failures.get(key)
        if stamps is None:
            return deque()
        while stamps and stamps[0] <= now - self.window_s:
            stamps.popleft()
        if not stamps:
            del self._failures[key]
        return stamps

    def retry_after(self, username: str, address: str) -> int:
        """Seconds until another attempt is allowed; 0 when it is allowed now."""
        now = time.monotonic()
        waits = []
        for key, limit in ((f"u:{username.lower()}", self.per_user), (f"a:{address}", self.per_address)):
            stamps = self._recent(key, now)
            if len(stamps) >= limit:
                waits.append(int(stamps[0] + self.window_s - now) + 1)
        return max(waits, default=0)

    def record_failure(self, username: str, address: str) -> None:
        now = time.monotonic()
        for key in (f"u:{username.lower()}", f"a:{address}"):
            self._failures.setdefault(key, deque()).append(now)
            self._failures.move_to_end(key)
        while len(self._failures) > self.max_keys:
            self._failures.popitem(last=False)

    def forget(self, username: str) -> None:
        self._failures.pop(f"u:{username.lower()}", None)
