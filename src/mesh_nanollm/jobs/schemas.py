"""The JSON shapes of jobs on the wire."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal
from uuid import UUID

import msgspec

from mesh_nanollm.jobs.params import (
    PAGE_MAX_NEW_TOKENS,
    REPETITION_PENALTY_MAX,
    SEED_MAX,
    TEMPERATURE_MAX,
    TOP_K_MAX,
)
from mesh_nanollm.jobs.trace import Trace

# How long before its request a change happened, for records sent after the fact: the requester's
# page sends a short run's record once the run is over, so recording never competes with it.
AgeMs = Annotated[float, msgspec.Meta(ge=0, le=86_400_000)]

Status = Literal["queued", "running", "succeeded", "failed", "cancelled", "abandoned"]
# What a page may record; `api` jobs (server-scheduled) are recorded by the server alone.
Mode = Literal["local", "mesh", "auto"]


class JobParams(msgspec.Struct, forbid_unknown_fields=True):
    max_new_tokens: Annotated[int, msgspec.Meta(ge=1, le=PAGE_MAX_NEW_TOKENS)] = 128
    temperature: Annotated[float, msgspec.Meta(ge=0, le=TEMPERATURE_MAX)] = 0.0
    top_k: Annotated[int, msgspec.Meta(ge=0, le=TOP_K_MAX)] = 0
    top_p: Annotated[float, msgspec.Meta(gt=0, le=1)] = 1.0
    repetition_penalty: Annotated[float, msgspec.Meta(ge=1, le=REPETITION_PENALTY_MAX)] = 1.0
    # Sampled runs only (temperature > 0); none draws differently each time.
    seed: Annotated[int, msgspec.Meta(ge=0, le=SEED_MAX)] | None = None


class JobCreate(msgspec.Struct, forbid_unknown_fields=True):
    room: Annotated[str, msgspec.Meta(min_length=1, max_length=48)]
    model: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    prompt: Annotated[str, msgspec.Meta(min_length=1, max_length=8000)]
    task: Literal["text-generation"] = "text-generation"
    mode: Mode = "local"
    params: JobParams = msgspec.field(default_factory=JobParams)
    requester_peer: UUID | None = None
    age_ms: AgeMs = 0.0
    # Chosen by the client, so that a create sent again after its answer was lost records the job
    # once: the same id from the same user answers with the job it already made.
    id: UUID | None = None

    openapi_example: ClassVar[dict[str, Any]] = {
        "room": "global",
        "model": "tiny-gpt2",
        "prompt": "Once upon a time",
        "mode": "local",
        "params": {"max_new_tokens": 32, "temperature": 0.7},
    }


class JobPatch(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    status: Status | None = None
    output: Annotated[str, msgspec.Meta(max_length=200_000)] | None = None
    error: Annotated[str, msgspec.Meta(max_length=2000)] | None = None
    token_count: Annotated[int, msgspec.Meta(ge=0, le=1_000_000)] | None = None
    ttft_ms: Annotated[float, msgspec.Meta(ge=0, le=86_400_000)] | None = None
    # The run's own clock where the tokens arrived: first token to last, and the tokens after the
    # first; tok/s comes from these alone (none when the run is too short to measure).
    decode_ms: Annotated[float, msgspec.Meta(ge=0, le=86_400_000)] | None = None
    decode_tokens: Annotated[int, msgspec.Meta(ge=0, le=1_000_000)] | None = None
    worker_peer: UUID | None = None
    trace: Trace | None = None
    age_ms: AgeMs = 0.0

    openapi_example: ClassVar[dict[str, Any]] = {
        "status": "succeeded",
        "output": " there was a small model that ran in a browser.",
        "token_count": 11,
        "ttft_ms": 160.0,
        "decode_ms": 280.0,
        "decode_tokens": 10,
        "trace": Trace.openapi_example,
    }


class JobView(msgspec.Struct):
    id: UUID
    room: str  # its slug
    room_name: str
    model: str
    task: str
    mode: str
    prompt: str
    params: dict
    status: Status
    output: str
    error: str
    attempts: int
    workers: list[str]
    token_count: int
    requester_peer: UUID | None
    worker_peer: UUID | None
    created_at: datetime
    started_at: datetime | None
    first_token_at: datetime | None
    finished_at: datetime | None
    ttft_ms: float | None
    decode_ms: float | None
    decode_tokens: int
    tokens_per_s: float | None  # none when not measured, or too short to measure honestly

    openapi_example: ClassVar[dict[str, Any]] = {
        "id": "5f0c2a3e-8b1d-4e6f-a2c4-9d7e1b3f6a80",
        "room": "global",
        "room_name": "Global",
        "model": "tiny-gpt2",
        "task": "text-generation",
        "mode": "mesh",
        "prompt": "Once upon a time",
        "params": {"max_new_tokens": 32, "temperature": 0.7, "top_k": 0, "top_p": 1.0, "repetition_penalty": 1.0},
        "status": "succeeded",
        "output": " there was a small model that ran in a browser.",
        "error": "",
        "attempts": 1,
        "workers": ["7d2e9a41-3c5b-4f60-8e1d-2a9b4c6f0e35"],
        "token_count": 11,
        "requester_peer": "0b7c6f2e-5d41-4c1b-9a57-3f0e2d9c8a11",
        "worker_peer": "7d2e9a41-3c5b-4f60-8e1d-2a9b4c6f0e35",
        "created_at": "2026-12-01T09:40:00Z",
        "started_at": "2026-12-01T09:40:00.050000Z",
        "first_token_at": "2026-12-01T09:40:00.210000Z",
        "finished_at": "2026-12-01T09:40:00.520000Z",
        "ttft_ms": 160.0,
        "decode_ms": 310.0,
        "decode_tokens": 10,
        "tokens_per_s": 32.3,
    }


class JobPage(msgspec.Struct):
    jobs: list[JobView]
    next_cursor: str | None

    openapi_example: ClassVar[dict[str, Any]] = {
        "jobs": [JobView.openapi_example],
        "next_cursor": "MjAyNi0xMi0wMVQwOTo0MDowMCswMDowMHw1ZjBjMmEzZS04YjFkLTRlNmYtYTJjNC05ZDdlMWIzZjZhODA",
    }
