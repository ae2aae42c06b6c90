"""OpenAI's request and response shapes for the room's API, with our caps (docs/gateway.md)."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

import msgspec

from mesh_nanollm.jobs.params import API_MAX_NEW_TOKENS, TEMPERATURE_MAX

PROMPT_MAX = 32_000
MESSAGES_MAX = 64
MESSAGES_TOTAL_MAX = 64_000
STOP_MAX = 4
STOP_LENGTH_MAX = 64

MaxTokens = Annotated[int, msgspec.Meta(ge=1, le=API_MAX_NEW_TOKENS)]
Temperature = Annotated[float, msgspec.Meta(ge=0, le=TEMPERATURE_MAX)]
TopP = Annotated[float, msgspec.Meta(gt=0, le=1)]
Seed = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]
StopString = Annotated[str, msgspec.Meta(min_length=1, max_length=STOP_LENGTH_MAX)]
Stop = StopString | Annotated[list[StopString], msgspec.Meta(max_length=STOP_MAX)]
ModelName = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
User = Annotated[str, msgspec.Meta(max_length=256)]
# Fields OpenAI defines that this API does not do: accepted only when absent (or null), otherwise a
# 400 that names them. Their values are never looked at, so any JSON (within the body's depth and
# size caps) is allowed.
Unsupported = object | None


class TextPart(msgspec.Struct, forbid_unknown_fields=True):
    """One part of a message's content list; only text parts are served (images get a 400)."""

    type: Annotated[str, msgspec.Meta(max_length=32)]
    text: Annotated[str, msgspec.Meta(max_length=PROMPT_MAX)] = ""


class ChatMessage(msgspec.Struct, forbid_unknown_fields=True):
    role: Literal["system", "user", "assistant", "developer"]
    content: Annotated[str, msgspec.Meta(max_length=PROMPT_MAX)] | Annotated[list[TextPart], msgspec.Meta(max_length=16)]
    name: Annotated[str, msgspec.Meta(max_length=64)] | None = None


class StreamOptions(msgspec.Struct, forbid_unknown_fields=True):
    include_usage: bool = False
    include_obfuscation: bool | None = None


class _Common(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    model: ModelName
    max_tokens: MaxTokens | None = None
    temperature: Temperature | None = None
    top_p: TopP | None = None
    seed: Seed | None = None
    stop: Stop | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    n: Annotated[int, msgspec.Meta(ge=1, le=128)] | None = None
    user: User | None = None
    logprobs: Unsupported = None
    logit_bias: Unsupported = None
    frequency_penalty: Unsupported = None
    presence_penalty: Unsupported = None


class ChatRequest(_Common):
    """POST …/v1/chat/completions."""

    messages: Annotated[list[ChatMessage], msgspec.Meta(min_length=1, max_length=MESSAGES_MAX)]
    max_completion_tokens: MaxTokens | None = None
    tools: Unsupported = None
    tool_choice: Unsupported = None
    parallel_tool_calls: Unsupported = None
    functions: Unsupported = None
    function_call: Unsupported = None
    top_logprobs: Unsupported = None
    response_format: Unsupported = None
    audio: Unsupported = None
    modalities: Unsupported = None
    prediction: Unsupported = None
    reasoning_effort: Unsupported = None

    openapi_example: ClassVar[dict[str, Any]] = {
        "model": "tiny-gpt2",
        "messages": [
            {"role": "system", "content": "You are a terse assistant."},
            {"role": "user", "content": "Say hello to the mesh."},
        ],
        "max_tokens": 32,
        "temperature": 0.7,
    }


class CompletionRequest(_Common):
    """POST …/v1/completions."""

    # Not empty: a model without a chat template has nothing to continue (its peers decline it), so
    # it is refused here at once, naming the field.
    prompt: Annotated[str, msgspec.Meta(min_length=1, max_length=PROMPT_MAX)]
    echo: Unsupported = None
    best_of: Unsupported = None
    suffix: Unsupported = None

    openapi_example: ClassVar[dict[str, Any]] = {"model": "tiny-gpt2", "prompt": "Once upon a time", "max_tokens": 32}


# Responses.


class Usage(msgspec.Struct):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class AssistantMessage(msgspec.Struct):
    content: str
    role: Literal["assistant"] = "assistant"


class ChatChoice(msgspec.Struct):
    index: int
    message: AssistantMessage
    finish_reason: Literal["stop", "length"]
    logprobs: None = None


class ChatCompletion(msgspec.Struct):
    id: str
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    object: Literal["chat.completion"] = "chat.completion"

    openapi_example: ClassVar[dict[str, Any]] = {
        "id": "chatcmpl-5f0c2a3e8b1d4e6fa2c49d7e1b3f6a80",
        "object": "chat.completion",
        "created": 1764581000,
        "model": "tiny-gpt2",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "Hello, mesh!"}, "finish_reason": "stop", "logprobs": None}
        ],
        "usage": {"prompt_tokens": 18, "completion_tokens": 5, "total_tokens": 23},
    }


class Delta(msgspec.Struct, omit_defaults=True):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(msgspec.Struct):
    index: int
    delta: Delta
    finish_reason: Literal["stop", "length"] | None = None
    logprobs: None = None


class ChatCompletionChunk(msgspec.Struct):
    id: str
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"


class TextChoice(msgspec.Struct):
    index: int
    text: str
    finish_reason: Literal["stop", "length"] | None = None
    logprobs: None = None


class TextCompletion(msgspec.Struct):
    """A completions response, and each of its stream's chunks (OpenAI uses one shape for both)."""

    id: str
    created: int
    model: str
    choices: list[TextChoice]
    usage: Usage | None = None
    object: Literal["text_completion"] = "text_completion"

    openapi_example: ClassVar[dict[str, Any]] = {
        "id": "cmpl-5f0c2a3e8b1d4e6fa2c49d7e1b3f6a80",
        "object": "text_completion",
        "created": 1764581000,
        "model": "tiny-gpt2",
        "choices": [{"index": 0, "text": " there was a mesh.", "finish_reason": "length", "logprobs": None}],
        "usage": {"prompt_tokens": 4, "completion_tokens": 5, "total_tokens": 9},
    }


class ModelCard(msgspec.Struct):
    id: str
    created: int
    owned_by: str
    # Ours: how many live peers of the room have it loaded, and how many could serve it.
    peers_warm: int
    peers_able: int
    object: Literal["model"] = "model"

    openapi_example: ClassVar[dict[str, Any]] = {
        "id": "HuggingFaceTB/SmolLM2-135M-Instruct", "object": "model", "created": 0, "owned_by": "hub",
        "peers_warm": 1, "peers_able": 2,
    }


class ModelList(msgspec.Struct):
    data: list[ModelCard]
    object: Literal["list"] = "list"

    openapi_example: ClassVar[dict[str, Any]] = {
        "object": "list",
        "data": [{"id": "tiny-gpt2", "object": "model", "created": 0, "owned_by": "local", "peers_warm": 1, "peers_able": 2}],
    }


class ErrorDetail(msgspec.Struct):
    message: str
    type: str
    param: str | None
    code: str | None


class OpenAIErrorBody(msgspec.Struct):
    """OpenAI's error shape, which its clients parse; these routes answer with it, not the app's."""

    error: ErrorDetail

    openapi_example: ClassVar[dict[str, Any]] = {
        "error": {
            "message": "This API makes one choice per request: `n` must be 1.",
            "type": "invalid_request_error",
            "param": "n",
            "code": "unsupported_parameter",
        }
    }
