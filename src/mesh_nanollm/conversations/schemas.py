"""The JSON shapes of conversations and their turns on the wire."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal
from uuid import UUID

import msgspec

TITLE_MAX = 120
SYSTEM_PROMPT_MAX = 8000
TURN_MAX = 60_000  # what a data-channel answer may hold (protocol.js MAX_TEXT_CHARS)

Title = Annotated[str, msgspec.Meta(max_length=TITLE_MAX)]
SystemPrompt = Annotated[str, msgspec.Meta(max_length=SYSTEM_PROMPT_MAX)]
Millis = Annotated[float, msgspec.Meta(ge=0, le=86_400_000)]


class ConversationCreate(msgspec.Struct, forbid_unknown_fields=True):
    room: Annotated[str, msgspec.Meta(min_length=1, max_length=48)]
    title: Title = ""
    system_prompt: SystemPrompt = ""

    openapi_example: ClassVar[dict[str, Any]] = {
        "room": "global",
        "system_prompt": "Answer in one sentence.",
    }


class ConversationPatch(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    title: Title | None = None
    system_prompt: SystemPrompt | None = None

    openapi_example: ClassVar[dict[str, Any]] = {"title": "Bedtime stories"}


class TurnCreate(msgspec.Struct, forbid_unknown_fields=True):
    role: Literal["user", "assistant"]
    content: Annotated[str, msgspec.Meta(max_length=TURN_MAX)]
    job: UUID | None = None  # the job that wrote an assistant turn
    model: Annotated[str, msgspec.Meta(max_length=200)] = ""
    ran_on: Annotated[str, msgspec.Meta(max_length=200)] = ""
    ttft_ms: Millis | None = None
    tok_s: Annotated[float, msgspec.Meta(ge=0, le=1_000_000)] | None = None
    trimmed: Annotated[int, msgspec.Meta(ge=0, le=10_000)] = 0

    openapi_example: ClassVar[dict[str, Any]] = {"role": "user", "content": "Tell me a story."}


class TurnView(msgspec.Struct):
    position: int
    role: str
    content: str
    html: str  # an assistant turn's Markdown as sanitised HTML; a user turn's text, escaped
    job: UUID | None
    model: str
    ran_on: str
    ttft_ms: float | None
    tok_s: float | None
    trimmed: int
    created_at: datetime

    openapi_example: ClassVar[dict[str, Any]] = {
        "position": 1,
        "role": "assistant",
        "content": "Once upon a time, a *tiny* model ran in a browser.",
        "html": "<p>Once upon a time, a <em>tiny</em> model ran in a browser.</p>\n",
        "job": "5f0c2a3e-8b1d-4e6f-a2c4-9d7e1b3f6a80",
        "model": "tiny-gpt2",
        "ran_on": "ran in this browser",
        "ttft_ms": 21.0,
        "tok_s": 180.5,
        "trimmed": 0,
        "created_at": "2026-12-05T10:00:01Z",
    }


class ConversationView(msgspec.Struct):
    id: UUID
    room: str
    title: str
    system_prompt: str
    created_at: datetime
    updated_at: datetime
    turns: list[TurnView]

    openapi_example: ClassVar[dict[str, Any]] = {
        "id": "0b2d7a4e-1c3f-4e5a-9b6d-8f7e6d5c4b3a",
        "room": "global",
        "title": "Tell me a story",
        "system_prompt": "Answer in one sentence.",
        "created_at": "2026-12-05T10:00:00Z",
        "updated_at": "2026-12-05T10:00:01Z",
        # The answer only: the docs drop an example's nulls, which a question's job and timings are.
        "turns": [TurnView.openapi_example],
    }


class ConversationSummary(msgspec.Struct):
    id: UUID
    room: str
    room_name: str
    title: str
    turns: int
    updated_at: datetime

    openapi_example: ClassVar[dict[str, Any]] = {
        "id": "0b2d7a4e-1c3f-4e5a-9b6d-8f7e6d5c4b3a",
        "room": "global",
        "room_name": "Global",
        "title": "Tell me a story",
        "turns": 2,
        "updated_at": "2026-12-05T10:00:01Z",
    }
