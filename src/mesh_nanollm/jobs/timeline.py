"""A job's trace laid out for the job page: one row per attempt with its phases (queue, load,
prefill, decode) as bars, tokens over time with the first token marked, and every event in words
for the table beside the drawing. Geometry only; templates/_timeline.html draws it as SVG."""

from __future__ import annotations

from dataclasses import dataclass, field

from mesh_nanollm.jobs.trace import Trace, TraceEvent

WIDTH = 1000  # the drawings' x axis, in viewBox units
COLOURS = 6  # attempt colours in app.css (.attempt-0 … .attempt-5), reused past the sixth
PHASES = ("queue", "load", "prefill", "decode")


@dataclass
class Bar:
    phase: str
    x: float
    width: float
    start_ms: float
    end_ms: float


@dataclass
class Row:
    attempt: int
    worker: str
    colour: int
    outcome: str
    bars: list[Bar] = field(default_factory=list)


@dataclass
class Column:
    x: float
    width: float
    height: float  # 0..100, of the tallest bucket
    tok_s: float


@dataclass
class Timeline:
    span_ms: float
    rows: list[Row]
    columns: list[Column]
    peak_tok_s: float
    first_token_x: float | None
    first_token_ms: float | None
    events: list[tuple[float, str]]  # (t, what happened), for the table
    made_tok_s: float | None = (
        None  # the speed where the tokens were made, as their worker measured it
    )
    made_by: str = ""


def _x(t: float, span: float) -> float:
    return round(t * WIDTH / span, 2)


def _kb(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.0f} kB"


def describe(event: TraceEvent, name: str) -> str:
    """One event in the words of the job page's table; `name` is who `event.peer` is."""
    kind = event.kind
    if kind == "created":
        return "Job created"
    if kind == "offered":
        return f"Offered to {name}"
    if kind == "accepted":
        eta = f", could start in {event.eta_ms:.0f} ms" if event.eta_ms is not None else ""
        return f"{name} accepted{eta}"
    if kind == "declined":
        return f"{name} declined: {event.reason or 'no reason given'}"
    if kind == "dispatched":
        return f"Attempt {event.attempt} sent to {name}"
    if kind == "load_started":
        return "Model load started"
    if kind == "load_ready":
        how = "cached" if event.cached else "downloaded" if event.cached is False else "loaded"
        size = f", {_kb(event.bytes)}" if event.bytes else ""
        return f"Model ready ({how}{size})"
    if kind == "first_token":
        return "First token"
    if kind == "failover":
        return f"Failed over from {name}: {event.reason or 'no reason given'}"
    if kind == "cancel":
        return "Cancelled"
    if kind == "error":
        return f"Failed: {event.reason or 'no reason given'}"
    parts = [f"{event.tokens} tokens"] if event.tokens is not None else []
    if event.ttft_ms is not None:
        parts.append(f"first token after {event.ttft_ms:.0f} ms")
    if event.tok_s is not None:
        parts.append(f"{event.tok_s:.1f} tok/s")
    worker = f" (as {name} measured it: {', '.join(parts[1:])})" if len(parts) > 1 else ""
    return f"Done{': ' + parts[0] if parts else ''}{worker}"


def lay_out(trace: Trace, names: dict[str, str], here: str) -> Timeline:
    """`names`: what to call each peer, by id (peers.peer_names); `here`: who runs an attempt that
    names no peer."""

    def name(event: TraceEvent) -> str:
        return here if event.peer is None else names.get(str(event.peer), "a peer no longer on record")

    events = trace.events
    series = trace.tokens
    last = events[-1] if events else None
    # A finished run's drawing ends with it, its last token bucket cut there; an unfinished one's
    # runs to the end of its tokens.
    end_of_tokens = 0.0
    if series and series.counts:
        ended = last is not None and last.kind in ("done", "error", "cancel")
        end_of_tokens = series.start_ms + series.bucket_ms * (
            len(series.counts) - (1 if ended else 0)
        )
    span = max([1.0, end_of_tokens, *(event.t for event in events)])

    rows: list[Row] = []
    waiting_since = 0.0  # when the attempt to come began to wait: the job's start, or a failover
    marks: dict[str, float] = {}  # the running attempt's moments
    pending: dict[str, float] = {}  # a load before its attempt was sent (a local run loads first)
    outcomes = {
        "failover": "failed over: {}",
        "done": "finished",
        "error": "failed",
        "cancel": "cancelled",
    }

    def bar(phase: str, start: float, stop: float) -> Bar:
        return Bar(phase, _x(start, span), max(_x(stop - start, span), 1.0), start, stop)

    def close(at: float, outcome: str) -> None:
        row = rows[-1]
        sent = marks["dispatched"]
        # Waiting where it was sent (in transit, in that worker's queue) before its model is
        # loading or ready counts as queue too.
        waited = marks.get("load_started", marks.get("load_ready", sent))
        if waited > sent:
            queued = row.bars.pop() if row.bars and row.bars[-1].end_ms == sent else None
            row.bars.append(bar("queue", queued.start_ms if queued else sent, waited))
        loaded = marks.get("load_ready", at) if "load_started" in marks else None
        spans = {
            "load": (marks.get("load_started"), loaded),
            "prefill": (max(marks.get("load_ready", sent), sent), marks.get("first_token", at)),
            "decode": (marks.get("first_token"), at if "first_token" in marks else None),
        }
        for phase, (start, stop) in spans.items():
            if start is not None and stop is not None and stop > start:
                row.bars.append(bar(phase, start, stop))
        row.outcome = outcome

    for event in events:
        running = bool(rows) and rows[-1].outcome == "running"
        if event.kind == "dispatched":
            if running:
                close(event.t, "given up")
            row = Row(event.attempt or len(rows) + 1, name(event), len(rows) % COLOURS, "running")
            queued_until = min(event.t, pending.get("load_started", event.t))
            if queued_until > waiting_since:
                row.bars.append(bar("queue", waiting_since, queued_until))
            rows.append(row)
            marks, pending = {**pending, "dispatched": event.t}, {}
        elif event.kind in ("load_started", "load_ready", "first_token"):
            (marks if running else pending).setdefault(event.kind, event.t)
        elif event.kind in outcomes and running:
            close(event.t, outcomes[event.kind].format(event.reason))
            waiting_since = event.t
    if rows and rows[-1].outcome == "running":
        close(span, "unfinished")

    columns: list[Column] = []
    peak = 0.0
    if series and series.counts:
        # The last bucket, cut where the run ended, over what is left of it (at least half a bucket,
        # so two tokens just before the end do not read as a burst).
        widths = [float(series.bucket_ms)] * len(series.counts)
        widths[-1] = max(
            min(series.bucket_ms, span - (series.start_ms + series.bucket_ms * (len(widths) - 1))),
            series.bucket_ms / 2,
        )
        rates = [count * 1000 / width for count, width in zip(series.counts, widths, strict=True)]
        peak = max(rates)
        for i, rate in enumerate(rates):
            if rate:
                start = series.start_ms + i * series.bucket_ms
                columns.append(
                    Column(
                        _x(start, span),
                        max(_x(widths[i], span) - 0.5, 0.5),
                        round(rate * 100 / peak, 2),
                        rate,
                    )
                )
    first = next((event.t for event in events if event.kind == "first_token"), None)
    done = next((event for event in reversed(events) if event.kind == "done"), None)
    return Timeline(
        made_tok_s=done.tok_s if done else None,
        made_by=name(done) if done else "",
        span_ms=span,
        rows=rows,
        columns=columns,
        peak_tok_s=peak,
        first_token_x=_x(first, span) if first is not None else None,
        first_token_ms=first,
        events=[(event.t, describe(event, name(event))) for event in events],
    )
