"""The limits of a job's generation parameters, written once: the jobs API, the OpenAI-compatible
API and the headless worker import them, and every page gets them (`job-limits` in base.html) for
static/js/protocol.js, so Python and the browser cannot drift.

Two caps on new tokens, because two paths ask for them. A room page's job (the prompt box, its
record in the jobs API, a data-channel job_run) counts resumed tokens against its cap, and a page
asks for what a person reads as it streams: PAGE_MAX_NEW_TOKENS. An API job is asked for by a
script through OpenAI's `max_tokens`, counts only the tokens still to come after a failover, and
is relayed by the server, which records it itself: API_MAX_NEW_TOKENS, the larger answers such
clients expect."""

from __future__ import annotations

from mesh_nanollm.jobs import trace

PAGE_MAX_NEW_TOKENS = 2048
API_MAX_NEW_TOKENS = 4096
TEMPERATURE_MAX = 2.0
TOP_K_MAX = 1000
REPETITION_PENALTY_MAX = 2.0  # at least 1; top_p is in (0, 1]
# A page's seed: what a JavaScript number holds exactly (transformers.js seeds its Mersenne Twister
# with it, as Python's random.Random would).
SEED_MAX = 2**53 - 1


def job_limits() -> dict[str, float]:
    """The limits as the page reads them (protocol.js)."""
    return {
        "page_max_new_tokens": PAGE_MAX_NEW_TOKENS,
        "api_max_new_tokens": API_MAX_NEW_TOKENS,
        "temperature_max": TEMPERATURE_MAX,
        "top_k_max": TOP_K_MAX,
        "repetition_penalty_max": REPETITION_PENALTY_MAX,
        # A job's trace (jobs/trace.py, static/js/job-trace.js): its caps, and the shortest run
        # whose tok/s the page and the history show.
        "trace_max_events": trace.MAX_EVENTS,
        "trace_max_attempt": trace.MAX_ATTEMPT,
        "trace_max_buckets": trace.MAX_BUCKETS,
        "trace_max_bytes": trace.MAX_TRACE_BYTES,
        "speed_min_decode_ms": trace.MIN_DECODE_MS,
        "speed_min_decode_tokens": trace.MIN_DECODE_TOKENS,
        "seed_max": SEED_MAX,
    }
