"""A job's trace: its timestamped events and tokens over time, as whoever witnessed the run sends
them (the requester's page for local and mesh jobs, the server for API jobs), and the rule that
says when a run was long enough to give an honest tok/s. docs/inference.md, "Traces"."""

from __future__ import annotations

from typing import Annotated, Literal
from uuid import UUID

import msgspec

from mesh_nanollm.errors import InvalidInput

# A run's decode shorter than this, or with fewer tokens after the first, has no honest speed: a
# handful of tokens arriving in one burst would read as thousands of tok/s.
MIN_DECODE_MS = 50.0
MIN_DECODE_TOKENS = 4

MAX_EVENTS = 400
MAX_BUCKETS = 600
MAX_TRACE_BYTES = 48 * 1024

Ms = Annotated[float, msgspec.Meta(ge=0, le=86_400_000)]
Kind = Literal[
    "created",  # the job exists (t = 0)
    "offered",  # offered to `peer`
    "accepted",  # `peer` accepted, starting in about `eta_ms`
    "declined",  # `peer` declined, `reason`
    "dispatched",  # attempt `attempt` sent to `peer` (none: the requester's own browser)
    "load_started",  # the model began loading where the attempt runs
    "load_ready",  # loaded: `cached` or downloaded, `bytes`
    "first_token",  # the attempt's first token arrived
    "failover",  # the attempt's worker was given up: `reason` closed | silent | error: …
    "cancel",  # the person (or client) cancelled
    "done",  # finished: `tokens`, and the worker's own `ttft_ms` and `tok_s` where it reported them
    "error",  # failed: `reason`
]


class TraceEvent(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    t: Ms  # milliseconds since the job was created, on the witness's clock
    kind: Kind
    attempt: Annotated[int, msgspec.Meta(ge=1, le=64)] | None = None
    peer: UUID | None = None
    eta_ms: Ms | None = None
    reason: Annotated[str, msgspec.Meta(max_length=200)] | None = None
    cached: bool | None = None
    bytes: Annotated[int, msgspec.Meta(ge=0, le=10**12)] | None = None
    tokens: Annotated[int, msgspec.Meta(ge=0, le=1_000_000)] | None = None
    ttft_ms: Ms | None = None
    tok_s: Annotated[float, msgspec.Meta(ge=0, le=1_000_000)] | None = None


class TokenSeries(msgspec.Struct, forbid_unknown_fields=True):
    """Tokens that arrived in each `bucket_ms` window from `start_ms` on."""

    start_ms: Ms
    bucket_ms: Annotated[int, msgspec.Meta(ge=10, le=3_600_000)]
    counts: Annotated[
        list[Annotated[int, msgspec.Meta(ge=0, le=1_000_000)]], msgspec.Meta(max_length=MAX_BUCKETS)
    ]


class Trace(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    events: Annotated[list[TraceEvent], msgspec.Meta(max_length=MAX_EVENTS)]
    tokens: TokenSeries | None = None


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Trace)


def encode(trace: Trace) -> bytes:
    """The stored form; InvalidInput (422) when the trace breaks a rule msgspec cannot state."""
    times = [event.t for event in trace.events]
    if times != sorted(times):
        raise InvalidInput("trace.events must be in the order they happened (t never decreases).")
    data = _encoder.encode(trace)
    if len(data) > MAX_TRACE_BYTES:
        raise InvalidInput(f"The trace is {len(data)} bytes; at most {MAX_TRACE_BYTES} are kept.")
    return data


def decode(data: bytes) -> Trace:
    return _decoder.decode(data)


def tokens_per_s(decode_ms: float | None, decode_tokens: int) -> float | None:
    """The run's speed on its own clock, or None when too short to measure honestly."""
    if decode_ms is None or decode_ms < MIN_DECODE_MS or decode_tokens < MIN_DECODE_TOKENS:
        return None
    return decode_tokens * 1000 / decode_ms
