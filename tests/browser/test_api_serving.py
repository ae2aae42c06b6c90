"""mesh.js serving the server's API jobs, in a real page, with a stand-in Socket.IO connection and a
stand-in model the test drives: what it answers each job_run, what it streams back, and that API
jobs share the one inference lane with the page's own prompts."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import LiveServer
from playwright.async_api import Page

pytestmark = pytest.mark.browser

# The stand-ins: `conn` is what signaling.js's RoomConnection offers mesh.js; `local` is the page's
# model, whose generations the test advances by hand (window.runs) and whose cancels it records.
HARNESS = """async () => {
  const { Mesh } = await import("/static/js/mesh.js");
  const conn = Object.assign(new EventTarget(), {
    peerId: "00000000-0000-4000-8000-000000000001", iceServers: [], peers: [],
    signal() {}, updateStatus() {},
    sendJob(event, payload) { sent.push([event, payload]); return true; },
  });
  const sent = [], runs = [], cancels = [], work = [];
  const entries = { "tiny-gpt2": ["wasm"], "gpu-only": ["webgpu"] };
  const local = {
    backend: () => "wasm",
    models: () => Object.keys(entries),
    warm: () => ["tiny-gpt2"],
    tokS: () => 100,
    entry: (id) => (entries[id] ? { id, size: 1, backends: entries[id] } : null),
    // Shared as a test account's pages are (support/accounts.py): any size, two jobs at once.
    sharing: () => ({ share: true, download_mb: 100000, max_jobs: 2 }),
    paused: () => null,
    generate: (job, onToken) => new Promise((resolve) => runs.push({ job, onToken, resolve })),
    cancel(id) {
      cancels.push(id);
      runs.find((run) => run.job.id === id)?.resolve({ text: "", tokens: 1, reason: "cancelled" });
    },
  };
  const mesh = new Mesh(local);
  mesh.addEventListener("work", (e) => work.push(e.detail));
  mesh.attach(conn);
  // Deliver a server event; job_run resolves with the page's ack ("no ack" if none comes, as the
  // server would give up waiting).
  const deliver = (type, payload) => new Promise((ack) => {
    conn.dispatchEvent(new CustomEvent(type, { detail: type === "job_run" ? { payload, ack } : payload }));
    setTimeout(() => ack(type === "job_run" ? "no ack" : null), type === "job_run" ? 2000 : 0);
  });
  const settle = () => new Promise((resolve) => setTimeout(resolve, 50));
  Object.assign(window, { mesh, conn, sent, runs, cancels, work, deliver, settle });
}"""

A, B, C, D = (f"00000000-0000-4000-8000-00000000000{n}" for n in "abcd")
CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}]


async def deliver(page: Page, type_: str, payload: dict[str, Any]) -> Any:
    answer = await page.evaluate(
        "async ([t, p]) => { const a = await deliver(t, p); await settle(); return a; }",
        [type_, payload],
    )
    return answer


async def state(page: Page) -> dict[str, Any]:
    return await page.evaluate(
        "() => ({ sent, cancels, work, queue: mesh.queue, computing: mesh.computing, "
        "runs: runs.map((r) => r.job) })"
    )


def job_run(job_id: str, **fields: Any) -> dict[str, Any]:
    return {"job_id": job_id, "model": "tiny-gpt2", "params": {"max_new_tokens": 8}, **fields}


async def test_page_serves_api_jobs_in_its_one_lane(live_server: LiveServer, page: Page) -> None:
    await page.goto(f"{live_server.url}/login")  # any page of the app's origin can host the modules
    await page.evaluate(HARNESS)

    # Turned down, with the code the server acts on: nothing runs.
    assert await deliver(page, "job_run", job_run(A, prompt="Hi", messages=CHAT)) == {
        "error": {"code": "invalid", "message": "job_run: needs exactly one of prompt and messages"}
    }
    assert (
        await deliver(page, "job_run", job_run(A, prompt="Hi", params={"max_new_tokens": 5000}))
    )["error"]["code"] == "invalid"
    assert (await deliver(page, "job_run", {**job_run(A, prompt="Hi"), "model": "nope"}))["error"][
        "code"
    ] == "unknown_model"
    assert (await deliver(page, "job_run", {**job_run(A, prompt="Hi"), "model": "gpu-only"}))[
        "error"
    ]["code"] == "needs_other_backend"
    assert (await state(page))["runs"] == []

    # Taken: a chat job runs at once with its messages, parameters in range, seed passed on.
    params = {"max_new_tokens": 3000, "temperature": 0, "seed": 5}
    assert await deliver(
        page, "job_run", job_run(A, messages=CHAT, params=params, username="alice")
    ) == {"ok": True}
    # The page's own prompt and a second API job wait behind it; a third is one too many.
    await page.evaluate(
        f"() => {{ window.own = mesh.run({{ id: '{D}', model: 'tiny-gpt2', prompt: 'Mine', params: {{}} }}, {{ mode: 'local' }}); }}"
    )
    assert await deliver(page, "job_run", job_run(B, prompt="You may", resume_text="You")) == {
        "ok": True
    }
    assert (await deliver(page, "job_run", job_run(C, prompt="Hi")))["error"]["code"] == "busy"
    now = await state(page)
    assert now["runs"] == [
        {
            "id": A,
            "model": "tiny-gpt2",
            "messages": CHAT,
            "params": params,
            "resume_text": "",
            "count_resumed": False,
        }
    ]
    assert now["queue"] == 1 and now["computing"] is True

    await page.evaluate("() => runs[0].onToken({ seq: 2, text: 'Hi there' })")
    await page.evaluate(
        "() => runs[0].resolve({ text: 'Hi there.', tokens: 3, resumed_tokens: 0, prompt_tokens: 9, ttft_ms: 4.5, tok_s: null, total_ms: 9, reason: 'eos' })"
    )
    await page.evaluate("settle")
    now = await state(page)
    assert now["sent"] == [
        ["job_token", {"job_id": A, "seq": 2, "text": "Hi there"}],
        [
            "job_done",
            {
                "job_id": A,
                "text": "Hi there.",
                "metrics": {
                    "tokens": 3,
                    "reason": "stop",
                    "backend": "wasm",
                    "prompt_tokens": 9,
                    "ttft_ms": 4.5,
                    "total_ms": 9,
                },
            },
        ],
    ]
    # One generation at a time: the page's own prompt (queued first) runs next, then job B.
    assert [job["id"] for job in now["runs"]] == [A, D]
    await page.evaluate("() => runs[1].resolve({ text: 'ok', tokens: 1, reason: 'eos' })")
    await page.evaluate("settle")
    now = await state(page)
    assert [job["id"] for job in now["runs"]] == [A, D, B]
    assert now["runs"][2]["prompt"] == "You may" and now["runs"][2]["resume_text"] == "You"

    # The server's cancel stops the worker, which answers done/cancelled through the same path.
    await deliver(page, "job_cancel", {"job_id": B})
    now = await state(page)
    assert now["cancels"] == [B]
    assert now["sent"][-1] == [
        "job_done",
        {
            "job_id": B,
            "text": "",
            "metrics": {"tokens": 1, "reason": "cancelled", "backend": "wasm"},
        },
    ]
    assert now["queue"] == 0 and now["computing"] is False

    # The serving line's events: an API job, with the requester the server named.
    states = [
        (w["job_id"], w["state"], w["api"], w["username"])
        for w in now["work"]
        if w["job_id"] in (A, B)
    ]
    assert (A, "done", True, "alice") in states and (B, "cancelled", True, "") in states

    # Losing the server mid-job stops the worker; nothing more goes out for that job.
    assert await deliver(page, "job_run", job_run(C, prompt="Hi")) == {"ok": True}
    before = len((await state(page))["sent"])
    await page.evaluate(
        "() => { conn.dispatchEvent(new CustomEvent('disconnect', { detail: {} })); }"
    )
    await page.evaluate("settle")
    now = await state(page)
    assert now["cancels"] == [B, C] and len(now["sent"]) == before
