/* The page's handle on inference-worker.js: starts it, pairs replies with requests, and falls back
 * to a fresh WASM worker when WebGPU cannot open a model (one worker keeps one backend for life). */

const WORKER_URL = "/static/js/inference-worker.js";
let early = null; // the client inference-start.js started, until the page's session takes it
let asked = false; // whether the session has asked for it: after that, a late start would be a second worker

/** The room page's inference settings: the runtime every signed-in page carries in its head
 * (#inference-config), and this URL's flags for trying things out: ?backend=webgpu|wasm forces
 * one; ?threads=N sets WASM threads. */
export function inferenceConfig() {
  const config = JSON.parse(document.getElementById("inference-config").textContent);
  const query = new URLSearchParams(location.search);
  const backend = query.get("backend");
  const threads = Number.parseInt(query.get("threads") ?? "", 10);
  return {
    ...config,
    device: backend === "webgpu" || backend === "wasm" ? backend : "auto",
    // Forcing WebGPU also accepts a software adapter, so tests can exercise that code path.
    allow_software_gpu: backend === "webgpu",
    threads: threads >= 1 && threads <= 16 ? threads : null,
  };
}

/** Start the worker from the room page's head, before the page's other modules have arrived: its
 * transformers.js import and wasm compile then overlap their loading. */
export function startEarly() {
  if (asked) return;
  early = new InferenceClient(inferenceConfig());
  early.start().catch(() => {}); // whoever takes the client hears how the start went
}

/** The client startEarly started, with `hooks` from now on, or null (a room page swapped in by a
 * link has none: its head is the first page's). */
export function takeEarly(hooks) {
  asked = true;
  const client = early;
  early = null;
  return client && Object.assign(client, hooks);
}

export class InferenceError extends Error {
  constructor({ code, message, reason = null }) {
    super(message);
    this.code = code;
    this.reason = reason; // why a load failed, in load-failure.js's words
  }
}

export class InferenceClient {
  /** config: {runtime, device: auto|webgpu|wasm, allow_software_gpu, threads, local_model_path}. */
  constructor(config, { onBackend = () => {}, onProgress = () => {}, onDeviceLost = () => {} } = {}) {
    this.config = config;
    this.onBackend = onBackend;
    this.onProgress = onProgress;
    this.onDeviceLost = onDeviceLost; // the WebGPU device went away: the worker's GPU runs are over
    this.backend = null; // the worker's last "backend" message
    this.worker = null;
    this.started = null; // start()'s promise for the current worker
    this.pending = new Map(); // "init" | "load:<model>" | "gen:<id>" → {resolve, reject}
    this.streams = new Map(); // generation id → token callback
    // Shared with the worker where the page is cross-origin isolated: a cancel then needs no message.
    this.cancelFlag = self.crossOriginIsolated ? new Int32Array(new SharedArrayBuffer(4)) : null;
  }

  /** Start a worker on `device` and resolve with its backend report. */
  start(device = this.config.device) {
    this.worker?.terminate();
    this.#rejectAll({ code: "restarted", message: "The inference worker was restarted." });
    this.worker = new Worker(WORKER_URL, { type: "module" });
    this.worker.addEventListener("message", (event) => this.#receive(event.data));
    this.worker.addEventListener("error", () =>
      this.#rejectAll({ code: "worker_failed", message: "The inference worker could not start." }),
    );
    const ready = this.#expect("init");
    this.worker.postMessage({ type: "init", ...this.config, device, cancel_flag: this.cancelFlag?.buffer });
    this.started = ready.then((backend) => {
      this.backend = backend;
      this.onBackend(backend);
      return backend;
    });
    return this.started;
  }

  /** Load (or find warm) `entry` = {id, source, dtype}; resolves with the worker's "ready" message. */
  async load(entry) {
    const ready = this.#expect(`load:${entry.id}`);
    this.worker.postMessage({ type: "load", model: entry.id, source: entry.source, dtype: entry.dtype });
    try {
      return await ready;
    } catch (error) {
      if (error.code !== "webgpu_failed") throw error;
      console.warn(`WebGPU could not open ${entry.id}; retrying on WASM in a fresh worker.`, error.message);
      await this.start("wasm");
      return this.load(entry);
    }
  }

  /** Generate from `prompt` or chat `messages` (continuing `resume_text`, if given, as the answer so
   * far; count_resumed as the worker's generate takes it); `onToken({seq, text})` per batch of
   * tokens; resolves with the worker's "done" message. */
  generate({ id, model, prompt, messages, params, resume_text = "", count_resumed = true }, onToken) {
    const done = this.#expect(`gen:${id}`);
    this.streams.set(id, onToken);
    this.worker.postMessage({ type: "generate", id, model, ...(messages ? { messages } : { prompt }), params, resume_text, count_resumed });
    return done.finally(() => this.streams.delete(id));
  }

  /** `messages` of a conversation as the prompt `entry`'s model reads: {prompt, prompt_tokens,
   * trimmed, context_limit} (the worker's "template"). */
  template(entry, messages, { maxNewTokens, maxChars }) {
    const id = crypto.randomUUID();
    const done = this.#expect(`gen:${id}`);
    this.worker.postMessage({ type: "template", id, model: entry.id, source: entry.source, messages, max_new_tokens: maxNewTokens, max_chars: maxChars });
    return done;
  }

  cancel(id) {
    if (this.cancelFlag && this.streams.has(id)) Atomics.store(this.cancelFlag, 0, 1);
    this.worker?.postMessage({ type: "cancel", id });
  }

  #expect(key) {
    return new Promise((resolve, reject) => this.pending.set(key, { resolve, reject }));
  }

  #settle(key, outcome, value) {
    const waiter = this.pending.get(key);
    if (!waiter) return;
    this.pending.delete(key);
    waiter[outcome](value);
  }

  #rejectAll(reason) {
    for (const key of [...this.pending.keys()]) this.#settle(key, "reject", new InferenceError(reason));
  }

  #receive(message) {
    switch (message.type) {
      case "backend":
        return this.#settle("init", "resolve", message);
      case "progress":
        return this.onProgress(message);
      case "device_lost":
        return this.onDeviceLost(message);
      case "ready":
        return this.#settle(`load:${message.model}`, "resolve", message);
      case "token":
        return this.streams.get(message.id)?.(message);
      case "done":
      case "templated":
        return this.#settle(`gen:${message.id}`, "resolve", message);
      case "error": {
        const key = message.id ? `gen:${message.id}` : message.model ? `load:${message.model}` : "init";
        return this.#settle(key, "reject", new InferenceError(message));
      }
    }
  }
}
