"""Vendored browser dependencies: pins, file integrity and the /static/vendor router."""

from __future__ import annotations

import gzip
import hashlib
import importlib
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import require
from litestar import Litestar
from litestar.config.compression import CompressionConfig
from litestar.testing import AsyncTestClient

from mesh_nanollm.vendor import (
    VENDOR_URL_PREFIX,
    VendorManifest,
    load_vendor_manifest,
    vendor_router,
)

ROOT = Path(__file__).resolve().parent.parent
STATIC = ROOT / "static"
VENDOR = STATIC / "vendor"
NODE_MODULES = ROOT / "node_modules"
COMPRESSED_SUFFIXES = (".br", ".gz")


@pytest.fixture(scope="module")
def manifest() -> VendorManifest:
    return load_vendor_manifest(STATIC)


@pytest.fixture(scope="module")
def app() -> Litestar:
    return Litestar(route_handlers=[vendor_router(STATIC)])


def _raw_names(manifest: VendorManifest) -> list[str]:
    names = set(manifest.files)
    return sorted(n for n in names if not (n.endswith(COMPRESSED_SUFFIXES) and n[:-3] in names))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _brotli_decompressed_sha256(path: Path) -> str:
    """sha256 of the decompressed file, via a Python brotli module or else node."""
    for module_name in ("brotli", "brotlicffi"):
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        return hashlib.sha256(module.decompress(path.read_bytes())).hexdigest()
    node = shutil.which("node")
    if node is None:
        pytest.skip("no brotli decoder available (pip install brotli, or install node)")
    script = (
        "const fs=require('fs'),z=require('zlib'),c=require('crypto');"
        "const d=z.brotliDecompressSync(fs.readFileSync(process.argv[1]));"
        "process.stdout.write(c.createHash('sha256').update(d).digest('hex'));"
    )
    return subprocess.run(
        [node, "-e", script, str(path)], check=True, capture_output=True, text=True
    ).stdout.strip()


# --- pins and manifest ---------------------------------------------------------------


def test_manifest_versions_match_exact_pins(manifest: VendorManifest) -> None:
    package = json.loads((ROOT / "package.json").read_text())
    lock = json.loads((ROOT / "package-lock.json").read_text())
    pins: dict[str, str] = package["devDependencies"]

    assert package.get("private") is True
    assert not package.get("dependencies"), "browser deps are vendored, not runtime deps"
    for name, version in pins.items():
        assert re.fullmatch(r"\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?", version), f"{name} not pinned"
        assert lock["packages"][f"node_modules/{name}"]["version"] == version
    assert manifest.packages == pins

    # transformers.min.js bundles ORT's JS; its wasm must come from the very same ORT build.
    transformers = lock["packages"]["node_modules/@huggingface/transformers"]
    assert transformers["dependencies"]["onnxruntime-web"] == pins["onnxruntime-web"]


def test_entries_point_at_versioned_files(manifest: VendorManifest) -> None:
    expected = {
        "htmx",
        "socket.io",
        "transformers",
        "ort_wasm_dir",
        "ort_webgpu_mjs",
        "ort_webgpu_wasm",
        "ort_wasm_mjs",
        "ort_wasm_wasm",
        "swagger_ui_js",
        "swagger_ui_css",
    }
    assert expected <= set(manifest.entries)
    folders = {f"{name}@{version}/" for name, version in manifest.packages.items()}
    for key, rel in manifest.entries.items():
        assert any(rel.startswith(folder) for folder in folders), (key, rel)
        if rel.endswith("/"):
            assert any(name.startswith(rel) for name in manifest.files), key
        else:
            assert rel in manifest.files, key
    ort_dir = manifest.entries["ort_wasm_dir"]
    for key in ("ort_webgpu_mjs", "ort_webgpu_wasm", "ort_wasm_mjs", "ort_wasm_wasm"):
        assert manifest.entries[key].startswith(ort_dir)
    assert manifest.url("htmx") == f"{VENDOR_URL_PREFIX}/{manifest.entries['htmx']}"
    assert manifest.urls()["transformers"].endswith("/transformers.min.js")


def test_vendor_dir_holds_exactly_the_manifest(manifest: VendorManifest) -> None:
    on_disk = {p.relative_to(VENDOR).as_posix() for p in VENDOR.rglob("*") if p.is_file()}
    assert on_disk == set(manifest.files) | {"manifest.json", ".gitattributes"}, "stale files"


def test_files_match_recorded_hashes(manifest: VendorManifest) -> None:
    for name, info in manifest.files.items():
        path = VENDOR / name
        assert path.stat().st_size == info.size, name
        assert _sha256(path) == info.sha256, name


def test_compressed_siblings_decode_to_raw(manifest: VendorManifest) -> None:
    for name in _raw_names(manifest):
        raw = manifest.files[name]
        siblings = [name + s for s in COMPRESSED_SUFFIXES if name + s in manifest.files]
        if raw.size < 1024:
            assert not siblings, f"{name} is too small to be worth compressing"
            continue
        assert name + ".br" in manifest.files, name
        for sibling in siblings:
            assert manifest.files[sibling].size < raw.size, sibling
            path = VENDOR / sibling
            if sibling.endswith(".gz"):
                assert hashlib.sha256(gzip.decompress(path.read_bytes())).hexdigest() == raw.sha256
            else:
                assert _brotli_decompressed_sha256(path) == raw.sha256, sibling


def test_vendored_files_identical_to_node_modules(manifest: VendorManifest) -> None:
    require(NODE_MODULES.is_dir(), "node_modules/ is not installed (npm ci --ignore-scripts)")
    raw_names = _raw_names(manifest)
    assert set(manifest.sources) == set(raw_names)
    for name, source in manifest.sources.items():
        original = ROOT / source
        assert original.is_relative_to(NODE_MODULES), source
        assert _sha256(original) == manifest.files[name].sha256, f"{name} != {source}"


def test_unsafe_or_incomplete_manifest_is_rejected(tmp_path: Path) -> None:
    vendor = tmp_path / "vendor"
    vendor.mkdir()
    entry = {"sha256": "0" * 64, "bytes": 1}
    doc: dict[str, Any] = {"packages": {}, "entries": {}, "files": {"../secret.js": entry}}
    (vendor / "manifest.json").write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="unsafe"):
        vendor_router(tmp_path)

    doc["files"] = {"pkg@1.0.0/missing.js": entry}
    (vendor / "manifest.json").write_text(json.dumps(doc))
    with pytest.raises(FileNotFoundError):
        vendor_router(tmp_path)

    with pytest.raises(FileNotFoundError):
        load_vendor_manifest(tmp_path / "nowhere")


# --- router ------------------------------------------------------------------------


async def _get(
    client: AsyncTestClient[Litestar], url: str, **headers: str
) -> tuple[httpx.Response, bytes]:
    """The response and its body exactly as sent (no client-side decoding)."""
    async with client.stream("GET", url, headers=headers) as response:
        body = b"".join([chunk async for chunk in response.aiter_raw()])
    return response, body


@pytest.fixture
def htmx_name(manifest: VendorManifest) -> str:
    return manifest.entries["htmx"]


def _assert_common_headers(response: httpx.Response) -> None:
    assert response.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert response.headers["cross-origin-resource-policy"] == "same-origin"
    assert response.headers["x-content-type-options"] == "nosniff"


@pytest.mark.asyncio  # explicit: also runs without asyncio_mode = "auto"
async def test_serves_brotli_when_accepted(
    app: Litestar, manifest: VendorManifest, htmx_name: str
) -> None:
    async with AsyncTestClient(app) as client:
        response, body = await _get(
            client, manifest.url("htmx"), **{"Accept-Encoding": "gzip, deflate, br, zstd"}
        )
    assert response.status_code == 200
    assert response.headers["content-encoding"] == "br"
    assert response.headers["vary"] == "Accept-Encoding"
    assert response.headers["content-type"].startswith("text/javascript")
    assert response.headers["etag"] == f'"{manifest.files[htmx_name + ".br"].sha256}"'
    _assert_common_headers(response)
    assert body == (VENDOR / (htmx_name + ".br")).read_bytes()


@pytest.mark.asyncio
async def test_serves_gzip_when_accepted(
    app: Litestar, manifest: VendorManifest, htmx_name: str
) -> None:
    async with AsyncTestClient(app) as client:
        for accept in ("gzip, deflate", "br;q=0, gzip;q=0.5", "x-gzip"):
            response, body = await _get(client, manifest.url("htmx"), **{"Accept-Encoding": accept})
            assert response.status_code == 200, accept
            assert response.headers["content-encoding"] == "gzip", accept
            assert response.headers["vary"] == "Accept-Encoding"
            assert response.headers["etag"] == f'"{manifest.files[htmx_name + ".gz"].sha256}"'
            _assert_common_headers(response)
            assert gzip.decompress(body) == (VENDOR / htmx_name).read_bytes()


@pytest.mark.asyncio
async def test_serves_identity_otherwise(
    app: Litestar, manifest: VendorManifest, htmx_name: str
) -> None:
    raw = (VENDOR / htmx_name).read_bytes()
    async with AsyncTestClient(app) as client:
        for accept in ("identity", "", "deflate", "br;q=0, gzip;q=0", "*;q=0"):
            response, body = await _get(client, manifest.url("htmx"), **{"Accept-Encoding": accept})
            assert response.status_code == 200, accept
            assert "content-encoding" not in response.headers, accept
            assert response.headers["vary"] == "Accept-Encoding"
            assert response.headers["etag"] == f'"{manifest.files[htmx_name].sha256}"'
            assert response.headers["content-length"] == str(len(raw))
            _assert_common_headers(response)
            assert body == raw


@pytest.mark.asyncio
async def test_content_types(app: Litestar, manifest: VendorManifest) -> None:
    expected = {
        "socket.io": "text/javascript",
        "transformers": "text/javascript",
        "ort_wasm_mjs": "text/javascript",
        "ort_wasm_wasm": "application/wasm",
        "ort_webgpu_wasm": "application/wasm",
        "swagger_ui_js": "text/javascript",
        "swagger_ui_css": "text/css",  # a stylesheet served as anything else is refused (nosniff)
    }
    async with AsyncTestClient(app) as client:
        for entry, media_type in expected.items():
            response, body = await _get(client, manifest.url(entry), **{"Accept-Encoding": "br"})
            assert response.status_code == 200, entry
            assert response.headers["content-type"].split(";")[0] == media_type, entry
            assert response.headers["content-encoding"] == "br", entry
            _assert_common_headers(response)
            assert len(body) == manifest.files[manifest.entries[entry] + ".br"].size


@pytest.mark.asyncio
async def test_not_modified_on_matching_etag(app: Litestar, manifest: VendorManifest) -> None:
    url = manifest.url("socket.io")
    async with AsyncTestClient(app) as client:
        first, _ = await _get(client, url, **{"Accept-Encoding": "br"})
        etag = first.headers["etag"]
        for if_none_match in (etag, f"W/{etag}", f'"nope", {etag}', "*"):
            response, body = await _get(
                client, url, **{"Accept-Encoding": "br", "If-None-Match": if_none_match}
            )
            assert response.status_code == 304, if_none_match
            assert body == b""
            assert response.headers["etag"] == etag
            assert response.headers["cache-control"] == "public, max-age=31536000, immutable"
            assert response.headers["vary"] == "Accept-Encoding"

        # A different representation (identity) has a different ETag: full response.
        response, body = await _get(
            client, url, **{"Accept-Encoding": "identity", "If-None-Match": etag}
        )
        assert response.status_code == 200
        assert body == (VENDOR / manifest.entries["socket.io"]).read_bytes()


@pytest.mark.asyncio
async def test_small_file_without_variants(app: Litestar, manifest: VendorManifest) -> None:
    small = [n for n in _raw_names(manifest) if manifest.files[n].size < 1024]
    assert small, "expected at least one file under 1 KiB (htmx LICENSE)"
    async with AsyncTestClient(app) as client:
        response, body = await _get(
            client, f"{VENDOR_URL_PREFIX}/{small[0]}", **{"Accept-Encoding": "br, gzip"}
        )
    assert response.status_code == 200
    assert "content-encoding" not in response.headers
    assert "vary" not in response.headers
    assert body == (VENDOR / small[0]).read_bytes()


@pytest.mark.asyncio
async def test_unknown_and_traversal_paths_are_404(
    app: Litestar, manifest: VendorManifest, htmx_name: str
) -> None:
    folder = htmx_name.split("/")[0]
    attempts = [
        f"{VENDOR_URL_PREFIX}/nope.js",
        f"{VENDOR_URL_PREFIX}/manifest.json",
        f"{VENDOR_URL_PREFIX}/{htmx_name}.br",  # variants only through Accept-Encoding
        f"{VENDOR_URL_PREFIX}/{htmx_name}.gz",
        f"{VENDOR_URL_PREFIX}/{htmx_name}.map",
        f"{VENDOR_URL_PREFIX}/{folder}/",
        f"{VENDOR_URL_PREFIX}/../vendor/manifest.json",
        f"{VENDOR_URL_PREFIX}/{folder}/..%2Fmanifest.json",
        f"{VENDOR_URL_PREFIX}/{folder}/%2e%2e/%2e%2e/%2e%2e/pyproject.toml",
        f"{VENDOR_URL_PREFIX}/{folder}/..%2F..%2F..%2Fpyproject.toml",
        f"{VENDOR_URL_PREFIX}/{folder}/..%2F{htmx_name}",  # resolves to a real file: still 404
        f"{VENDOR_URL_PREFIX}//etc/passwd",
        f"{VENDOR_URL_PREFIX}/%2Fetc%2Fpasswd",
    ]
    async with AsyncTestClient(app) as client:
        for url in attempts:
            response, _ = await _get(client, url)
            assert response.status_code == 404, url


@pytest.mark.asyncio
async def test_app_compression_does_not_double_encode(manifest: VendorManifest) -> None:
    compressed_app = Litestar(
        route_handlers=[vendor_router(STATIC)],
        compression_config=CompressionConfig(
            backend="gzip", minimum_size=1, exclude_opt_key="skip_compression"
        ),
    )
    name = manifest.entries["htmx"]
    async with AsyncTestClient(compressed_app) as client:
        response, body = await _get(client, manifest.url("htmx"), **{"Accept-Encoding": "gzip"})
    assert response.headers["content-encoding"] == "gzip"
    assert body == (VENDOR / (name + ".gz")).read_bytes()


@pytest.mark.asyncio
async def test_wins_over_a_generic_static_router(manifest: VendorManifest) -> None:
    """The app may also mount all of static/ at /static; /static/vendor stays ours."""
    from litestar.static_files import create_static_files_router

    for handlers in (
        [create_static_files_router(path="/static", directories=[STATIC]), vendor_router(STATIC)],
        [vendor_router(STATIC), create_static_files_router(path="/static", directories=[STATIC])],
    ):
        async with AsyncTestClient(Litestar(route_handlers=handlers)) as client:
            response, _ = await _get(client, manifest.url("htmx"), **{"Accept-Encoding": "br"})
            assert response.headers["content-encoding"] == "br"
            response, _ = await _get(client, f"{VENDOR_URL_PREFIX}/manifest.json")
            assert response.status_code == 404
