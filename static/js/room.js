/* The room page's view: model picker, prompt, streamed output, cancel and metrics. The peer itself
 * (inference worker, mesh, the run in progress) is peer-session.js's and outlives this page's DOM:
 * links in the app swap the page without a reload, and a module runs once per document, so this
 * module mounts on the room element whenever one is swapped in (htmx:after:swap), unmounts when it
 * goes, and shows the session as it finds it: a run still streaming, the status, what it serves. */

import { showConnection } from "/static/js/connection-view.js";
import { Conversation } from "/static/js/conversation.js";
import { renderConversation } from "/static/js/conversation-view.js";
import { showLinks, showWork } from "/static/js/mesh-view.js";
import { session } from "/static/js/peer-session.js";
import { JOB_LIMITS } from "/static/js/protocol.js";

const megabytes = (bytes) => `${(bytes / 1e6).toFixed(1)} MB`;

let view = null; // the mounted room page: {el, ui, stop: AbortController}

function modelEntry(option) {
  const { source, dtype, size, backends } = option.dataset;
  return { id: option.value, source, dtype, size: Number(size), backends: backends.split(","), name: option.textContent.trim() };
}

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

/** The badge that says what this peer is and does (the mesh tells the room and the other peers). */
function showStatus({ ui }, status) {
  const parts = [{ webgpu: "WebGPU", wasm: "WASM" }[status.backend] ?? "detecting…"];
  if (status.state === "loading") parts.push("loading a model");
  if (status.state === "busy") parts.push("generating");
  if (status.models_warm.length) parts.push(`warm: ${status.models_warm.join(", ")}`);
  if (status.tok_s) parts.push(`${status.tok_s.toFixed(0)} tok/s`);
  ui.backend.textContent = parts.join(" · ");
  ui.backend.dataset.backend = status.backend;
  ui.backend.dataset.state = status.state;
}

function flash({ ui }, kind, text) {
  ui.flash.className = kind ? `flash ${kind}` : "";
  ui.flash.textContent = text;
}

function selectedModel({ ui }) {
  const option = ui.model.selectedOptions[0];
  return option ? modelEntry(option) : null;
}

/** Mark options this browser cannot run, and say where the selected model will run. */
function describeModels(v) {
  const { ui } = v;
  const device = session.peer.status.backend;
  for (const option of ui.model.options) {
    const runnable = !device || option.dataset.backends.split(",").includes(device);
    option.disabled = !runnable;
    option.title = runnable ? "" : "Needs WebGPU, which this browser does not offer.";
  }
  const entry = selectedModel(v);
  if (!entry || !device) return;
  const where = device === "webgpu" ? "WebGPU" : "WASM (CPU)";
  const warm = session.peer.status.models_warm.includes(entry.id);
  const fetchNote = warm ? "loaded and warm" : entry.source === "hub"
    ? `downloads ${megabytes(entry.size)} from the Hugging Face hub on first run, then stays cached`
    : `${megabytes(entry.size)}, served by this server`;
  const here = `this browser on ${where}; ${fetchNote}`;
  ui.hint.textContent = {
    mesh: `Runs in another peer's browser in this room that can take it; if none can, in ${here}.`,
    auto: `Runs wherever it should finish first: another peer's browser, or ${here}.`,
  }[ui.mode.value] ?? `Runs in ${here}.`;
}

function showProgress({ ui }, { loaded, total }) {
  ui.progressWrap.hidden = false;
  ui.progress.max = Math.max(total, 1);
  ui.progress.value = loaded;
  ui.progressLabel.textContent = loaded < total
    ? `Downloading model: ${megabytes(loaded)} of ${megabytes(total)}`
    : "Starting the model…";
}

function showLoaded(v, { entry, ready }) {
  const { ui } = v;
  ui.progressWrap.hidden = false;
  ui.progress.value = ui.progress.max;
  const where = ready.device === "webgpu" ? "WebGPU" : "WASM";
  ui.progressLabel.textContent = ready.warm
    ? `${entry.id} is warm on ${where}`
    : `${entry.id} ready on ${where} (loaded in ${(ready.load_ms / 1000).toFixed(1)} s)`;
  describeModels(v);
}

/** Whether the form can start a run: a started worker, a mesh to run through, nothing running. */
function setRunning(v) {
  const { ui } = v;
  const running = Boolean(session.run?.running) || Boolean(session.conversation?.busy);
  // A screen reader announces the answer once it is complete, not every streamed piece.
  ui.output.setAttribute("aria-busy", String(running));
  ui.run.disabled = running || !session.mesh || Boolean(session.problem?.fatal) || session.slug !== v.slug;
  ui.cancel.disabled = !running;
  ui.model.disabled = running;
}

function showMetrics({ ui }, { ttft, tokS, tokens, reason, where = "" }, job) {
  const parts = [];
  if (ttft !== null) parts.push(`first token ${ttft.toFixed(0)} ms`);
  if (tokS !== null) parts.push(`${tokS.toFixed(1)} tok/s`);
  else if (ttft !== null && tokens > 1) parts.push("too short to measure a speed");
  parts.push(`${tokens} token${tokens === 1 ? "" : "s"}`);
  if (where) parts.push(where);
  if (reason === "context") parts.push("stopped at the model's context limit");
  if (reason === "cancelled") parts.push("cancelled");
  ui.metrics.replaceChildren(parts.join(" · "));
  ui.metrics.dataset.ttftMs = ttft ?? "";
  ui.metrics.dataset.tokS = tokS ?? "";
  ui.metrics.dataset.tokens = tokens;
  if (job) {
    const link = Object.assign(document.createElement("a"), { href: `/jobs/${job.id}`, textContent: "recorded in history" });
    link.dataset.jobId = job.id;
    ui.metrics.append(" · ", link);
    // A link made here is boosted like the server's: following it keeps this peer.
    window.htmx?.process(link);
  }
}

/** Show `run` (running or over) and follow it until this view goes. */
function showRun(v, run) {
  const { ui, stop } = v;
  const text = document.createTextNode(run.text);
  ui.output.replaceChildren(text);
  ui.metrics.replaceChildren();
  // Only a change is written: the output's observers (a screen reader, tests) see the text grow.
  const showText = () => {
    if (text.data !== run.text) text.data = run.text;
  };
  const render = () => {
    showText();
    if (run.metrics) showMetrics(v, run.metrics, run.job);
    if (run.flash) flash(v, run.flash.kind, run.flash.text);
    setRunning(v);
  };
  for (const type of ["end", "recorded", "flash"]) run.addEventListener(type, render, { signal: stop.signal });
  run.addEventListener("token", showText, { signal: stop.signal });
  render();
}

function runPrompt(v, event) {
  event.preventDefault();
  const { ui } = v;
  const entry = selectedModel(v);
  const prompt = ui.prompt.value.trim();
  const maxNewTokens = Number.parseInt(ui.maxTokens.value, 10);
  if (session.run?.running || !entry || !session.mesh) return;
  if (!prompt) return flash(v, "error", "Write a prompt first.");
  const cap = JOB_LIMITS.page_max_new_tokens;
  if (!(maxNewTokens >= 1 && maxNewTokens <= cap)) return flash(v, "error", `Max tokens must be between 1 and ${cap}.`);
  flash(v, "", "");
  if (ui.style.value === "complete") return session.startRun({ entry, prompt, maxNewTokens, mode: ui.mode.value });
  if (session.conversation.busy) return;
  ui.prompt.value = "";
  session.conversation.ask(prompt, { entry, maxNewTokens, mode: ui.mode.value }).then((stored) => {
    // Not kept: the question goes back in the box, unless something new was typed meanwhile.
    if (!stored && view === v && !ui.prompt.value) ui.prompt.value = prompt;
  });
}

/** The fields an answer of the conversation runs with: the form's model, mode and max tokens. */
function answerFields(v) {
  const { ui } = v;
  const maxNewTokens = Number.parseInt(ui.maxTokens.value, 10);
  const cap = JOB_LIMITS.page_max_new_tokens;
  if (!(maxNewTokens >= 1 && maxNewTokens <= cap)) {
    flash(v, "error", `Max tokens must be between 1 and ${cap}.`);
    return null;
  }
  return { entry: selectedModel(v), maxNewTokens, mode: ui.mode.value };
}

/** Show the session's conversation (a new one if it has none for this room) and follow it. */
function showConversation(v) {
  const { ui } = v;
  v.stopConversation?.abort();
  const stop = new AbortController();
  v.stopConversation = stop;
  v.stop.signal.addEventListener("abort", () => stop.abort(), { signal: stop.signal });
  if (session.conversation?.slug !== v.slug) session.conversation = new Conversation(session, v.slug);
  const conversation = session.conversation;
  ui.system.value = conversation.system;
  ui.systemNote.textContent = conversation.system.trim() ? "(set)" : "";
  const actions = {
    regenerate: () => {
      const fields = answerFields(v);
      if (fields && !session.run?.running) conversation.regenerate(fields);
    },
    edit: (index, text) => {
      const fields = answerFields(v);
      if (fields && !session.run?.running) conversation.edit(index, text, fields);
    },
    copied: (text, b) => {
      navigator.clipboard.writeText(text).then(
        () => (b.textContent = "Copied"),
        () => flash(v, "error", "This browser did not let the page copy the answer."),
      );
    },
    rerender: () => render(),
  };
  const render = () => {
    renderConversation(ui, conversation, actions);
    setRunning(v);
    // A stored conversation has an address: reloading or sharing the page reopens it.
    const url = conversation.id ? `/rooms/${v.slug}?conversation=${conversation.id}` : `/rooms/${v.slug}`;
    if (view === v && location.pathname + location.search !== url) history.replaceState(history.state, "", url);
  };
  const on = (type, listener) => conversation.addEventListener(type, listener, { signal: stop.signal });
  on("change", render);
  on("stored", () => document.body.dispatchEvent(new CustomEvent("conversations-changed")));
  on("problem", (e) => flash(v, "error", e.detail.text));
  render();
}

/** Chat (a conversation) or plain text to continue (one prompt, as it is): show what belongs to it. */
function showStyle(v) {
  const { ui } = v;
  const chat = ui.style.value === "chat";
  sessionStorage.setItem("prompt-style", ui.style.value);
  ui.conversation.hidden = !chat;
  ui.systemWrap.hidden = !chat;
  ui.outputPane.hidden = chat;
  if (!chat) {
    ui.output.hidden = false;
    ui.outputPane.append(ui.output);
  } else {
    showConversation(v);
  }
}

/** What the page says about the tab's membership: switching rooms, or left with the dock. */
function showMembership(v) {
  const note = session.pending?.slug === v.slug
    ? `Your run in ${session.roomName} finishes there first; then this page joins ${session.pending.name}.`
    : !session.slug && !session.pending ? "You left this room's mesh. Open the room again to rejoin." : "";
  if (note) flash(v, "info", note);
  else if (v.note && v.ui.flash.textContent === v.note) flash(v, "", "");
  v.note = note;
  setRunning(v);
}

function bind(el) {
  const $ = (id) => el.ownerDocument.getElementById(id);
  return {
    form: $("prompt-form"), model: $("model"), mode: $("mode"), hint: $("model-hint"), backend: $("backend"),
    progressWrap: $("progress-wrap"), progress: $("progress"), progressLabel: $("progress-label"), prompt: $("prompt"),
    maxTokens: $("max-tokens"), run: $("run"), cancel: $("cancel"), output: $("output"), metrics: $("metrics"),
    flash: $("run-flash"), serving: $("serving"), connection: $("connection"),
    style: $("prompt-style"), system: $("system-prompt"), systemWrap: $("system-wrap"), systemNote: $("system-note"),
    conversation: $("conversation"), turns: $("turns"), title: $("conversation-title"), outputPane: $("output-pane"),
    newConversation: $("new-conversation"),
  };
}

function mount(el) {
  const ui = bind(el);
  const v = { el, ui, slug: el.dataset.room, stop: new AbortController() };
  view = v;
  const { signal } = v.stop;
  const on = (target, type, listener) => target.addEventListener(type, listener, { signal });
  session.enter(el, {
    config: JSON.parse(document.getElementById("inference-config").textContent),
    models: [...ui.model.options].map(modelEntry),
    flags: flags(),
  });
  on(session, "status", (e) => {
    showStatus(v, e.detail.status);
    setRunning(v);
    if (session.mesh) showLinks(session.mesh, e.detail.status.state);
  });
  on(session, "progress", (e) => showProgress(v, e.detail));
  on(session, "loaded", (e) => showLoaded(v, e.detail));
  on(session, "load-failed", () => (ui.progressWrap.hidden = true));
  on(session, "work", (e) => showWork(ui.serving, e));
  on(session, "link", () => showLinks(session.mesh));
  on(session, "problem", (e) => {
    flash(v, "error", e.detail.text);
    setRunning(v);
  });
  on(session, "membership", () => showMembership(v));
  on(session, "connection", (e) => showConnection(ui.connection, e.detail));
  on(session, "run", (e) => showRun(v, e.detail.run));
  // The peers panel replaces itself when presence changes; label the new rows.
  const rows = new MutationObserver(() => session.mesh && showLinks(session.mesh));
  rows.observe(el, { childList: true });
  signal.addEventListener("abort", () => rows.disconnect());

  on(ui.form, "submit", (e) => runPrompt(v, e));
  on(ui.style, "change", () => showStyle(v));
  on(ui.system, "change", () => {
    session.conversation.setSystem(ui.system.value);
    ui.systemNote.textContent = ui.system.value.trim() ? "(set)" : "";
    showConversation(v);
  });
  on(ui.newConversation, "click", () => {
    if (session.conversation.busy) return;
    session.conversation = new Conversation(session, v.slug);
    flash(v, "", "");
    showConversation(v);
    ui.prompt.focus();
  });
  on(ui.cancel, "click", () => session.run?.cancel());
  on(ui.model, "change", () => {
    describeModels(v);
    const entry = selectedModel(v);
    if (entry?.source === "local") session.peer.load(entry).catch((error) => flash(v, "error", error.message));
  });
  on(ui.mode, "change", () => {
    flash(v, "", "");
    describeModels(v);
  });

  // What the tab already is and does: back on this page mid-run, it shows the run going on.
  showStatus(v, session.peer.status);
  if (session.work) showWork(ui.serving, { detail: session.work });
  if (session.connection) showConnection(ui.connection, session.connection);
  if (session.mesh) showLinks(session.mesh);
  if (session.lastLoad) showLoaded(v, session.lastLoad);
  // A conversation reopened from a list, or the one this tab was having here.
  const opened = document.getElementById("conversation-data");
  if (opened) {
    const data = JSON.parse(opened.textContent);
    if (session.conversation?.id !== data.id) session.conversation = new Conversation(session, v.slug, data);
  }
  const run = session.run;
  const answering = session.conversation?.turns.some((turn) => turn.run === run);
  ui.style.value = opened || answering ? "chat" : sessionStorage.getItem("prompt-style") ?? "chat";
  showStyle(v);
  if (run && run.slug === v.slug && (ui.style.value === "complete" || answering)) {
    ui.model.value = run.fields.entry.id;
    ui.mode.value = run.fields.mode;
    if (ui.style.value === "complete") ui.prompt.value = run.fields.prompt;
    ui.maxTokens.value = run.fields.maxNewTokens;
    showRun(v, run);
  }
  if (session.problem) flash(v, "error", session.problem.text);
  showMembership(v);
  session.ready.then(() => {
    if (view !== v) return;
    describeModels(v);
    setRunning(v);
    // Local models are small and served by us: have the default one warm before the first prompt.
    const entry = selectedModel(v);
    if (entry?.source === "local" && !ui.model.selectedOptions[0].disabled) {
      session.peer.load(entry).catch((error) => flash(v, "error", `The model could not be loaded: ${error.message}`));
    }
  }, () => {});
}

/** Mount on the room element if this page shows one; unmount from one that was swapped out. */
function sync() {
  const el = document.getElementById("room");
  if (view && view.el === el) return;
  if (view) {
    view.stop.abort();
    view = null;
  }
  if (el) mount(el);
}

document.addEventListener("htmx:after:swap", sync);
sync();
