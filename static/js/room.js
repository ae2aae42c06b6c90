/* The room page: model picker, prompt, streamed output, cancel and metrics, with every run
 * recorded through the jobs API. The model itself runs in inference-worker.js. */

import { InferenceClient } from "/static/js/inference.js";

const $ = (id) => document.getElementById(id);

const room = {
  slug: $("room").dataset.room,
  csrf: document.querySelector('meta[name="csrf-token"]').content,
  client: null,
  status: { state: "loading", backend: "", models_warm: [], queue: 0, tok_s: 0 },
  loads: new Map(), // model id → promise of its "ready"
  loadQueue: Promise.resolve(),
  loadsPending: 0,
  run: null, // {id, cancel()} of the run in progress
  ui: {
    form: $("prompt-form"),
    model: $("model"),
    mode: $("mode"),
    hint: $("model-hint"),
    backend: $("backend"),
    progressWrap: $("progress-wrap"),
    progress: $("progress"),
    progressLabel: $("progress-label"),
    prompt: $("prompt"),
    maxTokens: $("max-tokens"),
    run: $("run"),
    cancel: $("cancel"),
    output: $("output"),
    metrics: $("metrics"),
    flash: $("run-flash"),
  },
};

/** Tell the room what this peer can do: for now the local badge; signaling forwards it later. */
function publishStatus(status) {
  const { backend } = room.ui;
  const parts = [{ webgpu: "WebGPU", wasm: "WASM" }[status.backend] ?? "detecting…"];
  if (status.state === "loading") parts.push("loading a model");
  if (status.state === "busy") parts.push("generating");
  if (status.models_warm.length) parts.push(`warm: ${status.models_warm.join(", ")}`);
  if (status.tok_s) parts.push(`${status.tok_s.toFixed(0)} tok/s`);
  backend.textContent = parts.join(" · ");
  backend.dataset.backend = status.backend;
  backend.dataset.state = status.state;
}

function updateStatus(changes) {
  Object.assign(room.status, changes);
  publishStatus({ ...room.status, models_warm: [...room.status.models_warm] });
}

function currentState() {
  return room.loadsPending ? "loading" : room.run ? "busy" : "idle";
}

function flash(kind, text) {
  const box = room.ui.flash;
  box.className = kind ? `flash ${kind}` : "";
  box.textContent = text;
}

function selectedModel() {
  const option = room.ui.model.selectedOptions[0];
  if (!option) return null;
  const { source, dtype, size, backends } = option.dataset;
  return { id: option.value, source, dtype, size: Number(size), backends: backends.split(","), name: option.textContent.trim() };
}

const megabytes = (bytes) => `${(bytes / 1e6).toFixed(1)} MB`;

/** Query flags for trying things out: ?backend=webgpu|wasm forces one; ?threads=N sets WASM threads. */
function flags() {
  const query = new URLSearchParams(location.search);
  const backend = query.get("backend");
  const threads = Number.parseInt(query.get("threads") ?? "", 10);
  return {
    device: backend === "webgpu" || backend === "wasm" ? backend : "auto",
    // Forcing WebGPU also accepts a software adapter, so tests can exercise that code path.
    allow_software_gpu: backend === "webgpu",
    threads: threads >= 1 && threads <= 16 ? threads : null,
  };
}

/** Mark options this browser cannot run, and say where the selected model will run. */
function describeModels() {
  const device = room.status.backend;
  for (const option of room.ui.model.options) {
    const runnable = !device || option.dataset.backends.split(",").includes(device);
    option.disabled = !runnable;
    option.title = runnable ? "" : "Needs WebGPU, which this browser does not offer.";
  }
  const entry = selectedModel();
  if (!entry || !device) return;
  const where = device === "webgpu" ? "WebGPU" : "WASM (CPU)";
  const warm = room.status.models_warm.includes(entry.id);
  const fetchNote = warm ? "loaded and warm" : entry.source === "hub"
    ? `downloads ${megabytes(entry.size)} from the Hugging Face hub on first run, then stays cached`
    : `${megabytes(entry.size)}, served by this server`;
  room.ui.hint.textContent = `Runs in this browser on ${where}; ${fetchNote}.`;
}

function showProgress({ loaded, total }) {
  const { progressWrap, progress, progressLabel } = room.ui;
  progressWrap.hidden = false;
  progress.max = Math.max(total, 1);
  progress.value = loaded;
  progressLabel.textContent = loaded < total
    ? `Downloading model: ${megabytes(loaded)} of ${megabytes(total)}`
    : "Starting the model…";
}

/** Load `entry` once, one model at a time (the worker loads one at a time); a warm model answers at once. */
function ensureLoaded(entry) {
  if (!room.loads.has(entry.id)) {
    room.loadsPending += 1;
    const loading = room.loadQueue.catch(() => null).then(() => {
      updateStatus({ state: "loading" });
      return room.client.load(entry);
    }).then(
      (ready) => {
        room.loadsPending -= 1;
        room.ui.progress.value = room.ui.progress.max;
        const where = ready.device === "webgpu" ? "WebGPU" : "WASM";
        room.ui.progressLabel.textContent = ready.warm
          ? `${entry.id} is warm on ${where}`
          : `${entry.id} ready on ${where} (loaded in ${(ready.load_ms / 1000).toFixed(1)} s)`;
        // The worker keeps one model warm, so loading this one evicted any other.
        for (const id of room.loads.keys()) if (id !== entry.id) room.loads.delete(id);
        updateStatus({ state: currentState(), models_warm: [entry.id], backend: ready.device });
        performance.mark("mesh:model-ready", { detail: { model: entry.id } });
        describeModels();
        return ready;
      },
      (error) => {
        room.loadsPending -= 1;
        room.loads.delete(entry.id);
        room.ui.progressWrap.hidden = true;
        updateStatus({ state: currentState() });
        throw error;
      },
    );
    room.loads.set(entry.id, loading);
    room.loadQueue = loading;
  }
  return room.loads.get(entry.id);
}

/** The job's record in the jobs API. Steps run in order in the background, never blocking tokens. */
class JobRecord {
  constructor(fields) {
    this.job = null;
    this.problem = null;
    this.started = false;
    this.chain = this.#send("POST", "/api/jobs", fields).then((job) => (this.job = job));
  }

  start() {
    this.started = true;
    this.#then({ status: "running" });
  }

  /** The last step; resolves with {job} once recorded, or {error} saying why it was not. */
  finish(patch) {
    if (!this.started && patch.status !== "cancelled") this.start();
    this.#then(patch);
    return this.chain.then((job) => ({ job }), (error) => ({ error }));
  }

  #then(patch) {
    this.chain = this.chain.then((job) => this.#send("PATCH", `/api/jobs/${job.id}`, patch).then(() => job));
  }

  async #send(method, url, body) {
    const response = await fetch(url, {
      method,
      headers: { "content-type": "application/json", accept: "application/json", "x-csrftoken": room.csrf },
      body: JSON.stringify(body),
    });
    const data = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(data.detail ?? `The server answered ${response.status}.`);
    return data;
  }
}

function setRunning(running) {
  room.ui.run.disabled = running;
  room.ui.cancel.disabled = !running;
  room.ui.model.disabled = running;
}

function showMetrics({ ttft, tokS, tokens, reason, job }) {
  const { metrics } = room.ui;
  const parts = [];
  if (ttft !== null) parts.push(`first token ${ttft.toFixed(0)} ms`);
  if (tokS !== null) parts.push(`${tokS.toFixed(1)} tok/s`);
  parts.push(`${tokens} token${tokens === 1 ? "" : "s"}`);
  if (reason === "context") parts.push("stopped at the model's context limit");
  if (reason === "cancelled") parts.push("cancelled");
  metrics.replaceChildren(parts.join(" · "));
  metrics.dataset.ttftMs = ttft ?? "";
  metrics.dataset.tokS = tokS ?? "";
  metrics.dataset.tokens = tokens;
  if (job) {
    const link = Object.assign(document.createElement("a"), { href: `/jobs/${job.id}`, textContent: "recorded in history" });
    link.dataset.jobId = job.id;
    metrics.append(" · ", link);
  }
}

async function runPrompt(event) {
  event.preventDefault();
  const entry = selectedModel();
  const prompt = room.ui.prompt.value.trim();
  const maxNewTokens = Number.parseInt(room.ui.maxTokens.value, 10);
  if (room.run || !entry || !room.client) return;
  if (!prompt) return flash("error", "Write a prompt first.");
  if (!(maxNewTokens >= 1 && maxNewTokens <= 2048)) return flash("error", "Max tokens must be between 1 and 2048.");

  flash("", "");
  if (room.ui.mode.value !== "local") {
    flash("info", "Running on the mesh is not available yet, so this prompt runs in this browser.");
  }
  const run = { id: crypto.randomUUID() };
  const cancelled = new Promise((resolve) => (run.cancel = () => {
    room.client.cancel(run.id);
    resolve("cancelled");
  }));
  room.run = run;
  setRunning(true);
  const text = document.createTextNode("");
  room.ui.output.replaceChildren(text);
  room.ui.metrics.replaceChildren();

  // Recorded as what actually happens: a local run, whatever the switch says for now.
  const job = { room: room.slug, model: entry.id, prompt, params: { max_new_tokens: maxNewTokens }, mode: "local" };
  let record = null;
  let first = 0; // when the first token arrived here, and how many tokens that message counted
  let firstSeq = 0;
  let last = 0;
  let tokens = 0;
  let outcome;
  try {
    const ready = await Promise.race([ensureLoaded(entry), cancelled]);
    if (ready === "cancelled") {
      outcome = { patch: { status: "cancelled" }, metrics: { ttft: null, tokS: null, tokens: 0, reason: "cancelled" } };
    } else {
      // Spell out the model's own defaults, so the history shows the parameters that really ran.
      job.params = { ...ready.defaults, ...job.params };
      const sent = performance.now();
      const generating = room.client.generate({ id: run.id, model: entry.id, prompt, params: job.params }, (token) => {
        last = performance.now();
        if (!first) {
          first = last;
          firstSeq = token.seq;
        }
        tokens = token.seq;
        if (token.text) text.appendData(token.text);
      });
      // Recorded alongside, never awaited: the server stamps "running" as close to the start as it can.
      record = new JobRecord(job);
      record.start();
      updateStatus({ state: currentState() });
      const done = await generating;
      // Measured here, where the person sees it: worker, messaging and page included.
      const ttft = first ? first - sent : null;
      const tokS = tokens > firstSeq && last > first ? ((tokens - firstSeq) * 1000) / (last - first) : null;
      const patch = { status: done.reason === "cancelled" ? "cancelled" : "succeeded", output: done.text, token_count: done.tokens };
      if (ttft !== null) patch.ttft_ms = ttft;
      outcome = { patch, metrics: { ttft, tokS, tokens: done.tokens, reason: done.reason } };
      if (tokS) updateStatus({ tok_s: tokS });
    }
  } catch (error) {
    flash("error", `The model could not run: ${error.message}`);
    outcome = { patch: { status: "failed", error: error.message.slice(0, 2000), output: text.data, token_count: tokens } };
  } finally {
    room.run = null;
    setRunning(false);
    updateStatus({ state: currentState() });
  }
  if (outcome.metrics) showMetrics({ ...outcome.metrics, job: null });
  record ??= new JobRecord(job);
  const { job: recorded, error } = await record.finish(outcome.patch);
  if (outcome.metrics && recorded) showMetrics({ ...outcome.metrics, job: recorded });
  if (error) flash("error", `This run was not recorded in your history: ${error.message}`);
}

async function start() {
  const config = JSON.parse($("inference-config").textContent);
  room.client = new InferenceClient(
    { ...config, ...flags() },
    { onProgress: showProgress, onBackend: (backend) => updateStatus({ backend: backend.device }) },
  );
  room.ui.form.addEventListener("submit", runPrompt);
  room.ui.cancel.addEventListener("click", () => room.run?.cancel());
  room.ui.model.addEventListener("change", () => {
    describeModels();
    const entry = selectedModel();
    if (entry?.source === "local") ensureLoaded(entry).catch((error) => flash("error", error.message));
  });
  room.ui.mode.addEventListener("change", () => {
    if (room.ui.mode.value !== "local") flash("info", "Running on the mesh is not available yet; prompts run in this browser for now.");
    else flash("", "");
  });
  try {
    await room.client.start();
  } catch (error) {
    updateStatus({ state: currentState() });
    room.ui.run.disabled = true;
    return flash("error", `This browser cannot run models here: ${error.message}`);
  }
  updateStatus({ state: currentState() });
  describeModels();
  // Local models are small and served by us: have the default one warm before the first prompt.
  const entry = selectedModel();
  if (entry?.source === "local" && !room.ui.model.selectedOptions[0].disabled) {
    ensureLoaded(entry).catch((error) => flash("error", `The model could not be loaded: ${error.message}`));
  }
}

start();
