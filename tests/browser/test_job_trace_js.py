"""The page's job trace (static/js/job-trace.js) keeps within the caps the server keeps, and what it
sends is what the server takes: tokens per 100 ms (merging past the bucket cap), the event cap with
room kept for the end, time order, the byte cap, and the speed rule shared with the history."""

from __future__ import annotations

import pytest
from conftest import LiveServer
from playwright.async_api import Browser
from support.browser import evaluate_signed_in

from mesh_nanollm.jobs.trace import MAX_BUCKETS, MAX_EVENTS, MAX_TRACE_BYTES

pytestmark = pytest.mark.browser

EXERCISE = """async () => {
  const { JobTrace, honestTokS } = await import("/static/js/job-trace.js");
  const peer = "00000000-0000-4000-8000-00000000000a";
  const t0 = performance.now();

  const tokens = new JobTrace(t0);
  tokens.tokens(3, t0 + 10);
  tokens.tokens(2, t0 + 150);
  const twoBuckets = structuredClone(tokens.toJSON().tokens);
  tokens.tokens(1, t0 + 10 + 100 * 600);  // past the cap: neighbours merge, twice as wide
  const merged = tokens.toJSON().tokens;

  const many = new JobTrace(t0);
  for (let i = 0; i < 500; i++) many.add("offered", { peer }, t0 + 1 + i);
  const capped = many.events.length;
  many.add("done", { tokens: 1 }, t0 + 600);

  const late = new JobTrace(t0);
  late.add("first_token", { attempt: 1 }, t0 + 50);
  late.add("load_ready", { attempt: 1, cached: true, bytes: null }, t0 + 20);  // placed afterwards
  const ordered = late.toJSON().events;

  const big = new JobTrace(t0);
  for (let i = 0; i < 390; i++) big.add("declined", { peer, reason: "r".repeat(300) }, t0 + i);
  big.add("done", { tokens: 3 }, t0 + 400);
  const fitted = big.toJSON();

  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const send = async (method, url, body) => {
    const response = await fetch(url, {
      method, body: JSON.stringify(body),
      headers: { "content-type": "application/json", accept: "application/json", "x-csrftoken": csrf },
    });
    return { status: response.status, body: await response.json() };
  };
  const job = (await send("POST", "/api/jobs", { room: "global", model: "tiny-gpt2", prompt: "p" })).body;
  await send("PATCH", `/api/jobs/${job.id}`, { status: "running" });
  const recorded = await send("PATCH", `/api/jobs/${job.id}`, { status: "succeeded", trace: big });
  return {
    twoBuckets, merged, capped, total: many.events.length, last: many.events.at(-1).kind, ordered,
    fittedBytes: new TextEncoder().encode(JSON.stringify(fitted)).length,
    fittedKinds: [...new Set(fitted.events.map((e) => e.kind))],
    recorded: recorded.status,
    speeds: [honestTokS(0.6, 7), honestTokS(1000, 100), honestTokS(49.9, 10), honestTokS(50, 3)],
  };
}"""


async def test_page_trace_keeps_the_servers_caps_and_is_accepted(
    live_server: LiveServer, browser: Browser
) -> None:
    seen = await evaluate_signed_in(browser, live_server.url, EXERCISE)

    assert seen["twoBuckets"] == {"start_ms": 10, "bucket_ms": 100, "counts": [3, 2]}
    merged = seen["merged"]
    assert (
        merged["bucket_ms"] == 200
        and len(merged["counts"]) <= MAX_BUCKETS
        and sum(merged["counts"]) == 6
    )
    assert merged["counts"][:1] == [5] and merged["counts"][-1] == 1
    # The event cap keeps its last slot for the end.
    assert (seen["capped"], seen["total"], seen["last"]) == (MAX_EVENTS - 1, MAX_EVENTS, "done")
    assert [(e["kind"], e["t"]) for e in seen["ordered"]] == [
        ("created", 0),
        ("load_ready", 20),
        ("first_token", 50),
    ]
    assert "bytes" not in seen["ordered"][1]  # a field without a value is left out
    # Over the byte cap, the offers' answers go first; the rest is what the server keeps.
    assert seen["fittedBytes"] <= MAX_TRACE_BYTES and seen["fittedKinds"] == ["created", "done"]
    assert seen["recorded"] == 200
    assert seen["speeds"] == [None, 100, None, None]
