"""serving.js and requester.js on sharing, in a real page with stand-ins for the model and the
links: a page declines with the reason (sharing off, paused and why, a model over its download
limit, more jobs than its user allows), and a requester that ran a job itself for want of peers
says, peer by peer, why none took it, without offering it to peers whose hello says they pause."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import LiveServer
from playwright.async_api import Page

pytestmark = pytest.mark.browser

SMOL = "HuggingFaceTB/SmolLM2-135M-Instruct"
MODELS = {"tiny-gpt2": 400_000, "small": 40_000_000, SMOL: 118_000_000}

# `sharing` and `paused` stand for what pause.js tells the page; tiny-gpt2 is the warm model.
SERVING = """async (models) => {
  const { Serving } = await import("/static/js/serving.js");
  const { InferenceLane } = await import("/static/js/lane.js");
  const local = {
    backend: () => "wasm",
    models: () => Object.keys(models),
    warm: () => ["tiny-gpt2"],
    tokS: () => 100,
    entry: (id) => (id in models ? { id, size: models[id], backends: ["wasm"] } : null),
    generate: () => new Promise(() => {}),
    cancel() {},
    sharing: () => window.sharing,
    paused: () => window.paused,
  };
  const serving = new Serving(local, new InferenceLane(() => {}), { usernameOf: () => "alice", reject() {}, emitWork() {} });
  const link = { peerId: "00000000-0000-4000-8000-00000000000a", send: (m) => { window.sent.push(m); return true; } };
  const offer = (model) => {
    serving.offered(link, { job_id: crypto.randomUUID(), model, task: "text-generation", prompt_tokens: 2 });
    const { type, reason, limit_mb } = window.sent.at(-1);
    return { type, reason, limit_mb };
  };
  const api = (model) => new Promise((ack) => serving.runApi({ payload: { job_id: crypto.randomUUID(), model, prompt: "Hi", params: {} }, ack }));
  Object.assign(window, { sent: [], offer, api, paused: null, sharing: { share: true, download_mb: 50, max_jobs: 1 } });
}"""


async def offer(page: Page, model: str, **state: Any) -> dict[str, Any]:
    return await page.evaluate(
        "([model, state]) => { Object.assign(window, state); return offer(model); }", [model, state]
    )


async def test_a_page_declines_with_its_reason(live_server: LiveServer, page: Page) -> None:
    await page.goto(f"{live_server.url}/login")  # any page of the app's origin hosts the modules
    await page.evaluate(SERVING, MODELS)
    off = {"share": False, "download_mb": 50, "max_jobs": 1}
    shared = {"share": True, "download_mb": 50, "max_jobs": 1}

    assert await offer(page, "tiny-gpt2", sharing=off) == {"type": "job_decline", "reason": "sharing_off", "limit_mb": None}
    assert (await offer(page, "tiny-gpt2", sharing=shared, paused="hidden"))["reason"] == "paused:hidden"
    assert (await offer(page, "tiny-gpt2", paused="battery"))["reason"] == "paused:battery"
    # Not warm, over the 50 MB it downloads for others: declined for good, with the limit.
    assert await offer(page, SMOL, paused=None) == {"type": "job_decline", "reason": "too_large", "limit_mb": 50}
    # Not warm but within the limit: taken. Then its one job at a time is taken.
    assert (await offer(page, "small"))["type"] == "job_accept"
    assert (await offer(page, "tiny-gpt2"))["reason"] == "busy"
    # Models already loaded only (0 MB): the warm one still goes, anything else is too large.
    assert (await offer(page, "tiny-gpt2", sharing={"share": True, "download_mb": 0, "max_jobs": 2}))["type"] == "job_accept"
    assert await offer(page, "small") == {"type": "job_decline", "reason": "too_large", "limit_mb": 0}

    # The server's API jobs get the same answers, as codes the scheduler acts on.
    refused = await page.evaluate("(model) => api(model)", SMOL)
    assert refused["error"]["code"] == "too_large" and "(0 MB)" in refused["error"]["message"]
    await page.evaluate("() => { window.paused = 'device_lost'; }")
    assert (await page.evaluate("() => api('tiny-gpt2')"))["error"]["code"] == "paused"
    await page.evaluate("() => { window.sharing = { share: false, download_mb: 0, max_jobs: 1 }; }")
    assert (await page.evaluate("() => api('tiny-gpt2')"))["error"]["code"] == "sharing_off"


# Three linked peers: alice does not share, carol's tab is hidden (both say so in their hello),
# bob shares but declines the model as over his 50 MB limit. The job then runs here.
REQUESTER = """async (model) => {
  const { Requester } = await import("/static/js/requester.js");
  const { InferenceLane } = await import("/static/js/lane.js");
  const local = {
    backend: () => "wasm", models: () => [model], warm: () => [], tokS: () => 100,
    entry: (id) => ({ id, size: 1, backends: ["wasm"] }),
    generate: async (job, onToken) => { onToken({ seq: 1, text: "here" }); return { text: "here", tokens: 1, reason: "eos" }; },
    cancel() {},
  };
  const received = { alice: [], bob: [], carol: [] };
  const hello = (state, pause_reason) => ({ backend: "wasm", models: [model], models_warm: [], state, pause_reason, queue: 0, tok_s: 50 });
  const links = [];
  const requester = new Requester(local, new InferenceLane(() => {}), { links: () => links, nameOf: (id) => `${id}'s browser` });
  const link = (peerId, hi) => {
    const made = { peerId, state: "open", hello: hi, rtt: 1, send(m) {
      received[peerId].push(m.type);
      if (m.type === "job_offer") setTimeout(() => requester.hears(made, { type: "job_decline", job_id: m.job_id, reason: "too_large", limit_mb: 50 }));
      return true;
    } };
    return made;
  };
  links.push(link("alice", hello("paused", "sharing_off")), link("bob", hello("idle", null)), link("carol", hello("paused", "hidden")));
  const result = await requester.run({ id: crypto.randomUUID(), model, prompt: "Hi", params: { max_new_tokens: 4 } }, { mode: "mesh" }).done;
  return { text: result.text, fallback: result.fallback, declined: result.declined, workers: result.attempts.map((a) => a.worker), received };
}"""


async def test_a_requester_says_why_no_peer_took_its_job(live_server: LiveServer, page: Page) -> None:
    await page.goto(f"{live_server.url}/login")
    outcome = await page.evaluate(REQUESTER, SMOL)

    assert outcome["text"] == "here" and outcome["workers"] == [None]  # it ran in this browser
    assert outcome["fallback"] == "declined"
    assert outcome["declined"] == (
        "alice's browser: sharing is off; carol's browser: paused, its tab is hidden; "
        "bob's browser: model over its 50 MB download limit"
    )
    # Paused peers were never offered the job; bob was, once.
    assert outcome["received"] == {"alice": [], "bob": ["job_offer"], "carol": []}


async def test_pause_reasons_in_order_and_a_page_without_settings_shares_nothing(live_server: LiveServer, page: Page) -> None:
    await page.goto(f"{live_server.url}/login")  # no sharing-settings element here
    reasons = await page.evaluate("""async () => {
      const { pauseReason, readSharing } = await import("/static/js/pause.js");
      const sharing = { share: true, download_mb: 0, max_jobs: 1 };
      const at = (level, charging) => ({ level, charging });
      return {
        missing: readSharing(),
        off: pauseReason({ sharing: readSharing(), hidden: false, battery: null, deviceLost: false }),
        first: pauseReason({ sharing: { ...sharing, share: false }, hidden: true, battery: at(0.1, false), deviceLost: true }),
        lost: pauseReason({ sharing, hidden: true, battery: at(0.1, false), deviceLost: true }),
        hidden: pauseReason({ sharing, hidden: true, battery: at(0.1, false), deviceLost: false }),
        low: pauseReason({ sharing, hidden: false, battery: at(0.19, false), deviceLost: false }),
        charging: pauseReason({ sharing, hidden: false, battery: at(0.05, true), deviceLost: false }),
        enough: pauseReason({ sharing, hidden: false, battery: at(0.2, false), deviceLost: false }),
        no_battery_api: pauseReason({ sharing, hidden: false, battery: null, deviceLost: false }),
      };
    }""")
    assert reasons == {
        "missing": {"share": False, "download_mb": 0, "max_jobs": 1},
        "off": "sharing_off",
        "first": "sharing_off",
        "lost": "device_lost",
        "hidden": "hidden",
        "low": "battery",
        "charging": None,
        "enough": None,
        "no_battery_api": None,
    }
