"""The front door, health check, model manifest, OpenAPI schema, error pages and oversize bodies."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import make_settings as settings_for
from conftest import register
from litestar import Litestar
from litestar.testing import AsyncTestClient

from mesh_nanollm import db
from mesh_nanollm.app import create_app


async def test_home_sends_visitor_to_sign_in(client: AsyncTestClient) -> None:
    response = await client.get("/", follow_redirects=False)
    assert response.status_code in (302, 303)
    assert response.headers["location"] == "/login"


async def test_home_sends_signed_in_user_to_rooms(client: AsyncTestClient) -> None:
    await register(client)
    response = await client.get("/", follow_redirects=False)
    assert response.headers["location"] == "/rooms"


async def test_health_reports_database_ok(client: AsyncTestClient) -> None:
    response = await client.get("/api/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok"}


@pytest.mark.filterwarnings("ignore:.*Unable to connect to database")
async def test_health_returns_503_when_database_is_down(app: Litestar) -> None:
    # An instance whose Postgres is gone (nothing listens on port 1), asked before any query.
    down = create_app(settings_for("postgres://postgres@127.0.0.1:1/test"))
    try:
        response = await AsyncTestClient(down).get("/api/health")
    finally:
        db.bind(app.state.settings.database_url)
    assert response.status_code == 503
    assert response.json() == {
        "status": "degraded",
        "database": "unreachable",
        "detail": "The database does not answer; check DATABASE_URL and the database server.",
    }


async def test_health_returns_503_when_the_database_has_no_tables(app: Litestar, tmp_path: Path) -> None:
    # An instance started with --no-migrate on a database nobody migrated.
    empty = create_app(settings_for(f"sqlite:///{tmp_path / 'empty.sqlite'}"))
    try:
        response = await AsyncTestClient(empty).get("/api/health")
    finally:
        db.bind(app.state.settings.database_url)
    assert response.status_code == 503
    body = response.json()
    assert (body["status"], body["database"]) == ("degraded", "outdated")
    assert body["detail"].startswith("The database has pending migrations (")
    assert body["detail"].endswith("; run `mesh-nanollm migrate`.")


async def test_models_lists_the_offline_tiny_model(client: AsyncTestClient) -> None:
    response = await client.get("/api/models")
    assert response.status_code == 200
    models = {entry["id"]: entry for entry in response.json()}
    tiny = models["tiny-gpt2"]
    assert tiny["source"] == "local"
    assert tiny["url"] == "/models/tiny-gpt2/"
    assert tiny["size_bytes"] > 0
    assert tiny["task"] == "text-generation"
    assert [entry["id"] for entry in response.json() if entry["default"]] == ["tiny-gpt2"]
    assert any(entry["source"] == "hub" for entry in models.values())


async def test_model_files_are_served_under_models(client: AsyncTestClient) -> None:
    config = await client.get("/models/tiny-gpt2/config.json")
    assert config.status_code == 200
    assert config.json()["model_type"] == "gpt2"
    weights = await client.get("/models/tiny-gpt2/onnx/model_quantized.onnx")
    assert weights.status_code == 200 and len(weights.content) > 1000


async def test_schema_is_openapi_json_listing_the_api(client: AsyncTestClient) -> None:
    response = await client.get("/schema")
    assert response.status_code == 200
    assert "json" in response.headers["content-type"]
    schema = response.json()
    assert schema["openapi"].startswith("3.")
    for path in (
        "/api/health",
        "/api/models",
        "/api/rooms",
        "/api/rooms/{slug}",
        "/api/rooms/{slug}/peers",
        "/api/jobs",
        "/api/jobs/{job_id}",
    ):
        assert path in schema["paths"], path
    assert {"get", "patch"} <= set(schema["paths"]["/api/jobs/{job_id}"])


async def test_unknown_page_shows_friendly_404(client: AsyncTestClient) -> None:
    response = await client.get("/no-such-page")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("text/html")
    assert "<h1>Not found</h1>" in response.text
    assert '<p data-testid="flash">There is nothing at this address.' in response.text
    assert "Traceback" not in response.text


async def test_unknown_page_knows_who_is_signed_in(client: AsyncTestClient) -> None:
    """No route answers the address, so no route read the session: the page looks the user up
    itself, and shows the header a signed-in person sees everywhere else, not "Sign in"."""
    username = await register(client)
    response = await client.get("/no-such-page")
    assert response.status_code == 404
    assert f'<span class="who">{username}</span>' in response.text
    assert "Sign out" in response.text and "Create account" not in response.text
    assert ">Go to your rooms</a>" in response.text
    client.cookies.delete("mesh_session")
    anonymous = await client.get("/no-such-page")
    assert anonymous.status_code == 404 and username not in anonymous.text
    assert 'class="button" href="/login">Sign in</a>' in anonymous.text and "Go to your rooms" not in anonymous.text


async def test_unknown_api_path_returns_json_404(client: AsyncTestClient) -> None:
    response = await client.get("/api/no-such-thing")
    assert response.status_code == 404
    assert response.json() == {
        "error": "Not found",
        "detail": "There is nothing at this address. Check the link, or start from your rooms.",
    }


async def test_wrong_method_on_api_returns_json_405(user_client: AsyncTestClient) -> None:
    response = await user_client.delete("/api/jobs")
    assert response.status_code == 405
    assert set(response.json()) >= {"error", "detail"}


async def test_no_route_under_the_openai_routes_answers_in_openais_shape(client: AsyncTestClient) -> None:
    wrong_method = await client.get("/api/rooms/global/v1/chat/completions")
    unknown = await client.post("/api/rooms/global/v1/embeddings", json={"input": "x"})
    assert wrong_method.status_code == 405 and "POST" in wrong_method.headers["allow"]
    assert wrong_method.json() == {"error": {
        "message": "Invalid method for URL (GET /api/rooms/global/v1/chat/completions).",
        "type": "invalid_request_error", "param": None, "code": None,
    }}
    assert unknown.status_code == 404
    assert unknown.json()["error"]["message"] == "Invalid URL (POST /api/rooms/global/v1/embeddings)."


async def test_pages_carry_security_headers(client: AsyncTestClient) -> None:
    response = await client.get("/login")
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["referrer-policy"] == "same-origin"


async def test_oversize_api_body_is_rejected_with_413(user_client: AsyncTestClient) -> None:
    body = b'{"room": "global", "model": "tiny-gpt2", "prompt": "' + b"x" * (1024 * 1024 + 10) + b'"}'
    response = await user_client.post(
        "/api/jobs", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert response.json()["error"] == "Too large"


async def test_oversize_form_body_is_rejected_with_413(user_client: AsyncTestClient) -> None:
    response = await user_client.post("/rooms", data={"name": "x" * (1024 * 1024 + 10)})
    assert response.status_code == 413
    assert "Traceback" not in response.text
    assert 'data-testid="flash"' in response.text


async def test_nul_characters_never_cause_a_server_error(user_client: AsyncTestClient, app: Litestar) -> None:
    # SQLite stores a NUL character; Postgres text cannot hold one and must answer 400, not 500.
    stored = 201 if app.state.settings.is_sqlite else 400
    room = await user_client.post("/api/rooms", json={"name": "nul\u0000room"})
    assert room.status_code == stored
    job = await user_client.post("/api/jobs", json={"room": "global", "model": "tiny-gpt2", "prompt": "a\u0000b"})
    assert job.status_code == stored
    if stored == 400:
        assert job.json()["detail"].startswith("The request contains a value that cannot be stored")
    assert (await user_client.get("/api/jobs?model=a%00b")).status_code in (200, 400)
    page = await user_client.get("/rooms/a%00b")
    assert page.status_code in (400, 404) and 'data-testid="flash"' in page.text


def nested(depth: int) -> bytes:
    return b'{"name": ' + b"[" * (depth - 1) + b"]" * (depth - 1) + b"}"


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/api/rooms"), ("POST", "/api/jobs"), ("PATCH", "/api/jobs/00000000-0000-4000-8000-000000000000")],
    ids=["create-room", "create-job", "patch-job"],
)
@pytest.mark.parametrize("auth", ["bearer-junk", "signed-in"])
async def test_deeply_nested_json_is_400_without_a_traceback(
    user_client: AsyncTestClient, caplog: pytest.LogCaptureFixture, method: str, path: str, auth: str
) -> None:
    headers = {"content-type": "application/json"}
    if auth == "bearer-junk":  # skips CSRF; the body used to be decoded before the token was checked
        headers["authorization"] = "Bearer junk"
    response = await user_client.request(method, path, content=nested(1000), headers=headers)
    assert response.status_code == 400, response.text
    assert response.json() == {
        "error": "Bad request",
        "detail": "The JSON body nests 1000 levels deep; at most 32 are allowed.",
    }
    assert not [record for record in caplog.records if record.exc_info or record.levelno >= 40]


async def test_json_nested_to_the_limit_is_decoded(user_client: AsyncTestClient) -> None:
    # At the limit the body reaches validation, which names the field that is wrong.
    response = await user_client.post("/api/rooms", content=nested(32), headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert "nests" not in response.json()["detail"] and "name" in response.json()["detail"]


async def test_schema_declares_the_error_bodies_and_statuses_the_api_sends(client: AsyncTestClient) -> None:
    schema = (await client.get("/schema")).json()
    error_ref = {"$ref": "#/components/schemas/ErrorBody"}
    openai_ref = {"$ref": "#/components/schemas/OpenAIErrorBody"}
    assert schema["components"]["schemas"]["ErrorBody"]["required"] == ["detail", "error"]
    for path, operations in schema["paths"].items():
        assert path.startswith("/api/"), f"{path}: pages are HTML, not part of the JSON API"
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                if int(status) >= 400 and path != "/api/health":
                    # The OpenAI-compatible routes answer in OpenAI's error shape, which its clients parse.
                    expected = openai_ref if "/v1/" in path else error_ref
                    assert response["content"]["application/json"]["schema"] == expected, (method, path, status)
    patch_job = schema["paths"]["/api/jobs/{job_id}"]["patch"]
    assert {"400", "401", "404", "409", "422"} <= set(patch_job["responses"])
    assert patch_job["security"] == [{"bearer": []}]
    assert schema["components"]["securitySchemes"]["bearer"] == {"type": "http", "scheme": "bearer"}
    assert {"400", "401", "403", "404", "422"} <= set(schema["paths"]["/api/jobs"]["post"]["responses"])


async def test_schema_closes_bodies_that_refuse_unknown_fields(client: AsyncTestClient) -> None:
    components = (await client.get("/schema")).json()["components"]["schemas"]
    for name in ("JobCreate", "JobParams", "JobPatch", "RoomCreate"):
        assert components[name]["additionalProperties"] is False, name
    assert "additionalProperties" not in components["JobView"]


async def test_unknown_field_is_refused_as_the_schema_says(user_client: AsyncTestClient) -> None:
    response = await user_client.post("/api/rooms", json={"name": "Room", "colour": "red"})
    assert response.status_code == 400 and "colour" in response.json()["detail"]


@pytest.mark.parametrize(
    ("path", "allowed"),
    [("/api/jobs/00000000-0000-4000-8000-000000000000", "GET, OPTIONS, PATCH"), ("/api/jobs", "GET, OPTIONS, POST"),
     ("/api/rooms", "GET, OPTIONS, POST")],
)
async def test_options_lists_every_method_of_the_path(client: AsyncTestClient, path: str, allowed: str) -> None:
    response = await client.options(path)
    assert response.status_code == 204 and response.headers["allow"] == allowed


async def test_postgres_pool_hands_connections_back_without_resetting_them() -> None:
    """Piccolo takes a pooled connection per statement; giving it back costs no reset round trip
    (`RESET ALL` and friends: the app sets no session state), yet a transaction left open is still
    rolled back."""
    from conftest import TEST_DATABASE_URL, postgres_reachable, require

    problem = await postgres_reachable(TEST_DATABASE_URL)
    require(problem is None, problem or "")
    engine = db.engine_for(TEST_DATABASE_URL)
    await db.open_pool(engine, 1)
    try:
        async with engine.pool.acquire() as conn:
            await conn.execute("SET application_name = 'kept'")
            await conn.execute("BEGIN")
        async with engine.pool.acquire() as conn:
            assert await conn.fetchval("SHOW application_name") == "kept"  # no RESET ALL ran
            assert not conn.is_in_transaction()
    finally:
        await db.close_pool(engine)
