"""What the browser's inference needs from the server: model files, an isolated room page, a startable worker."""

from __future__ import annotations

from pathlib import Path

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from mesh_nanollm.settings import PROJECT_ROOT
from mesh_nanollm.static import static_files_router

TINY = PROJECT_ROOT / "models" / "tiny-gpt2"


async def test_model_files_are_served_with_types_and_cache_headers(client: AsyncTestClient) -> None:
    weights = await client.get("/models/tiny-gpt2/onnx/model_quantized.onnx")
    assert weights.status_code == 200
    assert weights.headers["content-type"] == "application/octet-stream"
    assert weights.content == (TINY / "onnx" / "model_quantized.onnx").read_bytes()
    assert "max-age=3600" in weights.headers["cache-control"]

    config = await client.get("/models/tiny-gpt2/config.json")
    assert config.headers["content-type"].startswith("application/json")
    assert config.json()["model_type"] == "gpt2"


async def test_missing_or_escaping_model_paths_are_404(client: AsyncTestClient) -> None:
    for path in ("/models/tiny-gpt2/onnx/nope.onnx", "/models/nope/config.json", "/models/../pyproject.toml",
                 "/models/tiny-gpt2/..%2F..%2Fpyproject.toml"):
        response = await client.get(path)
        assert response.status_code == 404, path
        assert "Traceback" not in response.text


async def test_room_page_is_cross_origin_isolated_and_its_worker_may_start(user_client: AsyncTestClient) -> None:
    page = await user_client.get("/rooms/global")
    assert page.headers["cross-origin-opener-policy"] == "same-origin"
    # credentialless, not require-corp: hub downloads (CORS, no CORP header) keep working.
    assert page.headers["cross-origin-embedder-policy"] == "credentialless"
    assert 'id="inference-config"' in page.text

    worker = await user_client.get("/static/js/inference-worker.js")
    assert worker.status_code == 200
    assert worker.headers["content-type"].startswith("text/javascript")
    # A dedicated worker of an isolated page must declare COEP itself, or Chromium refuses to run it.
    assert worker.headers["cross-origin-embedder-policy"] == "credentialless"


@pytest.mark.parametrize("path", ["/static/js/room.js", "/static/css/app.css", "/models/tiny-gpt2/config.json"])
async def test_unchanged_files_are_answered_304(client: AsyncTestClient, path: str) -> None:
    first = await client.get(path)
    assert first.status_code == 200 and first.content
    etag = first.headers["etag"]
    again = await client.get(path, headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    assert again.headers["etag"] == etag and "content-type" not in again.headers
    listed = await client.get(path, headers={"If-None-Match": f'"other", W/{etag}'})
    assert listed.status_code == 304
    stale = await client.get(path, headers={"If-None-Match": '"not-this-one"'})
    assert stale.status_code == 200 and stale.content == first.content


async def test_own_modules_and_css_are_revalidated_on_every_page(client: AsyncTestClient) -> None:
    # Stable names: a cached copy from before a deploy must not be used without asking.
    for path in ("/static/js/room.js", "/static/js/mesh.js", "/static/css/app.css"):
        assert (await client.get(path)).headers["cache-control"] == "no-cache"


async def test_static_files_do_not_read_the_session(user_client: AsyncTestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    # A room page revalidates 33 of these on every visit: none may cost a session lookup.
    store = user_client.app.stores.get("sessions")
    looked_up: list[str] = []
    original = store.get_with_user

    async def counting(key: str) -> tuple[bytes | None, object]:
        looked_up.append(key)
        return await original(key)

    monkeypatch.setattr(store, "get_with_user", counting)
    for path in ("/static/js/room.js", "/static/css/app.css", "/static/favicon.svg"):
        response = await user_client.get(path)
        assert response.status_code == 200 and "set-cookie" not in response.headers
    assert looked_up == []
    assert (await user_client.get("/rooms/global")).status_code == 200
    assert len(looked_up) == 1  # the page itself does


async def test_static_file_edited_on_disk_is_served_fresh(tmp_path: Path) -> None:
    (tmp_path / "js").mkdir()
    module = tmp_path / "js" / "a.js"
    module.write_text("export const a = 1;\n")
    app = Litestar([static_files_router("/static", tmp_path, "static", {"Cache-Control": "no-cache"})])
    async with AsyncTestClient(app) as client:
        first = await client.get("/static/js/a.js")
        assert first.text == "export const a = 1;\n" and first.headers["cache-control"] == "no-cache"
        assert first.headers["content-type"] == "text/javascript; charset=utf-8"
        module.write_text("export const a = 22;\n")  # another size: seen whatever the clock's resolution
        second = await client.get("/static/js/a.js", headers={"If-None-Match": first.headers["etag"]})
        assert second.status_code == 200 and second.text == "export const a = 22;\n"
        assert second.headers["etag"] != first.headers["etag"]
        # One file however its path is spelled; nothing outside the folder or hidden.
        assert (await client.get("/static/js//./a.js")).headers["etag"] == second.headers["etag"]
        (tmp_path / ".env").write_text("SECRET=1")
        for path in ("/static/.env", "/static/js/../.env", "/static/js", "/static/", "/static/js/b.js"):
            assert (await client.get(path)).status_code == 404, path
        head = await client.head("/static/js/a.js")
        assert head.status_code == 200 and head.content == b""
        assert head.headers["content-length"] == str(len("export const a = 22;\n"))
        assert head.headers["etag"] == second.headers["etag"]
