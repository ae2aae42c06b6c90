"""304 answers to conditional requests for our own static files and self-hosted models.

Litestar's file responses carry an ETag but never answer `If-None-Match`. The app's ES modules and
CSS keep stable names (no bundler) and are served `no-cache`, so a browser revalidates each on
every page: with this middleware that costs a few empty responses, not the files again.
"""

from __future__ import annotations

from litestar.datastructures import Headers, MutableScopeHeaders
from litestar.types import ASGIApp, Message, Receive, Scope, Send

# Headers a 304 keeps; the body's own (length, type, encoding) describe a body it does not have.
_KEPT_ON_304 = {b"cache-control", b"etag", b"last-modified", b"vary", b"date", b"expires", b"content-location"}


def _matches(if_none_match: str, etag: str) -> bool:
    """RFC 9110's weak comparison of an ETag against an If-None-Match list."""
    if if_none_match.strip() == "*":
        return True
    tag = etag.removeprefix("W/")
    return any(candidate.strip().removeprefix("W/") == tag for candidate in if_none_match.split(","))


def answer_not_modified(app: ASGIApp) -> ASGIApp:
    """ASGI middleware: a GET or HEAD whose If-None-Match matches the response's ETag gets a 304."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("GET", "HEAD"):
            await app(scope, receive, send)
            return
        if_none_match = Headers.from_scope(scope).get("if-none-match")
        if not if_none_match:
            await app(scope, receive, send)
            return
        answered = False

        async def send_or_304(message: Message) -> None:
            nonlocal answered
            if answered:
                return  # the file's body, which the 304 already stands for
            if message["type"] == "http.response.start" and message["status"] == 200:
                etag = MutableScopeHeaders.from_message(message).get("etag")
                if etag and _matches(if_none_match, etag):
                    answered = True
                    headers = [(k, v) for k, v in message.get("headers", []) if k.lower() in _KEPT_ON_304]
                    await send({"type": "http.response.start", "status": 304, "headers": headers})
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
                    return
            await send(message)

        await app(scope, receive, send_or_304)

    return middleware
