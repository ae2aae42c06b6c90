"""The ICE servers a peer gets on join and on `refresh_ice`: the configured list plus short-lived
TURN credentials."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

from mesh_nanollm.settings import Settings


def turn_credentials(secret: str, user_id: int, ttl_s: int, now: float | None = None) -> tuple[str, str]:
    """coturn's REST shared-secret scheme (`use-auth-secret`): the username carries its expiry,
    the password is base64(HMAC-SHA1(secret, username)), so TURN needs no call back to us."""
    expires = int(now if now is not None else time.time()) + ttl_s
    username = f"{expires}:{user_id}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode()


def ice_ttl_for(settings: Settings) -> int | None:
    """How long the credentials `ice_servers_for` makes stay valid; None without TURN (STUN
    servers need none). Pages ask for new ones (`refresh_ice`) before then."""
    return settings.turn_ttl_s if settings.turn_urls and settings.turn_secret else None


def ice_servers_for(settings: Settings, user_id: int) -> list[dict[str, object]]:
    servers = list(settings.ice_servers)
    if settings.turn_urls and settings.turn_secret:
        username, credential = turn_credentials(settings.turn_secret, user_id, settings.turn_ttl_s)
        servers.append({"urls": list(settings.turn_urls), "username": username, "credential": credential})
    return servers
