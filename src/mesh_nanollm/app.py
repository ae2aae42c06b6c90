"""The app factory: Litestar with its routes, sessions, CSRF, templates and error pages."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import quote, urlsplit

import asyncpg
import socketio
from jinja2 import pass_context
from jinja2.utils import htmlsafe_json_dumps
from litestar import Litestar, Request, Response, Router
from litestar.config.csrf import CSRFConfig
from litestar.datastructures import CacheControlHeader, State
from litestar.di import Provide
from litestar.exceptions import (
    HTTPException,
    MethodNotAllowedException,
    NotFoundException,
    ValidationException,
)
from litestar.middleware import DefineMiddleware
from litestar.plugins.htmx import HTMXPlugin
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.response import Redirect, Template
from litestar.static_files import create_static_files_router
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR
from litestar.template.config import TemplateConfig
from litestar.types import Message, Receive, Scope, Send
from markupsafe import Markup

from mesh_nanollm import db
from mesh_nanollm.accounts.account import AccountSettings
from mesh_nanollm.accounts.routes import AccountController, SettingsController
from mesh_nanollm.catalogue import load_catalogue
from mesh_nanollm.conversations.routes import ConversationApi, ConversationPages
from mesh_nanollm.errors import ServiceError
from mesh_nanollm.gateway.dispatch import Gateway
from mesh_nanollm.gateway.routes import GatewayApi, answer_error
from mesh_nanollm.jobs.params import job_limits
from mesh_nanollm.jobs.routes import JobApi, JobPages
from mesh_nanollm.jobs.service import abandon_stale_jobs
from mesh_nanollm.modules import module_preloads
from mesh_nanollm.openapi import (
    API_REFERENCE_URL,
    SCHEMA_PATH,
    ClosedStructSchemaPlugin,
    ErrorBody,
    openapi_config,
)
from mesh_nanollm.peers.panel import PeersPanel
from mesh_nanollm.realtime.server import create_realtime
from mesh_nanollm.request import MeshRequest
from mesh_nanollm.rooms.manage import RoomSettingsPages
from mesh_nanollm.rooms.routes import RoomApi, RoomPages
from mesh_nanollm.security import BearerAwareCSRFMiddleware, limit_password_hashing
from mesh_nanollm.sessions import DatabaseStore, QuietSessionConfig
from mesh_nanollm.settings import PROJECT_ROOT, Settings, load_settings
from mesh_nanollm.static import answer_not_modified, static_files_router
from mesh_nanollm.stats.routes import StatsApi, StatsPages
from mesh_nanollm.system import health, home, models
from mesh_nanollm.throttle import Throttles, delete_expired
from mesh_nanollm.vendor import load_vendor_manifest, vendor_router

log = logging.getLogger("mesh_nanollm")

STATIC_DIR = PROJECT_ROOT / "static"
SESSION_COOKIE = "mesh_session"
# Files belong to no one's session: a room page revalidates 33 of them on every visit, and
# the session middleware read a signed-in user's session from the database for each one.
FILE_PATHS = [r"^/static/", r"^/models/"]
# The room's OpenAI-compatible routes: their errors take OpenAI's shape, even where no route of
# theirs answered (a wrong method, an address they do not have).
OPENAI_PATHS = re.compile(r"^/api/rooms/[^/]+/v1(/|$)")
TEMPLATES_DIR = PROJECT_ROOT / "templates"
MAX_BODY_BYTES = 1024 * 1024
SWEEP_EVERY_S = 60
TITLES = {
    400: "Bad request",
    401: "Sign in required",
    403: "Not allowed",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Too large",
    422: "Invalid input",
    429: "Too many requests",
    500: "Server error",
    503: "Unavailable",
}


def wants_json(request: Request) -> bool:
    if request.url.path.startswith(("/api/", "/schema")):
        return True
    accept = request.headers.get("accept", "")
    return "application/json" in accept and "text/html" not in accept


def describe(exc: Exception) -> tuple[int, str]:
    """The status code and a message a person can act on, never a traceback."""
    if isinstance(exc, ServiceError):
        return exc.status_code, exc.detail
    if isinstance(exc, ValidationException):
        problems = [
            f"{item.get('key') or item.get('source') or 'body'}: {item.get('message')}"
            for item in (exc.extra if isinstance(exc.extra, list) else [])
            if isinstance(item, dict)
        ]
        detail = "; ".join(problems) if problems else str(exc.detail)
        return 400, f"The request is not valid — {detail}"
    if isinstance(exc, NotFoundException) and exc.detail == "Not Found":  # the router's own
        return 404, "There is nothing at this address. Check the link, or start from your rooms."
    if isinstance(exc, HTTPException):
        return exc.status_code, str(exc.detail)
    if isinstance(exc, asyncpg.DataError):
        # Input Postgres cannot hold (a NUL character, say) that SQLite would have taken.
        return 400, f"The request contains a value that cannot be stored: {exc}."
    return HTTP_500_INTERNAL_SERVER_ERROR, "Something went wrong on our side. Please try again."


def handle_error(request: Request, exc: Exception) -> Response:
    if OPENAI_PATHS.match(request.url.path):
        # No route of theirs answered: worded as OpenAI's own API words it.
        where = f"{request.method} {request.url.path[:200]}"
        if isinstance(exc, MethodNotAllowedException):
            exc = MethodNotAllowedException(f"Invalid method for URL ({where}).", headers=exc.headers)
        elif isinstance(exc, NotFoundException) and exc.detail == "Not Found":
            exc = NotFoundException(f"Invalid URL ({where}).")
        response = answer_error(request, exc)
        response.headers.update(getattr(exc, "headers", None) or {})  # a 405's Allow
        return response
    status, detail = describe(exc)
    if status >= 500:
        log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    headers = getattr(exc, "headers", None) or {}
    if wants_json(request):
        fields = exc.fields if isinstance(exc, ServiceError) else {}
        body = ErrorBody(error=TITLES.get(status, "Error"), detail=detail, fields=fields)
        return security_headers(Response(body, status_code=status, headers=headers))
    if getattr(request, "htmx", False):  # part of a page, not a page (request.PageDetails)
        context: dict[str, Any] = {"detail": detail}
        if status == 401:
            # Signed out meanwhile (another tab): said in place, with a way back to this page. The
            # tab is not taken away: it may be running a prompt, which would end with it.
            page = urlsplit(request.headers.get("hx-current-url", ""))
            target = quote((page.path or "/") + (f"?{page.query}" if page.query else ""))
            context = {"detail": "You are signed out.", "sign_in": f"/login?next={target}"}
        return security_headers(Template("_error.html", context=context, status_code=status, headers=headers))
    if status == 401:
        target = quote(request.url.path + (f"?{request.url.query}" if request.url.query else ""))
        return Redirect(f"/login?next={target}", status_code=303)
    context = {"status": status, "title": TITLES.get(status, "Error"), "detail": detail,
               "user": request.scope.get("mesh.user")}
    # Error responses skip the after_request hooks: the error page needs the same headers as the rest.
    return security_headers(ErrorPage("error.html", context=context, status_code=status, headers=headers))


class ErrorPage(Template):
    """error.html, greeting a signed-in person as every other page does. No route answers an
    unknown address, so no route read the session, and its header would offer "Sign in" to
    someone signed in: the session's user is looked up here instead."""

    def to_asgi_response(self, app: Litestar | None, request: Request, **kwargs: Any) -> Any:
        render = super().to_asgi_response

        async def respond(scope: Scope, receive: Receive, send: Send) -> None:
            if self.context.get("user") is None and (key := request.cookies.get(SESSION_COOKIE)):
                try:
                    _, self.context["user"] = await request.app.state.session_store.get_with_user(key)
                except Exception:  # a database that is down still gets its error page, as a stranger's
                    log.warning("error page: could not read the session", exc_info=True)
            await render(app, request, **kwargs)(scope, receive, send)

        return respond


async def sweep(app: Litestar) -> None:
    """Housekeeping on a timer: abandoned jobs, expired sessions and throttle counts."""
    settings: Settings = app.state.settings
    while True:
        try:
            if abandoned := await abandon_stale_jobs(settings.abandon_after_s):
                log.info("marked %d jobs abandoned", abandoned)
            await app.state.session_store.delete_expired()
            await delete_expired(app.state.throttle.longest_window_s)
        except Exception:  # the sweep must outlive a database hiccup
            log.exception("sweep failed")
        await asyncio.sleep(SWEEP_EVERY_S)


@contextlib.asynccontextmanager
async def lifespan(app: Litestar) -> AsyncIterator[None]:
    engine = app.state.engine
    await db.open_pool(engine, app.state.settings.db_pool_size)
    sweeper = asyncio.create_task(sweep(app))
    try:
        yield
    finally:
        sweeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sweeper
        await db.close_pool(engine)


# Where transformers.js downloads the catalogue's hub models: the hub, then the storage hosts it
# redirects to (cdn-lfs*.hf.co, cas-bridge.xethub.hf.co, *.cdn.hf.co, cdn-lfs.huggingface.co; the
# hub lists them at huggingface.co/.well-known/meta.json). Self-hosted /models/ is this origin.
HUB_SOURCES = ("https://huggingface.co", "https://*.huggingface.co", "https://hf.co", "https://*.hf.co")
CSP_DIRECTIVES = {
    "default-src": ("'self'",),
    # No inline script anywhere: pages load modules from /static/, and ONNX Runtime may compile its
    # WebAssembly ('wasm-unsafe-eval') without the page being allowed eval().
    "script-src": ("'self'", "'wasm-unsafe-eval'"),
    "worker-src": ("'self'",),
    # 'self' also covers the Socket.IO websocket (ws:/wss: to this host).
    "connect-src": ("'self'", *HUB_SOURCES),
    # htmx 4's indicator rules are a constructed stylesheet, which style-src does not govern; its
    # settle step, which sets style attributes, is off (base.html's htmx-config).
    "style-src": ("'self'",),
    "img-src": ("'self'",),
    "object-src": ("'none'",),
    "base-uri": ("'self'",),
    "form-action": ("'self'",),
    "frame-ancestors": ("'none'",),
}
# A worker runs under the policy of its own script's response. With env.useWasmCache on (the
# inference worker turns it off, docs/benchmarks.md), transformers.js imports ONNX Runtime's factory
# from a blob: URL it makes from our copy, and ORT starts its thread workers from that module's URL.
WORKER_CSP_DIRECTIVES = CSP_DIRECTIVES | {
    "script-src": (*CSP_DIRECTIVES["script-src"], "blob:"),
    "worker-src": (*CSP_DIRECTIVES["worker-src"], "blob:"),
}


def render_policy(directives: dict[str, tuple[str, ...]]) -> str:
    return "; ".join(" ".join((name, *sources)) for name, sources in directives.items())


# Swagger UI's stylesheet draws its icons (select arrows, locks, copy buttons) as data: SVG images.
# An image runs no code, so the API reference under /schema may show them; nothing else changes.
API_DOCS_CSP_DIRECTIVES = CSP_DIRECTIVES | {"img-src": (*CSP_DIRECTIVES["img-src"], "data:")}
CONTENT_SECURITY_POLICY = render_policy(CSP_DIRECTIVES)
WORKER_CONTENT_SECURITY_POLICY = render_policy(WORKER_CSP_DIRECTIVES)
API_DOCS_CONTENT_SECURITY_POLICY = render_policy(API_DOCS_CSP_DIRECTIVES)


def security_headers(response: Response) -> Response:
    response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    response.headers.setdefault("X-Frame-Options", "DENY")
    if isinstance(response, Template) or str(getattr(response, "media_type", "")).startswith("text/html"):
        # Cross-origin isolation lets ONNX Runtime use WASM threads; `credentialless` keeps downloads
        # from the model hub working without CORP headers on its side. Every page, not only the
        # room's: links swap pages inside one document (hx-boost), which keeps the isolation of the
        # page it was loaded as, so a tab that came in through the history is isolated too.
        response.headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
        response.headers.setdefault("Cross-Origin-Embedder-Policy", "credentialless")
    return response


async def list_every_allowed_method(message: Message, scope: Scope) -> None:
    """Litestar's automatic answer to OPTIONS lists only the methods of a path registered before it
    was made (a controller registers its handlers one at a time): make `Allow` name them all."""
    if message["type"] != "http.response.start" or scope.get("method") != "OPTIONS" or message["status"] != 204:
        return
    template = scope.get("path_template")
    methods = next((route.methods for route in scope["app"].routes if route.path_format == template), None)
    if methods:
        headers = [(name, value) for name, value in message.get("headers", []) if name.lower() != b"allow"]
        message["headers"] = [*headers, (b"allow", ", ".join(sorted(methods)).encode())]


async def keep_the_address(message: Message, scope: Scope) -> None:
    """A boosted form answered with a page of its own (its errors, say) rather than a redirect:
    htmx would show the form's action in the address bar, where a reload asks for a POST-only
    address. The address stays the page's that holds the form."""
    if message["type"] != "http.response.start" or scope.get("method") in ("GET", "HEAD"):
        return
    if 300 <= message["status"] < 400 or (b"hx-boosted", b"true") not in scope.get("headers", []):
        return
    headers = message.get("headers", [])
    if not any(name.lower() in (b"hx-location", b"hx-redirect") for name, _ in headers):  # going elsewhere
        message["headers"] = [*headers, (b"hx-push-url", b"false")]


# The after-request hooks are coroutines: Litestar runs a plain function hook in a worker thread,
# a hand-off that cost more than the hook itself on every response.
async def page_headers(response: Response) -> Response:
    return security_headers(response)


async def api_docs_headers(response: Response) -> Response:
    response.headers.setdefault("Content-Security-Policy", API_DOCS_CONTENT_SECURITY_POLICY)
    return security_headers(response)


# The app's own files. Stable names (no bundler): revalidated every time, so a page never mixes
# modules of two deploys. A worker script must declare COEP itself, or a cross-origin-isolated page
# may not start it; of these files only worker scripts run under their own policy, pages keep theirs.
STATIC_HEADERS = {
    "Cache-Control": "no-cache",
    "Cross-Origin-Embedder-Policy": "credentialless",
    "Content-Security-Policy": WORKER_CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}


def remembered_url_for() -> Any:
    """Templates' `url_for`, answering each route and parameters once per app: a page calls it a
    dozen times, and each reverse lookup walks the routes."""

    @pass_context
    def url_for(context: Mapping[str, Any], route_name: str, /, **parameters: Any) -> str:
        key = (route_name, *sorted(parameters.items()))
        path = paths.get(key)
        if path is None:
            if len(paths) >= 4096:  # room slugs and file names are unbounded; the paths a page uses are few
                paths.clear()
            path = paths[key] = context["request"].app.route_reverse(route_name, **parameters)
        return path

    paths: dict[tuple[Any, ...], str] = {}
    return url_for


def create_app(settings: Settings | None = None) -> Litestar:
    settings = settings or load_settings()
    engine = db.bind(settings.database_url)
    catalogue = load_catalogue(settings.catalogue_path, settings.models_dir)
    vendor = load_vendor_manifest(STATIC_DIR)
    session_store = DatabaseStore()
    throttle = Throttles(settings)
    limit_password_hashing(settings.password_hash_workers)
    realtime = create_realtime(settings)
    gateway = Gateway(realtime.jobs, realtime.presence, settings, across_instances=bool(settings.redis_url))
    peers_panel = PeersPanel()

    def register_globals(templates: JinjaTemplateEngine) -> None:
        # Checking every template file for changes costs a stat per template on each render;
        # only development edits them while the server runs.
        templates.engine.auto_reload = not settings.production
        templates.engine.globals["url_for"] = remembered_url_for()
        templates.engine.globals["vendor_url"] = vendor.url
        templates.engine.globals["production"] = settings.production
        templates.engine.globals["job_limits"] = limits = job_limits()
        # The head's two JSON blobs are the same on every page while the app runs: encoded once.
        templates.engine.globals["job_limits_json"] = htmlsafe_json_dumps(limits)
        runtime = {
            "transformers": vendor.url("transformers"),
            "webgpu": {"mjs": vendor.url("ort_webgpu_mjs"), "wasm": vendor.url("ort_webgpu_wasm")},
            "wasm": {"mjs": vendor.url("ort_wasm_mjs"), "wasm": vendor.url("ort_wasm_wasm")},
        }
        templates.engine.globals["inference_config_json"] = htmlsafe_json_dumps(
            {"runtime": runtime, "local_model_path": "/models/"}
        )
        templates.engine.globals["api_reference_url"] = API_REFERENCE_URL
        templates.engine.globals["module_preloads"] = module_preloads(STATIC_DIR)
        # The catalogue is fixed while the app runs: its four dozen escaped attributes, once.
        templates.engine.globals["model_options"] = Markup(  # the template escapes what it shows
            templates.engine.get_template("_model_options.html").render(models=catalogue.entries)
        )

    csrf = CSRFConfig(
        secret=settings.secret_key,
        cookie_secure=settings.production,
        cookie_samesite="lax",
        # Socket.IO authenticates its own handshake; the schema is read-only. The OpenAI-compatible
        # routes take Bearer tokens only, which browsers never attach on their own.
        exclude=["/socket.io", OPENAI_PATHS.pattern, *FILE_PATHS],
    )
    state = State(
        {
            "settings": settings,
            "engine": engine,
            "catalogue": catalogue,
            "throttle": throttle,
            "session_store": session_store,
            "realtime": realtime,
            "gateway": gateway,
            "peers_panel": peers_panel,
        }
    )
    route_handlers: list[Any] = [
        home,
        health,
        models,
        AccountController,
        SettingsController,
        AccountSettings,
        RoomPages,
        RoomSettingsPages,
        RoomApi,
        StatsPages,
        StatsApi,
        JobPages,
        JobApi,
        ConversationPages,
        ConversationApi,
        GatewayApi,
        vendor_router(STATIC_DIR),
        static_files_router("/static", STATIC_DIR, "static", STATIC_HEADERS),
    ]
    if settings.models_dir.is_dir():
        route_handlers.append(
            create_static_files_router(
                path="/models",
                directories=[settings.models_dir],
                name="models",
                # Unversioned names: cache for an hour, then revalidate, so a rebuilt model shows
                # up soon. transformers.js keeps its own copy in Cache Storage anyway.
                cache_control=CacheControlHeader(public=True, max_age=3600),
                middleware=[answer_not_modified],
            )
        )
    return Litestar(
        route_handlers=route_handlers,
        state=state,
        dependencies={
            "settings": Provide(lambda: settings, sync_to_thread=False),
            "catalogue": Provide(lambda: catalogue, sync_to_thread=False),
            "throttle": Provide(lambda: throttle, sync_to_thread=False),
            "gateway": Provide(lambda: gateway, sync_to_thread=False),
        },
        middleware=[
            db.share_connection,
            QuietSessionConfig(
                store="sessions",
                key=SESSION_COOKIE,
                secure=settings.production,
                httponly=True,
                samesite="lax",
                max_age=14 * 24 * 3600,
                exclude=FILE_PATHS,
            ).middleware,
            DefineMiddleware(BearerAwareCSRFMiddleware, config=csrf),
        ],
        stores={"sessions": session_store},
        plugins=[HTMXPlugin(), ClosedStructSchemaPlugin()],
        request_class=MeshRequest,
        template_config=TemplateConfig(
            directory=TEMPLATES_DIR, engine=JinjaTemplateEngine, engine_callback=register_globals
        ),
        openapi_config=openapi_config(
            Router(path=SCHEMA_PATH, route_handlers=[], include_in_schema=False, after_request=api_docs_headers)
        ),
        exception_handlers={Exception: handle_error},
        after_request=page_headers,
        before_send=[list_every_allowed_method, keep_the_address],
        request_max_body_size=MAX_BODY_BYTES,
        lifespan=[lifespan, realtime.lifespan],
    )


def create_asgi() -> Any:
    """What Granian serves: Socket.IO in front, everything else (lifespan included) to Litestar."""
    app = create_app()
    # No on_startup/on_shutdown here: with either, ASGIApp stops passing lifespan to Litestar.
    return socketio.ASGIApp(app.state.realtime.sio, other_asgi_app=app, socketio_path="socket.io")
