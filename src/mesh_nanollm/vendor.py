"""Serve the vendored browser dependencies under ``/static/vendor/``.

``scripts/vendor.mjs`` copies pinned npm files into versioned folders and records
them in ``static/vendor/manifest.json``. This module reads that manifest and serves
exactly those files: precompressed ``.br``/``.gz`` siblings when the client accepts
them, immutable caching (the version is in the URL) and a sha256 ``ETag``.

If the app enables Litestar's ``CompressionConfig``, set its
``exclude_opt_key="skip_compression"`` (or ``exclude="^/static/vendor"``) so these
responses are not compressed a second time.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Final

import msgspec
from litestar import Request, Response, Router, get
from litestar.datastructures import ETag
from litestar.exceptions import NotFoundException
from litestar.params import FromPath
from litestar.response import File

__all__ = [
    "VENDOR_URL_PREFIX",
    "VendorFile",
    "VendorManifest",
    "load_vendor_manifest",
    "vendor_router",
]

VENDOR_URL_PREFIX: Final = "/static/vendor"
MANIFEST_NAME: Final = "manifest.json"

_CACHE_CONTROL: Final = "public, max-age=31536000, immutable"
# Litestar appends "; charset=utf-8" to text/* types itself.
_MEDIA_TYPES: Final[dict[str, str]] = {
    ".js": "text/javascript",
    ".mjs": "text/javascript",
    ".css": "text/css",
    # WebAssembly.instantiateStreaming refuses anything but application/wasm.
    ".wasm": "application/wasm",
    ".json": "application/json",
    ".map": "application/json",
    ".txt": "text/plain",
    "": "text/plain",  # LICENSE
}
# Preference order: brotli is 10-40 % smaller than gzip on these files (most on wasm).
_ENCODINGS: Final[tuple[tuple[str, str], ...]] = (("br", ".br"), ("gzip", ".gz"))


class VendorFile(msgspec.Struct, frozen=True):
    """One file under static/vendor/ as recorded by scripts/vendor.mjs."""

    sha256: str
    # "bytes" in the JSON; renamed so it does not shadow the builtin in this class.
    size: int = msgspec.field(name="bytes")


class VendorManifest(msgspec.Struct, frozen=True):
    """``static/vendor/manifest.json``: versions, entry points and file hashes."""

    packages: dict[str, str]
    entries: dict[str, str]
    files: dict[str, VendorFile]
    sources: dict[str, str] = msgspec.field(default_factory=dict)

    def url(self, entry: str) -> str:
        """Versioned URL of an entry, e.g. ``url("htmx")``; ``KeyError`` if unknown."""
        return f"{VENDOR_URL_PREFIX}/{self.entries[entry]}"

    def urls(self) -> dict[str, str]:
        """All entry URLs, handy as a template global."""
        return {key: self.url(key) for key in self.entries}


def load_vendor_manifest(static_dir: Path) -> VendorManifest:
    """Read and validate ``<static_dir>/vendor/manifest.json``."""
    path = static_dir / "vendor" / MANIFEST_NAME
    try:
        raw = path.read_bytes()
    except FileNotFoundError as exc:
        raise FileNotFoundError(
            f"{path} is missing; run `npm ci --ignore-scripts && node scripts/vendor.mjs`"
        ) from exc
    return msgspec.json.decode(raw, type=VendorManifest)


@dataclass(frozen=True, slots=True)
class _Variant:
    path: Path
    sha256: str
    size: int
    content_encoding: str | None

    @property
    def etag(self) -> str:
        return f'"{self.sha256}"'


@dataclass(frozen=True, slots=True)
class _Asset:
    filename: str
    media_type: str
    identity: _Variant
    encoded: dict[str, _Variant]  # content-coding -> variant


def _build_assets(vendor_dir: Path, manifest: VendorManifest) -> dict[str, _Asset]:
    files = manifest.files
    sibling_names = {name + suffix for name in files for _, suffix in _ENCODINGS}
    assets: dict[str, _Asset] = {}
    for name, info in files.items():
        if name in sibling_names:
            continue  # only reachable through content negotiation on the raw name
        rel = PurePosixPath(name)
        # The manifest is trusted input, but a hand-edited one must not reach outside vendor/.
        if rel.is_absolute() or ".." in rel.parts:
            raise ValueError(f"unsafe path in vendor manifest: {name!r}")
        encoded: dict[str, _Variant] = {}
        for coding, suffix in _ENCODINGS:
            sibling = files.get(name + suffix)
            if sibling is not None:
                encoded[coding] = _Variant(
                    vendor_dir / (name + suffix), sibling.sha256, sibling.size, coding
                )
        media_type = _MEDIA_TYPES.get(rel.suffix, "application/octet-stream")
        identity = _Variant(vendor_dir / name, info.sha256, info.size, None)
        assets[name] = _Asset(rel.name, media_type, identity, encoded)

    # Fail at startup rather than 500 on the first page load of a broken checkout.
    missing = [
        str(variant.path)
        for asset in assets.values()
        for variant in (asset.identity, *asset.encoded.values())
        if not variant.path.is_file()
    ]
    if missing:
        raise FileNotFoundError(
            f"vendored files listed in the manifest are missing: {', '.join(missing[:5])}; "
            "run `node scripts/vendor.mjs`"
        )
    return assets


def _accepted_codings(header: str) -> set[str]:
    """Content-codings the client accepts with q > 0 (RFC 9110 section 12.5.3)."""
    weights: dict[str, float] = {}
    for item in header.split(","):
        token, _, params = item.partition(";")
        coding = token.strip().lower()
        if not coding:
            continue
        q = 1.0
        for param in params.split(";"):
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value.strip())
                except ValueError:
                    q = 0.0
        weights["gzip" if coding == "x-gzip" else coding] = q
    wildcard = weights.get("*", 0.0)
    return {coding for coding, _ in _ENCODINGS if weights.get(coding, wildcard) > 0}


def _etag_matches(if_none_match: str | None, etag: str) -> bool:
    if not if_none_match:
        return False
    for candidate in if_none_match.split(","):
        candidate = candidate.strip()
        # If-None-Match uses the weak comparison function.
        if candidate == "*" or candidate.removeprefix("W/") == etag:
            return True
    return False


def vendor_router(static_dir: Path) -> Router:
    """Router serving ``GET /static/vendor/{path}`` for files listed in the manifest.

    ``static_dir`` is the ``static/`` folder that contains ``vendor/manifest.json``.
    Anything not in the manifest is a 404: the request path is only used as a
    dictionary key, never joined onto the filesystem.
    """
    vendor_dir = static_dir.resolve() / "vendor"
    manifest = load_vendor_manifest(static_dir)
    assets = _build_assets(vendor_dir, manifest)

    @get(
        "/{path:path}",
        name="vendor_file",
        include_in_schema=False,
        opt={"skip_compression": True},
    )
    async def vendor_file(request: Request[Any, Any, Any], path: FromPath[Path]) -> Response[Any]:
        asset = assets.get(PurePosixPath(path).as_posix().lstrip("/"))
        if asset is None:
            raise NotFoundException()

        accepted = _accepted_codings(request.headers.get("accept-encoding", ""))
        variant = next(
            (asset.encoded[c] for c, _ in _ENCODINGS if c in accepted and c in asset.encoded),
            asset.identity,
        )
        headers = {
            "Cache-Control": _CACHE_CONTROL,
            # Lets the page run cross-origin isolated (COEP) for ORT's threaded wasm.
            "Cross-Origin-Resource-Policy": "same-origin",
            # ORT's threads are workers started from its .mjs: a worker script in a cross-origin
            # isolated page must declare COEP itself (the browser ignores it on other files).
            "Cross-Origin-Embedder-Policy": "credentialless",
            "X-Content-Type-Options": "nosniff",
            "ETag": variant.etag,
        }
        if asset.encoded:
            headers["Vary"] = "Accept-Encoding"

        # Each encoding is its own representation with its own strong ETag (RFC 9110 8.8.3).
        if _etag_matches(request.headers.get("if-none-match"), variant.etag):
            return Response(content=None, status_code=304, headers=headers)

        if variant.content_encoding is not None:
            headers["Content-Encoding"] = variant.content_encoding
        return File(
            path=variant.path,
            media_type=asset.media_type,
            headers=headers,
            etag=ETag(value=variant.sha256),
            content_disposition_type="inline",
            # The raw name, also for .br/.gz bodies: that is what the client decodes to.
            filename=asset.filename,
        )

    return Router(path=VENDOR_URL_PREFIX, route_handlers=[vendor_file])
