"""Sign-in and sign-up throttles, counted in the database so every instance shares them.

The rule (docs/deploy.md, "Throttling"): a browser that has signed in as someone carries a device
cookie for them, and its failures count against that device alone. Any other attempt counts
against its (username, address) pair, the username and the address. So an attacker locks out
only their own address, or, after many addresses, new browsers of one user: never a browser
its owner has signed in with before.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from mesh_nanollm.settings import Settings
from mesh_nanollm.tables import ThrottleHit


class Throttled(Exception):
    def __init__(self, retry_after: int) -> None:
        super().__init__(f"throttled for {retry_after} s")
        self.retry_after = retry_after


@dataclass(frozen=True)
class Bucket:
    """A limit of `limit` attempts per `window_s` seconds on whatever `name` describes."""

    name: str
    limit: int
    window_s: int

    @property
    def key(self) -> str:
        return hashlib.sha256(self.name.encode()).hexdigest()


@dataclass(frozen=True)
class Attempt:
    """An attempt's rows: counted from the start, so parallel tries cannot slip past a limit."""

    ids: list[int]

    async def withdraw(self) -> None:
        """The attempt did not count after all (it succeeded, or never reached the password)."""
        await ThrottleHit.delete().where(ThrottleHit.id.is_in(self.ids))


async def begin(buckets: list[Bucket]) -> Attempt:
    """Count an attempt in every bucket; raise Throttled (and count nothing) if one is full."""
    now = datetime.now(UTC)
    rows = await ThrottleHit.insert(*(ThrottleHit(bucket=bucket.key, at=now) for bucket in buckets)).returning(
        ThrottleHit.id
    )
    attempt = Attempt([row["id"] for row in rows])
    wait = 0
    for bucket in buckets:
        window = timedelta(seconds=bucket.window_s)
        # Only the attempts counted before this one: of N parallel tries, the first `limit` pass.
        stamps = (
            await ThrottleHit.select(ThrottleHit.at)
            .where(
                ThrottleHit.bucket == bucket.key,
                ThrottleHit.at > now - window,
                ThrottleHit.id <= max(attempt.ids),
            )
            .output(as_list=True)
        )
        if len(stamps) > bucket.limit:
            # With this attempt taken back, one more fits once all but limit - 1 others have aged out.
            frees_at = sorted(stamps)[len(stamps) - bucket.limit - 1] + window
            wait = max(wait, math.ceil((frees_at - now).total_seconds()), 1)
    if wait:
        await attempt.withdraw()
        raise Throttled(wait)
    return attempt


async def forget(bucket: Bucket) -> None:
    await ThrottleHit.delete().where(ThrottleHit.bucket == bucket.key)


async def delete_expired(older_than_s: int) -> int:
    cutoff = datetime.now(UTC) - timedelta(seconds=older_than_s)
    return len(await ThrottleHit.delete().where(ThrottleHit.at <= cutoff).returning(ThrottleHit.id))


class Throttles:
    """The app's sign-in and sign-up limits, from its settings."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._key = hashlib.sha256(b"device cookie|" + settings.secret_key.encode()).digest()

    @property
    def longest_window_s(self) -> int:
        return max(self.settings.login_window_s, self.settings.register_window_s)

    def _signature(self, username: str, nonce: str) -> str:
        return hmac.new(self._key, f"{username.lower()}|{nonce}".encode(), hashlib.sha256).hexdigest()[:32]

    def device_cookie(self, username: str) -> str:
        """The value of the cookie that marks this browser as one `username` has signed in with."""
        nonce = secrets.token_urlsafe(16)
        return f"{nonce}.{self._signature(username, nonce)}"

    def device(self, cookie: str | None, username: str) -> str | None:
        """The device's id if `cookie` was issued to a browser `username` signed in with."""
        nonce, _, signature = (cookie or "").partition(".")
        if nonce and hmac.compare_digest(signature, self._signature(username, nonce)):
            return nonce
        return None

    def _client(self, username: str, address: str, device: str | None) -> Bucket:
        s = self.settings
        name = f"login-device|{device}" if device else f"login-pair|{username.lower()}|{address}"
        return Bucket(name, s.login_client_limit, s.login_window_s)

    async def begin_login(self, username: str, address: str, device: str | None) -> Attempt:
        s = self.settings
        buckets = [self._client(username, address, device)]
        if device is None:
            buckets += [
                Bucket(f"login-username|{username.lower()}", s.login_username_limit, s.login_window_s),
                Bucket(f"login-address|{address}", s.login_address_limit, s.login_window_s),
            ]
        return await begin(buckets)

    async def signed_in(self, attempt: Attempt, username: str, address: str, device: str | None) -> None:
        """A success: it and this client's earlier failures no longer count."""
        await attempt.withdraw()
        await forget(self._client(username, address, device))

    async def begin_signup(self, address: str) -> Attempt:
        s = self.settings
        return await begin([Bucket(f"signup|{address}", s.register_limit, s.register_window_s)])
