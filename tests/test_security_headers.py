"""Security headers: pages (error pages included) get the strict policy; only the scripts under
/static/, where a worker's policy comes from, may import blob: URLs (ONNX Runtime's factory)."""

from __future__ import annotations

from litestar.testing import AsyncTestClient


def directives(policy: str) -> dict[str, list[str]]:
    return {name: sources for name, *sources in (part.split() for part in policy.split(";"))}


async def test_pages_get_strict_policy_and_only_worker_scripts_allow_blob(client: AsyncTestClient) -> None:
    page = directives((await client.get("/login")).headers["content-security-policy"])
    missing = await client.get("/no-such-page", headers={"accept": "text/html"})
    worker = directives((await client.get("/static/js/inference-worker.js")).headers["content-security-policy"])

    assert missing.status_code == 404 and directives(missing.headers["content-security-policy"]) == page
    assert page["script-src"] == ["'self'", "'wasm-unsafe-eval'"]
    assert page["frame-ancestors"] == ["'none'"] and page["object-src"] == ["'none'"]
    assert "https://huggingface.co" in page["connect-src"] and "https://*.hf.co" in page["connect-src"]
    assert worker["script-src"] == [*page["script-src"], "blob:"]
    assert worker["worker-src"] == [*page["worker-src"], "blob:"]
    assert worker["connect-src"] == page["connect-src"]
