/* The room page's view: model picker (with the model's facts, settings and load failures), prompt,
 * streamed output, cancel and metrics. The peer itself (inference worker, mesh, the run in
 * progress) is peer-session.js's and outlives this page's DOM:
 * links in the app swap the page without a reload, and a module runs once per document, so this
 * module mounts on the room element whenever one is swapped in (htmx:after:swap), unmounts when it
 * goes, and shows the session as it finds it: a run still streaming, the status, what it serves. */

import { showConnection } from "/static/js/connection-view.js";
import { Conversation } from "/static/js/conversation.js";
import { renderConversation } from "/static/js/conversation-view.js";
import { mountDeviceModels } from "/static/js/device-models.js";
import { inferenceConfig } from "/static/js/inference.js";
import { showLinks, showWork } from "/static/js/mesh-view.js";
import { modelDefaults } from "/static/js/model-defaults.js";
import { hideFailure, lastWorkingModel, rememberWorkingModel, showFailure, showModelInfo } from "/static/js/model-view.js";
import { session } from "/static/js/peer-session.js";
import { applyDefaults, bindSampling, readSampling, showParams, summarize } from "/static/js/sampling-settings.js";

const megabytes = (bytes) => `${(bytes / 1e6).toFixed(1)} MB`;

let view = null; // the mounted room page: {el, ui, stop: AbortController}

function modelEntry(option) {
  const { source, dtype, size, backends, name, description, parameters, context, license, url } = option.dataset;
  return {
    id: option.value, source, dtype, size: Number(size), backends: backends.split(","), name: name || option.value,
    description, parameters: Number(parameters), context: Number(context), license, url,
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
  ui.turns.setAttribute("aria-busy", String(running));
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
  let shownFailure = false;
  // Emptied, so the next answer is said even where it has the same words.
  ui.answerStatus.textContent = "";
  const text = document.createTextNode(run.text);
  ui.output.replaceChildren(text);
  ui.metrics.replaceChildren();
  // Only a change is written: the output's observers (a screen reader, tests) see the text grow.
  const showText = () => {
    if (text.data !== run.text) text.data = run.text;
  };
  // While it runs elsewhere, the metrics line says where, once per attempt; a run that failed has none.
  const showWhere = () => {
    if (!run.metrics) ui.metrics.textContent = run.running ? run.where : "";
  };
  const render = () => {
    showText();
    if (run.metrics) showMetrics(v, run.metrics, run.job);
    else showWhere();
    // A model that could not be loaded is explained above the output (modelFailed), not twice.
    const loadFailed = Boolean(run.error?.reason);
    if (run.flash) {
      const explained = loadFailed && run.flash.text.includes(run.error.message);
      flash(v, explained ? "" : run.flash.kind, explained ? "" : run.flash.text);
    }
    if (loadFailed && !run.running && !shownFailure) {
      shownFailure = true;
      modelFailed(v, { entry: run.fields.entry, reason: run.error.reason, message: run.error.message, fromRun: true });
    }
    setRunning(v);
  };
  for (const type of ["end", "recorded", "flash"]) run.addEventListener(type, render, { signal: stop.signal });
  run.addEventListener("token", showText, { signal: stop.signal });
  run.addEventListener("attempt", showWhere, { signal: stop.signal });
  run.addEventListener("end", () => announceAnswer(v, run), { signal: stop.signal });
  render();
}

/** A chat answer that just ended, said once to a screen reader (the plain-text output says its own:
 * it is a live region, busy while it streams). A failure is the flash's to say. */
function announceAnswer({ ui }, run) {
  const answering = session.conversation?.turns.some((turn) => turn.run === run);
  const text = run.text.trim();
  if (!answering || run.error || !text) return;
  ui.answerStatus.textContent = run.metrics?.reason === "cancelled" ? `Answer, cancelled: ${text}` : `Answer: ${text}`;
}

/** The selected model changed (by the person, or back to one that works): say what it is, and start
 * from its own sampling defaults unless these are already its own. */
function modelChanged(v) {
  const { ui } = v;
  describeModels(v);
  const entry = selectedModel(v);
  showModelInfo(ui.modelInfo, entry);
  if (!entry || v.defaultsFor === entry.id) return;
  v.defaultsFor = entry.id;
  modelDefaults(entry, v.localPath).then((defaults) => {
    if (view === v && v.defaultsFor === entry.id && !session.run?.running) applyDefaults(ui.sampling, defaults, entry.name);
  });
}

/** Load the selected model now if it is one of this server's (small, and no download to speak of). */
function preload(v) {
  const entry = selectedModel(v);
  if (entry?.source !== "local" || v.ui.model.selectedOptions[0].disabled) return;
  session.peer.load(entry).catch((error) => modelFailed(v, { entry, reason: error.reason, message: error.message, fromRun: false }));
}

/** The models this browser can run without a download that might fail: this server's, the ones
 * saved on this device, and the one warm in the worker. */
function workingModels(v, except) {
  const cached = new Set(v.deviceModels.cached());
  const warm = session.peer.status.models_warm;
  return [...v.ui.model.options].filter((o) => !o.disabled && o.value !== except).map(modelEntry)
    .filter((e) => e.source === "local" || cached.has(e.id) || warm.includes(e.id));
}

/** `entry` could not be loaded: say why above the output, and put the picker back on the last model
 * that loaded here (if it still can), so the next Run works. */
function modelFailed(v, { entry, reason, message, fromRun }) {
  const { ui } = v;
  if (view !== v) return;
  const alternatives = workingModels(v, entry.id);
  const pick = (alt) => {
    hideFailure(ui.modelError);
    ui.model.value = alt.id;
    modelChanged(v);
    preload(v);
  };
  const retry = () => {
    hideFailure(ui.modelError);
    ui.model.value = entry.id;
    modelChanged(v);
    if (fromRun) ui.form.requestSubmit();
    else preload(v);
  };
  showFailure(ui.modelError, { entry, reason, message }, alternatives, { onPick: pick, onRetry: retry });
  const last = lastWorkingModel();
  const back = alternatives.find((alt) => alt.id === last);
  if (ui.model.value === entry.id && back) {
    ui.model.value = back.id;
    modelChanged(v);
    ui.modelError.querySelector("#model-fallback").textContent = `The picker is back on ${back.name}, the last model that loaded here.`;
    // The failed load let go of the warm model: have this one ready again if it is this server's.
    if (!session.run?.running) preload(v);
  }
}

function runPrompt(v, event) {
  event.preventDefault();
  const { ui } = v;
  const entry = selectedModel(v);
  const prompt = ui.prompt.value.trim();
  if (session.run?.running || !entry || !session.mesh) return;
  if (!prompt) return flash(v, "error", "Write a prompt first.");
  const { params, error, field } = readSampling(ui.sampling);
  if (error) {
    if (field !== ui.maxTokens) ui.settings.open = true;
    field.focus();
    return flash(v, "error", error);
  }
  flash(v, "", "");
  hideFailure(ui.modelError);
  const device = session.peer.status.backend;
  if (ui.mode.value === "local" && device && !entry.backends.includes(device)) {
    return modelFailed(v, { entry, reason: "needs_webgpu", message: "", fromRun: true });
  }
  const { max_new_tokens: maxNewTokens, ...sampling } = params;
  const fields = { entry, maxNewTokens, mode: ui.mode.value, sampling };
  if (ui.style.value === "complete") return session.startRun({ ...fields, prompt });
  if (session.conversation.busy) return;
  ui.prompt.value = "";
  session.conversation.ask(prompt, fields).then((stored) => {
    // Not kept: the question goes back in the box, unless something new was typed meanwhile.
    if (!stored && view === v && !ui.prompt.value) ui.prompt.value = prompt;
  });
}

/** The fields an answer of the conversation runs with: the form's model, mode, max tokens and
 * sampling settings (none when a setting is out of range: the form says which). */
function answerFields(v) {
  const { ui } = v;
  const { params, error, field } = readSampling(ui.sampling);
  if (error) {
    if (field !== ui.maxTokens) ui.settings.open = true;
    field.focus();
    flash(v, "error", error);
    return null;
  }
  const { max_new_tokens: maxNewTokens, ...sampling } = params;
  return { entry: selectedModel(v), maxNewTokens, mode: ui.mode.value, sampling };
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
  on("load-failed", (e) => modelFailed(v, { ...e.detail, fromRun: true }));
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
  // In a chat the output streams inside the latest bubble, which is redrawn as it goes: the answer
  // is said by #answer-status instead (announceAnswer).
  ui.output.setAttribute("aria-live", chat ? "off" : "polite");
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
    newConversation: $("new-conversation"), answerStatus: $("answer-status"),
    settings: $("sampling"), sampling: bindSampling(el.ownerDocument), modelInfo: $("model-info"), modelError: $("model-error"),
    deviceModels: $("device-models"),
  };
}

function mount(el) {
  const ui = bind(el);
  const v = { el, ui, slug: el.dataset.room, stop: new AbortController() };
  view = v;
  const { signal } = v.stop;
  const on = (target, type, listener) => target.addEventListener(type, listener, { signal });
  const config = inferenceConfig();
  v.localPath = config.local_model_path;
  const names = (id) => [...ui.model.options].find((o) => o.value === id)?.dataset.name ?? id;
  v.deviceModels = mountDeviceModels(ui.deviceModels, { names, localPath: v.localPath, signal });
  session.enter(el, { config, models: [...ui.model.options].map(modelEntry) });
  on(session, "status", (e) => {
    showStatus(v, e.detail.status);
    setRunning(v);
    if (session.mesh) showLinks(session.mesh, e.detail.status.state);
  });
  on(session, "progress", (e) => showProgress(v, e.detail));
  on(session, "loaded", (e) => {
    showLoaded(v, e.detail);
    rememberWorkingModel(e.detail.entry.id);
    if (!e.detail.ready.warm) v.deviceModels.refresh();
  });
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
    hideFailure(ui.modelError);
    modelChanged(v);
    preload(v);
  });
  on(ui.settings, "input", () => summarize(ui.sampling));
  on(ui.sampling.reset, "click", () => {
    v.defaultsFor = null;
    modelChanged(v);
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
    v.defaultsFor = run.fields.entry.id;
    showParams(ui.sampling, run.fields.sampling ?? {});
    showRun(v, run);
  }
  if (session.problem) flash(v, "error", session.problem.text);
  modelChanged(v);
  showMembership(v);
  session.ready.then(() => {
    if (view !== v) return;
    describeModels(v);
    setRunning(v);
    // Local models are small and served by us: have the default one warm before the first prompt.
    preload(v);
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
