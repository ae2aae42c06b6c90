"""A job that failed over (static/js/requested-job.js) ends on its last worker's count: the
stream's running count, earlier attempts' tokens plus the last one's, can pass the job's
max_new_tokens when the resumed text re-tokenises to fewer tokens than were streamed, and the
page's record of the run (its token count and decode tokens) must stay within what it asked for."""

from __future__ import annotations

import pytest
from conftest import LiveServer
from playwright.async_api import Browser
from support.browser import evaluate_signed_in

pytestmark = pytest.mark.browser

EXERCISE = """async () => {
  const { RequestedJob } = await import("/static/js/requested-job.js");
  const counts = [];
  const job = { id: "j", model: "tiny-gpt2", prompt: "Once", params: { max_new_tokens: 6 } };
  const requested = new RequestedJob(job, "mesh", {
    onToken: (text, seq) => counts.push(seq),
    onAttempt: () => {},
    onTrace: () => {},
    nameOf: () => "someone's browser",
  });
  const link = (peerId) => ({ peerId, send: () => true });
  const first = link("a");
  const lost = requested.runOn(first);
  requested.token(" upon", 1);
  requested.token(" a", 2);
  requested.token(" ", 3);  // the worker's streamer printed the space, then the tab closed
  requested.linkLost(first);
  await lost;
  requested.failedOver(first, "closed");
  requested.runOn(link("b"));
  // " upon a" re-tokenises to 2 tokens; the second worker has 6 - 2 = 4 to make.
  for (const [piece, seq] of [[" time", 1], [",", 2], [" there", 3], [" was", 4]]) requested.token(piece, seq);
  const result = requested.finish({ text: " time, there was", tokens: 4, resumed_tokens: 2, reason: "length" });
  return { counts, tokens: result.tokens, text: result.text };
}"""


async def test_a_failed_over_job_ends_on_its_last_workers_count(live_server: LiveServer, browser: Browser) -> None:
    seen = await evaluate_signed_in(browser, live_server.url, EXERCISE)

    assert seen["text"] == " upon a time, there was"
    assert seen["tokens"] == 6
    # Streamed: 1, 2, 3 from the first worker, then 3 + 1 … 3 + 4 (one past the job's 6); the end
    # brings the count back to the whole answer's.
    assert seen["counts"] == [1, 2, 3, 4, 5, 6, 7, 6]
