"""The room page names its whole module graph as modulepreload hints, read from the modules' imports."""

from __future__ import annotations

import re
from pathlib import Path

from litestar.testing import AsyncTestClient

from mesh_nanollm.app import STATIC_DIR
from mesh_nanollm.modules import module_graph


def test_graph_follows_static_imports_in_order_once(tmp_path: Path) -> None:
    js = tmp_path / "js"
    js.mkdir()
    (js / "entry.js").write_text(
        'import { a } from "/static/js/a.js";\n'
        "import {\n  b,\n  c,\n} from '/static/js/b.js';\n"
        '// import { nothing } from "/static/js/commented.js" is only a line of a comment\n'
        'const later = () => import("/static/js/dynamic.js");\n'
    )
    (js / "a.js").write_text('import { b } from "/static/js/b.js";\nexport const a = 1;\n')
    (js / "b.js").write_text(
        'export { c } from "/static/js/c.js";\nimport "/static/js/entry.js";\nimport "/static/js/d.js";\n'
    )
    (js / "c.js").write_text(
        'import { a } from "/static/js/a.js";\nimport { gone } from "/static/js/missing.js";\n'
    )

    (js / "d.js").write_text("export const d = 4;\n")

    assert module_graph(tmp_path, "js/entry.js") == [
        "/static/js/entry.js",
        "/static/js/a.js",
        "/static/js/b.js",
        "/static/js/c.js",
        "/static/js/d.js",
    ]


def test_room_graph_reaches_the_deepest_modules() -> None:
    graph = module_graph(STATIC_DIR, "js/room.js")
    assert graph[0] == "/static/js/room.js"
    # room.js → peer-session.js → mesh.js → links.js → link.js, and requester.js → requested-job.js
    for deep in (
        "peer-session.js",
        "mesh.js",
        "links.js",
        "link.js",
        "requested-job.js",
        "inference.js",
    ):
        assert f"/static/js/{deep}" in graph
    assert "/static/js/inference-worker.js" not in graph  # a worker, not an import
    assert len(graph) == len(set(graph))


async def test_room_page_preloads_every_module_it_imports(user_client: AsyncTestClient) -> None:
    page = await user_client.get("/rooms/global")
    assert page.status_code == 200
    preloaded = re.findall(r'<link rel="modulepreload" href="([^"]+)">', page.text)
    socket_io = re.search(r'<meta name="vendor-socket-io" content="([^"]+)">', page.text)
    assert socket_io
    # inference.js first: the head's early start (inference-start.js) imports it; then room.js's
    # graph, then the Socket.IO client, which signaling.js imports by the URL in that meta tag.
    early = "/static/js/inference.js"
    graph = [url for url in module_graph(STATIC_DIR, "js/room.js") if url != early]
    assert preloaded == [early, *graph, socket_io[1]]
    for url in preloaded:
        response = await user_client.get(url)
        assert response.status_code == 200, url
        assert response.headers["content-type"].startswith("text/javascript"), url
