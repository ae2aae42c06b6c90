"""The API reference: /schema/docs serves Swagger UI from the vendored files under a policy with no
inline code, and the document it shows describes every operation, with examples that fit."""

from __future__ import annotations

import re
from typing import Any

import jsonschema_rs
import pytest
from litestar.testing import AsyncTestClient

from mesh_nanollm.app import STATIC_DIR
from mesh_nanollm.vendor import load_vendor_manifest

METHODS = ("get", "post", "put", "patch", "delete")


@pytest.fixture
async def schema(client: AsyncTestClient) -> dict[str, Any]:
    return (await client.get("/schema/openapi.json")).json()


def operations(schema: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(method, path, op) for path, item in schema["paths"].items() for method, op in item.items() if method in METHODS]


def resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = schema["components"]["schemas"][node["$ref"].rsplit("/", 1)[-1]]
    return node


def example_of(schema: dict[str, Any], node: dict[str, Any]) -> Any:
    """The example a reader sees for a body: the schema's own, or its items' (for a list)."""
    node = resolve(schema, node)
    if "examples" in node:
        return node["examples"][0]
    if node.get("type") == "array":
        item = example_of(schema, node["items"])
        return None if item is None else [item]
    return None


async def test_api_reference_page_loads_swagger_ui_from_the_vendored_files(client: AsyncTestClient) -> None:
    response = await client.get("/schema/docs")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    vendor = load_vendor_manifest(STATIC_DIR)
    html = response.text
    assert f'src="{vendor.url("swagger_ui_js")}"' in html and f'href="{vendor.url("swagger_ui_css")}"' in html
    assert 'src="/static/js/api-docs.js"' in html
    # No inline code and nothing from elsewhere: every script has a source on this site.
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", html, re.DOTALL)
    assert scripts and all('src="/static/' in attrs and not body.strip() for attrs, body in scripts)
    assert "http://" not in html and "https://" not in html
    policy = response.headers["content-security-policy"]
    assert "script-src 'self' 'wasm-unsafe-eval';" in policy and "style-src 'self';" in policy
    assert "img-src 'self' data:;" in policy  # Swagger UI's icons; nothing else differs


async def test_schema_declares_bearer_tokens_for_every_signed_in_operation(schema: dict[str, Any]) -> None:
    assert schema["components"]["securitySchemes"]["bearer"] == {"type": "http", "scheme": "bearer"}
    for method, path, op in operations(schema):
        if path not in ("/api/health", "/api/models"):
            assert op.get("security") == [{"bearer": []}], (method, path)


async def test_schema_leaves_out_the_html_pages_and_their_forms(schema: dict[str, Any]) -> None:
    paths = set(schema["paths"])
    assert all(path.startswith("/api/") for path in paths), paths
    assert "/api/rooms/{slug}/v1/chat/completions" in paths


async def test_every_operation_is_summarised_described_and_has_examples(schema: dict[str, Any]) -> None:
    for method, path, op in operations(schema):
        where = f"{method.upper()} {path}"
        assert op.get("summary") and op.get("description"), where
        body = op.get("requestBody", {}).get("content", {}).get("application/json")
        if body is not None:
            assert example_of(schema, body["schema"]) is not None, f"{where}: request"
        success = [r for code, r in op["responses"].items() if code.startswith("2")]
        for response in success:
            content = response.get("content", {}).get("application/json")
            if content is not None:
                assert example_of(schema, content["schema"]) is not None, f"{where}: response"
        for code, response in op["responses"].items():
            if code.startswith(("4", "5")):
                assert example_of(schema, response["content"]["application/json"]["schema"]) is not None, f"{where}: {code}"


async def test_every_example_fits_its_schema(schema: dict[str, Any]) -> None:
    checked = 0
    for name, component in schema["components"]["schemas"].items():
        for example in component.get("examples", []):
            document = {"$ref": f"#/components/schemas/{name}", "components": schema["components"]}
            validator = jsonschema_rs.Draft202012Validator(document)
            errors = [error.message for error in validator.iter_errors(example)]
            assert not errors, (name, errors)
            checked += 1
    assert checked >= 15


async def test_settings_and_navigation_link_to_the_api_reference(user_client: AsyncTestClient) -> None:
    page = (await user_client.get("/settings")).text
    tokens = page[page.index('id="tokens"') :]
    assert '<a href="/schema/docs" hx-boost="false">API reference</a>' in tokens
    nav = page[page.index('<nav aria-label="Main">') : page.index("</nav>")]
    assert 'href="/schema/docs"' in nav
