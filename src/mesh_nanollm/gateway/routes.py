"""The room as an OpenAI-compatible API: /api/rooms/{slug}/v1/models (and /models/{model}),
/chat/completions and /completions. These routes answer errors in OpenAI's shape, which its clients parse."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, ClassVar

import anyio
import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency, Provide
from litestar.exceptions import HTTPException, NotAuthorizedException, ValidationException
from litestar.openapi import ResponseSpec
from litestar.params import FromPath, JSONBody
from litestar.response import Stream
from litestar.types import Dependencies, ExceptionHandlersMap

from mesh_nanollm.catalogue import Catalogue, ModelEntry
from mesh_nanollm.errors import Forbidden, NotFound, ServiceError
from mesh_nanollm.gateway.dispatch import Candidate, Gateway, GatewayError, JobSpec, Run, why_not
from mesh_nanollm.gateway.schemas import (
    MESSAGES_TOTAL_MAX,
    AssistantMessage,
    ChatChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatRequest,
    ChunkChoice,
    CompletionRequest,
    Delta,
    ErrorDetail,
    ModelCard,
    ModelList,
    OpenAIErrorBody,
    TextChoice,
    TextCompletion,
    Usage,
)
from mesh_nanollm.openapi import BEARER
from mesh_nanollm.request import json_depth
from mesh_nanollm.rooms.service import get_room
from mesh_nanollm.security import bearer_token, hash_token, user_for_token
from mesh_nanollm.tables import Room, User

log = logging.getLogger("mesh_nanollm.gateway")

DEFAULT_MAX_TOKENS = 256
# Fields of the shared request shape that only a value of 1 / absence makes acceptable.
UNSUPPORTED = {
    "tools": "tool calls", "tool_choice": "tool calls", "parallel_tool_calls": "tool calls",
    "functions": "function calls", "function_call": "function calls", "logprobs": "log probabilities",
    "top_logprobs": "log probabilities", "response_format": "structured output (response_format)",
    "audio": "audio output", "modalities": "other output modalities", "prediction": "predicted outputs",
    "reasoning_effort": "reasoning effort", "logit_bias": "logit_bias", "frequency_penalty": "frequency_penalty",
    "presence_penalty": "presence_penalty", "echo": "echo", "best_of": "best_of", "suffix": "suffix",
}
STATUS_TYPES = {401: "invalid_request_error", 404: "invalid_request_error", 413: "invalid_request_error"}
WHY = {
    400: "Malformed, or asks for something this API does not do; `error.param` names the field.",
    401: "No valid Bearer token (these routes take API tokens only, not the session cookie).",
    404: "No such room (or a private one the caller is not a member of), or `model_not_found`.",
    413: "The body is larger than the server accepts.",
    429: "The token already has GATEWAY_TOKEN_CONCURRENCY requests running on this instance.",
    503: "No peer of the room took the job within GATEWAY_QUEUE_WAIT; `Retry-After` says when to try again.",
}
_encode = msgspec.json.Encoder().encode


def openai_errors(*codes: int) -> dict[int, ResponseSpec]:
    return {code: ResponseSpec(OpenAIErrorBody, generate_examples=False, description=WHY[code]) for code in codes}


def error_response(status: int, message: str, type_: str, code: str | None = None, param: str | None = None,
                   headers: dict[str, str] | None = None) -> Response[OpenAIErrorBody]:
    body = OpenAIErrorBody(ErrorDetail(message=message, type=type_, param=param, code=code))
    return Response(body, status_code=status, headers=headers or {})


def answer_error(request: Request, exc: Exception) -> Response[OpenAIErrorBody]:
    """Every error of these routes, in OpenAI's shape (the app's security headers are added by
    its after-request hook, which error responses skip: see app.security_headers)."""
    from mesh_nanollm.app import security_headers  # the app imports these routes

    if isinstance(exc, GatewayError):
        response = error_response(exc.status, exc.message, exc.type, exc.code, exc.param, exc.headers)
    elif isinstance(exc, NotAuthorizedException):
        response = error_response(401, "Send an API token as `Authorization: Bearer <token>` (create one on "
                                  "the settings page).", "invalid_request_error", "invalid_api_key")
    elif isinstance(exc, ValidationException):
        problems = [item for item in (exc.extra if isinstance(exc.extra, list) else []) if isinstance(item, dict)]
        first = problems[0] if problems else {}
        param = first.get("key") if first.get("key") not in (None, "data", "body") else None
        message = str(first.get("message") or exc.detail)
        param = param or _param_from(message)
        response = error_response(400, f"The request is not valid: {message}", "invalid_request_error", None, param)
    elif isinstance(exc, (NotFound, Forbidden)):
        # A private room the caller may not enter is answered as if it did not exist, as pages are.
        slug = request.path_params.get("slug", "")[:48]
        response = error_response(404, f"There is no room called “{slug}”.", "invalid_request_error", "room_not_found")
    elif isinstance(exc, ServiceError):
        response = error_response(exc.status_code, exc.detail, "invalid_request_error")
    elif isinstance(exc, HTTPException) and exc.status_code < 500:
        response = error_response(exc.status_code, str(exc.detail), STATUS_TYPES.get(exc.status_code, "invalid_request_error"))
    else:
        log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        response = error_response(500, "Something went wrong on our side. Please try again.", "server_error")
    return security_headers(response)  # type: ignore[return-value]


def _param_from(message: str) -> str | None:
    """The field a msgspec message names (`… - at `$.messages[0].role``, `unknown field `name``,
    `missing required field `name``), as OpenAI's `param`."""
    _, found, where = message.rpartition("at `$.")
    if found:
        return where.rstrip("`")
    _, found, name = message.partition(" field `")
    return name.split("`", 1)[0] if found else None


def decode_strictly(body_type: type[msgspec.Struct]) -> Callable[[Request], Awaitable[None]]:
    """A before_request hook that decodes the body as `body_type` with msgspec's strict rules.
    Litestar converts a body with `strict=False`, which takes `"10"` for 10 and `"true"` for true,
    where OpenAI answers 400; and its untyped first pass reports a number out of range at `$[...]`,
    naming no field. Litestar's own decoding then repeats this one and finds nothing new."""

    async def decode(request: Request) -> None:
        # Who asks comes first, as OpenAI answers: a bad body without a valid token is a 401.
        await provide_token_user(request)
        body = await request.body()
        if json_depth(body) > request.app.state.settings.json_max_depth:
            return  # MeshRequest.json refuses it, before decoding anything
        try:
            msgspec.json.decode(body, type=body_type, strict=True)
        except msgspec.ValidationError as exc:
            message = str(exc)
            raise GatewayError(400, f"The request is not valid: {message.split(' - at ', 1)[0]}",
                               param=_param_from(message)) from None
        except msgspec.DecodeError:
            return  # not JSON at all: Litestar's decoding says so, as before

    return decode


def refuse_unsupported(data: ChatRequest | CompletionRequest) -> None:
    for name, what in UNSUPPORTED.items():
        value = getattr(data, name, None)
        # Clients may send a field's neutral value; only asking for the feature is refused.
        if value is not None and value is not False and value != 0:
            raise GatewayError(400, f"This API does not support {what}: remove `{name}`.", param=name, code="unsupported_parameter")
    if data.n not in (None, 1):
        raise GatewayError(400, "This API makes one choice per request: `n` must be 1.", param="n", code="unsupported_parameter")


def chat_messages(data: ChatRequest) -> list[dict[str, str]]:
    """The messages as peers take them: text content only, `developer` read as `system`."""
    messages, total = [], 0
    for i, message in enumerate(data.messages):
        if isinstance(message.content, str):
            content = message.content
        else:
            for j, part in enumerate(message.content):
                if part.type != "text":
                    raise GatewayError(400, f"Only text content is supported, not {part.type[:32]!r} parts.",
                                       param=f"messages[{i}].content[{j}]", code="unsupported_content")
            content = "".join(part.text for part in message.content)
        total += len(content)
        messages.append({"role": "system" if message.role == "developer" else message.role, "content": content})
    if total > MESSAGES_TOTAL_MAX:
        raise GatewayError(400, f"The messages hold {total} characters; at most {MESSAGES_TOTAL_MAX} are allowed.",
                           param="messages", code="context_length_exceeded")
    return messages


def render_transcript(messages: list[dict[str, str]]) -> str:
    """The fallback chat template every peer uses for a model without one (docs/realtime.md)."""
    return "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant:"


def find_model(catalogue: Catalogue, model: str) -> ModelEntry:
    for entry in catalogue.entries:
        if entry.id == model:
            return entry
    raise GatewayError(404, f"The model “{model[:200]}” does not exist in this server's catalogue; "
                       "GET …/v1/models lists the ones the room serves.", code="model_not_found", param="model")


def model_card(entry: ModelEntry, peers: list[Candidate]) -> ModelCard | None:
    """`entry`'s card as the room's live `peers` make it, or None when none of them would run it."""
    able = [p for p in peers if why_not(p, entry) is None]
    if not able:
        return None
    warm = sum(entry.id in p.models_warm for p in able)
    return ModelCard(id=entry.id, created=0, owned_by=entry.source, peers_warm=warm, peers_able=len(able))


_TOKEN_USER = "mesh_nanollm.token_user"  # where provide_token_user keeps the request's user


async def provide_token_user(request: Request) -> User:
    """The owner of the request's Bearer token, looked up once per request (decode_strictly asks
    first). These routes take tokens only, never the session cookie, which is why they need no CSRF
    token (app.create_app exempts them)."""
    user: User | None = request.scope.get(_TOKEN_USER)  # type: ignore[assignment]
    if user is None:
        token = bearer_token(request.headers)
        user = await user_for_token(token) if token and len(token) <= 200 else None
        if user is None:
            raise NotAuthorizedException("Sign in with a Bearer token.")
        request.scope[_TOKEN_USER] = user  # type: ignore[literal-required]
    return user


def client_key(request: Request) -> str:
    """Whose concurrency a request counts against: its token's."""
    return hash_token(bearer_token(request.headers) or "")


def job_spec(request: Request, user: User, room: Room, catalogue: Catalogue,
             data: ChatRequest | CompletionRequest) -> JobSpec:
    refuse_unsupported(data)
    model = find_model(catalogue, data.model)
    limit = (data.max_completion_tokens if isinstance(data, ChatRequest) else None) or data.max_tokens
    params: dict[str, Any] = {
        "max_new_tokens": limit or DEFAULT_MAX_TOKENS,
        "temperature": 1.0 if data.temperature is None else data.temperature,
        "top_p": 1.0 if data.top_p is None else data.top_p,
        "top_k": 0,
    }
    if data.seed is not None:
        params["seed"] = data.seed
    stop = (data.stop,) if isinstance(data.stop, str) else tuple(data.stop or ())
    if stop:  # a peer that knows them stops there itself; the server cuts for one that does not
        params["stop"] = list(stop)
    common = {"room_id": room.id, "room_slug": room.slug, "user_id": user.id, "client": client_key(request),
              "model": model, "params": params, "stop": stop, "user": data.user}
    if isinstance(data, ChatRequest):
        messages = chat_messages(data)
        return JobSpec(prompt=None, messages=messages, record_prompt=render_transcript(messages), **common)
    return JobSpec(prompt=data.prompt, messages=None, record_prompt=data.prompt, **common)


def _sse(chunk: msgspec.Struct | dict[str, Any]) -> bytes:
    return b"data: " + _encode(chunk) + b"\n\n"


async def _finish(run: Run) -> None:
    # Runs when the client has gone too: the record and the peer's cancel must still happen.
    with anyio.CancelScope(shield=True):
        await run.close()


async def collect(run: Run) -> str:
    try:
        return "".join([piece async for piece in run.pieces()])
    finally:
        await _finish(run)


async def stream_chat(run: Run, completion_id: str, created: int, include_usage: bool) -> AsyncIterator[bytes]:
    model = run.spec.model.id

    def chunk(delta: Delta, finish: Any = None) -> bytes:
        return _sse(ChatCompletionChunk(completion_id, created, model, [ChunkChoice(0, delta, finish)]))

    try:
        yield chunk(Delta(role="assistant", content=""))
        async for piece in run.pieces():
            yield chunk(Delta(content=piece))
        outcome = run.outcome
        assert outcome is not None
        yield chunk(Delta(), outcome.finish_reason)
        if include_usage:
            yield _sse(ChatCompletionChunk(completion_id, created, model, [], usage(run)))
        yield b"data: [DONE]\n\n"
    except GatewayError as exc:
        yield _sse({"error": msgspec.to_builtins(ErrorDetail(exc.message, exc.type, exc.param, exc.code))})
    finally:
        await _finish(run)


async def stream_text(run: Run, completion_id: str, created: int, include_usage: bool) -> AsyncIterator[bytes]:
    model = run.spec.model.id
    try:
        async for piece in run.pieces():
            yield _sse(TextCompletion(completion_id, created, model, [TextChoice(0, piece)]))
        outcome = run.outcome
        assert outcome is not None
        yield _sse(TextCompletion(completion_id, created, model, [TextChoice(0, "", outcome.finish_reason)]))
        if include_usage:
            yield _sse(TextCompletion(completion_id, created, model, [], usage(run)))
        yield b"data: [DONE]\n\n"
    except GatewayError as exc:
        yield _sse({"error": msgspec.to_builtins(ErrorDetail(exc.message, exc.type, exc.param, exc.code))})
    finally:
        await _finish(run)


def usage(run: Run) -> Usage:
    outcome = run.outcome
    assert outcome is not None
    return Usage(outcome.prompt_tokens, outcome.completion_tokens, outcome.prompt_tokens + outcome.completion_tokens)


SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class GatewayApi(Controller):
    path = "/api/rooms/{slug:str}/v1"
    tags: ClassVar[list[str]] = ["openai"]
    security = BEARER
    dependencies: ClassVar[Dependencies] = {"user": Provide(provide_token_user)}
    exception_handlers: ClassVar[ExceptionHandlersMap] = {Exception: answer_error}

    @get("/models", summary="List the room's models (OpenAI)", responses=openai_errors(400, 401, 404))
    async def list_models(self, user: NamedDependency[User], slug: FromPath[str],
                          catalogue: NamedDependency[Catalogue], gateway: NamedDependency[Gateway]) -> ModelList:
        """The catalogue's models that a live peer of the room would run now (its backend runs it,
        and it has it loaded or would download it for others), with how many peers have each
        loaded (`peers_warm`) and would run it (`peers_able`)."""
        room = await get_room(user, slug)
        peers = await gateway.live_peers(room.id)
        return ModelList([card for entry in catalogue.entries if (card := model_card(entry, peers))])

    # `path`: model ids may hold a slash (HuggingFaceTB/SmolLM2-135M-Instruct); the value starts with one.
    @get("/models/{model:path}", summary="Retrieve one of the room's models (OpenAI)", responses=openai_errors(400, 401, 404))
    async def retrieve_model(self, user: NamedDependency[User], slug: FromPath[str], model: FromPath[str],
                             catalogue: NamedDependency[Catalogue], gateway: NamedDependency[Gateway]) -> ModelCard:
        """The card `…/v1/models` lists for this model; 404 `model_not_found` when it is not in the
        catalogue or no live peer of the room would run it now."""
        room = await get_room(user, slug)
        entry = find_model(catalogue, model.removeprefix("/"))
        card = model_card(entry, await gateway.live_peers(room.id))
        if card is None:
            raise GatewayError(404, f"No peer in room “{room.slug}” would run the model “{entry.id}” now; "
                               "GET …/v1/models lists the ones it serves.", code="model_not_found", param="model")
        return card

    @post("/chat/completions", summary="Create a chat completion (OpenAI)", status_code=200,
          responses=openai_errors(400, 401, 404, 413, 429, 503), before_request=decode_strictly(ChatRequest))
    async def chat(self, request: Request, user: NamedDependency[User], slug: FromPath[str],
                   catalogue: NamedDependency[Catalogue], gateway: NamedDependency[Gateway],
                   data: JSONBody[ChatRequest]) -> Response[ChatCompletion]:
        """OpenAI's chat completions, run by a peer of the room; `stream: true` answers with
        server-sent `chat.completion.chunk` events ending `data: [DONE]`."""
        room = await get_room(user, slug)
        spec = job_spec(request, user, room, catalogue, data)
        run = await gateway.start(spec)
        completion_id, created = f"chatcmpl-{run.job_id.hex}", int(time.time())
        if data.stream:
            include = bool(data.stream_options and data.stream_options.include_usage)
            return Stream(stream_chat(run, completion_id, created, include), media_type="text/event-stream", headers=SSE_HEADERS)  # type: ignore[return-value]
        text = await collect(run)
        assert run.outcome is not None
        choice = ChatChoice(0, AssistantMessage(text), run.outcome.finish_reason)  # type: ignore[arg-type]
        return Response(ChatCompletion(completion_id, created, spec.model.id, [choice], usage(run)))

    @post("/completions", summary="Create a text completion (OpenAI)", status_code=200,
          responses=openai_errors(400, 401, 404, 413, 429, 503), before_request=decode_strictly(CompletionRequest))
    async def completions(self, request: Request, user: NamedDependency[User], slug: FromPath[str],
                          catalogue: NamedDependency[Catalogue], gateway: NamedDependency[Gateway],
                          data: JSONBody[CompletionRequest]) -> Response[TextCompletion]:
        """OpenAI's (legacy) text completions, run by a peer of the room; `stream: true` answers
        with server-sent `text_completion` chunks ending `data: [DONE]`."""
        room = await get_room(user, slug)
        spec = job_spec(request, user, room, catalogue, data)
        run = await gateway.start(spec)
        completion_id, created = f"cmpl-{run.job_id.hex}", int(time.time())
        if data.stream:
            include = bool(data.stream_options and data.stream_options.include_usage)
            return Stream(stream_text(run, completion_id, created, include), media_type="text/event-stream", headers=SSE_HEADERS)  # type: ignore[return-value]
        text = await collect(run)
        assert run.outcome is not None
        choice = TextChoice(0, text, run.outcome.finish_reason)  # type: ignore[arg-type]
        return Response(TextCompletion(completion_id, created, spec.model.id, [choice], usage(run)))
