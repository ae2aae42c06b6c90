"""The job parameters' limits the page checks are the ones Python enforces: the server hands them
down (jobs/params.py → every page's `job-limits` → protocol.js), so the two cannot drift."""

from __future__ import annotations

import pytest
from conftest import LiveServer
from playwright.async_api import Page

from mesh_nanollm.jobs.params import API_MAX_NEW_TOKENS, PAGE_MAX_NEW_TOKENS, job_limits

pytestmark = pytest.mark.browser

CHECK = """async ([page, api]) => {
  const { JOB_LIMITS, cleanParams, parseApiEvent } = await import("/static/js/protocol.js");
  const run = (n) => parseApiEvent("job_run", {
    job_id: "00000000-0000-4000-8000-00000000000a", model: "m", prompt: "Hi", params: { max_new_tokens: n },
  });
  return {
    limits: JOB_LIMITS,
    page_at_cap: cleanParams({ max_new_tokens: page }),
    page_over_cap: cleanParams({ max_new_tokens: page + 1 }),
    api_at_cap: run(api).message?.params,
    api_over_cap: run(api + 1).problem,
  };
}"""


async def test_page_limits_equal_pythons(live_server: LiveServer, page: Page) -> None:
    await page.goto(f"{live_server.url}/login")
    seen = await page.evaluate(CHECK, [PAGE_MAX_NEW_TOKENS, API_MAX_NEW_TOKENS])
    assert seen["limits"] == job_limits()
    assert seen["page_at_cap"] == {"max_new_tokens": PAGE_MAX_NEW_TOKENS}
    assert seen["page_over_cap"] == {}
    assert seen["api_at_cap"] == {"max_new_tokens": API_MAX_NEW_TOKENS}
    assert seen["api_over_cap"] == "job_run: params.max_new_tokens out of range"
