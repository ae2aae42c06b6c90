/* The room page: model picker, prompt, streamed output, cancel and metrics, with every run
 * recorded through the jobs API. The model itself runs in inference-worker.js; where a prompt runs
 * (here or on another peer) is mesh.js's choice. */

import { showConnection } from "/static/js/connection-view.js";
import { InferenceClient } from "/static/js/inference.js";
import { JobRecord } from "/static/js/job-record.js";
import { Mesh } from "/static/js/mesh.js";
import { showLinks, showWork } from "/static/js/mesh-view.js";
import { Peer } from "/static/js/peer.js";
import { JOB_LIMITS } from "/static/js/protocol.js";
import { connectRoom } from "/static/js/signaling.js";

const $ = (id) => document.getElementById(id);

const room = {
  slug: $("room").dataset.room,
  csrf: document.querySelector('meta[name="csrf-token"]').content,
  client: null,
  peer: null,
  mesh: null,
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
    serving: $("serving"),
  },
};

/** The badge that says what this peer is and does (the mesh tells the room and the other peers). */
function showStatus(status) {
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

function flash(kind, text) {
  const box = room.ui.flash;
  box.className = kind ? `flash ${kind}` : "";
  box.textContent = text;
}

function selectedModel() {
  const option = room.ui.model.selectedOptions[0];
  return option ? modelEntry(option) : null;
}

function modelEntry(option) {
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
  const device = room.peer.status.backend;
  for (const option of room.ui.model.options) {
    const runnable = !device || option.dataset.backends.split(",").includes(device);
    option.disabled = !runnable;
    option.title = runnable ? "" : "Needs WebGPU, which this browser does not offer.";
  }
  const entry = selectedModel();
  if (!entry || !device) return;
  const where = device === "webgpu" ? "WebGPU" : "WASM (CPU)";
  const warm = room.peer.status.models_warm.includes(entry.id);
  const fetchNote = warm ? "loaded and warm" : entry.source === "hub"
    ? `downloads ${megabytes(entry.size)} from the Hugging Face hub on first run, then stays cached`
    : `${megabytes(entry.size)}, served by this server`;
  const here = `this browser on ${where}; ${fetchNote}`;
  room.ui.hint.textContent = {
    mesh: `Runs in another peer's browser in this room that can take it; if none can, in ${here}.`,
    auto: `Runs wherever it should finish first: another peer's browser, or ${here}.`,
  }[room.ui.mode.value] ?? `Runs in ${here}.`;
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

function showLoaded(entry, ready) {
  room.ui.progress.value = room.ui.progress.max;
  const where = ready.device === "webgpu" ? "WebGPU" : "WASM";
  room.ui.progressLabel.textContent = ready.warm
    ? `${entry.id} is warm on ${where}`
    : `${entry.id} ready on ${where} (loaded in ${(ready.load_ms / 1000).toFixed(1)} s)`;
  describeModels();
}

const catalogue = {
  ids: () => [...room.ui.model.options].map((o) => o.value),
  entry(id) {
    const option = [...room.ui.model.options].find((o) => o.value === id);
    return option ? modelEntry(option) : null;
  },
};

function setRunning(running) {
  // A screen reader announces the answer once it is complete, not every streamed piece.
  room.ui.output.setAttribute("aria-busy", String(running));
  room.ui.run.disabled = running;
  room.ui.cancel.disabled = !running;
  room.ui.model.disabled = running;
}

/** Where an answer came from, when not (only) from this browser. */
function whereItRan({ attempts }) {
  if (attempts.every((attempt) => !attempt.worker)) return "";
  const name = (attempt) => (attempt.worker ? `${attempt.username}'s browser` : "this browser");
  if (attempts.length === 1) return `ran on ${name(attempts[0])}`;
  return `${attempts.slice(0, -1).map(name).join(", ")} dropped out; ${name(attempts.at(-1))} finished it`;
}

const FALLBACK = {
  no_peers: "No other peer in this room can run this model right now, so it ran in this browser.",
  declined: "Every peer was busy or could not take it, so it ran in this browser.",
};

function showMetrics({ ttft, tokS, tokens, reason, where = "", job }) {
  const { metrics } = room.ui;
  const parts = [];
  if (ttft !== null) parts.push(`first token ${ttft.toFixed(0)} ms`);
  if (tokS !== null) parts.push(`${tokS.toFixed(1)} tok/s`);
  parts.push(`${tokens} token${tokens === 1 ? "" : "s"}`);
  if (where) parts.push(where);
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
  const cap = JOB_LIMITS.page_max_new_tokens;
  if (!(maxNewTokens >= 1 && maxNewTokens <= cap)) return flash("error", `Max tokens must be between 1 and ${cap}.`);

  flash("", "");
  const mode = room.ui.mode.value;
  const run = { id: crypto.randomUUID(), handle: null };
  const cancelled = new Promise((resolve) => (run.cancel = () => {
    run.handle?.cancel();
    resolve("cancelled");
  }));
  room.run = run;
  setRunning(true);
  const text = document.createTextNode("");
  room.ui.output.replaceChildren(text);
  room.ui.metrics.replaceChildren();

  const job = { room: room.slug, model: entry.id, prompt, params: { max_new_tokens: maxNewTokens }, mode };
  if (room.mesh.peerId) job.requester_peer = room.mesh.peerId;
  let record = null;
  const workers = []; // each attempt's worker peer (null: this browser), in order
  const recordAttempts = () => {
    for (const worker of workers.slice(record.attempts)) record.start(worker);
  };
  let first = 0; // when the first token arrived here, and how many tokens that message counted
  let firstSeq = 0;
  let last = 0;
  let tokens = 0;
  let outcome;
  try {
    // A run here needs the model first; on the mesh, the peer that takes the job loads it.
    const ready = mode === "local" ? await Promise.race([room.peer.load(entry), cancelled]) : null;
    if (ready === "cancelled") {
      outcome = { patch: { status: "cancelled" }, metrics: { ttft: null, tokS: null, tokens: 0, reason: "cancelled" } };
    } else {
      // Spell out the model's own defaults, so the history shows the parameters that really ran.
      if (ready) job.params = { ...ready.defaults, ...job.params };
      const sent = performance.now();
      run.handle = room.mesh.run({ id: run.id, model: entry.id, prompt, params: job.params }, {
        mode,
        onAttempt: ({ worker }) => {
          workers.push(worker);
          if (record) recordAttempts();
        },
        onToken: (answer, seq) => {
          last = performance.now();
          if (!first) {
            first = last;
            firstSeq = seq;
          }
          tokens = seq;
          text.data = answer;
        },
      });
      // Recorded alongside, never awaited, and only once the run is over unless it runs long.
      record = new JobRecord(job, room.csrf);
      recordAttempts();
      const result = await run.handle.done;
      // Measured here, where the person sees it: offers, worker, messaging and page included.
      const ttft = first ? first - sent : null;
      const tokS = tokens > firstSeq && last > first ? ((tokens - firstSeq) * 1000) / (last - first) : null;
      const patch = { status: result.reason === "cancelled" ? "cancelled" : "succeeded", output: result.text, token_count: result.tokens };
      if (ttft !== null) patch.ttft_ms = ttft;
      outcome = { patch, metrics: { ttft, tokS, tokens: result.tokens, reason: result.reason, where: whereItRan(result) } };
      if (result.fallback) flash("info", FALLBACK[result.fallback]);
    }
  } catch (error) {
    flash("error", `The model could not run: ${error.message}`);
    outcome = { patch: { status: "failed", error: error.message.slice(0, 2000), output: text.data, token_count: tokens } };
  } finally {
    room.run = null;
    setRunning(false);
    room.peer.update({ state: room.peer.state });
  }
  if (outcome.metrics) showMetrics({ ...outcome.metrics, job: null });
  record ??= new JobRecord(job, room.csrf);
  recordAttempts();
  const { job: recorded, error } = await record.finish(outcome.patch);
  if (outcome.metrics && recorded) showMetrics({ ...outcome.metrics, job: recorded });
  if (error) flash("error", `This run was not recorded in your history: ${error.message}`);
}

/** Join the room's signaling and mesh; without them, prompts still run in this browser. */
async function joinMesh() {
  room.mesh = new Mesh(room.peer.localRunner());
  room.peer.mesh = room.mesh;
  room.mesh.addEventListener("work", (event) => {
    showWork(room.ui.serving, event);
    if (room.peer.status.queue !== room.mesh.queue) room.peer.update({ queue: room.mesh.queue });
  });
  room.mesh.addEventListener("lane", () => room.peer.update({ state: room.peer.state }));
  room.mesh.addEventListener("link", () => showLinks(room.mesh));
  // The peers panel replaces itself when presence changes; label the new rows.
  new MutationObserver(() => showLinks(room.mesh)).observe($("room"), { childList: true });
  const capabilities = { backend: room.peer.status.backend, user_agent: navigator.userAgent.slice(0, 300), state: room.peer.status.state };
  try {
    const onConnection = (detail) => showConnection($("connection"), detail);
    const conn = await connectRoom(room.slug, { capabilities, onConnection });
    room.mesh.attach(conn);
    addEventListener("pagehide", () => {
      room.mesh.close();
      conn.leave();
    });
    room.peer.update({});
    showLinks(room.mesh);
  } catch (error) {
    // A refusal is on the connection line already; this is for a client that failed to load.
    if (!error.refused) flash("error", `This page could not join the room's mesh (${error.message}); prompts run in this browser only.`);
  }
}

async function start() {
  const config = JSON.parse($("inference-config").textContent);
  room.client = new InferenceClient(
    { ...config, ...flags() },
    { onProgress: showProgress, onBackend: (backend) => room.peer.update({ backend: backend.device }) },
  );
  room.peer = new Peer(room.client, catalogue, {
    onStatus: showStatus,
    onLoaded: showLoaded,
    onLoadFailed: () => (room.ui.progressWrap.hidden = true),
  });
  joinMesh();
  room.ui.form.addEventListener("submit", runPrompt);
  room.ui.cancel.addEventListener("click", () => room.run?.cancel());
  room.ui.model.addEventListener("change", () => {
    describeModels();
    const entry = selectedModel();
    if (entry?.source === "local") room.peer.load(entry).catch((error) => flash("error", error.message));
  });
  room.ui.mode.addEventListener("change", () => {
    flash("", "");
    describeModels();
  });
  try {
    await room.client.start();
  } catch (error) {
    room.peer.update({ state: room.peer.state });
    room.ui.run.disabled = true;
    return flash("error", `This browser cannot run models here: ${error.message}`);
  }
  room.peer.update({ state: room.peer.state });
  describeModels();
  // Local models are small and served by us: have the default one warm before the first prompt.
  const entry = selectedModel();
  if (entry?.source === "local" && !room.ui.model.selectedOptions[0].disabled) {
    room.peer.load(entry).catch((error) => flash("error", `The model could not be loaded: ${error.message}`));
  }
}

start();
