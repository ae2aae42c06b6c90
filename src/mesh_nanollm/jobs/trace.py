"""A job's trace: its timestamped events and tokens over time, as whoever witnessed the run sends
them (the requester's page for local and mesh jobs, the server for API jobs), and the rule that
says when a run was long enough to give an honest tok/s. docs/inference.md, "Traces"."""

from __future__ import annotations

import time
from typing import Annotated, Any, ClassVar, Literal
from uuid import UUID

import msgspec

from mesh_nanollm.errors import InvalidInput

# A run's decode shorter than this, or with fewer tokens after the first, has no honest speed: a
# handful of tokens arriving in one burst would read as thousands of tok/s.
MIN_DECODE_MS = 50.0
MIN_DECODE_TOKENS = 4

MAX_EVENTS = 400
MAX_ATTEMPT = 64
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
    attempt: Annotated[int, msgspec.Meta(ge=1, le=MAX_ATTEMPT)] | None = None
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

    openapi_example: ClassVar[dict[str, Any]] = {
        "events": [
            {"t": 0, "kind": "created"},
            {"t": 4, "kind": "dispatched", "attempt": 1},
            {"t": 5, "kind": "load_started", "attempt": 1},
            {"t": 120, "kind": "load_ready", "attempt": 1, "cached": False, "bytes": 402_000},
            {"t": 160, "kind": "first_token", "attempt": 1},
            {"t": 440, "kind": "done", "attempt": 1, "tokens": 11, "ttft_ms": 38.0, "tok_s": 36.2},
        ],
        "tokens": {"start_ms": 160, "bucket_ms": 100, "counts": [3, 4, 4]},
    }


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


BUCKET_MS = 100
_ENDS = {"done", "error", "cancel"}


class Recorder:
    """A trace as the server witnesses an API job (static/js/job-trace.js is the page's twin):
    events as they happen, tokens per BUCKET_MS as they arrive, and the decode clock."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.events: list[TraceEvent] = [TraceEvent(t=0.0, kind="created")]
        self.series: TokenSeries | None = None
        self.first_at: float | None = None  # when the first tokens arrived, and how many they were
        self.first_tokens = 0
        self.last_at: float | None = None
        self.tokens = 0

    def _ms(self) -> float:
        return round((time.monotonic() - self.t0) * 1000, 1)

    def add(self, kind: Kind, **fields: Any) -> None:
        # The last slot is kept for the end, so a long job that used up the cap still says how it ended.
        if len(self.events) < MAX_EVENTS - (0 if kind in _ENDS else 1):
            reason = fields.get("reason")
            if reason is not None:
                fields["reason"] = reason[:200]
            self.events.append(TraceEvent(t=self._ms(), kind=kind, **fields))

    def tokens_arrived(self, n: int) -> None:
        t = self._ms()
        self.tokens += n
        if self.first_at is None:
            self.first_at, self.first_tokens = t, n
            self.series = TokenSeries(start_ms=t, bucket_ms=BUCKET_MS, counts=[])
        self.last_at = t
        series = self.series
        assert series is not None
        i = int((t - series.start_ms) // series.bucket_ms)
        while i >= MAX_BUCKETS:  # neighbouring buckets merge, each twice as wide
            series.counts = [sum(series.counts[j : j + 2]) for j in range(0, len(series.counts), 2)]
            series.bucket_ms *= 2
            i = int((t - series.start_ms) // series.bucket_ms)
        series.counts.extend([0] * (i + 1 - len(series.counts)))
        series.counts[i] += n

    def decode(self) -> tuple[float | None, int]:
        """First token to last as they arrived here, and the tokens after the first arrival."""
        if self.first_at is None or self.last_at is None:
            return None, 0
        return self.last_at - self.first_at, self.tokens - self.first_tokens

    def encoded(self) -> bytes | None:
        """The stored form; past the byte cap without the offers and their answers, then none."""
        for events in (
            self.events,
            [e for e in self.events if e.kind not in ("offered", "accepted", "declined")],
        ):
            try:
                return encode(Trace(events=events, tokens=self.series))
            except InvalidInput:
                continue
        return None
