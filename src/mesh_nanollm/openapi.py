"""The OpenAPI document at /schema: the JSON API as it answers — its error bodies, the status codes
each operation can give, Bearer tokens, and which bodies refuse unknown fields."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any, ClassVar

import msgspec
from litestar import Request, Router
from litestar._openapi.schema_generation import SchemaCreator
from litestar._openapi.schema_generation.plugins.struct import StructSchemaPlugin
from litestar.openapi import OpenAPIConfig, ResponseSpec
from litestar.openapi.plugins import JsonRenderPlugin, OpenAPIRenderPlugin
from litestar.openapi.spec import Components, Schema, SecurityScheme
from litestar.typing import FieldDefinition

BEARER = [{"bearer": []}]
SCHEMA_PATH = "/schema"
API_REFERENCE_URL = f"{SCHEMA_PATH}/docs"  # the pages link to it (a template global)


class ErrorBody(msgspec.Struct, omit_defaults=True):
    """Every error the JSON API answers: app.handle_error sends this Struct, /schema declares it."""

    error: str  # the status in words, e.g. "Not found"
    detail: str  # what went wrong and what to do about it, for a person
    fields: dict[str, str] = {}  # per-field messages, when a form-like body was refused

    openapi_example: ClassVar[dict[str, Any]] = {
        "error": "Invalid input",
        "detail": "Please correct the highlighted fields.",
        "fields": {"name": "Give the room a name."},
    }


# Why each status happens, where the operation does not say better.
WHY = {
    400: "The request is malformed: a body or parameter that does not parse or fit its schema.",
    401: "No valid session or Bearer token.",
    403: "Not allowed: a private room the caller is not a member of, or a write without a Bearer "
    "token that lacks the CSRF token a browser session must send.",
    404: "No such room or job (or not the caller's).",
    409: "The change conflicts with the current state (an illegal status transition, a lost race).",
    413: "The body is larger than the server accepts.",
    422: "The request parses but breaks a rule; `detail` (and `fields`) say which.",
}


def errors(*codes: int) -> dict[int, ResponseSpec]:
    """Responses for `codes`, each with the body the app really sends."""
    return {
        code: ResponseSpec(ErrorBody, generate_examples=False, description=WHY.get(code, HTTPStatus(code).phrase))
        for code in codes
    }


class ClosedStructSchemaPlugin(StructSchemaPlugin):
    """Litestar's Struct schemas (a private class: litestar is pinned to its minor version), plus
    `additionalProperties: false` for Structs declared with `forbid_unknown_fields`, since the app
    answers 400 to any field they do not name, and a whole example for Structs that carry one as
    the class variable `openapi_example` (the API reference shows it; schemathesis sends it).
    Litestar drops null values from examples, so an example leaves nullable fields set."""

    def to_openapi_schema(self, field_definition: FieldDefinition, schema_creator: SchemaCreator) -> Schema:
        schema = super().to_openapi_schema(field_definition, schema_creator)
        if msgspec.inspect.type_info(field_definition.type_).forbid_unknown_fields:  # type: ignore[union-attr]
            schema.additional_properties = False
        if (example := getattr(field_definition.type_, "openapi_example", None)) is not None:
            schema.examples = [example]
        return schema


class ApiReferencePlugin(OpenAPIRenderPlugin):
    """The interactive API reference at /schema/docs: Swagger UI from static/vendor/, started by
    static/js/api-docs.js. Litestar's SwaggerRenderPlugin writes inline script and style and loads
    from a CDN, which the page's Content-Security-Policy refuses; this page has neither."""

    def __init__(self) -> None:
        super().__init__(path=API_REFERENCE_URL.removeprefix(SCHEMA_PATH))

    def render(self, request: Request, openapi_schema: dict[str, Any]) -> bytes:
        template = request.app.template_engine.get_template("api_docs.html")  # type: ignore[union-attr]
        context = {"request": request, "title": openapi_schema["info"]["title"], "spec_url": self.get_openapi_json_route(request)}
        return template.render(**context).encode()


def openapi_config(router: Router) -> OpenAPIConfig:
    """The document at `router`'s path (/schema), with the API reference at /schema/docs."""
    return OpenAPIConfig(
        title="Mesh NanoLLM",
        version="0.1.0",
        openapi_router=router,
        render_plugins=[JsonRenderPlugin(path=["/", "/openapi.json"]), ApiReferencePlugin()],
        use_handler_docstrings=True,
        description=(
            "The JSON API. Authenticate with `Authorization: Bearer <token>` (create a token on the "
            "settings page); a browser session cookie works too, with the CSRF header on writes. "
            "Every error is `{error, detail}` (and `fields` for per-field messages), except under "
            "`/api/rooms/{slug}/v1/`: the room's OpenAI-compatible API answers in OpenAI's error "
            "shape, `{error: {message, type, param, code}}`, and takes Bearer tokens only."
        ),
        components=Components(security_schemes={"bearer": SecurityScheme(type="http", scheme="bearer")}),
    )
