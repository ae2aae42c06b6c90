"""The `mesh-nanollm` command: serve the app (the default), run migrations, or run a worker."""

from __future__ import annotations

import argparse
import asyncio
import errno
import ipaddress
import logging
import socket
import sys
import warnings
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar
from urllib.parse import urlsplit

from mesh_nanollm import db
from mesh_nanollm.settings import Settings, SettingsError, load_settings

T = TypeVar("T")


class CannotStart(Exception):
    """The command cannot do its job; the message says why in one line."""


def _port(raw: str) -> int:
    try:
        port = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {raw!r}") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"must be between 1 and 65535, got {port}")
    return port


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mesh-nanollm",
        description="Mesh NanoLLM: run small language models in browsers and share the work. "
        "Configuration comes from the environment (DATABASE_URL, REDIS_URL, SECRET_KEY, "
        "MODELS_DIR, ...; see the README); the options below override HOST and PORT.",
    )
    sub = parser.add_subparsers(dest="command", metavar="{serve,migrate,worker}")
    serve = sub.add_parser("serve", help="run pending migrations, then serve the app (the default)")
    sub.add_parser("migrate", help="run pending database migrations forwards, then exit")
    worker = sub.add_parser(
        "worker",
        help="serve a room from this machine without a browser (onnxruntime; docs/worker.md)",
        description="Join a room as a headless peer and run its jobs on onnxruntime. Each option "
        "may also come from the environment (WORKER_SERVER, WORKER_TOKEN, ...; see the README).",
    )
    worker.add_argument("--server", help="the app's URL (env WORKER_SERVER; default http://127.0.0.1:8000)")
    worker.add_argument("--token", help="an API token of the account the worker runs as (env WORKER_TOKEN)")
    worker.add_argument("--room", help="slug of the room to serve (env WORKER_ROOM; default global)")
    worker.add_argument("--model", action="append", dest="models", metavar="ID",
                        help="a model to load at start: a folder name in MODELS_DIR or a hub repo id; "
                        "repeat for several (env WORKER_MODELS, comma-separated)")
    worker.add_argument("--device", choices=["cpu", "cuda"],
                        help="where models run: cpu, or cuda with the cuda extra installed (env WORKER_DEVICE)")
    worker.add_argument("--jobs", type=int, help="jobs run at once; more are refused as busy (env WORKER_JOBS; default 1)")
    for p in (parser, serve):
        p.add_argument("--host", help="address to listen on (env HOST; default 127.0.0.1, 0.0.0.0 in production)")
        p.add_argument("--port", type=_port, help="port to listen on (env PORT; default 8000)")
        p.add_argument("--workers", type=int, default=1, help="Granian worker processes (default 1)")
        p.add_argument("--no-migrate", action="store_true", help="serve without running migrations first")
        p.add_argument("--access-log", action="store_true", help="log every request")
    return parser


def _on_database(settings: Settings, work: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run `work` against DATABASE_URL, its usual mistakes (unreachable server, missing database,
    wrong password) turned into one line."""
    # Building a Piccolo engine connects once and only warns when that fails; `work` then raises
    # the real error, so the warning would just say it twice.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        db.bind(settings.database_url)
    try:
        return asyncio.run(work())
    except db.DB_ERRORS as exc:
        raise CannotStart(f"cannot use the database in DATABASE_URL ({exc.__class__.__name__}: {exc})") from exc


def migrate(settings: Settings) -> None:
    _on_database(settings, db.migrate)


def require_current_schema(settings: Settings) -> None:
    """What --no-migrate relies on: the database has run every migration this code ships."""
    if pending := _on_database(settings, db.pending_migrations):
        raise CannotStart(f"the database has pending migrations ({len(pending)} not run); run `mesh-nanollm migrate`")


def require_free_address(host: str, port: int) -> None:
    """Refuse an address another server already listens on.

    Granian listens with SO_REUSEPORT and has no option to leave it off, so a second instance on a
    busy port would start without a word and the kernel would split connections between the two.
    A trial bind without SO_REUSEPORT fails against any listener there. It sets SO_REUSEADDR like
    Granian, so connections a previous run left in TIME_WAIT do not count. A server that starts
    between this check and Granian's own bind still slips through.
    """
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:
        # Granian would fail on a name after the banner, with a traceback.
        raise CannotStart(f"cannot listen on {host}: give an IP address (such as 127.0.0.1), not a name") from None
    try:
        with socket.socket(family, socket.SOCK_STREAM) as trial:
            trial.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            trial.bind((host, port))
    except OSError as exc:
        reason = "another server is listening there" if exc.errno == errno.EADDRINUSE else exc.strerror
        raise CannotStart(f"cannot listen on {host}:{port}: {reason}") from exc


def serve(args: argparse.Namespace, settings: Settings) -> None:
    from granian import Granian
    from granian.constants import Interfaces, Loops

    # Only Granian listens; its workers build the app from the environment and never need these.
    host = args.host or settings.host
    port = args.port or settings.port
    require_free_address(host, port)
    if args.no_migrate:
        require_current_schema(settings)
    else:
        migrate(settings)
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    database = "SQLite" if settings.is_sqlite else "Postgres"
    print(f"Mesh NanoLLM on http://{shown}:{port}/  ({database}, {args.workers} worker(s))", flush=True)
    Granian(
        "mesh_nanollm.app:create_asgi",
        factory=True,
        address=host,
        port=port,
        interface=Interfaces.ASGI,
        workers=args.workers,
        loop=Loops.auto,
        websockets=True,
        # Granian's default, stated because the relay relies on it: with one runtime thread, one
        # websocket's writes go out in the order they were started (realtime/engine.py).
        runtime_threads=1,
        log_access=args.access_log,
    ).serve()


# How long SIGTERM waits for running jobs before cancelling them: under fly.toml's kill_timeout
# (30 s), leaving time to leave the room (docs/worker.md).
DRAIN_S = 25


def require_server_url(url: str) -> None:
    """The worker's --server must be an http(s) URL with a host: anything else would fail deep in
    aiohttp, with a traceback."""
    try:
        parts = urlsplit(url)
        ok = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
    except ValueError:  # reading .port: not a number, or over 65535
        ok = False
    if not ok:
        hint = f" (such as http://{url})" if "://" not in url else ""
        raise CannotStart(f"--server must be an http:// or https:// URL with a host, got {url!r}{hint}")


def worker(args: argparse.Namespace, settings: Settings) -> None:
    """Load the models, join the room, serve until SIGTERM or SIGINT (the server ending its place
    is exit status 1); every failure to start is one line (CannotStart)."""
    import signal

    try:
        from mesh_nanollm.worker.engine import EngineError, load_engine
    except ImportError as exc:
        raise CannotStart(f"the worker's runtime is not installed ({exc}): install the cpu or cuda extra") from None
    from mesh_nanollm.worker.mesh import Mesh
    from mesh_nanollm.worker.peer import CannotJoin, WorkerPeer
    from mesh_nanollm.worker.runner import Runner

    server = args.server or settings.worker_server
    token = args.token or settings.worker_token
    models = args.models or settings.worker_models
    device = args.device or settings.worker_device
    jobs = args.jobs if args.jobs is not None else settings.worker_jobs
    if not token:
        raise CannotStart("the worker needs an API token: --token or WORKER_TOKEN "
                          "(make one on the Settings page, under API tokens)")
    if not models:
        raise CannotStart("the worker needs at least one model: --model ID or WORKER_MODELS")
    if device not in ("cpu", "cuda"):
        raise CannotStart(f"--device must be cpu or cuda, got {device!r}")
    if jobs < 1:
        raise CannotStart(f"--jobs must be at least 1, got {jobs}")
    require_server_url(server)
    engines = {}
    for model in dict.fromkeys(models):
        try:
            engines[model] = load_engine(model, models_dir=settings.models_dir, device=device)
        except EngineError as exc:
            raise CannotStart(f"cannot load model {model!r}: {exc}") from None
        except KeyboardInterrupt:  # Ctrl-C before the worker joined anything: nothing to drain
            print(f"mesh-nanollm: stopped while loading model {model!r}", file=sys.stderr)
            raise SystemExit(130) from None

    def say(line: str) -> None:
        print(f"worker: {line}", flush=True)

    # aioice logs each ICE pair it checks at INFO: about six lines per page that links to the worker.
    for name in ("aioice", "aiortc"):
        logging.getLogger(name).setLevel(logging.WARNING)

    async def serve_room() -> None:
        peer = WorkerPeer(Runner(engines, jobs), server=server, token=token,
                          room=args.room or settings.worker_room, say=say)
        peer.listeners.append(Mesh(peer.runner, peer.sio, say).room_event)
        stopping = asyncio.Event()

        def on_signal() -> None:
            if stopping.is_set():  # a second Ctrl-C (or SIGTERM) does not wait for the jobs
                say("stopping now: cancelling running jobs")
                peer.runner.cancel_all()
            stopping.set()

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal)
        try:
            await peer.start()
        except CannotJoin as exc:
            await peer.sio.disconnect()
            raise CannotStart(str(exc)) from None
        stop = asyncio.ensure_future(stopping.wait())
        await asyncio.wait([stop, peer.ended], return_when=asyncio.FIRST_COMPLETED)
        if not stop.done():
            stop.cancel()
            await peer.close()
            raise CannotStart(peer.ended.result())
        say("stopping: finishing running jobs")
        await peer.stop(DRAIN_S)
        say("left the room")

    asyncio.run(serve_room())


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # Piccolo announces the database's version at INFO each time it builds an engine.
    logging.getLogger("piccolo").setLevel(logging.WARNING)
    args = _parser().parse_args(argv)
    try:
        # Only the server signs anything: the worker and migrations need no SECRET_KEY.
        settings = load_settings(secret=args.command not in ("worker", "migrate"))
        if args.command == "worker":
            worker(args, settings)
            return
        if args.command == "migrate":
            migrate(settings)
            print("Database is up to date.")
        else:
            serve(args, settings)
    except (SettingsError, CannotStart) as exc:
        sys.exit(f"mesh-nanollm: {exc}")
