"""inference-worker.js on its own: raw {type, ...} messages in and out, as the page and peers use them."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import LiveServer
from playwright.async_api import Page
from support.browser import RequestLog
from support.pages import MODEL

from mesh_nanollm.app import STATIC_DIR
from mesh_nanollm.vendor import load_vendor_manifest

pytestmark = pytest.mark.browser

# A page-side harness: everything the worker says lands in window.heard.
HARNESS = """() => {
  window.heard = [];
  window.worker = new Worker("/static/js/inference-worker.js", { type: "module" });
  worker.onmessage = (event) => {
    heard.push(event.data);
  };
  worker.onerror = (event) => {
    heard.push({ type: "worker-error", message: event.message });
  };
}"""
UNTIL = """([type, from]) => window.heard.slice(from).some((m) => m.type === type || m.type === "worker-error")"""


def runtime() -> dict[str, Any]:
    vendor = load_vendor_manifest(STATIC_DIR)
    return {
        "transformers": vendor.url("transformers"),
        "webgpu": {"mjs": vendor.url("ort_webgpu_mjs"), "wasm": vendor.url("ort_webgpu_wasm")},
        "wasm": {"mjs": vendor.url("ort_wasm_mjs"), "wasm": vendor.url("ort_wasm_wasm")},
    }


class Conversation:
    """Send raw messages to the worker and read back what it answered since."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.seen = 0

    async def send(self, message: Any) -> None:
        await self.page.evaluate("(m) => window.worker.postMessage(m)", message)

    async def until(self, type_: str, timeout: float = 30_000) -> list[dict[str, Any]]:
        """Messages from the last read up to and including the first of `type_`."""
        await self.page.wait_for_function(UNTIL, arg=[type_, self.seen], timeout=timeout)
        heard = await self.page.evaluate("(from) => window.heard.slice(from)", self.seen)
        end = next(i for i, m in enumerate(heard) if m["type"] in (type_, "worker-error")) + 1
        self.seen += end
        assert heard[end - 1]["type"] == type_, heard[:end]
        return heard[:end]


async def start(page: Page, server: LiveServer) -> Conversation:
    await page.goto(f"{server.url}/login")  # any page of the app's origin can host the worker
    await page.evaluate(HARNESS)
    return Conversation(page)


async def test_worker_speaks_the_message_protocol(live_server: LiveServer, page: Page) -> None:
    requests = RequestLog(live_server.url).attach(page.context)
    worker = await start(page, live_server)

    # Anything that is not a known {type} object is answered with an error, and the worker lives on.
    for bad in ("hello", {"type": "explode"}, None, [1, 2]):
        await worker.send(bad)
        (error,) = await worker.until("error")
        assert error["code"] == "bad_message"
    await worker.send({"type": "load", "model": MODEL, "source": "local", "dtype": "q8"})
    assert (await worker.until("error"))[-1]["code"] == "not_initialised"
    await worker.send({"type": "init", "runtime": {"transformers": "https://cdn.example/t.js"}})
    assert (await worker.until("error"))[-1]["code"] == "bad_message"

    await worker.send({"type": "init", "runtime": runtime(), "device": "auto", "local_model_path": "/models/"})
    (backend,) = await worker.until("backend")
    assert backend["device"] == "wasm" and backend["adapter"] is None
    assert "no adapter" in backend["reason"]

    await worker.send({"type": "generate", "id": "early", "model": MODEL, "prompt": "You may", "params": {}})
    assert (await worker.until("error"))[-1] == {
        "type": "error", "code": "not_loaded", "message": f"Load {MODEL} first.", "id": "early",
    }

    await worker.send({"type": "load", "model": MODEL, "source": "local", "dtype": "q8"})
    loading = await worker.until("ready", timeout=60_000)
    progress = [m for m in loading if m["type"] == "progress"]
    assert progress and progress[-1]["loaded"] == progress[-1]["total"] > 400_000
    assert all(m["model"] == MODEL for m in loading)
    assert loading[-1]["warm"] is False and loading[-1]["defaults"] == {"repetition_penalty": 1.2}

    await worker.send({"type": "load", "model": MODEL, "source": "local", "dtype": "q8"})
    assert (await worker.until("ready"))[-1]["warm"] is True

    await worker.send({"type": "generate", "id": "g1", "model": MODEL, "prompt": "You may", "params": {"max_new_tokens": 12}})
    stream = await worker.until("done")
    tokens, done = stream[:-1], stream[-1]
    assert [m["type"] for m in tokens] == ["token"] * len(tokens)
    seqs = [m["seq"] for m in tokens]
    assert seqs[0] == 1 and seqs == sorted(seqs) and seqs[-1] == 12  # fast tokens may share a message
    assert done["id"] == "g1" and done["tokens"] == 12 and done["reason"] == "length"
    assert "".join(m["text"] for m in tokens) == done["text"]
    assert done["text"].startswith(" add a copy of the Library")  # greedy decoding, as in Python
    assert done["ttft_ms"] > 0 and done["tok_s"] > 0

    # Far faster than anyone reads (8 tokens within 33 ms), the stream is posted every 100 ms, not
    # every 33 ms: a message that carries 8 tokens or more was posted long after the one before it.
    # Timed on the worker's own clock (its posts stamped inside it): on a busy host the page may
    # take several messages in one go, which says nothing of when the worker sent them.
    (inside,) = [w for w in page.workers if w.url.endswith("/inference-worker.js")]
    await inside.evaluate("""() => {
      const post = self.postMessage.bind(self);
      self.postMessage = (m, ...rest) => post(m?.type === "token" ? { ...m, at: performance.now() } : m, ...rest);
    }""")
    await worker.send({"type": "generate", "id": "g2", "model": MODEL, "prompt": "You may", "params": {"max_new_tokens": 200}})
    tokens = (await worker.until("done"))[:-1]
    assert tokens[0]["seq"] == 1 and tokens[-1]["seq"] == 200
    # (tokens it carries, ms since the previous message) for each message but the first and the last
    batches = [(tokens[i]["seq"] - tokens[i - 1]["seq"], tokens[i]["at"] - tokens[i - 1]["at"]) for i in range(1, len(tokens) - 1)]
    assert all(gap_ms >= 66 for count, gap_ms in batches if count >= 8), batches

    # While one generation runs, a second is refused; a cancel stops the first after a token or two.
    await worker.send({"type": "generate", "id": "long", "model": MODEL, "prompt": "You may", "params": {"max_new_tokens": 240}})
    await worker.until("token")
    await worker.send({"type": "generate", "id": "other", "model": MODEL, "prompt": "Hi", "params": {}})
    await worker.send({"type": "cancel", "id": "long"})
    stream = await worker.until("done")
    busy = [m for m in stream if m["type"] == "error"]
    assert busy and busy[0]["code"] == "busy" and busy[0]["id"] == "other"
    assert stream[-1]["id"] == "long" and stream[-1]["reason"] == "cancelled"
    assert stream[-1]["tokens"] < 240

    # Requests past the 256-token context are clamped to it; prompts that fill it are refused.
    await worker.send({"type": "generate", "id": "far", "model": MODEL, "prompt": "You may", "params": {"max_new_tokens": 2000}})
    done = (await worker.until("done"))[-1]
    assert done["reason"] == "context" and done["prompt_tokens"] + done["tokens"] == 256
    await worker.send({"type": "generate", "id": "huge", "model": MODEL, "prompt": "word " * 400, "params": {}})
    error = (await worker.until("error"))[-1]
    assert error["code"] == "too_long" and error["id"] == "huge"

    assert requests.off_origin == []


async def test_worker_init_twice_is_refused(live_server: LiveServer, page: Page) -> None:
    worker = await start(page, live_server)
    init = {"type": "init", "runtime": runtime(), "device": "wasm", "threads": 1}
    await worker.send(init)
    (backend,) = await worker.until("backend")
    assert backend["device"] == "wasm" and backend["threads"] == 1
    await worker.send(init)
    assert "already initialised" in (await worker.until("error"))[-1]["message"]


async def test_chat_messages_without_a_template_read_as_role_lines(live_server: LiveServer, page: Page) -> None:
    """An API chat job on a model with no chat_template (the tiny model): the worker reads the
    messages as the "role: content" lines every peer renders, and resumes them like a prompt."""
    worker = await start(page, live_server)
    await worker.send({"type": "init", "runtime": runtime(), "device": "wasm", "local_model_path": "/models/"})
    await worker.until("backend")
    await worker.send({"type": "load", "model": MODEL, "source": "local", "dtype": "q8"})
    await worker.until("ready", timeout=60_000)
    messages = [{"role": "system", "content": "You may copy it."}, {"role": "user", "content": "What may I do?"}]
    rendered = "system: You may copy it.\nuser: What may I do?\nassistant:"
    params = {"max_new_tokens": 40}

    await worker.send({"type": "generate", "id": "chat", "model": MODEL, "messages": messages, "params": params})
    chat = (await worker.until("done"))[-1]
    await worker.send({"type": "generate", "id": "text", "model": MODEL, "prompt": rendered, "params": params})
    text = (await worker.until("done"))[-1]
    assert chat["text"] == text["text"] and len(chat["text"].split()) >= 10
    assert chat["prompt_tokens"] == text["prompt_tokens"] and chat["tokens"] == 40

    # Failover of a chat job: the rest of the answer from its first words, as a whole.
    head = " ".join(chat["text"].split(" ")[:6]).rstrip()
    await worker.send({"type": "generate", "id": "rest", "model": MODEL, "messages": messages, "params": params, "resume_text": head})
    rest = (await worker.until("done"))[-1]
    assert head + rest["text"] == chat["text"]

    # Sampling with a seed (an API request's `seed`): the same seed, the same answer.
    sampled = []
    for n, seed in enumerate((7, 7, 8)):
        sampling = {"max_new_tokens": 40, "temperature": 1.0, "seed": seed}
        await worker.send({"type": "generate", "id": f"s{n}", "model": MODEL, "messages": messages, "params": sampling})
        sampled.append((await worker.until("done"))[-1]["text"])
    assert sampled[0] == sampled[1] != sampled[2] and sampled[0] != chat["text"]

    # Exactly one of prompt and messages.
    await worker.send({"type": "generate", "id": "both", "model": MODEL, "messages": messages, "prompt": rendered, "params": params})
    error = (await worker.until("error"))[-1]
    assert error["code"] == "bad_message" and error["id"] == "both"
