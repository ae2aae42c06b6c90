"""A static file server for the bare page: bare.html and its modules, the vendored files and the
models, with the headers the app gives them (immutable, brotli vendor files; an hour for models;
revalidated bench modules; COOP/COEP on everything).

Playwright could answer these requests itself (`context.route`), but any route turns off the
browser's HTTP cache for the whole context: every "warm" visit would then fetch transformers.js and
the ORT wasm again, and V8 could never reuse its compiled wasm. A server of its own keeps the bare
page independent of the app server too, and a process of its own lets the benchmark count its CPU
and set its priority as it does the app server's.
"""

from __future__ import annotations

import hashlib
import mimetypes
import subprocess
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).parent
BENCH_FILES = {
    "/bench/bare": "bare.html",
    "/bench/bare.js": "bare.js",
    "/bench/bare-worker.js": "bare-worker.js",
}
ISOLATION = {
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "credentialless",
}
TYPES = {
    ".js": "text/javascript",
    ".mjs": "text/javascript",
    ".wasm": "application/wasm",
    ".json": "application/json",
}


def _resolve(path: str) -> tuple[Path, str] | None:
    """The file for a request path and its Cache-Control, or None."""
    if path in BENCH_FILES:
        return HERE / BENCH_FILES[path], "no-cache"
    for prefix, folder, cache in (
        ("/static/vendor/", ROOT / "static" / "vendor", "public, max-age=31536000, immutable"),
        ("/models/", ROOT / "models", "public, max-age=3600"),
    ):
        if path.startswith(prefix):
            file = (folder / path.removeprefix(prefix)).resolve()
            if file.is_file() and file.is_relative_to(folder):
                return file, cache
    return None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        found = _resolve(self.path.split("?")[0].split("#")[0])
        if found is None:
            self.send_error(404)
            return
        file, cache = found
        brotli = file.with_name(file.name + ".br")
        encoded = "br" in self.headers.get("accept-encoding", "") and brotli.is_file()
        body = (brotli if encoded else file).read_bytes()
        etag = f'"{hashlib.sha256(body).hexdigest()[:32]}"'
        kind = (
            "text/html"
            if file.suffix == ".html"
            else TYPES.get(file.suffix) or mimetypes.guess_type(file.name)[0]
        )
        headers = {
            "Cache-Control": cache,
            "ETag": etag,
            "Vary": "Accept-Encoding",
            **ISOLATION,
            "Cross-Origin-Resource-Policy": "same-origin",
        }
        if self.headers.get("if-none-match") == etag:
            self.send_response(304)
            body = b""
        else:
            self.send_response(200)
            headers |= {
                "Content-Type": kind or "application/octet-stream",
                "Content-Length": str(len(body)),
            }
            if encoded:
                headers["Content-Encoding"] = "br"
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class BareServer:
    """Serves the bare page on 127.0.0.1 on a free port, from a process of its own, until `stop()`."""

    def __init__(self) -> None:
        self.process = subprocess.Popen([sys.executable, __file__], stdout=subprocess.PIPE, text=True)
        self.url = self.process.stdout.readline().strip()
        if not self.url:
            raise RuntimeError(f"the bare page's server did not start (exit status {self.process.wait()})")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


if __name__ == "__main__":
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    print(f"http://127.0.0.1:{httpd.server_address[1]}", flush=True)
    httpd.serve_forever()
