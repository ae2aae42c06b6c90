"""Serving files: the app's own static files from memory, and 304 answers to conditional requests
for the self-hosted models.

The app's ES modules and CSS keep stable names (no bundler) and are served `no-cache`, so a browser
revalidates each on every page, 33 for the room page. Litestar's file responses stat and
read the file in a worker thread and never answer `If-None-Match`: a revalidation cost as much as
the file. Here each file is read once (again if it changes on disk) with its headers ready, and a
revalidation is a `stat` and an empty 304.
"""

from __future__ import annotations

import hashlib
import mimetypes
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from litestar import Request, Router, route
from litestar.datastructures import Headers, MutableScopeHeaders
from litestar.exceptions import NotFoundException
from litestar.params import FromPath
from litestar.response.base import ASGIResponse
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


@dataclass(frozen=True, slots=True)
class _File:
    stamp: tuple[int, int]  # modification time (ns) and size when read
    body: bytes
    etag: str
    headers: tuple[tuple[str, str], ...]  # of the 200, Content-Type included
    headers_304: tuple[tuple[str, str], ...]


def _media_type(name: str) -> str:
    media = mimetypes.guess_type(name)[0] or "application/octet-stream"
    return f"{media}; charset=utf-8" if media.startswith("text/") else media


def static_files_router(path: str, directory: Path, name: str, headers: Mapping[str, str]) -> Router:
    """GET and HEAD `{path}/{file_path}` for the files under `directory`, each with `headers`, a
    strong ETag of its content and 304 for a matching `If-None-Match`; 404 for anything else."""
    root = directory.resolve()
    common = tuple((key.lower(), value) for key, value in headers.items())
    files: dict[str, _File] = {}

    def load(file_path: str) -> _File:
        parts = PurePosixPath(file_path.lstrip("/")).parts
        if not parts or any(part.startswith(".") for part in parts):  # no "..", no hidden files
            raise NotFoundException()
        target = root.joinpath(*parts)
        try:
            info = target.stat()
        except OSError:
            raise NotFoundException() from None
        if not stat.S_ISREG(info.st_mode):
            raise NotFoundException()
        key = "/".join(parts)  # one entry per file, however its path is spelled
        known = files.get(key)
        if known is not None and known.stamp == (info.st_mtime_ns, info.st_size):
            return known
        body = target.read_bytes()
        etag = f'"{hashlib.blake2b(body, digest_size=12).hexdigest()}"'
        revalidation = (*common, ("etag", etag))
        file = files[key] = _File(
            stamp=(info.st_mtime_ns, info.st_size),
            body=body,
            etag=etag,
            headers=(*revalidation, ("content-type", _media_type(target.name))),
            headers_304=revalidation,
        )
        return file

    @route("/{file_path:path}", http_method=["GET", "HEAD"], name=name, include_in_schema=False)
    async def static_file(request: Request, file_path: FromPath[str]) -> ASGIResponse:
        file = load(file_path)
        if_none_match = request.headers.get("if-none-match")
        if if_none_match and _matches(if_none_match, file.etag):
            return ASGIResponse(status_code=304, headers=file.headers_304, is_head_response=True)
        if request.method == "HEAD":
            length = ("content-length", str(len(file.body)))
            return ASGIResponse(headers=(*file.headers, length), is_head_response=True)
        return ASGIResponse(body=file.body, headers=file.headers)

    return Router(path=path, route_handlers=[static_file])
